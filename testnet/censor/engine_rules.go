package censor

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/commucat/commucat/testnet/packet"
)

// condKind is one trigger condition of a compiled rule.
type condKind uint8

const (
	condSNI condKind = iota
	condHTTP
	condQUIC
	condFET
	condAllowlist
	condProtocols
	condTLSFP
	condUDP
	condAge
	condBytes
	condDNS
)

// compiledRule is a Rule ready for evaluation.
type compiledRule struct {
	idx  int
	rule *Rule
	name string

	initiator  Direction // 0: any
	transport  uint8     // 0: any
	ports      []uint16
	servers    []netip.Prefix
	mode       int // 0: first data packet, 1: reassembled stream
	needFirst  bool
	needStream bool

	conds     []condKind
	perPacket bool // has a dns condition: fires on every matching query

	http       HTTPRule
	fet        FETRule
	allowed    [4]bool // by Protocol, for protocol-allowlist
	allowPorts []uint16
	protocols  [4]bool // by Protocol, for protocols
	fpAllow    bool
	ja4, ja3   map[string]bool
	age        time.Duration
	bytes      *BytesS2C
}

func compileRule(i int, r *Rule) (*compiledRule, error) {
	m := &r.Match
	c := &compiledRule{idx: i, rule: r, name: r.Name, ports: m.Ports, servers: m.Servers}
	switch m.Initiator {
	case "", "inside":
		c.initiator = Outbound
	case "outside":
		c.initiator = Inbound
	}
	switch m.Transport {
	case "tcp":
		c.transport = packet.ProtoTCP
	case "udp":
		c.transport = packet.ProtoUDP
	}
	if m.Reassemble {
		c.mode = 1
	}
	add := func(k condKind) { c.conds = append(c.conds, k) }
	if len(m.SNI) > 0 {
		add(condSNI)
		c.transport = packet.ProtoTCP
	}
	if len(m.Host) > 0 || len(m.Keyword) > 0 {
		add(condHTTP)
		c.transport = packet.ProtoTCP
		c.http = HTTPRule{Hosts: m.Host, Keywords: m.Keyword}
	}
	if len(m.QUICSNI) > 0 {
		add(condQUIC)
		c.transport = packet.ProtoUDP
	}
	if m.FET != nil {
		add(condFET)
		c.transport = packet.ProtoTCP
		c.fet = FETRule{BlockProbability: m.FET.Probability}
	}
	if a := m.ProtocolAllowlist; a != nil {
		add(condAllowlist)
		for _, name := range a.Protocols {
			c.allowed[protocolByName(name)] = true
		}
		c.allowPorts = a.Ports
	}
	if len(m.Protocols) > 0 {
		add(condProtocols)
		for _, name := range m.Protocols {
			c.protocols[protocolByName(name)] = true
		}
	}
	if t := m.TLSFingerprint; t != nil {
		add(condTLSFP)
		c.transport = packet.ProtoTCP
		c.fpAllow = t.Mode != "block"
		c.ja4, c.ja3 = make(map[string]bool), make(map[string]bool)
		for _, s := range t.JA4 {
			c.ja4[strings.TrimSpace(s)] = true
		}
		for _, s := range t.JA3 {
			c.ja3[strings.ToLower(strings.TrimSpace(s))] = true
		}
	}
	if u := m.UDP; u != nil {
		add(condUDP)
		c.transport = packet.ProtoUDP
	}
	if a := m.FlowAge; a != nil {
		add(condAge)
		c.age = time.Duration(a.Seconds * float64(time.Second))
	}
	if b := m.BytesS2C; b != nil {
		add(condBytes)
		c.bytes = b
	}
	if m.DNS != nil {
		add(condDNS)
		c.perPacket = true
		if len(c.ports) == 0 {
			c.ports = []uint16{53}
		}
	}
	if len(c.conds) == 0 || len(c.conds) > 16 {
		return nil, fmt.Errorf("censor: rule %q: %d conditions: %w", r.Name, len(c.conds), ErrConfig)
	}
	c.needFirst = true
	c.needStream = c.mode == 1 && (len(m.SNI) > 0 || c.http.Hosts != nil || c.http.Keywords != nil || m.TLSFingerprint != nil)
	return c, nil
}

func protocolByName(s string) Protocol {
	switch s {
	case "http":
		return ProtoHTTP
	case "tls":
		return ProtoTLS
	case "dns":
		return ProtoDNS
	}
	return ProtoUnknown
}

// inScope reports whether the rule can apply to f at all: initiator,
// transport, ports, servers.
func (c *compiledRule) inScope(f *flow) bool {
	if c.initiator != 0 && f.initiator != c.initiator {
		return false
	}
	if c.transport != 0 && f.key.Proto != c.transport {
		return false
	}
	port := f.key.Server.Port()
	if len(c.ports) > 0 && !slices.Contains(c.ports, port) {
		return false
	}
	if len(c.allowPorts) > 0 && !slices.Contains(c.allowPorts, port) {
		return false
	}
	if u := c.rule.Match.UDP; u != nil && len(u.Ports) > 0 && !slices.Contains(u.Ports, port) {
		return false
	}
	if len(c.servers) > 0 {
		addr := f.key.Server.Addr().Unmap()
		if !slices.ContainsFunc(c.servers, func(p netip.Prefix) bool { return p.Contains(addr) }) {
			return false
		}
	}
	return true
}

// pktCtx is what the conditions know of the packet being evaluated.
type pktCtx struct {
	side  Side
	p     *packet.Packet
	now   time.Time
	fresh bool // a client packet with payload: facts may change
	dnsQ  DNSQuery
	dnsOK bool
}

// evaluate runs the live rules of f on the packet and applies the ones
// that fire. It reports whether it already fed p to f's TCP state.
func (e *Engine) evaluate(f *flow, side Side, p *packet.Packet, now time.Time, v *Verdict) bool {
	ctx := pktCtx{side: side, p: p, now: now, fresh: side == Client && len(p.Payload) > 0}
	observed := false
	for i, r := range e.rules {
		bit := uint64(1) << i
		if f.live&bit == 0 {
			continue
		}
		st := yes
		for j, k := range r.conds {
			if f.sticky[i]&(1<<j) != 0 {
				continue
			}
			switch e.cond(r, k, f, &ctx) {
			case no:
				st = no
			case wait:
				if st == yes {
					st = wait
				}
			case yes:
				if k != condDNS {
					f.sticky[i] |= 1 << j
				}
			}
			if st == no {
				break
			}
		}
		switch st {
		case no:
			f.live &^= bit
			continue
		case wait:
			continue
		}
		if !r.perPacket {
			f.live &^= bit
		}
		if e.fire(r, f, &ctx, v, &observed) {
			f.live = 0
			break
		}
	}
	return observed
}

// cond evaluates one condition of r for f.
func (e *Engine) cond(r *compiledRule, k condKind, f *flow, ctx *pktCtx) tri {
	switch k {
	case condSNI:
		st, h := e.helloFact(f, r.mode, ctx.fresh)
		if st != factOK {
			return triOf(st)
		}
		if _, ok := r.rule.Match.SNI.Match(h.ServerName); ok {
			return yes
		}
		return no
	case condHTTP:
		st, req, done := e.httpFact(f, r.mode, ctx.fresh)
		if st != factOK {
			return triOf(st)
		}
		if _, ok := r.http.Match(req); ok {
			return yes
		}
		if done {
			return no
		}
		return wait
	case condQUIC:
		st, h := e.quicFact(f, r.mode, ctx)
		if st != factOK {
			return triOf(st)
		}
		if _, ok := r.rule.Match.QUICSNI.Match(h.ServerName); ok {
			return yes
		}
		return no
	case condFET:
		if f.nFirst == 0 {
			return wait
		}
		if r.fet.Decide(f.first[0], e.rnd).Block {
			return yes
		}
		return no
	case condAllowlist:
		st, proto := e.protoFact(f)
		if st == factPending {
			return wait
		}
		if r.allowed[proto] {
			return no
		}
		return yes
	case condProtocols:
		st, proto := e.protoFact(f)
		if st == factPending {
			return wait
		}
		if r.protocols[proto] {
			return yes
		}
		return no
	case condTLSFP:
		st, h := e.helloFact(f, r.mode, ctx.fresh)
		if st != factOK {
			return triOf(st)
		}
		listed := r.ja4[h.JA4(JA4TCP)] || (len(r.ja3) > 0 && (r.ja3[h.JA3Hash()] || r.ja3[h.JA3()]))
		if listed != r.fpAllow {
			return yes
		}
		return no
	case condUDP:
		return yes // the scope checked the ports
	case condAge:
		if ctx.now.Sub(f.start) >= r.age {
			return yes
		}
		return wait
	case condBytes:
		if f.bytes[Server] > uint64(e.threshold(r, f)) {
			return yes
		}
		return wait
	case condDNS:
		if !ctx.fresh {
			return wait
		}
		if !ctx.dnsOK {
			var q DNSQuery
			var err error
			if f.isTCP {
				q, err = ParseDNSQueryTCP(ctx.p.Payload)
			} else {
				q, err = ParseDNSQuery(ctx.p.Payload)
			}
			if err != nil {
				return wait
			}
			ctx.dnsQ, ctx.dnsOK = q, true
		}
		if _, ok := r.rule.Match.DNS.Names.Match(ctx.dnsQ.Name); ok {
			return yes
		}
		return wait
	}
	return no
}

func triOf(st fact) tri {
	if st == factPending {
		return wait
	}
	return no
}

// threshold returns r's bytes-s2c threshold for f: fixed, or drawn in
// [Threshold, Max] from the engine's seed, the rule and the flow.
func (e *Engine) threshold(r *compiledRule, f *flow) int64 {
	b := r.bytes
	if b.Max <= b.Threshold {
		return b.Threshold
	}
	h := splitmix(e.seed ^ splitmix(f.id) ^ uint64(r.idx)<<56)
	return b.Threshold + int64(h%uint64(b.Max-b.Threshold+1))
}

// splitmix is SplitMix64's finaliser: a stateless hash of x.
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// helloFact returns the ClientHello of f's TCP client stream: read from
// the first data packet alone (mode 0) or from the reassembled stream.
func (e *Engine) helloFact(f *flow, mode int, fresh bool) (fact, *ClientHello) {
	if f.hello[mode] != factPending || !fresh || !f.isTCP {
		if !f.isTCP {
			return factNone, nil
		}
		return f.hello[mode], f.helloVal[mode]
	}
	var h *ClientHello
	var err error
	if mode == 0 {
		if f.nFirst == 0 {
			return factPending, nil
		}
		h, err = ClientHelloFromStream(f.first[0], len(f.first[0]))
	} else {
		h, err = ClientHelloFromStream(f.stream, e.reassembly)
		if errors.Is(err, ErrNeedMore) && !f.streamEnd {
			return factPending, nil
		}
	}
	if err != nil {
		f.hello[mode] = factNone
		return factNone, nil
	}
	f.hello[mode], f.helloVal[mode] = factOK, h
	return factOK, h
}

// httpFact returns the first HTTP request of f's client stream, and
// whether its header section is complete (or can grow no more).
func (e *Engine) httpFact(f *flow, mode int, fresh bool) (fact, HTTPRequest, bool) {
	if !f.isTCP {
		return factNone, HTTPRequest{}, true
	}
	if fresh && f.http[mode] != factNone && !f.httpDone[mode] {
		buf := f.stream
		final := f.streamEnd
		if mode == 0 {
			if f.nFirst == 0 {
				return factPending, HTTPRequest{}, false
			}
			buf, final = f.first[0], true
		}
		req, err := ParseHTTPRequest(buf)
		switch {
		case errors.Is(err, ErrNeedMore) && !final:
			f.http[mode] = factPending
		case err != nil:
			f.http[mode] = factNone
		default:
			f.http[mode], f.httpVal[mode] = factOK, req
			f.httpDone[mode] = req.Complete || final || len(buf) >= MaxHTTPHead
		}
	}
	return f.http[mode], f.httpVal[mode], f.httpDone[mode]
}

// quicFact returns the ClientHello of f's QUIC Initials: from the first
// client datagram alone (mode 0, as the GFW reads it) or gathered over
// the first maxQUICDatagrams.
func (e *Engine) quicFact(f *flow, mode int, ctx *pktCtx) (fact, *ClientHello) {
	if f.quic != factPending || !ctx.fresh || f.isTCP {
		if f.isTCP {
			return factNone, nil
		}
		return f.quic, f.quicVal
	}
	f.quicCount++
	if mode == 0 {
		h, err := QUICClientHello(ctx.p.Payload)
		if err != nil || f.quicCount > 1 {
			f.quic = factNone
			return factNone, nil
		}
		f.quic, f.quicVal = factOK, h
		return factOK, h
	}
	if f.quicAsm == nil {
		f.quicAsm = NewQUICHelloAssembler(e.reassembly)
	}
	if err := f.quicAsm.AddDatagram(ctx.p.Payload); err != nil {
		f.quic, f.quicAsm = factNone, nil
		return factNone, nil
	}
	msg, err := f.quicAsm.ClientHello()
	if errors.Is(err, ErrNeedMore) && f.quicCount < maxQUICDatagrams {
		return factPending, nil
	}
	var h *ClientHello
	if err == nil {
		h, err = ParseClientHello(msg)
	}
	f.quicAsm = nil
	if err != nil {
		f.quic = factNone
		return factNone, nil
	}
	f.quic, f.quicVal = factOK, h
	return factOK, h
}

// protoFact classifies f's first client data packets as Iran's filter
// does: TCP by its first two data packets (the first alone if the flow
// is a known protocol already), UDP by its first datagram.
func (e *Engine) protoFact(f *flow) (fact, Protocol) {
	if f.proto != factPending {
		return f.proto, f.protoVal
	}
	switch {
	case f.nFirst == 0:
		return factPending, 0
	case !f.isTCP:
		f.protoVal = ClassifyUDP(f.first[0])
	case f.nFirst == 1:
		if c := ClassifyTCP(f.first[0]); c != ProtoUnknown {
			f.protoVal = c
		} else {
			return factPending, 0
		}
	default:
		f.protoVal = ClassifyTCP(f.first[0], f.first[1])
	}
	f.proto = factOK
	return factOK, f.protoVal
}

// fire takes r's action on f. It reports whether the action is terminal.
func (e *Engine) fire(r *compiledRule, f *flow, ctx *pktCtx, v *Verdict, observed *bool) bool {
	kind := r.rule.Action.Kind
	e.emit(eventFor(ctx.now, e.name, r.name, string(kind), f.key, e.detail(r, f, ctx)))
	if r.rule.Residual > 0 {
		kind := r.rule.ResidualKey
		if kind == "" {
			kind = Residual3Tuple
		}
		act := r.rule.ResidualAction
		if act == "" {
			act = ResidualDrop
		}
		e.res.insert(residualKeyFor(kind, f.key), residualEntry{until: ctx.now.Add(r.rule.Residual), rule: r.name, action: act}, ctx.now)
	}
	switch kind {
	case ActionDrop, ActionFreeze:
		f.block = blockAll
		v.Action = Drop
	case ActionReset:
		f.block = blockAll
		v.Action = Drop
		if f.isTCP {
			e.resets(f, v)
		}
	case ActionCutOff:
		e.startCut(r, f, ctx, v)
	case ActionThrottle:
		f.throttle = newThrottle(*r.rule.Action.Throttle)
	case ActionDNSInject:
		e.injectDNS(r, f, ctx, v, observed)
	case ActionProbe:
		e.suspect(f, r.name, ctx.now)
	}
	return kind.terminal()
}

// startCut starts a cut-off of f's server data at the rule's bytes-s2c
// threshold, or at the bytes sent so far without one.
func (e *Engine) startCut(r *compiledRule, f *flow, ctx *pktCtx, v *Verdict) {
	if !f.isTCP {
		f.block = blockAll
		v.Action = Drop
		return
	}
	p := ctx.p
	var next uint32
	var limit int64 = -1
	if r.bytes != nil {
		limit = e.threshold(r, f)
	}
	if ctx.side == Server {
		// This segment crossed the threshold: the cut lies inside it.
		before := int64(f.bytes[Server]) - int64(len(p.Payload))
		keep := int64(0)
		if limit >= 0 {
			keep = min(max(limit-before, 0), int64(len(p.Payload)))
		}
		next = p.TCP.Seq + uint32(keep)
	} else {
		s, ok := f.tcp.Next(Server)
		if !ok {
			f.block = blockAll
			v.Action = Drop
			return
		}
		next = s
	}
	f.block, f.cutSeq = blockS2C, next
	e.cut(f, ctx.side, p, v)
}

// injectDNS answers the query in ctx with a forged response.
func (e *Engine) injectDNS(r *compiledRule, f *flow, ctx *pktCtx, v *Verdict, observed *bool) {
	if !ctx.dnsOK {
		return
	}
	d := r.rule.Action.DNSInject
	var ans []byte
	if d.NXDomain {
		ans = ForgeNXDOMAIN(ctx.dnsQ)
	} else {
		var err error
		if ans, err = ForgeDNSAnswer(ctx.dnsQ, d.IP, d.TTL); err != nil {
			return
		}
	}
	var b []byte
	var err error
	if f.isTCP {
		// The answer follows the query in the stream: the state must
		// have seen the query.
		if !*observed {
			f.tcp.Observe(ctx.p)
			*observed = true
		}
		b, err = f.tcp.Forge(Client, packet.PSH|packet.ACK, FrameDNSTCP(ans))
	} else {
		b, err = ReplyUDP(ctx.p, ans, 0)
	}
	if err == nil {
		v.Inject = append(v.Inject, Injection{Packet: b})
	}
}

// detail describes why r fired on f, for the action log.
func (e *Engine) detail(r *compiledRule, f *flow, ctx *pktCtx) map[string]string {
	d := make(map[string]string, 2)
	for _, k := range r.conds {
		switch k {
		case condSNI:
			if h := f.helloVal[r.mode]; h != nil {
				d["sni"] = h.ServerName
			}
		case condHTTP:
			req := f.httpVal[r.mode]
			if m, ok := r.http.Match(req); ok {
				d["http-"+m.Field] = m.Entry
			}
			d["host"] = req.Host
		case condQUIC:
			if f.quicVal != nil {
				d["quic-sni"] = f.quicVal.ServerName
			}
		case condFET:
			if f.nFirst > 0 {
				res := FET(f.first[0])
				d["fet"] = "fully-encrypted"
				d["popcount"] = strconv.FormatFloat(res.PopcountPerByte(), 'f', 2, 64)
				d["length"] = strconv.Itoa(res.Len)
			}
		case condAllowlist, condProtocols:
			d["protocol"] = f.protoVal.String()
		case condTLSFP:
			if h := f.helloVal[r.mode]; h != nil {
				d["ja4"] = h.JA4(JA4TCP)
				d["ja3"] = h.JA3Hash()
			}
		case condUDP:
			d["udp-port"] = strconv.Itoa(int(f.key.Server.Port()))
		case condAge:
			d["age"] = ctx.now.Sub(f.start).String()
		case condBytes:
			d["bytes-s2c"] = strconv.FormatUint(f.bytes[Server], 10)
			d["threshold"] = strconv.FormatInt(e.threshold(r, f), 10)
		case condDNS:
			d["query"] = ctx.dnsQ.Name
		}
	}
	if r.rule.Residual > 0 {
		d["residual"] = r.rule.Residual.String()
	}
	return d
}
