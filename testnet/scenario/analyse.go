package scenario

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/commucat/commucat/testnet/censor"
)

// deliveries returns, per message key, the times its recipient showed
// it, from every listener's output so far.
func (r *runner) deliveries() map[string][]time.Time {
	r.mu.Lock()
	ls := slices.Clone(r.listeners)
	r.mu.Unlock()
	out := map[string][]time.Time{}
	for _, l := range ls {
		for _, m := range parseListen(l.stdout.String()) {
			step, n, ok := ParseTag(m.Text)
			if !ok {
				continue
			}
			k := messageKey(step, n)
			out[k] = append(out[k], m.Received)
		}
	}
	return out
}

// drain waits, up to the scenario's Drain, until every message the
// gateway stored was delivered (or every listener ended) and the active
// prober, if any, has judged every server it was handed: its verdicts
// belong to the run's censor log.
func (r *runner) drain(ctx context.Context) {
	r.chatStored()
	d := r.s.Drain
	if d == 0 {
		d = DefaultDrain
	}
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	idleBefore := r.prober == nil
	for {
		del := r.deliveries()
		r.mu.Lock()
		waiting := 0
		for _, m := range r.msgs {
			if m.Stored != nil && !m.Probe && len(del[m.Key]) == 0 {
				waiting++
			}
		}
		running := 0
		for _, l := range r.listeners {
			if !l.exited() {
				running++
			}
		}
		r.mu.Unlock()
		// The prober shows idle twice in a row, a tick apart: a suspect
		// it has just taken may not show for an instant.
		idle := r.prober == nil || r.prober.Idle(r.eng)
		if (waiting == 0 || running == 0) && idle && idleBefore {
			return
		}
		idleBefore = idle
		select {
		case <-tick.C:
		case <-deadline.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// finish stops the programs, builds the report and runs the checks.
func (r *runner) finish(rep *Report, runErr error) (*Report, error) {
	r.bg.Wait()
	r.mu.Lock()
	procs := slices.Clone(r.procs)
	r.mu.Unlock()
	// Clients first, in parallel, then the gateway.
	var wg sync.WaitGroup
	for _, p := range procs {
		if p.kind != "gateway" {
			wg.Go(func() { p.stop(stopGrace) })
		}
	}
	wg.Wait()
	for _, p := range procs {
		p.stop(stopGrace)
	}
	for _, p := range procs {
		res := ProgramResult{Step: p.step, Kind: p.kind, Host: p.host, Args: p.args, Start: r.since(p.start), End: r.since(p.end), Exit: p.exitCode(), Log: p.log}
		if p.err != nil && !p.killed.Load() {
			res.Err = p.err.Error()
		}
		os.WriteFile(p.log, []byte(p.stderr.String()), 0o600)
		if p.kind == "chat" || p.kind == "listen" || p.kind == "exec" {
			if out := p.stdout.String(); len(out) < 4<<20 {
				os.WriteFile(strings.TrimSuffix(p.log, ".log")+".out", []byte(out), 0o600)
			}
		}
		rep.Programs = append(rep.Programs, res)
	}
	if r.gw != nil {
		for _, t := range r.gw.transports() {
			rep.Gateway = append(rep.Gateway, Endpoint{Transport: t, Proto: proto(t), Port: r.gw.port(t)})
		}
	}
	r.chatStored()
	r.chatResults(rep)
	del := r.deliveries()
	for _, k := range r.msgOrder {
		m := *r.msgs[k]
		for _, t := range del[k] {
			m.Delivered = append(m.Delivered, r.since(t))
		}
		rep.Messages = append(rep.Messages, m)
	}
	for i := range rep.Chats {
		r.goodput(&rep.Chats[i], rep.Messages)
	}
	rep.Probes = r.probes
	rep.Timeline = r.timeline
	rep.Notes = r.notes
	if r.eng != nil {
		rep.Censor = r.censorResult()
	}
	if r.net != nil {
		for _, h := range r.net.Stats().Hosts {
			ld := LinkDrops{Host: h.Name, Up: nonzero(h.Up.DropMap()), Down: nonzero(h.Down.DropMap())}
			rep.Links = append(rep.Links, ld)
		}
	}
	var panicked []string
	for _, p := range procs {
		if e := p.stderr.String(); strings.HasPrefix(e, "panic: ") || strings.Contains(e, "\npanic: ") {
			panicked = append(panicked, fmt.Sprintf("%s %s (%s)", p.step, p.kind, p.log))
		}
	}
	rep.Checks = append(rep.Checks, Check{Name: "no program panicked", OK: len(panicked) == 0, Detail: strings.Join(panicked, "; ")})
	rep.Checks = append(rep.Checks, r.fails...)
	rep.Checks = append(rep.Checks, r.checks(rep)...)
	if runErr != nil {
		rep.Checks = append(rep.Checks, Check{Name: "run finished", OK: false, Detail: runErr.Error()})
	}
	rep.OK = true
	for _, c := range rep.Checks {
		rep.OK = rep.OK && c.OK
	}
	return rep, runErr
}

// nonzero drops zero counters.
func nonzero(m map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// chatStored marks the messages the chat programs reported stored. The
// chats have ended when it is called.
func (r *runner) chatStored() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.chats {
		tag := ""
		if i := slices.Index(p.args, "--tag"); i >= 0 && i+1 < len(p.args) {
			tag = p.args[i+1]
		}
		for _, e := range parseChat(p.stdout.String()) {
			if e.Ev != "sent" {
				continue
			}
			if m, ok := r.msgs[messageKey(tag, e.N)]; ok {
				st := r.since(e.T)
				m.Stored = &st
				if e.Start != nil {
					m.Sent = r.since(*e.Start)
				}
				m.Attempts = 1
			}
		}
	}
}

// chatResults reads the chat programs' events.
func (r *runner) chatResults(rep *Report) {
	for _, p := range r.chats {
		c := ChatResult{Step: p.step, User: p.user}
		for i, a := range p.args {
			if i+1 >= len(p.args) {
				break
			}
			switch a {
			case "--to":
				c.To = p.args[i+1]
			case "--transport":
				c.Transport = p.args[i+1]
			}
		}
		for _, e := range parseChat(p.stdout.String()) {
			switch e.Ev {
			case "session":
				c.Sessions = append(c.Sessions, e.Transport)
			case "sent":
				c.Stored++
			case "stats":
				c.Samples = append(c.Samples, PathSample{T: r.since(e.T), Switches: e.Switches, Paths: e.Paths})
			case "error":
				if len(c.Errors) < 20 {
					c.Errors = append(c.Errors, e.Err)
				}
			case "done":
				c.Sent = e.Sent
			}
		}
		if !slices.ContainsFunc(parseChat(p.stdout.String()), func(e ChatEvent) bool { return e.Ev == "done" }) {
			c.Sent = c.Stored
			c.Errors = append(c.Errors, fmt.Sprintf("chat ended without its summary (%v): %s", p.err, lastLine(p.stderr.String())))
		}
		rep.Chats = append(rep.Chats, c)
	}
}

// goodput fills in c's delivery counts and goodput from the messages.
func (r *runner) goodput(c *ChatResult, msgs []Message) {
	first, last := -1.0, 0.0
	for _, m := range msgs {
		if m.Step != c.Step {
			continue
		}
		if first < 0 || m.Sent < first {
			first = m.Sent
		}
		if len(m.Delivered) == 0 {
			continue
		}
		c.Delivered++
		c.Bytes += int64(m.Size)
		last = max(last, m.Delivered[0])
	}
	if c.Delivered > 0 && last > first {
		c.GoodputMbps = float64(c.Bytes) * 8 / (last - first) / 1e6
	}
}

// terminalActions are the action-log actions that block a flow or server.
var terminalActions = []string{
	string(censor.ActionDrop), string(censor.ActionReset), string(censor.ActionFreeze), string(censor.ActionCutOff),
	censor.EventResidual, censor.EventBlock,
}

// transportOf returns the gateway transport an action-log event's flow
// went to, or "".
func (r *runner) transportOf(e censor.Event) string {
	if r.gw == nil {
		return ""
	}
	ap, err := netip.ParseAddrPort(e.Server)
	if err != nil || ap.Addr() != r.net.Addr(r.gw.Host) {
		return ""
	}
	for _, t := range r.gw.transports() {
		if r.gw.port(t) == ap.Port() && (e.Proto == "" || e.Proto == proto(t)) {
			return t
		}
	}
	return ""
}

// censorResult reads the action log.
func (r *runner) censorResult() *CensorResult {
	cr := &CensorResult{Profile: r.prof.Name, Log: r.elog, Stats: r.eng.Stats()}
	f, err := os.Open(r.elog)
	if err != nil {
		r.notes = append(r.notes, "censor log: "+err.Error())
		return cr
	}
	defer f.Close()
	evs, err := censor.ParseLog(f)
	if err != nil {
		r.notes = append(r.notes, err.Error())
	}
	cr.Events = len(evs)
	type key struct{ rule, action, transport string }
	counts := map[key]*RuleCount{}
	verdicts := map[string]*TransportVerdict{}
	add := func(list *[]string, rule string) {
		if !slices.Contains(*list, rule) {
			*list = append(*list, rule)
		}
	}
	for _, e := range evs {
		t := r.transportOf(e)
		k := key{e.Rule, e.Action, t}
		rc, ok := counts[k]
		if !ok {
			rc = &RuleCount{Rule: e.Rule, Action: e.Action, Transport: t, First: r.since(e.Time)}
			counts[k] = rc
		}
		rc.Count++
		if t == "" {
			continue
		}
		v, ok := verdicts[t]
		if !ok {
			v = &TransportVerdict{Transport: t}
			verdicts[t] = v
		}
		switch {
		case slices.Contains(terminalActions, e.Action):
			add(&v.Blocked, e.Rule)
		case e.Action == string(censor.ActionThrottle):
			add(&v.Throttled, e.Rule)
		case e.Action == censor.EventProbeResult:
			add(&v.Other, e.Rule+" probe: "+e.Detail["verdict"])
		default:
			add(&v.Other, e.Rule)
		}
	}
	for _, rc := range counts {
		cr.Rules = append(cr.Rules, *rc)
	}
	sort.Slice(cr.Rules, func(i, j int) bool {
		a, b := cr.Rules[i], cr.Rules[j]
		if a.First != b.First {
			return a.First < b.First
		}
		return a.Rule+a.Action+a.Transport < b.Rule+b.Action+b.Transport
	})
	for _, t := range r.gw.transportsOrNil() {
		if v, ok := verdicts[t]; ok {
			cr.Transports = append(cr.Transports, *v)
		} else {
			cr.Transports = append(cr.Transports, TransportVerdict{Transport: t})
		}
	}
	return cr
}

// transportsOrNil returns the transports of a possibly nil gateway.
func (g *Gateway) transportsOrNil() []string {
	if g == nil {
		return nil
	}
	return g.transports()
}

// matches reports whether the report's action log has an event m selects.
func matches(rep *Report, m RuleMatch) (int, bool) {
	if rep.Censor == nil {
		return 0, false
	}
	n := 0
	for _, rc := range rep.Censor.Rules {
		if (m.Rule == "" || rc.Rule == m.Rule) && (m.Action == "" || rc.Action == m.Action) && (m.Transport == "" || rc.Transport == m.Transport) {
			n += rc.Count
		}
	}
	return n, n > 0
}

// checks evaluates the expect section.
func (r *runner) checks(rep *Report) []Check {
	x := r.s.Expect
	var out []Check
	delivered, dups, stored, undelivered := 0, 0, 0, 0
	var dupKeys, lostKeys, unsent []string
	for _, m := range rep.Messages {
		if len(m.Delivered) > 1 {
			dups++
			dupKeys = append(dupKeys, m.Key)
		}
		if m.Probe {
			continue
		}
		if len(m.Delivered) > 0 {
			delivered++
		}
		if m.Stored != nil {
			stored++
			if len(m.Delivered) == 0 {
				undelivered++
				lostKeys = append(lostKeys, m.Key)
			}
		} else {
			unsent = append(unsent, m.Key)
		}
	}
	if x.Delivered > 0 {
		out = append(out, Check{Name: fmt.Sprintf("at least %d messages delivered", x.Delivered), OK: delivered >= x.Delivered,
			Detail: fmt.Sprintf("%d of %d delivered", delivered, len(rep.Messages))})
	}
	if x.AllDelivered {
		out = append(out, Check{Name: "every stored message delivered", OK: undelivered == 0,
			Detail: fmt.Sprintf("%d stored, %d not delivered %s", stored, undelivered, short(lostKeys))})
	}
	if x.ExactlyOnce {
		out = append(out, Check{Name: "no message shown twice", OK: dups == 0, Detail: fmt.Sprintf("%d shown twice %s", dups, short(dupKeys))})
	}
	if x.SendsSucceed {
		out = append(out, Check{Name: "every send succeeded", OK: len(unsent) == 0, Detail: fmt.Sprintf("%d of %d not stored %s", len(unsent), len(rep.Messages), short(unsent))})
	}
	if rc := x.Recover; rc != nil {
		worst, n, bad := 0.0, 0, 0
		for _, m := range rep.Messages {
			if m.Probe || m.Sent < rc.After.Seconds() {
				continue
			}
			n++
			l, ok := m.Latency()
			if !ok {
				bad++
				continue
			}
			worst = max(worst, l)
			if l > rc.Within.Seconds() {
				bad++
			}
		}
		out = append(out, Check{Name: fmt.Sprintf("messages sent after %s delivered within %s", rc.After, rc.Within), OK: n > 0 && bad == 0,
			Detail: fmt.Sprintf("%d messages, %d late or lost, worst latency %.2fs", n, bad, worst)})
	}
	for _, m := range x.Fired {
		n, ok := matches(rep, m)
		out = append(out, Check{Name: "censor fired " + m.String(), OK: ok, Detail: strconv.Itoa(n) + " events"})
	}
	for _, m := range x.NotFired {
		n, ok := matches(rep, m)
		out = append(out, Check{Name: "censor did not fire " + m.String(), OK: !ok, Detail: strconv.Itoa(n) + " events"})
	}
	for _, t := range x.Blocked {
		tried, failed := probeOutcome(rep, t)
		out = append(out, Check{Name: "probe finds " + t + " blocked", OK: failed > 0, Detail: fmt.Sprintf("%d attempts, %d failed", tried, failed)})
	}
	for _, t := range x.Open {
		tried, failed := probeOutcome(rep, t)
		out = append(out, Check{Name: "probe finds " + t + " open", OK: tried > 0 && failed == 0, Detail: fmt.Sprintf("%d attempts, %d failed", tried, failed)})
	}
	return out
}

// probeOutcome counts the probe attempts of transport t with the
// client's own ClientHello (no --fingerprint).
func probeOutcome(rep *Report, t string) (tried, failed int) {
	for _, p := range rep.Probes {
		if p.Transport == t && p.Fingerprint == "" {
			tried++
			if !p.OK {
				failed++
			}
		}
	}
	return tried, failed
}

// short lists at most five keys.
func short(keys []string) string {
	if len(keys) == 0 {
		return ""
	}
	if len(keys) > 5 {
		return "(" + strings.Join(keys[:5], ", ") + ", ...)"
	}
	return "(" + strings.Join(keys, ", ") + ")"
}
