package main

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/commucat/commucat/backends/messaging"
	"github.com/commucat/commucat/backends/tactics"
	"github.com/commucat/commucat/core/frame"
	"github.com/commucat/commucat/core/invite"
	"github.com/commucat/commucat/core/router"
	"github.com/commucat/commucat/probes"
	"github.com/commucat/commucat/probes/endpoint"
)

// tacticsFile keeps the transport order the gateway last recommended.
const tacticsFile = "tactics.json"

// savedTactics is tacticsFile's content.
type savedTactics struct {
	Order []string  `json:"order"`
	At    time.Time `json:"at"`
}

// policyFile keeps the router policy's endpoint states between runs, in
// the client's state directory.
const policyFile = "policy.json"

// connectProbeBudget bounds the transport probes run at connect.
const connectProbeBudget = 30 * time.Second

// netPolicy drives the router's endpoint policy from transport probes: at
// connect it probes every endpoint alongside the race, after a path
// failure the endpoint that failed, and it keeps the states in the state
// directory. Its goroutines stop at close. Safe for concurrent use.
type netPolicy struct {
	dir string // "" keeps nothing
	pol *router.Policy
	reg endpoint.Builder
	log *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	probing map[string]bool // "transport@addr" being probed
	closed  bool
	round   chan struct{} // closed when the latest probes are done
	saveMu  sync.Mutex
}

// openNetPolicy loads the policy saved in dir (if any).
func openNetPolicy(dir string, reg endpoint.Builder, log *slog.Logger) *netPolicy {
	ctx, cancel := context.WithCancel(context.Background())
	n := &netPolicy{
		dir: dir, pol: router.NewPolicy(router.PolicyConfig{}), reg: reg,
		log: log.With("component", "policy"), ctx: ctx, cancel: cancel,
		probing: map[string]bool{},
	}
	if dir == "" {
		return n
	}
	b, err := os.ReadFile(filepath.Join(dir, policyFile))
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			n.log.Warn("cannot read the saved policy", "err", err)
		}
		return n
	}
	var es []router.PolicyEntry
	if err := json.Unmarshal(b, &es); err != nil {
		n.log.Warn("ignoring the saved policy", "file", policyFile, "err", err)
		return n
	}
	n.pol.Load(es)
	n.loadTactics()
	return n
}

// loadTactics applies the saved tactics to the policy's preference.
func (n *netPolicy) loadTactics() {
	b, err := os.ReadFile(filepath.Join(n.dir, tacticsFile))
	if err != nil {
		return
	}
	var t savedTactics
	if err := json.Unmarshal(b, &t); err != nil {
		n.log.Warn("ignoring the saved tactics", "file", tacticsFile, "err", err)
		return
	}
	n.pol.SetPreference(t.Order)
}

// order returns eps in the policy's dialling order, the blocked
// endpoints last: the race at connect reaches them only when the others
// failed or are slow, and they stay in the session's list so that its
// redialling (which consults the policy) tries them once their block
// ends.
func (n *netPolicy) order(eps []invite.Endpoint) []invite.Endpoint {
	reps := make([]router.Endpoint, len(eps))
	for i, e := range eps {
		reps[i] = router.Endpoint{Transport: e.Transport, Addr: e.Addr}
	}
	out := make([]invite.Endpoint, 0, len(eps))
	used := make([]bool, len(eps))
	for _, i := range n.pol.Order(reps, time.Now()) {
		out = append(out, eps[i])
		used[i] = true
	}
	for i, e := range eps {
		if !used[i] {
			out = append(out, e)
		}
	}
	return out
}

// Verdict implements probes.VerdictSink: it feeds a transport verdict to
// the policy. Verdicts about a whole network or limited to a server
// name do not name a transport and are left to the probe report.
func (n *netPolicy) Verdict(v probes.Verdict) {
	if v.Transport == "" || v.ServerName != "" {
		return
	}
	var st router.EndpointState
	switch v.State {
	case probes.StateOK:
		st = router.StateOK
	case probes.StateThrottled:
		st = router.StateThrottled
	case probes.StateBlocked:
		st = router.StateBlocked
	default:
		return
	}
	n.pol.Observe(router.Observation{Transport: v.Transport, Addr: v.Addr, State: st, RetryAfter: v.RetryAfter, At: v.At})
	n.log.Debug("transport verdict", "transport", v.Transport, "state", st)
}

// probe starts transport probes of eps in the background, skipping
// endpoints already being probed; verdicts go to the policy, which is
// saved when they are done.
func (n *netPolicy) probe(eps []invite.Endpoint) {
	n.mu.Lock()
	var todo []invite.Endpoint
	for _, e := range eps {
		k := e.Transport + "@" + e.Addr
		if n.probing[k] || n.closed {
			continue
		}
		n.probing[k] = true
		todo = append(todo, e)
	}
	if len(todo) == 0 {
		n.mu.Unlock()
		return
	}
	n.wg.Add(1)
	round := make(chan struct{})
	n.round = round
	n.mu.Unlock()
	go func() {
		defer n.wg.Done()
		defer close(round)
		defer func() {
			n.mu.Lock()
			for _, e := range todo {
				delete(n.probing, e.Transport+"@"+e.Addr)
			}
			n.mu.Unlock()
			n.save()
		}()
		ps, err := endpoint.ForInvite(todo, endpoint.Config{Transports: n.reg, Pings: 1})
		if err != nil {
			n.log.Debug("transport probes", "err", err)
			return
		}
		r, err := probes.New(probes.Config{
			Parallel: len(ps), Interval: time.Millisecond, Budget: connectProbeBudget,
			MaxResidualWait: -1, SoftwareVersion: version, Sink: n, Logger: n.log,
		})
		if err != nil {
			n.log.Debug("transport probes", "err", err)
			return
		}
		r.Run(n.ctx, ps)
	}()
}

// onPathFailure is the router's OnPathFailure hook: a targeted probe of
// the endpoint that failed.
func (n *netPolicy) onPathFailure(eps []invite.Endpoint) func(router.Endpoint) {
	return func(ep router.Endpoint) {
		for _, e := range eps {
			if e.Transport == ep.Transport && e.Addr == ep.Addr {
				n.probe([]invite.Endpoint{e})
				return
			}
		}
	}
}

// save writes the policy's states to the state directory.
func (n *netPolicy) save() {
	if n.dir == "" {
		return
	}
	n.saveMu.Lock()
	defer n.saveMu.Unlock()
	if err := writeJSON(filepath.Join(n.dir, policyFile), n.pol.Entries()); err != nil {
		n.log.Warn("cannot save the policy", "err", err)
	}
}

// close stops the probes, waits for them and saves the policy.
func (n *netPolicy) close() {
	n.mu.Lock()
	n.closed = true
	n.mu.Unlock()
	n.cancel()
	n.wg.Wait()
	n.save()
}

// wait waits for the probes started so far to finish.
func (n *netPolicy) wait() { n.wg.Wait() }

// sharing maps the sessions whose probe verdicts go to the gateway to
// their netPolicy, from connect to messagingConn.
var sharing sync.Map // *router.Session -> *netPolicy

// share marks s as a session that reports to the gateway.
func (n *netPolicy) share(s *router.Session) { sharing.Store(s, n) }

// messagingConn is the connection the messaging client reads: s itself,
// or, for a session that shares its probes, s with the tactics exchange:
// once the probes of this connect are done, the verdicts go to the
// gateway in a ProbeReport frame, and the gateway's tactics are saved
// for the next connect.
func messagingConn(s *router.Session) messaging.Conn {
	v, ok := sharing.LoadAndDelete(s)
	if !ok {
		return s
	}
	n := v.(*netPolicy)
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return s
	}
	round := n.round
	n.wg.Add(1)
	n.mu.Unlock()
	go func() {
		defer n.wg.Done()
		if round != nil {
			select {
			case <-round:
			case <-n.ctx.Done():
				return
			case <-s.Done():
				return
			}
		}
		n.sendReport(s)
	}()
	return tactics.ClientConn(s, n.onTactics)
}

// report is the policy's states as a probe report: one verdict per
// transport (the most recent), no addresses.
func (n *netPolicy) report() tactics.Payload {
	latest := map[string]router.PolicyEntry{}
	for _, e := range n.pol.Entries() {
		if l, ok := latest[e.Transport]; !ok || e.At.After(l.At) {
			latest[e.Transport] = e
		}
	}
	var p tactics.Payload
	for _, e := range n.pol.Entries() {
		if latest[e.Transport] != e || len(p.Verdicts) >= tactics.MaxVerdicts {
			continue
		}
		var st tactics.State
		switch e.State {
		case router.StateOK:
			st = tactics.StateOK
		case router.StateThrottled:
			st = tactics.StateThrottled
		case router.StateBlocked:
			st = tactics.StateBlocked
		default:
			continue
		}
		p.Verdicts = append(p.Verdicts, tactics.Verdict{Transport: e.Transport, State: st})
	}
	return p
}

// sendReport sends the report on s, if there is anything to report.
func (n *netPolicy) sendReport(s *router.Session) {
	p := n.report()
	if len(p.Verdicts) == 0 {
		return
	}
	b, err := p.Marshal()
	if err != nil {
		n.log.Debug("probe report", "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
	defer cancel()
	if err := s.Send(ctx, frame.Frame{Type: frame.ProbeReport, Payload: b}); err != nil {
		n.log.Debug("probe report not sent", "err", err)
		return
	}
	n.log.Debug("probe report sent", "verdicts", len(p.Verdicts))
}

// onTactics keeps the gateway's recommended order for the next connect
// (and the redials of this session).
func (n *netPolicy) onTactics(order []string) {
	n.log.Debug("tactics received", "order", order)
	n.pol.SetPreference(order)
	if n.dir == "" {
		return
	}
	n.saveMu.Lock()
	defer n.saveMu.Unlock()
	if err := writeJSON(filepath.Join(n.dir, tacticsFile), savedTactics{Order: order, At: time.Now().UTC()}); err != nil {
		n.log.Warn("cannot save the tactics", "err", err)
	}
}
