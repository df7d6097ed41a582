package router

import (
	"cmp"
	"fmt"
	"slices"
	"sync"
	"time"
)

// EndpointState is what the client believes about one way of reaching the
// gateway, from probes, path failures and tactics: a Policy holds one per
// transport, and optionally per transport and address.
type EndpointState uint8

const (
	// StateUnknown, the zero value: nothing is known.
	StateUnknown EndpointState = iota
	// StateOK: the endpoint works.
	StateOK
	// StateThrottled: it works, slowly or for a while; its paths score
	// worse (PolicyConfig.ThrottlePenalty) and it is dialled after the
	// others.
	StateThrottled
	// StateBlocked: it does not work; it is not dialled until its retry
	// time, unless every endpoint is blocked.
	StateBlocked
)

var endpointStateNames = [...]string{"unknown", "ok", "throttled", "blocked"}

// String returns "unknown", "ok", "throttled" or "blocked".
func (s EndpointState) String() string {
	if int(s) >= len(endpointStateNames) {
		return fmt.Sprintf("state(%d)", uint8(s))
	}
	return endpointStateNames[s]
}

// MarshalText writes the state's name.
func (s EndpointState) MarshalText() ([]byte, error) {
	if int(s) >= len(endpointStateNames) {
		return nil, fmt.Errorf("router: unknown endpoint state %d", uint8(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText reads a state's name.
func (s *EndpointState) UnmarshalText(b []byte) error {
	for i, n := range endpointStateNames {
		if n == string(b) {
			*s = EndpointState(i)
			return nil
		}
	}
	return fmt.Errorf("router: unknown endpoint state %q", b)
}

// Observation is one thing learnt about an endpoint, fed to
// Policy.Observe.
type Observation struct {
	// Transport is the transport's name; required.
	Transport string
	// Addr is the endpoint's address, or "" for every endpoint of the
	// transport.
	Addr string
	// State is what was found. StateUnknown observations are ignored.
	State EndpointState
	// RetryAfter, for StateBlocked, is the least time before the endpoint
	// is worth another try (a residual block). The policy waits at least
	// its own backoff anyway.
	RetryAfter time.Duration
	// At is when it was found. If zero, now.
	At time.Time
}

// PolicyConfig tunes a Policy. The zero value is the documented default
// for every field.
type PolicyConfig struct {
	// BlockMin and BlockMax bound how long an endpoint stays blocked after
	// a StateBlocked observation: BlockMin after the first, doubling with
	// each further one in a row, up to BlockMax. If zero, 30s and 30
	// minutes.
	BlockMin, BlockMax time.Duration
	// ThrottlePenalty multiplies the score of paths over a throttled
	// endpoint by 1 + ThrottlePenalty. If zero, 1 (scores double).
	ThrottlePenalty float64
	// MaxEntries bounds the states kept; the least recently observed go
	// first. If zero, 256.
	MaxEntries int
}

func (c PolicyConfig) withDefaults() PolicyConfig {
	c.BlockMin = or(c.BlockMin, 30*time.Second)
	c.BlockMax = or(c.BlockMax, 30*time.Minute)
	c.BlockMax = max(c.BlockMax, c.BlockMin)
	c.ThrottlePenalty = or(c.ThrottlePenalty, 1)
	c.MaxEntries = or(c.MaxEntries, 256)
	return c
}

// PolicyEntry is the state of one endpoint (Addr "" for a whole
// transport), as Policy.Entries reports it and Policy.Load restores it,
// for keeping across runs.
type PolicyEntry struct {
	Transport string        `json:"transport"`
	Addr      string        `json:"addr,omitempty"`
	State     EndpointState `json:"state"`
	// Until is when a blocked endpoint may be tried again.
	Until time.Time `json:"until,omitzero"`
	// Strikes counts the StateBlocked observations in a row; the block
	// doubles with each.
	Strikes int `json:"strikes,omitempty"`
	// At is when it was last observed.
	At time.Time `json:"at"`
}

type policyKey struct{ transport, addr string }

// Policy is the client's view of which endpoints work: a small table of
// endpoint states fed by Observe (probe verdicts, through an adapter the
// caller writes) and consulted by the session when it dials and redials
// (Config.Policy) and by the caller when it races endpoints at connect
// (Order). It is safe for concurrent use; the zero value is not usable,
// call NewPolicy.
type Policy struct {
	cfg PolicyConfig

	mu      sync.Mutex
	entries map[policyKey]*PolicyEntry
	prefer  []string // transport order from tactics
}

// NewPolicy returns an empty policy.
func NewPolicy(cfg PolicyConfig) *Policy {
	return &Policy{cfg: cfg.withDefaults(), entries: make(map[policyKey]*PolicyEntry)}
}

// Observe records an observation. A StateBlocked one blocks the endpoint
// for the larger of RetryAfter and the backoff (BlockMin doubling with
// each block in a row, up to BlockMax); StateOK and StateThrottled clear
// the block.
func (p *Policy) Observe(o Observation) {
	if o.Transport == "" || o.State == StateUnknown || o.State > StateBlocked {
		return
	}
	if o.At.IsZero() {
		o.At = time.Now()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	k := policyKey{o.Transport, o.Addr}
	e := p.entries[k]
	if e == nil {
		e = &PolicyEntry{Transport: o.Transport, Addr: o.Addr}
		p.entries[k] = e
	}
	e.State, e.At = o.State, o.At
	p.evict()
	if o.State != StateBlocked {
		e.Strikes, e.Until = 0, time.Time{}
		return
	}
	e.Strikes++
	d := p.cfg.BlockMin
	for i := 1; i < e.Strikes && d < p.cfg.BlockMax; i++ {
		d *= 2
	}
	d = max(min(d, p.cfg.BlockMax), o.RetryAfter)
	e.Until = o.At.Add(d)
}

// evict drops the least recently observed entries beyond MaxEntries.
// Called with p.mu held.
func (p *Policy) evict() {
	for len(p.entries) > p.cfg.MaxEntries {
		var old *PolicyEntry
		for _, e := range p.entries {
			if old == nil || e.At.Before(old.At) {
				old = e
			}
		}
		delete(p.entries, policyKey{old.Transport, old.Addr})
	}
}

// State returns what the policy believes about the endpoint at now and,
// when it is blocked, when it may be tried again. The entry for the
// transport and address and the one for the whole transport are
// combined: the more recent one wins. A block whose time has passed
// reads as StateUnknown (the endpoint is due for another try).
func (p *Policy) State(transport, addr string, now time.Time) (EndpointState, time.Time) {
	if p == nil {
		return StateUnknown, time.Time{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stateLocked(transport, addr, now)
}

func (p *Policy) stateLocked(transport, addr string, now time.Time) (EndpointState, time.Time) {
	e := p.entries[policyKey{transport, addr}]
	if w := p.entries[policyKey{transport, ""}]; w != nil && (e == nil || w.At.After(e.At)) {
		e = w
	}
	if e == nil {
		return StateUnknown, time.Time{}
	}
	if e.State == StateBlocked {
		if !now.Before(e.Until) {
			return StateUnknown, time.Time{}
		}
		return StateBlocked, e.Until
	}
	return e.State, time.Time{}
}

// Penalty is the factor a path's score over the endpoint is multiplied
// by: 1 + ThrottlePenalty when it is throttled, else 1.
func (p *Policy) Penalty(transport, addr string) float64 {
	if p == nil {
		return 1
	}
	if st, _ := p.State(transport, addr, time.Now()); st == StateThrottled {
		return 1 + p.cfg.ThrottlePenalty
	}
	return 1
}

// SetPreference sets the transport order the gateway's tactics
// recommend: among endpoints in the same state, those of transports
// earlier in the list are dialled first, then the others in their own
// order.
func (p *Policy) SetPreference(transports []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.prefer = slices.Clone(transports)
}

// Preference returns the order SetPreference set.
func (p *Policy) Preference() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.prefer)
}

// stateRank orders states for dialling: working first, throttled last.
func stateRank(s EndpointState) int {
	switch s {
	case StateOK:
		return 0
	case StateUnknown:
		return 1
	case StateThrottled:
		return 2
	}
	return 3
}

// Order returns the indexes of eps (only Transport and Addr are read) in
// the order to dial them at now: blocked endpoints are left out unless
// every endpoint is blocked, in which case all are returned in their own
// order; the others go by state (OK, unknown, throttled), then by the
// tactics' preference, then in their own order. A nil policy returns
// them in their own order.
func (p *Policy) Order(eps []Endpoint, now time.Time) []int {
	idx := make([]int, len(eps))
	for i := range idx {
		idx[i] = i
	}
	if p == nil {
		return idx
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	rank := make([]int, len(eps))
	pref := make([]int, len(eps))
	var out []int
	for i, e := range eps {
		st, _ := p.stateLocked(e.Transport, e.Addr, now)
		rank[i] = stateRank(st)
		pref[i] = len(p.prefer)
		if j := slices.Index(p.prefer, e.Transport); j >= 0 {
			pref[i] = j
		}
		if st != StateBlocked {
			out = append(out, i)
		}
	}
	if len(out) == 0 {
		return idx
	}
	slices.SortStableFunc(out, func(a, b int) int {
		return cmp.Or(cmp.Compare(rank[a], rank[b]), cmp.Compare(pref[a], pref[b]))
	})
	return out
}

// Entries returns a copy of every state, ordered by transport and
// address, for saving.
func (p *Policy) Entries() []PolicyEntry {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]PolicyEntry, 0, len(p.entries))
	for _, e := range p.entries {
		out = append(out, *e)
	}
	slices.SortFunc(out, func(a, b PolicyEntry) int {
		return cmp.Or(cmp.Compare(a.Transport, b.Transport), cmp.Compare(a.Addr, b.Addr))
	})
	return out
}

// Load adds saved entries (from Entries), replacing the states of the
// same endpoints. Entries without a transport or with an unknown state
// are skipped.
func (p *Policy) Load(es []PolicyEntry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range es {
		if e.Transport == "" || e.State == StateUnknown || e.State > StateBlocked || e.Strikes < 0 {
			continue
		}
		e.Strikes = min(e.Strikes, 64)
		p.entries[policyKey{e.Transport, e.Addr}] = &e
		p.evict()
	}
}

// dialOrder is the order manage tries the client's endpoints in: all of
// them in preference order without a policy, else the policy's order;
// for endpoints it leaves out (blocked), at is told when they may be
// tried again. Called with s.mu held.
func (s *Session) dialOrder(now time.Time, at func(time.Time)) []int {
	pol := s.cfg.Policy
	if pol == nil {
		idx := make([]int, len(s.eps))
		for i := range idx {
			idx[i] = i
		}
		return idx
	}
	order := pol.Order(s.cfg.Endpoints, now)
	if len(order) < len(s.cfg.Endpoints) {
		for _, ep := range s.cfg.Endpoints {
			if st, until := pol.State(ep.Transport, ep.Addr, now); st == StateBlocked {
				at(until)
			}
		}
	}
	return order
}

// onPathFailure calls Config.OnPathFailure for a client path. Called
// without s.mu held.
func (s *Session) onPathFailure(ep Endpoint) {
	if s.role == Client && s.cfg.OnPathFailure != nil {
		s.cfg.OnPathFailure(ep)
	}
}
