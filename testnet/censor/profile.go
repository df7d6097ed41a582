package censor

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Defaults of FlowConfig.
const (
	// DefaultFlowIdle is how long a flow lives without packets.
	DefaultFlowIdle = 2 * time.Minute
	// DefaultMaxFlows is how many flows the table keeps.
	DefaultMaxFlows = 1 << 16
	// DefaultMaxResiduals is how many residual-block entries are kept.
	DefaultMaxResiduals = 1 << 16
	// MaxReassembly caps FlowConfig.Reassembly.
	MaxReassembly = 1 << 20
	// MaxRules is how many rules a profile may have.
	MaxRules = 64
)

// Profile is one censor: its flow-table parameters, the link impairments
// the topology applies, the active prober's parameters and the rules,
// evaluated in order. Build it with ParseProfile or LoadProfile, which
// validate it; an Engine keeps its own compiled copy. A Profile is a value
// that is not modified after parsing, safe for concurrent reads.
//
// # YAML schema
//
// A profile file composes the rule primitives of this package into one
// censor, so that a new censor needs no code. Every key is optional
// unless marked:
//
//	name: gfw-sni                # required: names the profile in the action log
//	description: ...
//	flows:                       # the flow table (FlowConfig)
//	  idle: 2m                   # idle expiry of a flow
//	  max: 65536                 # flows kept; the longest idle is evicted
//	  reassembly: 16384          # bytes of client stream kept for reassemble: true
//	  residuals: 65536           # residual-block entries kept
//	link:                        # link impairments for the topology (LinkProfile)
//	  up:   {delay: 40ms, jitter: 10ms, reorder: false, loss: 0.01,
//	         burst: {p_good_bad: 0.01, p_bad_good: 0.3, loss_good: 0, loss_bad: 0.5},
//	         duplicate: 0.001, rate: 10mbit, queue: 65536, mtu: 1400}
//	  down: {...}
//	prober:                      # the active prober (ProberConfig)
//	  timeout: 5s
//	  delay: 0s
//	  lengths: [7, 8, 11, 12, 22, 23, 33, 34, 40, 41, 221]
//	  block: 1h
//	  cooldown: 10m
//	rules:                       # evaluated in order for every packet
//	  - name: sni-reset          # required, unique
//	    match:                   # every condition given must hold (Match)
//	      initiator: inside      # inside (default), outside, any
//	      transport: tcp         # tcp, udp; empty: both
//	      ports: [443]           # server ports
//	      servers: [198.18.0.0/15]
//	      reassemble: true       # sni/host/keyword/tls-fingerprint read the reassembled stream
//	      sni: [blocked.example]
//	      host: [blocked.example]
//	      keyword: [falun]
//	      quic-sni: [blocked.example]
//	      fet: {probability: 0.26}
//	      protocol-allowlist: {protocols: [http, tls, dns], ports: [53, 80, 443]}
//	      protocols: [tls]
//	      tls-fingerprint: {mode: allow, ja4: [...], ja3: [...]}
//	      udp: {ports: [443]}
//	      flow-age: {seconds: 60}
//	      bytes-s2c: {threshold: 16384, max: 20480}
//	      dns: {names: [blocked.example]}
//	    action: reset            # reset, drop, freeze, cut-off, probe, log, or
//	                             # {dns-inject: {ip: 198.18.255.1}} / {dns-inject: {nxdomain: true}}
//	                             # {throttle: {delay: 300ms, loss: 0.05, rate: 128kbit, queue: 1s, direction: both}}
//	    residual: 180s           # block the residual key this long after the rule fires
//	    residual-key: 3-tuple    # 3-tuple (default), 4-tuple, server
//	    residual-action: drop    # drop (default) or reset
//
// Decoding is strict: an unknown key, a value of the wrong kind, a
// duplicate key or a YAML alias is an error naming the key's path, such as
// rules[2].match.fet.probability, and its line.
type Profile struct {
	// Name names the profile in the action log.
	Name string `yaml:"name"`
	// Description says what the profile models, for reports.
	Description string `yaml:"description"`
	// Flows holds the flow-table parameters.
	Flows FlowConfig `yaml:"flows"`
	// Link holds link impairments; nil means perfect links. The engine
	// does not apply them: the topology reads them.
	Link *LinkProfile `yaml:"link"`
	// Prober holds the active prober's parameters; nil means defaults.
	Prober *ProberConfig `yaml:"prober"`
	// Rules are the censor's rules, evaluated in order on every packet.
	Rules []Rule `yaml:"rules"`

	lines map[string]int // line of each decoded key path, for errors
}

// FlowConfig holds the parameters of the flow table. Zero fields take the
// defaults.
type FlowConfig struct {
	// Idle is how long a flow lives without packets; if zero,
	// DefaultFlowIdle.
	Idle time.Duration `yaml:"idle"`
	// Max is how many flows are kept; when full, the flow idle longest is
	// evicted. If zero, DefaultMaxFlows.
	Max int `yaml:"max"`
	// Reassembly is how many bytes of a TCP client stream are kept, in
	// order, for rules with reassemble set; if zero, DefaultHelloLimit.
	Reassembly int `yaml:"reassembly"`
	// Residuals is how many residual-block entries are kept; if zero,
	// DefaultMaxResiduals.
	Residuals int `yaml:"residuals"`
}

// LinkProfile holds the link impairments a profile asks the topology for,
// per direction. The fields mirror testnet/link.Params one for one, so the
// topology copies them.
type LinkProfile struct {
	// Up is the direction from the inside (clients) toward the outside.
	Up LinkParams `yaml:"up"`
	// Down is the direction from the outside toward the inside.
	Down LinkParams `yaml:"down"`
}

// LinkParams describe one direction of a link; the zero value is a perfect
// link. See testnet/link.Params for the exact model.
type LinkParams struct {
	// Delay is the one-way delay; Jitter adds a uniform draw in [0,
	// Jitter); Reorder lets jitter reorder packets.
	Delay   time.Duration `yaml:"delay"`
	Jitter  time.Duration `yaml:"jitter"`
	Reorder bool          `yaml:"reorder"`
	// Loss is the Bernoulli loss probability, ignored when Burst is set.
	Loss float64 `yaml:"loss"`
	// Burst draws losses from a Gilbert-Elliott chain.
	Burst *GilbertElliott `yaml:"burst"`
	// Duplicate is the probability that a packet is sent twice.
	Duplicate float64 `yaml:"duplicate"`
	// Rate limits the direction; zero is unlimited.
	Rate Rate `yaml:"rate"`
	// Queue is the drop-tail queue in front of the rate limiter, in
	// bytes; zero means the link's default.
	Queue int `yaml:"queue"`
	// MTU is the largest packet carried; zero means no limit.
	MTU int `yaml:"mtu"`
}

// GilbertElliott is a two-state loss model (see testnet/link).
type GilbertElliott struct {
	PGoodBad float64 `yaml:"p_good_bad"`
	PBadGood float64 `yaml:"p_bad_good"`
	LossGood float64 `yaml:"loss_good"`
	LossBad  float64 `yaml:"loss_bad"`
}

// Rate is a data rate in bytes per second. In YAML it is a plain number
// of bytes per second or a number with a bit-rate unit: 64kbit, 10mbit,
// 1gbit (SI prefixes, 1 kbit = 1000 bit).
type Rate int64

// ParseRate parses a Rate as YAML spells it.
func ParseRate(s string) (Rate, error) {
	s = strings.TrimSpace(strings.ToLower(s))
	units := []struct {
		suffix string
		bits   float64
	}{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
			if err != nil || v < 0 || v*u.bits/8 > 1<<62 {
				return 0, fmt.Errorf("censor: rate %q: want a number such as 128kbit", s)
			}
			return Rate(v * u.bits / 8), nil
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("censor: rate %q: want bytes per second or a number with kbit, mbit, gbit", s)
	}
	return Rate(v), nil
}

// String returns the rate in kbit/s or mbit/s when exact, else bytes/s.
func (r Rate) String() string {
	bits := int64(r) * 8
	switch {
	case bits != 0 && bits%1e6 == 0:
		return strconv.FormatInt(bits/1e6, 10) + "mbit"
	case bits != 0 && bits%1e3 == 0:
		return strconv.FormatInt(bits/1e3, 10) + "kbit"
	}
	return strconv.FormatInt(int64(r), 10)
}

// Rule is one censor rule: when every condition of Match holds for a
// flow, Action is taken, and the flow's residual key is blocked for
// Residual.
type Rule struct {
	// Name names the rule in the action log; required and unique.
	Name string `yaml:"name"`
	// Match holds the conditions.
	Match Match `yaml:"match"`
	// Action is what the censor does.
	Action Action `yaml:"action"`
	// Residual is how long the residual key stays blocked after the rule
	// fires; zero means no residual blocking.
	Residual time.Duration `yaml:"residual"`
	// ResidualKey is what the residual block covers; if empty,
	// Residual3Tuple.
	ResidualKey ResidualKind `yaml:"residual-key"`
	// ResidualAction is what happens to flows the residual block covers;
	// if empty, ResidualDrop.
	ResidualAction ResidualAction `yaml:"residual-action"`
}

// Match holds a rule's conditions: the scope fields (Initiator,
// Transport, Ports, Servers) and at least one trigger. A rule fires on the
// first packet at which every condition given holds. Conditions about a
// flow's first bytes (sni, host and keyword, quic-sni, fet,
// protocol-allowlist, protocols, tls-fingerprint) are decided once per
// flow; flow-age and bytes-s2c become true as the flow ages or grows; dns
// is judged on every client packet. A rule fires at most once per flow,
// except a rule with dns, which fires for every query it matches.
type Match struct {
	// Initiator is the side that opened the flows the rule censors:
	// "inside" (the default: flows from the censored network), "outside",
	// or "any".
	Initiator string `yaml:"initiator"`
	// Transport is "tcp" or "udp"; empty means both.
	Transport string `yaml:"transport"`
	// Ports are the server ports; empty means any.
	Ports []uint16 `yaml:"ports"`
	// Servers are the server address ranges; empty means any. A bare
	// address means that host.
	Servers []netip.Prefix `yaml:"servers"`
	// Reassemble makes sni, host, keyword and tls-fingerprint read the
	// client's TCP stream reassembled in order up to
	// FlowConfig.Reassembly bytes, and quic-sni gather the ClientHello
	// over the first four datagrams; otherwise they read only the first
	// data packet, as the GFW's QUIC filter does.
	Reassemble bool `yaml:"reassemble"`
	// SNI matches the server name of a TLS ClientHello over TCP.
	SNI DomainList `yaml:"sni"`
	// Host and Keyword match the first HTTP request (HTTPRule); given
	// together, either one matching is enough.
	Host    DomainList `yaml:"host"`
	Keyword []string   `yaml:"keyword"`
	// QUICSNI matches the server name of a QUIC v1 Initial.
	QUICSNI DomainList `yaml:"quic-sni"`
	// FET is the GFW's fully-encrypted-traffic test on the first client
	// data packet of a TCP flow.
	FET *FETMatch `yaml:"fet"`
	// ProtocolAllowlist holds when the first client data packets are not
	// one of the allowed protocols.
	ProtocolAllowlist *ProtocolAllowlist `yaml:"protocol-allowlist"`
	// Protocols holds when the first client data packets are one of
	// these protocols (ClassifyTCP, ClassifyUDP): "http", "tls", "dns",
	// "unknown".
	Protocols []string `yaml:"protocols"`
	// TLSFingerprint matches the JA3 or JA4 fingerprint of a TLS
	// ClientHello over TCP.
	TLSFingerprint *TLSFingerprint `yaml:"tls-fingerprint"`
	// UDP holds for UDP flows to the given ports.
	UDP *UDPMatch `yaml:"udp"`
	// FlowAge holds once the flow is older than the given age.
	FlowAge *FlowAge `yaml:"flow-age"`
	// BytesS2C holds once the server has sent more payload bytes than
	// the threshold.
	BytesS2C *BytesS2C `yaml:"bytes-s2c"`
	// DNS holds for a client packet that is a DNS query for one of the
	// names, over UDP or TCP (a query in one segment), to port 53 unless
	// Ports says otherwise.
	DNS *DNSMatch `yaml:"dns"`
}

// FETMatch holds the parameters of the fully-encrypted-traffic test
// (FETRule).
type FETMatch struct {
	// Probability is the chance that a flagged flow is blocked; if zero,
	// DefaultFETBlockProbability.
	Probability float64 `yaml:"probability"`
}

// ProtocolAllowlist holds the parameters of an Iran-style protocol filter.
type ProtocolAllowlist struct {
	// Protocols are the allowed protocols: "http", "tls", "dns".
	Protocols []string `yaml:"protocols"`
	// Ports are the server ports filtered; empty means every port.
	Ports []uint16 `yaml:"ports"`
}

// TLSFingerprint holds a list of TLS client fingerprints.
type TLSFingerprint struct {
	// Mode is "allow" (the default: every ClientHello not listed
	// matches) or "block" (every ClientHello listed matches).
	Mode string `yaml:"mode"`
	// JA4 are JA4 fingerprints (ClientHello.JA4 with JA4TCP).
	JA4 []string `yaml:"ja4"`
	// JA3 are JA3 fingerprints: MD5 hashes or full JA3 strings.
	JA3 []string `yaml:"ja3"`
}

// UDPMatch selects UDP flows.
type UDPMatch struct {
	// Ports are the server ports; empty means every UDP flow.
	Ports []uint16 `yaml:"ports"`
}

// FlowAge selects flows older than Seconds.
type FlowAge struct {
	Seconds float64 `yaml:"seconds"`
}

// BytesS2C selects flows whose server sent more than a threshold of
// payload bytes (retransmissions included).
type BytesS2C struct {
	// Threshold is the byte count.
	Threshold int64 `yaml:"threshold"`
	// Max, if above Threshold, makes each flow's threshold a uniform draw
	// in [Threshold, Max], derived from the engine's seed and the flow.
	Max int64 `yaml:"max"`
}

// DNSMatch selects DNS queries.
type DNSMatch struct {
	// Names are the blocked names (DomainList).
	Names DomainList `yaml:"names"`
}

// ActionKind names a rule's action.
type ActionKind string

// Actions. Drop, Reset, Freeze and CutOff end the flow's useful life and
// stop the evaluation of later rules for the packet; the others do not.
const (
	// ActionDrop drops the packet and every later packet of the flow.
	ActionDrop ActionKind = "drop"
	// ActionReset drops the packet and every later packet of the flow
	// and injects a RST+ACK toward each end of a TCP flow, with sequence
	// numbers taken from the flow (TCPState.Forge); for UDP it is drop.
	ActionReset ActionKind = "reset"
	// ActionFreeze is drop under another name for logs: the TSPU's
	// silent freeze of a connection, both directions, no RST.
	ActionFreeze ActionKind = "freeze"
	// ActionCutOff lets the server's data through up to exactly the
	// bytes-s2c threshold (truncating the segment that crosses it) and
	// drops the server's later data; the client's packets and the
	// server's bare ACKs still pass.
	ActionCutOff ActionKind = "cut-off"
	// ActionThrottle delays, loses and rate-limits the flow's later
	// packets (Throttle).
	ActionThrottle ActionKind = "throttle"
	// ActionDNSInject injects a forged DNS answer to the client ahead of
	// the real one; the query passes.
	ActionDNSInject ActionKind = "dns-inject"
	// ActionProbe passes the flow and hands its server to the active
	// prober (Suspect).
	ActionProbe ActionKind = "probe"
	// ActionLog only logs.
	ActionLog ActionKind = "log"
)

// terminal reports whether the action ends the flow.
func (k ActionKind) terminal() bool {
	switch k {
	case ActionDrop, ActionReset, ActionFreeze, ActionCutOff:
		return true
	}
	return false
}

// Action is a rule's action. In YAML it is a bare name ("reset") or a
// mapping of one name to its parameters ({throttle: {...}}).
type Action struct {
	// Kind is the action.
	Kind ActionKind
	// DNSInject holds the parameters of ActionDNSInject.
	DNSInject *DNSInject
	// Throttle holds the parameters of ActionThrottle.
	Throttle *Throttle
}

// DNSInject holds the forged answer: an address, or NXDOMAIN.
type DNSInject struct {
	// IP is the address of the forged A or AAAA record.
	IP netip.Addr `yaml:"ip"`
	// NXDomain forges an NXDOMAIN answer instead.
	NXDomain bool `yaml:"nxdomain"`
	// TTL is the record's TTL; if zero, DefaultDNSTTL.
	TTL uint32 `yaml:"ttl"`
}

// Throttle holds the parameters of ActionThrottle. The engine applies
// them itself, with its seeded PRNG for losses, and asks the router for
// the delay through Verdict.Delay.
type Throttle struct {
	// Delay is added to every packet.
	Delay time.Duration `yaml:"delay"`
	// Loss is the probability that a packet is dropped.
	Loss float64 `yaml:"loss"`
	// Rate caps each direction of the flow; packets queue behind each
	// other (their delay grows) and are dropped when the queue exceeds
	// Queue.
	Rate Rate `yaml:"rate"`
	// Queue is the longest queueing delay Rate may add; if zero, 1s.
	Queue time.Duration `yaml:"queue"`
	// Direction is "both" (the default), "c2s" or "s2c".
	Direction string `yaml:"direction"`
}

// ResidualKind is what a residual block covers.
type ResidualKind string

// Residual keys (Bock et al., "Even Censors Have a Backup", FOCI 2021).
const (
	// Residual3Tuple blocks (client IP, server IP, server port): every
	// new connection from the client to that server port.
	Residual3Tuple ResidualKind = "3-tuple"
	// Residual4Tuple blocks (client IP, client port, server IP, server
	// port): a reconnection from the same client port.
	Residual4Tuple ResidualKind = "4-tuple"
	// ResidualServer blocks (server IP, server port) for every client:
	// how the GFW blocks a server its prober confirmed.
	ResidualServer ResidualKind = "server"
)

// ResidualAction is what happens to a flow a residual block covers.
type ResidualAction string

// Residual actions.
const (
	// ResidualDrop drops every packet of the flow.
	ResidualDrop ResidualAction = "drop"
	// ResidualReset drops them and answers with RSTs: a RST+ACK to a SYN,
	// a RST+ACK toward each end of an established TCP flow.
	ResidualReset ResidualAction = "reset"
)

// ProfileError is an error in a profile file: the key path at fault
// (such as "rules[2].match.fet.probability"), its line when known, and the
// cause. Errors of values out of range wrap ErrConfig.
type ProfileError struct {
	Path string
	Line int
	Err  error
}

// Error returns e.g. "censor: profile: rules[0].action (line 9): unknown action "rst"".
func (e *ProfileError) Error() string {
	path := e.Path
	if path == "" {
		path = "(document)"
	}
	if e.Line > 0 {
		return fmt.Sprintf("censor: profile: %s (line %d): %v", path, e.Line, e.Err)
	}
	return fmt.Sprintf("censor: profile: %s: %v", path, e.Err)
}

// Unwrap returns the cause.
func (e *ProfileError) Unwrap() error { return e.Err }

// LoadProfile reads and parses the profile file at path.
func LoadProfile(path string) (*Profile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("censor: profile: %w", err)
	}
	p, err := ParseProfile(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// ParseProfile decodes a profile strictly and validates it. Errors are
// *ProfileError.
func ParseProfile(b []byte) (*Profile, error) {
	p := &Profile{lines: make(map[string]int)}
	if err := decodeProfile(b, p); err != nil {
		return nil, err
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// errAt returns a *ProfileError for path, with the line decoded there.
func (p *Profile) errAt(path string, format string, args ...any) error {
	return &ProfileError{Path: path, Line: p.lines[path], Err: fmt.Errorf(format+": %w", append(args, ErrConfig)...)}
}

// Validate checks every field and returns a *ProfileError naming the
// first at fault.
func (p *Profile) Validate() error {
	if strings.TrimSpace(p.Name) == "" {
		return p.errAt("name", "a profile needs a name")
	}
	f := p.Flows
	if f.Idle < 0 {
		return p.errAt("flows.idle", "negative duration %v", f.Idle)
	}
	if f.Max < 0 {
		return p.errAt("flows.max", "negative")
	}
	if f.Residuals < 0 {
		return p.errAt("flows.residuals", "negative")
	}
	if f.Reassembly < 0 || f.Reassembly > MaxReassembly {
		return p.errAt("flows.reassembly", "%d outside [0, %d]", f.Reassembly, MaxReassembly)
	}
	if l := p.Link; l != nil {
		if err := p.validateLink("link.up", l.Up); err != nil {
			return err
		}
		if err := p.validateLink("link.down", l.Down); err != nil {
			return err
		}
	}
	if pr := p.Prober; pr != nil {
		if err := p.validateProber(pr); err != nil {
			return err
		}
	}
	if len(p.Rules) > MaxRules {
		return p.errAt("rules", "%d rules, at most %d", len(p.Rules), MaxRules)
	}
	names := make(map[string]bool, len(p.Rules))
	for i := range p.Rules {
		r := &p.Rules[i]
		path := fmt.Sprintf("rules[%d]", i)
		if strings.TrimSpace(r.Name) == "" {
			return p.errAt(path+".name", "a rule needs a name")
		}
		if names[r.Name] {
			return p.errAt(path+".name", "duplicate rule name %q", r.Name)
		}
		names[r.Name] = true
		if err := p.validateRule(path, r); err != nil {
			return err
		}
	}
	return nil
}

func (p *Profile) validateLink(path string, l LinkParams) error {
	if l.Delay < 0 || l.Jitter < 0 {
		return p.errAt(path, "negative delay or jitter")
	}
	probs := map[string]float64{"loss": l.Loss, "duplicate": l.Duplicate}
	if b := l.Burst; b != nil {
		probs["burst.p_good_bad"] = b.PGoodBad
		probs["burst.p_bad_good"] = b.PBadGood
		probs["burst.loss_good"] = b.LossGood
		probs["burst.loss_bad"] = b.LossBad
	}
	for _, k := range slices.Sorted(mapKeys(probs)) {
		if v := probs[k]; !(v >= 0 && v <= 1) {
			return p.errAt(path+"."+k, "probability %v outside [0, 1]", v)
		}
	}
	if l.Rate < 0 || l.Queue < 0 {
		return p.errAt(path, "negative rate or queue")
	}
	if l.MTU != 0 && (l.MTU < 68 || l.MTU > 65535) {
		return p.errAt(path+".mtu", "%d outside [68, 65535]", l.MTU)
	}
	return nil
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func (p *Profile) validateProber(c *ProberConfig) error {
	if c.Timeout < 0 || c.Delay < 0 || c.Block < 0 || c.Cooldown < 0 {
		return p.errAt("prober", "negative duration")
	}
	if len(c.Lengths) > maxProbeLengths {
		return p.errAt("prober.lengths", "%d lengths, at most %d", len(c.Lengths), maxProbeLengths)
	}
	for i, n := range c.Lengths {
		if n < 1 || n > maxProbeLen {
			return p.errAt(fmt.Sprintf("prober.lengths[%d]", i), "%d outside [1, %d]", n, maxProbeLen)
		}
	}
	return nil
}

var (
	validProtocols = []string{"http", "tls", "dns", "unknown"}
	tcpTriggers    = []string{"sni", "host", "keyword", "fet", "tls-fingerprint"}
	udpTriggers    = []string{"quic-sni", "udp"}
)

// triggers returns the names of the trigger conditions m holds.
func (m *Match) triggers() []string {
	var t []string
	add := func(name string, set bool) {
		if set {
			t = append(t, name)
		}
	}
	add("sni", len(m.SNI) > 0)
	add("host", len(m.Host) > 0)
	add("keyword", len(m.Keyword) > 0)
	add("quic-sni", len(m.QUICSNI) > 0)
	add("fet", m.FET != nil)
	add("protocol-allowlist", m.ProtocolAllowlist != nil)
	add("protocols", len(m.Protocols) > 0)
	add("tls-fingerprint", m.TLSFingerprint != nil)
	add("udp", m.UDP != nil)
	add("flow-age", m.FlowAge != nil)
	add("bytes-s2c", m.BytesS2C != nil)
	add("dns", m.DNS != nil)
	return t
}

func (p *Profile) validateRule(path string, r *Rule) error {
	m := &r.Match
	mp := path + ".match"
	switch m.Initiator {
	case "", "inside", "outside", "any":
	default:
		return p.errAt(mp+".initiator", "want inside, outside or any, got %q", m.Initiator)
	}
	switch m.Transport {
	case "", "tcp", "udp":
	default:
		return p.errAt(mp+".transport", "want tcp or udp, got %q", m.Transport)
	}
	for i, port := range m.Ports {
		if port == 0 {
			return p.errAt(fmt.Sprintf("%s.ports[%d]", mp, i), "port 0")
		}
	}
	trig := m.triggers()
	if len(trig) == 0 {
		return p.errAt(mp, "a rule needs at least one trigger (sni, host, keyword, quic-sni, fet, protocol-allowlist, protocols, tls-fingerprint, udp, flow-age, bytes-s2c, dns)")
	}
	var hasTCP, hasUDP string
	for _, t := range trig {
		if slices.Contains(tcpTriggers, t) {
			hasTCP = t
		}
		if slices.Contains(udpTriggers, t) {
			hasUDP = t
		}
	}
	if hasTCP != "" && hasUDP != "" {
		return p.errAt(mp, "%s needs tcp and %s needs udp: the rule can never fire", hasTCP, hasUDP)
	}
	if (hasTCP != "" && m.Transport == "udp") || (hasUDP != "" && m.Transport == "tcp") {
		return p.errAt(mp+".transport", "transport %s excludes %s%s", m.Transport, hasTCP, hasUDP)
	}
	for i, s := range m.SNI {
		if strings.TrimSpace(s) == "" {
			return p.errAt(fmt.Sprintf("%s.sni[%d]", mp, i), "empty name")
		}
	}
	for i, s := range m.QUICSNI {
		if strings.TrimSpace(s) == "" {
			return p.errAt(fmt.Sprintf("%s.quic-sni[%d]", mp, i), "empty name")
		}
	}
	for i, s := range m.Host {
		if strings.TrimSpace(s) == "" {
			return p.errAt(fmt.Sprintf("%s.host[%d]", mp, i), "empty name")
		}
	}
	for i, s := range m.Keyword {
		if s == "" {
			return p.errAt(fmt.Sprintf("%s.keyword[%d]", mp, i), "empty keyword")
		}
	}
	if f := m.FET; f != nil {
		if !(f.Probability >= 0 && f.Probability <= 1) {
			return p.errAt(mp+".fet.probability", "%v outside [0, 1]", f.Probability)
		}
	}
	if a := m.ProtocolAllowlist; a != nil {
		if len(a.Protocols) == 0 {
			return p.errAt(mp+".protocol-allowlist.protocols", "no protocol allowed: list at least one")
		}
		for i, pr := range a.Protocols {
			if !slices.Contains(validProtocols[:3], pr) {
				return p.errAt(fmt.Sprintf("%s.protocol-allowlist.protocols[%d]", mp, i), "want http, tls or dns, got %q", pr)
			}
		}
		for i, port := range a.Ports {
			if port == 0 {
				return p.errAt(fmt.Sprintf("%s.protocol-allowlist.ports[%d]", mp, i), "port 0")
			}
		}
	}
	for i, pr := range m.Protocols {
		if !slices.Contains(validProtocols, pr) {
			return p.errAt(fmt.Sprintf("%s.protocols[%d]", mp, i), "want http, tls, dns or unknown, got %q", pr)
		}
	}
	if t := m.TLSFingerprint; t != nil {
		switch t.Mode {
		case "", "allow", "block":
		default:
			return p.errAt(mp+".tls-fingerprint.mode", "want allow or block, got %q", t.Mode)
		}
		if len(t.JA4)+len(t.JA3) == 0 {
			return p.errAt(mp+".tls-fingerprint", "list at least one ja4 or ja3 fingerprint")
		}
	}
	if u := m.UDP; u != nil {
		for i, port := range u.Ports {
			if port == 0 {
				return p.errAt(fmt.Sprintf("%s.udp.ports[%d]", mp, i), "port 0")
			}
		}
	}
	if a := m.FlowAge; a != nil && !(a.Seconds > 0 && a.Seconds < 1e9) {
		return p.errAt(mp+".flow-age.seconds", "want a positive number of seconds, got %v", a.Seconds)
	}
	if b := m.BytesS2C; b != nil {
		if b.Threshold <= 0 {
			return p.errAt(mp+".bytes-s2c.threshold", "want a positive byte count, got %d", b.Threshold)
		}
		if b.Max != 0 && b.Max < b.Threshold {
			return p.errAt(mp+".bytes-s2c.max", "%d below the threshold %d", b.Max, b.Threshold)
		}
	}
	if d := m.DNS; d != nil && len(d.Names) == 0 {
		return p.errAt(mp+".dns.names", "list at least one name")
	}
	return p.validateAction(path, r, hasUDP != "")
}

func (p *Profile) validateAction(path string, r *Rule, udpOnly bool) error {
	ap := path + ".action"
	a := r.Action
	switch a.Kind {
	case ActionDrop, ActionReset, ActionFreeze, ActionLog:
	case ActionCutOff:
		if r.Match.Transport == "udp" || udpOnly {
			return p.errAt(ap, "cut-off truncates tcp streams; use drop or freeze for udp")
		}
	case ActionProbe:
		if r.Match.Transport == "udp" || udpOnly {
			return p.errAt(ap, "the prober probes tcp servers only")
		}
	case ActionDNSInject:
		d := a.DNSInject
		if d == nil {
			return p.errAt(ap, "dns-inject needs {ip: ...} or {nxdomain: true}")
		}
		if r.Match.DNS == nil {
			return p.errAt(ap, "dns-inject needs a dns condition in match")
		}
		if d.IP.IsValid() == d.NXDomain {
			return p.errAt(ap+".dns-inject", "give exactly one of ip and nxdomain")
		}
	case ActionThrottle:
		t := a.Throttle
		if t == nil {
			return p.errAt(ap, "throttle needs parameters")
		}
		if t.Delay < 0 || t.Queue < 0 || t.Rate < 0 {
			return p.errAt(ap+".throttle", "negative delay, queue or rate")
		}
		if !(t.Loss >= 0 && t.Loss <= 1) {
			return p.errAt(ap+".throttle.loss", "%v outside [0, 1]", t.Loss)
		}
		if t.Delay == 0 && t.Loss == 0 && t.Rate == 0 {
			return p.errAt(ap+".throttle", "set at least one of delay, loss and rate")
		}
		switch t.Direction {
		case "", "both", "c2s", "s2c":
		default:
			return p.errAt(ap+".throttle.direction", "want both, c2s or s2c, got %q", t.Direction)
		}
	case "":
		return p.errAt(ap, "a rule needs an action")
	default:
		return p.errAt(ap, "unknown action %q", a.Kind)
	}
	if r.Residual < 0 {
		return p.errAt(path+".residual", "negative duration %v", r.Residual)
	}
	switch r.ResidualKey {
	case "", Residual3Tuple, Residual4Tuple, ResidualServer:
	default:
		return p.errAt(path+".residual-key", "want 3-tuple, 4-tuple or server, got %q", r.ResidualKey)
	}
	switch r.ResidualAction {
	case "", ResidualDrop, ResidualReset:
	default:
		return p.errAt(path+".residual-action", "want drop or reset, got %q", r.ResidualAction)
	}
	if r.Residual == 0 && (r.ResidualKey != "" || r.ResidualAction != "") {
		return p.errAt(path+".residual", "residual-key and residual-action need a residual duration")
	}
	return nil
}
