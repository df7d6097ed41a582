package scenario

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/commucat/commucat/configs"
	"github.com/commucat/commucat/testnet/censor"
	"github.com/commucat/commucat/testnet/topology"
)

// Sentinel errors.
var (
	// ErrScenario is wrapped by every *Error: the scenario file is invalid.
	ErrScenario = errors.New("scenario: invalid scenario")
	// ErrNotRoot is returned by Run and Up without root, /dev/net/tun or
	// namespace support; it wraps the netns reason.
	ErrNotRoot = errors.New("scenario: the testnet needs root and /dev/net/tun")
	// ErrFailed is wrapped by Run's error when the run finished but a
	// check of the scenario's expect section failed; the report says which.
	ErrFailed = errors.New("scenario: expectations failed")
)

// Error is an invalid scenario: the key path of the offending value (such
// as run[2].send.count) and, when known, its line.
type Error struct {
	Path string
	Line int
	Err  error
}

// Error returns "scenario: PATH (line N): message".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("scenario: ")
	if e.Path != "" {
		b.WriteString(e.Path)
		if e.Line > 0 {
			fmt.Fprintf(&b, " (line %d)", e.Line)
		}
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is makes every *Error match ErrScenario.
func (e *Error) Is(target error) bool { return target == ErrScenario }

// Transports the gateway program can serve, in the order invites list
// them by default.
var Transports = []string{"reality", "websocket", "quic", "obfs4", "kcp", "tcp"}

// DefaultPorts are the gateway's ports when a scenario names none. Each
// transport has its own port so the censor's log tells them apart; obfs4
// sits on port 80 as bridges often do, where Iran's protocol filter looks.
var DefaultPorts = map[string]uint16{
	"reality":   443,
	"websocket": 8443,
	"quic":      443,
	"obfs4":     80,
	"kcp":       4000,
	"tcp":       5222,
}

// UDPTransports are the transports that run over UDP.
var UDPTransports = []string{"quic", "kcp"}

// Roles of hosts.
const (
	// RoleClient hosts commucat clients (the default role).
	RoleClient = "client"
	// RoleGateway hosts the commucat gateway.
	RoleGateway = "gateway"
	// RoleCover serves a cover website (HTTPS on 443, HTTP on 80) from
	// this process; reality relays unauthenticated visitors to it.
	RoleCover = "cover"
	// RoleResolver answers DNS queries on port 53 (UDP) from Records.
	RoleResolver = "resolver"
	// RoleProber is where the censor's active prober dials from; the
	// censor never inspects its packets.
	RoleProber = "prober"
)

// Scenario is one test-network run: the hosts and their links, the
// censor, a timeline of events, the commucat programs to run and what
// must hold at the end. Build it with Parse or Load; the zero value of
// every optional field is its documented default.
type Scenario struct {
	// Name names the scenario in reports; required.
	Name string `yaml:"name"`
	// Description says what the scenario shows.
	Description string `yaml:"description"`
	// Seed seeds the links and the censor; if zero, a random seed is
	// drawn and reported.
	Seed uint64 `yaml:"seed"`
	// Duration caps the whole run, set-up included; if zero, 5m.
	Duration time.Duration `yaml:"duration"`
	// Drain is how long the run waits, after the last foreground program
	// of Run ended, for listeners to receive what they still expect; if
	// zero, 10s.
	Drain time.Duration `yaml:"drain"`
	// MTU is the MTU of every host's TUN device. If zero, the smallest
	// MTU of any link (a host's or the censor profile's), so that TCP's
	// segments fit the path as they do behind a link that clamps the MSS;
	// without link MTUs, 1500. A TUN MTU above a link's MTU makes a
	// path-MTU black hole (the router sends no ICMP).
	MTU int `yaml:"mtu"`
	// Hosts are the hosts, in address order: the i-th gets 198.18.0.(i+1).
	Hosts []Host `yaml:"hosts"`
	// Censor is the censor at the border; nil means none.
	Censor *Censor `yaml:"censor"`
	// Timeline are events at times counted from the start of Run.
	Timeline []Event `yaml:"timeline"`
	// Setup programs run in order before the clock starts, each waiting
	// for the one before to be ready (gateway, listen) or done.
	Setup []Program `yaml:"setup"`
	// Run programs run in order once the clock starts: each foreground
	// program is waited for before the next starts, background ones
	// (listen always) keep running.
	Run []Program `yaml:"run"`
	// Expect is what must hold at the end.
	Expect Expect `yaml:"expect"`
}

// Host is one network namespace of the testnet.
type Host struct {
	// Name is unique: letters, digits, '-' and '_'.
	Name string `yaml:"name"`
	// Role is client (default), gateway, cover, resolver or prober.
	Role string `yaml:"role"`
	// Zone is inside (the censored side) or outside; if empty, inside for
	// clients and probers, outside for the others.
	Zone string `yaml:"zone"`
	// Up is the link from the host to the router, Down the way back. A
	// direction left empty on an inside host takes the censor profile's
	// link section, if any.
	Up   *censor.LinkParams `yaml:"up"`
	Down *censor.LinkParams `yaml:"down"`
	// Names are the cover website's host names (role cover); if empty,
	// www.cover.test.
	Names []string `yaml:"names"`
	// Records are the resolver's A records (role resolver): a name to a
	// host name of this scenario or an IPv4 address.
	Records map[string]string `yaml:"records"`
}

// Censor selects the censor profile: exactly one of Profile (a shipped
// profile, see configs.CensorProfileNames), File or Inline.
type Censor struct {
	Profile string `yaml:"profile"`
	File    string `yaml:"file"`
	// Inline is a profile written in place, in the schema of
	// testnet/censor.ParseProfile: a mapping, or a block string.
	Inline Text `yaml:"inline"`
	// Seed seeds the censor's random choices; if zero, the scenario's
	// seed.
	Seed uint64 `yaml:"seed"`
	// Off starts with the censor switched off (turn it on in the
	// timeline).
	Off bool `yaml:"off"`
}

// Text is a YAML document kept as text. In a scenario file it is written
// either as a string or in place as a mapping, which the decoder turns
// back into text.
type Text string

// Event is one timeline event; exactly one of Link, Blackhole,
// Unblackhole and Censor is set.
type Event struct {
	// At is when the event happens, counted from the start of Run.
	At time.Duration `yaml:"at"`
	// Link sets the parameters of a host's link.
	Link *LinkEvent `yaml:"link"`
	// Blackhole drops a host's packets, or those of one of its ports.
	Blackhole *Hole `yaml:"blackhole"`
	// Unblackhole ends a Blackhole with the same fields.
	Unblackhole *Hole `yaml:"unblackhole"`
	// Censor switches the censor "on" or "off".
	Censor string `yaml:"censor"`
}

// LinkEvent changes a host's link.
type LinkEvent struct {
	Host string `yaml:"host"`
	// Dir is up, down or both (default).
	Dir    string            `yaml:"dir"`
	Params censor.LinkParams `yaml:"params"`
}

// Hole selects packets to drop: every packet of Host, those of its Port
// (of Proto tcp or udp, or both), or those of the gateway's port of
// Transport.
type Hole struct {
	Host      string `yaml:"host"`
	Port      uint16 `yaml:"port"`
	Proto     string `yaml:"proto"`
	Transport string `yaml:"transport"`
}

// Program is one step of Setup or Run: exactly one of its fields is set.
type Program struct {
	Gateway  *Gateway  `yaml:"gateway"`
	Register *Register `yaml:"register"`
	Listen   *Listen   `yaml:"listen"`
	Send     *Send     `yaml:"send"`
	Chat     *Send     `yaml:"chat"`
	Probe    *Probe    `yaml:"probe"`
	Exec     *Exec     `yaml:"exec"`
}

// Gateway runs `commucat gateway` with a generated configuration.
type Gateway struct {
	// Host runs the gateway; required.
	Host string `yaml:"host"`
	// Transports are served in this order; if empty, every one of
	// Transports.
	Transports []string `yaml:"transports"`
	// Ports override DefaultPorts.
	Ports map[string]uint16 `yaml:"ports"`
	// Params are extra transport parameters for the gateway
	// configuration, per transport. Reality's dest and sni default to the
	// cover host, if the scenario has one.
	Params map[string]map[string]string `yaml:"params"`
}

// Register makes an invite on the gateway and registers User from Host.
type Register struct {
	Host string `yaml:"host"`
	User string `yaml:"user"`
	// Transport restricts the client to one transport (--transport).
	Transport string `yaml:"transport"`
}

// Listen runs `commucat listen --json` for User, in the background.
type Listen struct {
	User string `yaml:"user"`
	// Transport restricts the client to one transport.
	Transport string `yaml:"transport"`
	// At delays the start (Run only), counted from the start of Run.
	At time.Duration `yaml:"at"`
	// Count ends the listener after this many messages.
	Count int `yaml:"count"`
}

// Send sends Count messages from User to To. As `send`, each message is
// one `commucat send` process (a full connection each, retried up to
// Retries times); as `chat`, one long-lived session sends them all and
// samples the client router's statistics (path choices) every Stats.
type Send struct {
	User string `yaml:"user"`
	To   string `yaml:"to"`
	// Count is how many messages; if zero, 1.
	Count int `yaml:"count"`
	// Size is each message's size in bytes; if zero, 64.
	Size int `yaml:"size"`
	// Interval separates the messages' starts.
	Interval time.Duration `yaml:"interval"`
	// Parallel is how many messages chat keeps in flight; if zero, 1.
	Parallel int `yaml:"parallel"`
	// Transport restricts the client to one transport.
	Transport string `yaml:"transport"`
	// Fingerprint is the --fingerprint flag: a preset or a ClientHello
	// file.
	Fingerprint string `yaml:"fingerprint"`
	// Timeout is the client's --timeout for connecting; if zero, 30s.
	Timeout time.Duration `yaml:"timeout"`
	// Retries is how often send retries a failed message; chat retries
	// until For ends.
	Retries int `yaml:"retries"`
	// For bounds chat; if zero, 60s.
	For time.Duration `yaml:"for"`
	// Stats is chat's sampling interval; if zero, 250ms.
	Stats time.Duration `yaml:"stats"`
	// At delays the start (Run only).
	At time.Duration `yaml:"at"`
	// Background lets the next program start at once.
	Background bool `yaml:"background"`
}

// Probe tries each transport on its own: per attempt, a listener for To
// and a message from User, both restricted to the transport, and records
// whether the message arrived within Timeout. Attempts repeat up to
// Attempts times and stop at the first failure, so a probabilistic block
// (the GFW's 26 % fully-encrypted draw) is found.
type Probe struct {
	User string `yaml:"user"`
	To   string `yaml:"to"`
	// Transports to try, in order; if empty, the gateway's.
	Transports []string `yaml:"transports"`
	// Attempts per transport; if zero, 1.
	Attempts int `yaml:"attempts"`
	// Size of the message; if zero, 64. Above about 16 KB the message
	// crosses the TSPU's cut-off.
	Size int `yaml:"size"`
	// Timeout bounds each attempt; if zero, 8s.
	Timeout time.Duration `yaml:"timeout"`
	// Fingerprint is the --fingerprint flag of both clients.
	Fingerprint string        `yaml:"fingerprint"`
	At          time.Duration `yaml:"at"`
}

// Exec runs the commucat binary with Args on Host (`commucat probe ...`,
// for example), to completion unless Background.
type Exec struct {
	Host string   `yaml:"host"`
	Args []string `yaml:"args"`
	// Exit is the exit status it must end with (checked when set).
	Exit       *int          `yaml:"exit"`
	Timeout    time.Duration `yaml:"timeout"`
	At         time.Duration `yaml:"at"`
	Background bool          `yaml:"background"`
}

// Expect is what must hold at the end of a run. Zero fields check
// nothing.
type Expect struct {
	// Delivered is the least number of distinct messages delivered.
	Delivered int `yaml:"delivered"`
	// AllDelivered: every message the gateway accepted was delivered.
	AllDelivered bool `yaml:"all-delivered"`
	// ExactlyOnce: no message was shown twice by its recipient.
	ExactlyOnce bool `yaml:"exactly-once"`
	// SendsSucceed: every message's send eventually succeeded.
	SendsSucceed bool `yaml:"sends-succeed"`
	// Recover bounds the delivery time of messages sent after an event.
	Recover *Recover `yaml:"recover"`
	// Fired are censor rules that must appear in the action log;
	// NotFired must not.
	Fired    []RuleMatch `yaml:"fired"`
	NotFired []RuleMatch `yaml:"not-fired"`
	// Blocked are transports a probe (without a fingerprint) must find
	// blocked, Open those it must find working.
	Blocked []string `yaml:"blocked"`
	Open    []string `yaml:"open"`
}

// Recover says that every message sent at or after After (counted from
// the start of Run) is delivered within Within of being sent.
type Recover struct {
	After  time.Duration `yaml:"after"`
	Within time.Duration `yaml:"within"`
}

// RuleMatch selects action-log events: of rule Rule (any if empty), with
// action Action (any if empty), on the gateway's port of Transport (any
// flow if empty).
type RuleMatch struct {
	Rule      string `yaml:"rule"`
	Action    string `yaml:"action"`
	Transport string `yaml:"transport"`
}

// String describes the match, e.g. "fet on obfs4".
func (m RuleMatch) String() string {
	s := m.Rule
	if s == "" {
		s = "any rule"
	}
	if m.Action != "" {
		s += " (" + m.Action + ")"
	}
	if m.Transport != "" {
		s += " on " + m.Transport
	}
	return s
}

// kind returns the program's kind and its number of set fields.
func (p Program) kind() (string, int) {
	var k string
	n := 0
	for _, c := range []struct {
		set  bool
		name string
	}{{p.Gateway != nil, "gateway"}, {p.Register != nil, "register"}, {p.Listen != nil, "listen"}, {p.Send != nil, "send"}, {p.Chat != nil, "chat"}, {p.Probe != nil, "probe"}, {p.Exec != nil, "exec"}} {
		if c.set {
			n++
			k = c.name
		}
	}
	return k, n
}

// Kind returns "gateway", "register", "listen", "send", "chat", "probe"
// or "exec", or "" for an empty program.
func (p Program) Kind() string {
	k, n := p.kind()
	if n != 1 {
		return ""
	}
	return k
}

// HostByRole returns the first host with the role, or false.
func (s *Scenario) HostByRole(role string) (Host, bool) {
	for _, h := range s.Hosts {
		if h.role() == role {
			return h, true
		}
	}
	return Host{}, false
}

// role returns the host's role with the default applied.
func (h Host) role() string {
	if h.Role == "" {
		return RoleClient
	}
	return h.Role
}

// inside reports whether the host is on the censored side.
func (h Host) inside() bool {
	switch h.Zone {
	case "inside":
		return true
	case "outside":
		return false
	}
	r := h.role()
	return r == RoleClient || r == RoleProber
}

// transports returns the gateway's transports, defaults applied.
func (g *Gateway) transports() []string {
	if len(g.Transports) == 0 {
		return Transports
	}
	return g.Transports
}

// port returns the gateway's port for transport t.
func (g *Gateway) port(t string) uint16 {
	if p, ok := g.Ports[t]; ok {
		return p
	}
	return DefaultPorts[t]
}

// proto returns "udp" or "tcp" for transport t.
func proto(t string) string {
	if slices.Contains(UDPTransports, t) {
		return "udp"
	}
	return "tcp"
}

// CensorProfile returns the scenario's censor profile, parsed, or nil
// when it has none. base resolves a relative File.
func (s *Scenario) CensorProfile(base string) (*censor.Profile, error) {
	c := s.Censor
	if c == nil {
		return nil, nil
	}
	switch {
	case c.Profile != "":
		b, err := configs.CensorProfileYAML(c.Profile)
		if err != nil {
			return nil, &Error{Path: "censor.profile", Err: err}
		}
		p, err := censor.ParseProfile(b)
		if err != nil {
			return nil, &Error{Path: "censor.profile", Err: err}
		}
		return p, nil
	case c.File != "":
		path := c.File
		if base != "" && !strings.HasPrefix(path, "/") {
			path = base + "/" + path
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, &Error{Path: "censor.file", Err: err}
		}
		p, err := censor.ParseProfile(b)
		if err != nil {
			return nil, &Error{Path: "censor.file", Err: err}
		}
		return p, nil
	case c.Inline != "":
		p, err := censor.ParseProfile([]byte(c.Inline))
		if err != nil {
			return nil, &Error{Path: "censor.inline", Err: err}
		}
		return p, nil
	}
	return nil, nil
}

// Validate checks the scenario without touching the system: names,
// references between hosts, users and transports, and value ranges.
func (s *Scenario) Validate() error {
	bad := func(path, format string, args ...any) error {
		return &Error{Path: path, Err: fmt.Errorf(format, args...)}
	}
	if s.Name == "" {
		return bad("name", "required")
	}
	if s.Duration < 0 || s.Drain < 0 {
		return bad("duration", "negative")
	}
	if s.MTU != 0 && (s.MTU < 1280 || s.MTU > 65535) {
		return bad("mtu", "%d, want 1280 to 65535", s.MTU)
	}
	if len(s.Hosts) == 0 || len(s.Hosts) > topology.MaxHosts {
		return bad("hosts", "%d hosts, want 1 to %d", len(s.Hosts), topology.MaxHosts)
	}
	hosts := map[string]Host{}
	for i, h := range s.Hosts {
		p := fmt.Sprintf("hosts[%d]", i)
		if !validName(h.Name) {
			return bad(p+".name", "%q: want 1 to 32 letters, digits, '-' or '_'", h.Name)
		}
		if _, dup := hosts[h.Name]; dup {
			return bad(p+".name", "%q twice", h.Name)
		}
		hosts[h.Name] = h
		switch h.role() {
		case RoleClient, RoleGateway, RoleCover, RoleResolver, RoleProber:
		default:
			return bad(p+".role", "%q: want client, gateway, cover, resolver or prober", h.Role)
		}
		switch h.Zone {
		case "", "inside", "outside":
		default:
			return bad(p+".zone", "%q: want inside or outside", h.Zone)
		}
		for dir, lp := range map[string]*censor.LinkParams{"up": h.Up, "down": h.Down} {
			if lp == nil {
				continue
			}
			if err := lp.Params().Validate(); err != nil {
				return bad(p+"."+dir, "%w", err)
			}
		}
		if len(h.Names) > 0 && h.role() != RoleCover {
			return bad(p+".names", "only for role cover")
		}
		if len(h.Records) > 0 && h.role() != RoleResolver {
			return bad(p+".records", "only for role resolver")
		}
		for _, n := range h.Names {
			if !validDNSName(n) {
				return bad(p+".names", "%q is not a host name", n)
			}
		}
	}
	for i, h := range s.Hosts {
		for name, target := range h.Records {
			if !validDNSName(name) {
				return bad(fmt.Sprintf("hosts[%d].records.%s", i, name), "not a host name")
			}
			if _, ok := hosts[target]; ok {
				continue
			}
			if a, err := netip.ParseAddr(target); err != nil || !a.Is4() {
				return bad(fmt.Sprintf("hosts[%d].records.%s", i, name), "%q is neither a host nor an IPv4 address", target)
			}
		}
	}
	if c := s.Censor; c != nil {
		n := 0
		for _, set := range []bool{c.Profile != "", c.File != "", c.Inline != ""} {
			if set {
				n++
			}
		}
		if n != 1 {
			return bad("censor", "set exactly one of profile, file and inline")
		}
		if c.Profile != "" && !slices.Contains(configs.CensorProfileNames(), c.Profile) {
			return bad("censor.profile", "%q is not shipped (have %s)", c.Profile, strings.Join(configs.CensorProfileNames(), ", "))
		}
		if c.Inline != "" {
			if _, err := censor.ParseProfile([]byte(c.Inline)); err != nil {
				return &Error{Path: "censor.inline", Err: err}
			}
		}
	}
	// Programs: exactly one gateway, users registered before use.
	var gw *Gateway
	users := map[string]bool{}
	check := func(path string, p Program, setup bool) error {
		k, n := p.kind()
		if n != 1 {
			return bad(path, "set exactly one of gateway, register, listen, send, chat, probe and exec")
		}
		needUser := func(field, u string) error {
			if !users[u] {
				return bad(path+"."+k+"."+field, "user %q is not registered before this step", u)
			}
			return nil
		}
		needTransport := func(field, t string) error {
			if t == "" {
				return nil
			}
			if gw == nil || !slices.Contains(gw.transports(), t) {
				return bad(path+"."+k+"."+field, "transport %q is not served by the gateway", t)
			}
			return nil
		}
		needHost := func(field, h string) error {
			if _, ok := hosts[h]; !ok {
				return bad(path+"."+k+"."+field, "no host %q", h)
			}
			return nil
		}
		if k != "gateway" && k != "exec" && gw == nil {
			return bad(path+"."+k, "needs a gateway program before it")
		}
		if setup {
			switch k {
			case "send", "chat", "probe", "exec":
				return bad(path+"."+k, "belongs in run")
			}
		}
		switch k {
		case "gateway":
			g := p.Gateway
			if gw != nil {
				return bad(path+".gateway", "only one gateway per scenario")
			}
			if err := needHost("host", g.Host); err != nil {
				return err
			}
			seen := map[string]bool{}
			for j, t := range g.Transports {
				if !slices.Contains(Transports, t) {
					return bad(fmt.Sprintf("%s.gateway.transports[%d]", path, j), "%q: want one of %s", t, strings.Join(Transports, ", "))
				}
				if seen[t] {
					return bad(fmt.Sprintf("%s.gateway.transports[%d]", path, j), "%q twice", t)
				}
				seen[t] = true
			}
			for t := range g.Ports {
				if !slices.Contains(g.transports(), t) {
					return bad(path+".gateway.ports."+t, "transport not served")
				}
			}
			for t := range g.Params {
				if !slices.Contains(g.transports(), t) {
					return bad(path+".gateway.params."+t, "transport not served")
				}
			}
			used := map[string]string{}
			for _, t := range g.transports() {
				key := fmt.Sprintf("%d/%s", g.port(t), proto(t))
				if g.port(t) == 0 {
					return bad(path+".gateway.ports."+t, "port 0")
				}
				if o, dup := used[key]; dup {
					return bad(path+".gateway.ports."+t, "port %s also used by %s", key, o)
				}
				used[key] = t
			}
			gw = g
		case "register":
			r := p.Register
			if err := needHost("host", r.Host); err != nil {
				return err
			}
			if !validName(r.User) {
				return bad(path+".register.user", "%q: want 1 to 32 letters, digits, '-' or '_'", r.User)
			}
			if users[r.User] {
				return bad(path+".register.user", "%q registered twice", r.User)
			}
			if err := needTransport("transport", r.Transport); err != nil {
				return err
			}
			users[r.User] = true
		case "listen":
			l := p.Listen
			if err := needUser("user", l.User); err != nil {
				return err
			}
			if err := needTransport("transport", l.Transport); err != nil {
				return err
			}
			if l.Count < 0 || l.At < 0 || (setup && l.At != 0) {
				return bad(path+".listen", "count and at must not be negative; at only in run")
			}
		case "send", "chat":
			sd := p.Send
			if k == "chat" {
				sd = p.Chat
			}
			if err := needUser("user", sd.User); err != nil {
				return err
			}
			if err := needUser("to", sd.To); err != nil {
				return err
			}
			if err := needTransport("transport", sd.Transport); err != nil {
				return err
			}
			if sd.Count < 0 || sd.Count > 100000 || sd.Size < 0 || sd.Size > maxMessage || sd.Parallel < 0 || sd.Parallel > 64 ||
				sd.Interval < 0 || sd.Timeout < 0 || sd.Retries < 0 || sd.For < 0 || sd.Stats < 0 || sd.At < 0 {
				return bad(path+"."+k, "count 0-100000, size 0-%d, parallel 0-64, no negative durations or retries", maxMessage)
			}
			if sd.Size > 0 && sd.Size < minMessage {
				return bad(path+"."+k+".size", "at least %d bytes (the message's tag)", minMessage)
			}
		case "probe":
			pr := p.Probe
			if err := needUser("user", pr.User); err != nil {
				return err
			}
			if err := needUser("to", pr.To); err != nil {
				return err
			}
			for j, t := range pr.Transports {
				if err := needTransport(fmt.Sprintf("transports[%d]", j), t); err != nil {
					return err
				}
			}
			if pr.Attempts < 0 || pr.Attempts > 1000 || pr.Size < 0 || pr.Size > maxMessage || pr.Timeout < 0 || pr.At < 0 {
				return bad(path+".probe", "attempts 0-1000, size 0-%d, no negative durations", maxMessage)
			}
			if pr.Size > 0 && pr.Size < minMessage {
				return bad(path+".probe.size", "at least %d bytes (the message's tag)", minMessage)
			}
		case "exec":
			e := p.Exec
			if err := needHost("host", e.Host); err != nil {
				return err
			}
			if len(e.Args) == 0 {
				return bad(path+".exec.args", "required")
			}
			if e.Timeout < 0 || e.At < 0 {
				return bad(path+".exec", "negative duration")
			}
		}
		return nil
	}
	for i, p := range s.Setup {
		if err := check(fmt.Sprintf("setup[%d]", i), p, true); err != nil {
			return err
		}
	}
	for i, p := range s.Run {
		if err := check(fmt.Sprintf("run[%d]", i), p, false); err != nil {
			return err
		}
	}
	for i, e := range s.Timeline {
		p := fmt.Sprintf("timeline[%d]", i)
		n := 0
		for _, set := range []bool{e.Link != nil, e.Blackhole != nil, e.Unblackhole != nil, e.Censor != ""} {
			if set {
				n++
			}
		}
		if n != 1 {
			return bad(p, "set exactly one of link, blackhole, unblackhole and censor")
		}
		if e.At < 0 {
			return bad(p+".at", "negative")
		}
		switch {
		case e.Link != nil:
			if _, ok := hosts[e.Link.Host]; !ok {
				return bad(p+".link.host", "no host %q", e.Link.Host)
			}
			switch e.Link.Dir {
			case "", "up", "down", "both":
			default:
				return bad(p+".link.dir", "%q: want up, down or both", e.Link.Dir)
			}
			if err := e.Link.Params.Params().Validate(); err != nil {
				return bad(p+".link.params", "%w", err)
			}
		case e.Censor != "":
			if e.Censor != "on" && e.Censor != "off" {
				return bad(p+".censor", "%q: want on or off", e.Censor)
			}
			if s.Censor == nil {
				return bad(p+".censor", "the scenario has no censor")
			}
		default:
			h, field := e.Blackhole, "blackhole"
			if h == nil {
				h, field = e.Unblackhole, "unblackhole"
			}
			if _, ok := hosts[h.Host]; !ok {
				return bad(p+"."+field+".host", "no host %q", h.Host)
			}
			switch h.Proto {
			case "", "tcp", "udp":
			default:
				return bad(p+"."+field+".proto", "%q: want tcp or udp", h.Proto)
			}
			if h.Transport != "" {
				if h.Port != 0 || h.Proto != "" {
					return bad(p+"."+field, "transport replaces port and proto")
				}
				if gw == nil || !slices.Contains(gw.transports(), h.Transport) {
					return bad(p+"."+field+".transport", "%q is not served by the gateway", h.Transport)
				}
			}
		}
	}
	if r := s.Expect.Recover; r != nil && (r.After < 0 || r.Within <= 0) {
		return bad("expect.recover", "after must not be negative and within must be positive")
	}
	if s.Expect.Delivered < 0 {
		return bad("expect.delivered", "negative")
	}
	for field, ms := range map[string][]RuleMatch{"fired": s.Expect.Fired, "not-fired": s.Expect.NotFired} {
		for i, m := range ms {
			if m.Transport != "" && (gw == nil || !slices.Contains(gw.transports(), m.Transport)) {
				return bad(fmt.Sprintf("expect.%s[%d].transport", field, i), "%q is not served by the gateway", m.Transport)
			}
			if s.Censor == nil {
				return bad("expect."+field, "the scenario has no censor")
			}
		}
	}
	for field, ts := range map[string][]string{"blocked": s.Expect.Blocked, "open": s.Expect.Open} {
		for i, t := range ts {
			if gw == nil || !slices.Contains(gw.transports(), t) {
				return bad(fmt.Sprintf("expect.%s[%d]", field, i), "%q is not served by the gateway", t)
			}
		}
	}
	return nil
}

// validName reports whether s names a host or a user.
func validName(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// validDNSName reports whether s is a plausible host name.
func validDNSName(s string) bool {
	if s == "" || len(s) > 253 || strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// Message sizes.
const (
	minMessage = 32
	maxMessage = 60 << 10
)
