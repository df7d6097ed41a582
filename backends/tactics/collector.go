package tactics

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"log/slog"
	"math"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/commucat/commucat/core/frame"
	"github.com/commucat/commucat/core/router"
)

// Conn is the side of a session the collector reads and answers on;
// *router.Session is one.
type Conn interface {
	Send(ctx context.Context, frames ...frame.Frame) error
	Recv(ctx context.Context) (frame.Frame, error)
}

// NetworkKey identifies a client's network without its address (see the
// package doc).
type NetworkKey [16]byte

// Config tunes a Collector. The zero value is the documented default for
// every field.
type Config struct {
	// Salt keys the network hashes. If nil, 32 random bytes.
	Salt []byte
	// MaxNetworks bounds the networks kept. If zero, 4096.
	MaxNetworks int
	// HalfLife is how fast counts fade. If zero, 1 hour.
	HalfLife time.Duration
	// MaxReports bounds the reports one session may send; later ones are
	// ignored. If zero, 4.
	MaxReports int
	// Logger receives debug records. If nil, nothing is logged.
	Logger *slog.Logger
}

// counts are one transport's decayed verdict counts on one network.
type counts struct {
	ok, bad float64 // throttled counts half bad
	at      time.Time
}

// network is what the collector knows about one network.
type network struct {
	transports map[string]*counts
	at         time.Time
}

// Collector aggregates clients' transport verdicts per network and
// answers with tactics. It is safe for concurrent use. It keeps at most
// MaxNetworks networks of at most MaxVerdicts transports each.
type Collector struct {
	cfg  Config
	salt []byte
	log  *slog.Logger

	mu   sync.Mutex
	nets map[NetworkKey]*network
}

// NewCollector returns an empty collector.
func NewCollector(cfg Config) *Collector {
	c := &Collector{cfg: cfg, nets: make(map[NetworkKey]*network)}
	if c.cfg.MaxNetworks <= 0 {
		c.cfg.MaxNetworks = 4096
	}
	if c.cfg.HalfLife <= 0 {
		c.cfg.HalfLife = time.Hour
	}
	if c.cfg.MaxReports <= 0 {
		c.cfg.MaxReports = 4
	}
	c.salt = append([]byte(nil), cfg.Salt...)
	if len(c.salt) == 0 {
		c.salt = make([]byte, 32)
		rand.Read(c.salt)
	}
	c.log = cfg.Logger
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With("component", "tactics")
	return c
}

// Key returns addr's network key: its /16 (IPv4) or /32 (IPv6) prefix,
// hashed with the salt. ok is false for an invalid address.
func (c *Collector) Key(addr netip.Addr) (k NetworkKey, ok bool) {
	if !addr.IsValid() {
		return k, false
	}
	addr = addr.Unmap()
	bits := 32
	if addr.Is4() {
		bits = 16
	}
	p, err := addr.Prefix(bits)
	if err != nil {
		return k, false
	}
	h := sha256.New()
	h.Write(c.salt)
	b, _ := p.MarshalBinary()
	h.Write(b)
	copy(k[:], h.Sum(nil))
	return k, true
}

// decay fades n's counts to now. Called with c.mu held.
func (c *Collector) decay(x *counts, now time.Time) {
	if dt := now.Sub(x.at); dt > 0 {
		f := math.Exp2(-float64(dt) / float64(c.cfg.HalfLife))
		x.ok, x.bad = x.ok*f, x.bad*f
	}
	x.at = now
}

// Observe adds a report's verdicts to the counts of key's network. A
// report counts once for each transport: a verdict after the first for
// the same transport is ignored, so that one report cannot weigh as many.
func (c *Collector) Observe(key NetworkKey, vs []Verdict, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nets[key]
	if n == nil {
		n = &network{transports: make(map[string]*counts)}
		c.nets[key] = n
	}
	n.at = now
	c.evict(key)
	seen := make(map[string]bool, len(vs))
	for _, v := range vs {
		if seen[v.Transport] {
			continue
		}
		seen[v.Transport] = true
		x := n.transports[v.Transport]
		if x == nil {
			if len(n.transports) >= MaxVerdicts {
				continue
			}
			x = &counts{at: now}
			n.transports[v.Transport] = x
		}
		c.decay(x, now)
		switch v.State {
		case StateOK:
			x.ok++
		case StateThrottled:
			x.ok += 0.5
			x.bad += 0.5
		case StateBlocked:
			x.bad++
		}
	}
}

// evict drops the least recently reported networks beyond MaxNetworks,
// never keep, the network being reported on (whose report may carry an
// earlier time than others when reports are handled concurrently).
// Called with c.mu held.
func (c *Collector) evict(keep NetworkKey) {
	for len(c.nets) > c.cfg.MaxNetworks {
		var oldK NetworkKey
		var old *network
		for k, n := range c.nets {
			if k == keep {
				continue
			}
			if old == nil || n.at.Before(old.at) {
				oldK, old = k, n
			}
		}
		delete(c.nets, oldK)
	}
}

// Order returns the transports of key's network, best first: by the
// share of OK verdicts (with one OK and one bad as prior, so that few
// reports weigh little), then by name. Transports whose counts faded
// below a hundredth of a report are left out.
func (c *Collector) Order(key NetworkKey, now time.Time) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nets[key]
	if n == nil {
		return nil
	}
	type scored struct {
		name  string
		score float64
	}
	var ss []scored
	for name, x := range n.transports {
		c.decay(x, now)
		if x.ok+x.bad < 0.01 {
			continue
		}
		ss = append(ss, scored{name, (x.ok + 1) / (x.ok + x.bad + 2)})
	}
	slices.SortFunc(ss, func(a, b scored) int {
		return cmp.Or(cmp.Compare(b.score, a.score), cmp.Compare(a.name, b.name))
	})
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.name
	}
	return out
}

// Networks returns how many networks the collector keeps.
func (c *Collector) Networks() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.nets)
}

// Wrap returns conn with the collector in its receive path: Recv answers
// ProbeReport frames itself (aggregating the report under the network of
// remote, the client's address as the gateway sees it, and sending the
// tactics back) and returns every other frame. Malformed reports and
// reports beyond MaxReports are dropped. remote is called once per
// report; it may return an invalid address, and the report is then
// dropped.
func (c *Collector) Wrap(conn Conn, remote func() netip.Addr) Conn {
	return &gatewayConn{Conn: conn, c: c, remote: remote}
}

type gatewayConn struct {
	Conn
	c       *Collector
	remote  func() netip.Addr
	reports int
}

// Recv returns the next frame that is not a probe report.
func (g *gatewayConn) Recv(ctx context.Context) (frame.Frame, error) {
	for {
		f, err := g.Conn.Recv(ctx)
		if err != nil || f.Type != frame.ProbeReport {
			return f, err
		}
		if err := g.handle(ctx, f.Payload); err != nil {
			return frame.Frame{}, err
		}
	}
}

// handle aggregates one report and answers it; it returns only errors
// of the session.
func (g *gatewayConn) handle(ctx context.Context, b []byte) error {
	if g.reports >= g.c.cfg.MaxReports {
		return nil
	}
	g.reports++
	p, err := Parse(b)
	if err != nil || len(p.Verdicts) == 0 {
		g.c.log.Debug("dropping a probe report", "err", err)
		return nil
	}
	key, ok := g.c.Key(g.remote())
	if !ok {
		return nil
	}
	now := time.Now()
	g.c.Observe(key, p.Verdicts, now)
	reply, err := Payload{Order: g.c.Order(key, now)}.Marshal()
	if err != nil {
		return nil
	}
	return g.Conn.Send(ctx, frame.Frame{Type: frame.ProbeReport, Payload: reply})
}

// ClientConn returns conn with the client's side of tactics in its
// receive path: Recv passes the Order of every well-formed ProbeReport
// frame to onTactics and returns every other frame. onTactics is called
// from Recv's goroutine and must not block.
func ClientConn(conn Conn, onTactics func(order []string)) Conn {
	return &clientConn{Conn: conn, on: onTactics}
}

type clientConn struct {
	Conn
	on func([]string)
}

// Recv returns the next frame that is not tactics.
func (c *clientConn) Recv(ctx context.Context) (frame.Frame, error) {
	for {
		f, err := c.Conn.Recv(ctx)
		if err != nil || f.Type != frame.ProbeReport {
			return f, err
		}
		if p, err := Parse(f.Payload); err == nil && len(p.Verdicts) == 0 {
			c.on(p.Order)
		}
	}
}

// StatsSource is what SessionRemote reads; *router.Session is one.
type StatsSource interface {
	Stats() router.Stats
}

// SessionRemote returns a remote function for Wrap that reads the
// client's address from the session's first live path (on the gateway a
// path's Addr is the address the connection came from).
func SessionRemote(s StatsSource) func() netip.Addr {
	return func() netip.Addr {
		for _, p := range s.Stats().Paths {
			if p.State == router.PathDead {
				continue
			}
			if ap, err := netip.ParseAddrPort(p.Addr); err == nil {
				return ap.Addr()
			}
		}
		return netip.Addr{}
	}
}
