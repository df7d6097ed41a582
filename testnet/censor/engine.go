package censor

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"github.com/commucat/commucat/testnet/packet"
)

// Direction says how a packet crosses the censor. Its values are those of
// testnet/router.Direction, so the router converts one into the other.
type Direction uint8

// Directions.
const (
	// Outbound is a packet from an inside (censored) host to an outside
	// host.
	Outbound Direction = iota + 1
	// Inbound is a packet from an outside host to an inside host.
	Inbound
	// Local is a packet between two hosts of the same side; the engine
	// passes it uninspected.
	Local
)

// String returns "outbound", "inbound" or "local".
func (d Direction) String() string {
	switch d {
	case Outbound:
		return "outbound"
	case Inbound:
		return "inbound"
	case Local:
		return "local"
	}
	return "unknown"
}

func (d Direction) reverse() Direction {
	switch d {
	case Outbound:
		return Inbound
	case Inbound:
		return Outbound
	}
	return d
}

// PacketAction is what happens to the packet an Engine inspected. Its
// values are those of testnet/router.Action.
type PacketAction uint8

// Packet actions.
const (
	// Pass forwards the packet, after Verdict.Delay.
	Pass PacketAction = iota
	// Drop discards it.
	Drop
	// Replace forwards Verdict.Packet instead, after Verdict.Delay.
	Replace
)

// String returns "pass", "drop" or "replace".
func (a PacketAction) String() string {
	switch a {
	case Pass:
		return "pass"
	case Drop:
		return "drop"
	case Replace:
		return "replace"
	}
	return "unknown"
}

// Verdict is the engine's answer for one packet; the zero Verdict passes
// it unchanged and at once. It has the shape of testnet/router.Verdict.
type Verdict struct {
	// Action is what happens to the packet.
	Action PacketAction
	// Delay holds a passed or replaced packet this long first: a
	// throttled flow's added delay and rate-limit queueing.
	Delay time.Duration
	// Packet is the replacement for Replace: the server's segment that
	// crosses a cut-off threshold, truncated.
	Packet []byte
	// Inject are packets the censor sends, each routed by its
	// destination address: forged RSTs, forged DNS answers. They are new
	// slices the caller owns.
	Inject []Injection
}

// Injection is one packet the censor sends.
type Injection struct {
	// Packet is a whole IP packet with correct checksums.
	Packet []byte
	// Delay is how long after the inspected packet it is sent.
	Delay time.Duration
}

// Suspect is a server a rule with ActionProbe handed to the active
// prober, with the first data packet its client sent.
type Suspect struct {
	Time   time.Time
	Rule   string
	Client netip.AddrPort
	Server netip.AddrPort
	// First is the client's first data payload, copied.
	First []byte
}

// DefaultSuspectQueue is the capacity of the queue of suspects waiting
// for the prober.
const DefaultSuspectQueue = 64

// Config configures an Engine. The zero value is a censor that passes
// everything.
type Config struct {
	// Profile holds the rules; nil passes every packet.
	Profile *Profile
	// Seed seeds every random choice of the engine (FET blocking draws,
	// throttle losses, per-flow byte thresholds), so a run repeats.
	Seed uint64
	// Log receives the action log, one JSON Event per line; nil discards
	// it. It is written while the engine's lock is held.
	Log io.Writer
	// Exempt are address ranges whose packets are never inspected: the
	// censor's own prober host, typically.
	Exempt []netip.Prefix
	// SuspectQueue is the capacity of the suspect queue; if zero,
	// DefaultSuspectQueue.
	SuspectQueue int
}

// Stats are an Engine's counters.
type Stats struct {
	Packets   uint64 // inspected (not Local, not exempt)
	Dropped   uint64
	Replaced  uint64
	Delayed   uint64
	Injected  uint64
	Malformed uint64 // not parseable as IP: passed
	Events    uint64
	LogErrors uint64 // writes to Config.Log that failed
	// SuspectsDropped counts suspects lost to a full queue.
	SuspectsDropped uint64
	Flows           int // in the table now
	FlowsCreated    uint64
	FlowsEvicted    uint64
	FlowsExpired    uint64
	Residuals       int // residual-block entries now, expired ones included
}

// Engine is the testnet's censor: a flow table fed with every packet that
// crosses the border, the rules of a Profile evaluated over each flow,
// residual-block tables, packet injection and the action log.
//
// For each packet the engine finds or creates its flow (5-tuple; the
// client is the side that sent the first packet seen), checks the
// residual blocks, applies what earlier rules decided for the flow
// (drop, cut-off, throttle), records the client's first data packets and
// reassembles its TCP stream in order when a rule needs it, and evaluates
// the rules still undecided for the flow. Flows expire after
// FlowConfig.Idle without packets; when the table is full the flow idle
// longest is evicted. Time is what the caller passes: the engine reads
// no clock, so it runs as well on simulated time.
//
// An Engine is safe for concurrent use: one mutex serialises Packet.
type Engine struct {
	mu         sync.Mutex
	prof       *Profile
	name       string
	rules      []*compiledRule
	needFirst  bool
	needStream uint64 // rules that read the reassembled stream
	reassembly int
	flows      *flowTable
	res        *residualTable
	rnd        *rand.Rand
	seed       uint64
	log        io.Writer
	logBuf     []byte
	exempt     []netip.Prefix
	suspects   chan Suspect
	pkt        packet.Packet
	stats      Stats
}

// New returns an engine running cfg.Profile. The profile must be valid
// (ParseProfile validates it); New validates it again.
func New(cfg Config) (*Engine, error) {
	p := cfg.Profile
	if p == nil {
		p = &Profile{Name: "none"}
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	q := cfg.SuspectQueue
	if q <= 0 {
		q = DefaultSuspectQueue
	}
	e := &Engine{
		prof:     p,
		name:     p.Name,
		rnd:      rand.New(rand.NewPCG(cfg.Seed, 0x63656e736f72)), // "censor"
		seed:     cfg.Seed,
		log:      cfg.Log,
		exempt:   append([]netip.Prefix(nil), cfg.Exempt...),
		suspects: make(chan Suspect, q),
	}
	idle, maxFlows, maxRes := p.Flows.Idle, p.Flows.Max, p.Flows.Residuals
	if idle == 0 {
		idle = DefaultFlowIdle
	}
	if maxFlows == 0 {
		maxFlows = DefaultMaxFlows
	}
	if maxRes == 0 {
		maxRes = DefaultMaxResiduals
	}
	e.reassembly = p.Flows.Reassembly
	if e.reassembly == 0 {
		e.reassembly = DefaultHelloLimit
	}
	e.flows = newFlowTable(maxFlows, idle)
	e.res = newResidualTable(maxRes)
	for i := range p.Rules {
		r, err := compileRule(i, &p.Rules[i])
		if err != nil {
			return nil, err
		}
		e.rules = append(e.rules, r)
		e.needFirst = e.needFirst || r.needFirst
		if r.needStream {
			e.needStream |= 1 << i
		}
	}
	return e, nil
}

// Profile returns the profile the engine runs.
func (e *Engine) Profile() *Profile { return e.prof }

// Suspects returns the queue of servers handed to the active prober.
func (e *Engine) Suspects() <-chan Suspect { return e.suspects }

// Stats returns the engine's counters.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.stats
	s.Flows = len(e.flows.m)
	s.FlowsEvicted = e.flows.evicted
	s.FlowsExpired = e.flows.expired
	s.Residuals = len(e.res.m)
	return s
}

// Block adds a residual block of key, from now for d, whose flows are
// dropped, and logs it as an EventBlock under rule with detail. The
// prober calls it for the servers it judges to be proxies.
func (e *Engine) Block(now time.Time, key ResidualKey, d time.Duration, rule string, detail map[string]string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	key = key.normalize()
	e.res.insert(key, residualEntry{until: now.Add(d), rule: rule, action: ResidualDrop}, now)
	ev := Event{Time: now.UTC(), Profile: e.name, Rule: rule, Action: EventBlock, Proto: protoName(key.Proto), Server: key.Server.String(), Detail: detail}
	if key.Client.IsValid() {
		ev.Client = key.Client.String()
	}
	if ev.Detail == nil {
		ev.Detail = map[string]string{}
	}
	ev.Detail["residual-key"] = string(key.Kind)
	ev.Detail["for"] = d.String()
	e.emit(ev)
}

// Record writes ev to the action log, with the profile's name.
func (e *Engine) Record(ev Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if ev.Profile == "" {
		ev.Profile = e.name
	}
	e.emit(ev)
}

// emit writes one log line. The caller holds e.mu.
func (e *Engine) emit(ev Event) {
	e.stats.Events++
	if e.log == nil {
		return
	}
	b, err := json.Marshal(ev)
	if err != nil {
		e.stats.LogErrors++
		return
	}
	e.logBuf = append(append(e.logBuf[:0], b...), '\n')
	if _, err := e.log.Write(e.logBuf); err != nil {
		e.stats.LogErrors++
	}
}

// exempted reports whether a packet between a and b is exempt.
func (e *Engine) exempted(a, b netip.Addr) bool {
	for _, p := range e.exempt {
		if p.Contains(a) || p.Contains(b) {
			return true
		}
	}
	return false
}

// Packet inspects one IP packet crossing the border in direction dir at
// time now, and returns what to do with it. pkt is only read, and not
// kept after Packet returns. Packets that do not parse, fragments, and
// protocols other than TCP and UDP pass.
func (e *Engine) Packet(dir Direction, pkt []byte, now time.Time) Verdict {
	if dir == Local {
		return Verdict{}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.rules) == 0 && len(e.res.m) == 0 {
		e.stats.Packets++ // nothing to censor: no flow state either
		return Verdict{}
	}
	p := &e.pkt
	if err := packet.ParseInto(p, pkt); err != nil {
		e.stats.Malformed++
		return Verdict{}
	}
	if len(e.exempt) > 0 && e.exempted(p.Src, p.Dst) {
		return Verdict{}
	}
	e.stats.Packets++
	if p.Fragment || (!p.IsTCP() && !p.IsUDP()) {
		return Verdict{}
	}
	e.flows.expire(now)
	f, side := e.flows.lookup(p.Protocol, p.SrcAddrPort(), p.DstAddrPort())
	if f != nil && side == Client && p.IsTCP() && p.TCP.Flags&(packet.SYN|packet.ACK|packet.RST) == packet.SYN {
		if s, ok := f.tcp.Next(Client); f.fin || (ok && s != p.TCP.Seq+1) {
			e.flows.remove(f) // the 5-tuple is reused by a new connection
			f = nil
		}
	}
	if f == nil {
		if p.IsTCP() && p.TCP.Flags&packet.RST != 0 {
			return Verdict{} // a reset opens no flow
		}
		f, side = e.newFlow(dir, p, now)
	}
	e.flows.touch(f, now)
	f.pkts[side]++
	f.bytes[side] += uint64(len(p.Payload))

	var v Verdict
	if f.resGen != e.res.gen && f.block == blockNone {
		f.resGen = e.res.gen
		e.checkResidual(f, side, p, now, &v)
	}
	switch f.block {
	case blockAll:
		v.Action = Drop
		e.count(&v)
		return v
	case blockS2C:
		e.cut(f, side, p, &v)
		if v.Action == Drop {
			e.count(&v)
			return v
		}
	}
	if side == Client && len(p.Payload) > 0 {
		if e.needFirst {
			f.addFirst(p.Payload)
		}
		if f.isTCP && f.live&e.needStream != 0 {
			f.reassemble(p.TCP.Seq, p.Payload, e.reassembly)
		}
	}
	observed := false
	if f.live != 0 {
		observed = e.evaluate(f, side, p, now, &v)
		f.release(e.needStream)
	}
	if f.throttle != nil && v.Action != Drop {
		e.applyThrottle(f, side, len(pkt), now, &v)
	}
	if v.Action == Pass && f.isTCP && !observed {
		f.tcp.Observe(p)
	}
	if p.IsTCP() && p.TCP.Flags&(packet.FIN|packet.RST) != 0 {
		f.fin = true
	}
	e.count(&v)
	return v
}

// count updates the verdict counters.
func (e *Engine) count(v *Verdict) {
	switch v.Action {
	case Drop:
		e.stats.Dropped++
	case Replace:
		e.stats.Replaced++
	}
	if v.Delay > 0 && v.Action != Drop {
		e.stats.Delayed++
	}
	e.stats.Injected += uint64(len(v.Inject))
}

// newFlow creates the flow of p, the first packet seen of it.
func (e *Engine) newFlow(dir Direction, p *packet.Packet, now time.Time) (*flow, Side) {
	key := FlowKey{Proto: p.Protocol, Client: p.SrcAddrPort(), Server: p.DstAddrPort()}
	side, initiator := Client, dir
	if p.IsTCP() && p.TCP.Flags.Has(packet.SYN|packet.ACK) {
		// A SYN+ACK first: its receiver opened the connection.
		key.Client, key.Server = key.Server, key.Client
		side, initiator = Server, dir.reverse()
	}
	f := &flow{key: key, initiator: initiator, start: now, last: now, isTCP: p.IsTCP()}
	f.tcp = TCPState{Client: key.Client, Server: key.Server}
	e.flows.insert(f)
	e.stats.FlowsCreated++
	if len(e.rules) > 0 {
		f.sticky = make([]uint16, len(e.rules))
		for i, r := range e.rules {
			if r.inScope(f) {
				f.live |= 1 << i
			}
		}
	}
	return f, side
}

// checkResidual applies a residual block covering f, if any.
func (e *Engine) checkResidual(f *flow, side Side, p *packet.Packet, now time.Time, v *Verdict) {
	key, ent, ok := e.res.match(f.key, now)
	if !ok {
		return
	}
	f.block = blockAll
	f.live = 0
	if ent.action == ResidualReset && f.isTCP {
		if side == Client && p.TCP.Flags&(packet.SYN|packet.ACK) == packet.SYN {
			// Answer the SYN as a closed port would: RST+ACK of its
			// sequence number plus one.
			if b, err := packet.BuildTCP(packet.TCPSpec{Src: f.key.Server, Dst: f.key.Client, Ack: p.TCP.Seq + 1, Flags: packet.RST | packet.ACK}); err == nil {
				v.Inject = append(v.Inject, Injection{Packet: b})
			}
		} else {
			e.resets(f, v)
		}
	}
	e.emit(eventFor(now, e.name, ent.rule, EventResidual, f.key, map[string]string{
		"residual-key": string(key.Kind), "residual-action": string(ent.action),
		"until": ent.until.UTC().Format(time.RFC3339Nano),
	}))
}

// resets injects a RST+ACK toward each end of f's TCP connection, with
// the sequence numbers observed so far (a RST without ACK where the
// acknowledgement number is unknown).
func (e *Engine) resets(f *flow, v *Verdict) {
	for _, to := range [...]Side{Client, Server} {
		b, err := f.tcp.Forge(to, packet.RST|packet.ACK, nil)
		if err != nil {
			b, err = f.tcp.Forge(to, packet.RST, nil)
		}
		if err == nil {
			v.Inject = append(v.Inject, Injection{Packet: b})
		}
	}
}

// cut applies a cut-off to a server segment: data at or beyond cutSeq
// (in the server's sequence space) is dropped, a segment crossing it is
// truncated to end there.
func (e *Engine) cut(f *flow, side Side, p *packet.Packet, v *Verdict) {
	if side != Server || !f.isTCP || (len(p.Payload) == 0 && p.TCP.Flags&packet.FIN == 0) {
		return
	}
	keep := int32(f.cutSeq - p.TCP.Seq)
	switch {
	case keep <= 0:
		v.Action = Drop
	case int(keep) < len(p.Payload):
		b, err := packet.BuildTCP(packet.TCPSpec{
			Src: p.SrcAddrPort(), Dst: p.DstAddrPort(), Seq: p.TCP.Seq, Ack: p.TCP.Ack,
			Flags: p.TCP.Flags &^ (packet.FIN | packet.PSH), Window: p.TCP.Window,
			Options: p.TCP.Options, TTL: p.TTL, ID: p.ID, Payload: p.Payload[:keep],
		})
		if err != nil {
			v.Action = Drop
			return
		}
		v.Action, v.Packet = Replace, b
	}
}

// throttleState is a throttled flow's parameters and rate-limit clocks.
type throttleState struct {
	t    Throttle
	on   [2]bool      // per sending side
	next [2]time.Time // when each side's rate limiter is free
}

func newThrottle(t Throttle) *throttleState {
	s := &throttleState{t: t}
	switch t.Direction {
	case "c2s":
		s.on[Client] = true
	case "s2c":
		s.on[Server] = true
	default:
		s.on = [2]bool{true, true}
	}
	if s.t.Queue == 0 {
		s.t.Queue = time.Second
	}
	return s
}

// applyThrottle loses, delays and rate-limits a packet of n bytes of a
// throttled flow.
func (e *Engine) applyThrottle(f *flow, side Side, n int, now time.Time, v *Verdict) {
	ts := f.throttle
	if !ts.on[side] {
		return
	}
	if ts.t.Loss > 0 && e.rnd.Float64() < ts.t.Loss {
		v.Action = Drop
		return
	}
	d := ts.t.Delay
	if ts.t.Rate > 0 {
		start := now
		if ts.next[side].After(now) {
			start = ts.next[side]
		}
		depart := start.Add(time.Duration(int64(n) * int64(time.Second) / int64(ts.t.Rate)))
		if depart.Sub(now) > ts.t.Queue {
			v.Action = Drop // drop-tail: the queue is full
			return
		}
		ts.next[side] = depart
		d += depart.Sub(now)
	}
	v.Delay += d
}

// suspect hands f's server to the prober, without blocking.
func (e *Engine) suspect(f *flow, rule string, now time.Time) {
	s := Suspect{Time: now, Rule: rule, Client: f.key.Client, Server: f.key.Server}
	if f.nFirst > 0 {
		s.First = append([]byte(nil), f.first[0]...)
	}
	select {
	case e.suspects <- s:
	default:
		e.stats.SuspectsDropped++
		e.emit(eventFor(now, e.name, rule, EventSuspectDropped, f.key, nil))
	}
}

// String describes the engine for logs.
func (e *Engine) String() string {
	return fmt.Sprintf("censor %s (%d rules)", e.name, len(e.rules))
}
