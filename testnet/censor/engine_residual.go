package censor

import (
	"net/netip"
	"time"
)

// ResidualKey is what one residual block covers, normalised to its Kind:
// for Residual3Tuple the client port is zero, for ResidualServer the
// client is zero.
type ResidualKey struct {
	Kind   ResidualKind
	Proto  uint8
	Client netip.AddrPort
	Server netip.AddrPort
}

// residualKeyFor returns the key of kind for flow key k.
func residualKeyFor(kind ResidualKind, k FlowKey) ResidualKey {
	r := ResidualKey{Kind: kind, Proto: k.Proto, Client: k.Client, Server: k.Server}
	return r.normalize()
}

func (r ResidualKey) normalize() ResidualKey {
	switch r.Kind {
	case Residual4Tuple:
	case ResidualServer:
		r.Client = netip.AddrPort{}
	default:
		r.Kind = Residual3Tuple
		r.Client = netip.AddrPortFrom(r.Client.Addr(), 0)
	}
	return r
}

// residualEntry is one residual block.
type residualEntry struct {
	until  time.Time
	rule   string
	action ResidualAction
}

// residualTable holds the residual blocks, bounded: when full, expired
// entries are dropped, then the one ending soonest. It is not safe for
// concurrent use; the engine's mutex guards it.
type residualTable struct {
	m   map[ResidualKey]residualEntry
	max int
	gen uint64 // bumped by every insertion, so flows recheck
}

func newResidualTable(max int) *residualTable {
	return &residualTable{m: make(map[ResidualKey]residualEntry), max: max}
}

// insert blocks key until until, extending an existing block (a new
// detection restarts the timer, as Iran's filter and the GFW do).
func (t *residualTable) insert(key ResidualKey, e residualEntry, now time.Time) {
	key = key.normalize()
	if old, ok := t.m[key]; ok && old.until.After(e.until) {
		e.until = old.until
	}
	if _, ok := t.m[key]; !ok && len(t.m) >= t.max {
		t.prune(now)
	}
	t.m[key] = e
	t.gen++
}

// prune drops the expired entries, or the entry ending soonest if none
// has expired.
func (t *residualTable) prune(now time.Time) {
	var soonest ResidualKey
	var soonestAt time.Time
	n := len(t.m)
	for k, e := range t.m {
		if !e.until.After(now) {
			delete(t.m, k)
			continue
		}
		if soonestAt.IsZero() || e.until.Before(soonestAt) {
			soonest, soonestAt = k, e.until
		}
	}
	if len(t.m) == n && n > 0 {
		delete(t.m, soonest)
	}
}

// match returns the residual block covering flow key k at now, trying
// the 4-tuple, the 3-tuple and the server, in that order.
func (t *residualTable) match(k FlowKey, now time.Time) (ResidualKey, residualEntry, bool) {
	if len(t.m) == 0 {
		return ResidualKey{}, residualEntry{}, false
	}
	for _, kind := range [...]ResidualKind{Residual4Tuple, Residual3Tuple, ResidualServer} {
		key := residualKeyFor(kind, k)
		e, ok := t.m[key]
		if !ok {
			continue
		}
		if !e.until.After(now) {
			delete(t.m, key)
			continue
		}
		return key, e, true
	}
	return ResidualKey{}, residualEntry{}, false
}
