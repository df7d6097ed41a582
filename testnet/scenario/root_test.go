package scenario

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commucat/commucat/configs"
	"github.com/commucat/commucat/testnet/censor"
	"github.com/commucat/commucat/testnet/netns"
	"github.com/commucat/commucat/testnet/topology"
	"github.com/google/go-cmp/cmp"
	quicgo "github.com/quic-go/quic-go"
	"golang.org/x/net/dns/dnsmessage"
)

// The integration tests run the real gateway and client binaries in the
// test network, under every shipped censor profile. They need root and
// /dev/net/tun: without them they skip, loudly, unless
// COMMUCAT_REQUIRE_ALL=1 or CI=true, where they fail.

// requireTestnet skips or fails the test when the testnet cannot run.
func requireTestnet(t *testing.T) {
	t.Helper()
	err := netns.Check()
	if err == nil {
		return
	}
	msg := "the testnet integration tests need root and /dev/net/tun: " + err.Error()
	if os.Getenv("COMMUCAT_REQUIRE_ALL") == "1" || os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	fmt.Fprintf(os.Stderr, "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"+
		"!! SKIPPING %s: %s\n!! Run as root (sudo go test ./testnet/scenario) to run them;\n"+
		"!! COMMUCAT_REQUIRE_ALL=1 turns this skip into a failure.\n"+
		"!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\n", t.Name(), msg)
	t.Skip("SKIPPED (LOUDLY): " + msg)
}

// The commucat binary, built once per test process.
var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

// commucatBinary builds cmd/commucat once.
func commucatBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "commucat-scenario-test-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "commucat")
		out, err := exec.Command("go", "build", "-o", binPath, "../../cmd/commucat").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build ./cmd/commucat: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// run runs s and fails the test on errors other than failed checks.
func run(t *testing.T, s *Scenario, opt Options) *Report {
	t.Helper()
	opt.Binary = commucatBinary(t)
	opt.Dir = t.TempDir()
	rep, err := Run(context.Background(), s, opt)
	if rep != nil {
		var b strings.Builder
		rep.WriteMarkdown(&b)
		t.Logf("report:\n%s", b.String())
	}
	if err != nil && !errors.Is(err, ErrFailed) {
		t.Fatalf("run %s: %v", s.Name, err)
	}
	for _, c := range rep.Failed() {
		t.Errorf("check failed: %s: %s", c.Name, c.Detail)
	}
	if t.Failed() {
		keepLogs(t, rep)
	}
	return rep
}

// keepLogs copies a failed run's directory out of the test's temporary
// directory, which the test removes, and says where.
func keepLogs(t *testing.T, rep *Report) {
	t.Helper()
	dst, err := os.MkdirTemp("", "commucat-failed-"+rep.Scenario+"-")
	if err != nil {
		return
	}
	if err := os.CopyFS(dst, os.DirFS(rep.Dir)); err == nil {
		t.Logf("logs, reports and the censor's action log kept in %s", dst)
	}
}

// censorLog reads a run's action log.
func censorLog(t *testing.T, rep *Report) []censor.Event {
	t.Helper()
	f, err := os.Open(rep.Censor.Log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	evs, err := censor.ParseLog(f)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// goHello captures the ClientHello of Go's crypto/tls (what a Go client
// sends by default) into a file that --fingerprint replays.
func goHello(t *testing.T) (path, ja4 string) {
	t.Helper()
	c, s := net.Pipe()
	defer c.Close()
	go func() {
		tc := tls.Client(c, &tls.Config{ServerName: DefaultCoverName, NextProtos: []string{"h2", "http/1.1"}})
		tc.Handshake() // fails when s closes
	}()
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(s, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(s, body); err != nil {
		t.Fatal(err)
	}
	s.Close()
	h, err := censor.ParseClientHello(body)
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), "go-hello.bin")
	if err := os.WriteFile(path, append(hdr, body...), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, h.JA4(censor.JA4TCP)
}

// profileCase is what one shipped profile must do to the transports.
type profileCase struct {
	profile string
	// blocked maps each transport the published rules block to the rule
	// that must block it; the others must not be blocked.
	blocked map[string]string
	// throttled maps transports to the rule that throttles them.
	throttled map[string]string
	// attempts per blocked transport (a probabilistic block needs more).
	attempts int
	// onRun are the profile's own checks from inside the network.
	onRun func(t *testing.T) func(ctx context.Context, n *topology.Net) error
	// check inspects the action log.
	check func(t *testing.T, rep *Report, evs []censor.Event)
}

// profileCases follow the comments of configs/censors/*.yaml: what each
// published measurement says the censor blocks. Transports and ports:
// DefaultPorts (obfs4 on 80, reality on 443, websocket on 8443).
func profileCases(goHelloPath, goJA4 string) []profileCase {
	return []profileCase{
		{profile: "wan-clean"},
		{profile: "wan-mobile-lossy"},
		{
			// Random-looking first packets (obfs4, and the plain tcp
			// transport's Noise handshake) fail Algorithm 1 of Wu et al.
			// and are dropped with probability 0.26, then their 3-tuple
			// for 180 s; TLS passes the exemptions; UDP is not tested.
			profile: "gfw-fet", blocked: map[string]string{"obfs4": "fet", "tcp": "fet"}, attempts: 40,
		},
		{
			// The listed names only: none of ours. A TLS connection to the
			// cover with SNI blocked.example is reset, one with the cover's
			// name is not, and a DNS query for blocked.example is answered
			// with the forged address.
			profile: "gfw-sni",
			onRun: func(t *testing.T) func(ctx context.Context, n *topology.Net) error {
				return func(ctx context.Context, n *topology.Net) error {
					// The allowed name first: the reset blocks the 3-tuple.
					if err := tlsHandshake(ctx, n, "alice", DefaultCoverName, nil); err != nil {
						return fmt.Errorf("a TLS handshake with the cover's name: %w", err)
					}
					if err := tlsHandshake(ctx, n, "alice", "blocked.example", nil); err == nil {
						return errors.New("a TLS handshake with SNI blocked.example succeeded")
					}
					a, err := lookup(ctx, n, "alice", "blocked.example")
					if err != nil {
						return err
					}
					if a != "198.18.255.254" {
						return fmt.Errorf("blocked.example resolved to %s, want the forged 198.18.255.254", a)
					}
					return nil
				}
			},
			check: func(t *testing.T, rep *Report, evs []censor.Event) {
				t.Helper()
				wantRules(t, evs, map[string]bool{"sni": true, "dns": true})
			},
		},
		{
			// QUIC Initials naming a listed host are dropped; ours name
			// none. A quic-go Initial with SNI blocked.example to the cover
			// is dropped.
			profile: "gfw-quic-sni",
			onRun: func(t *testing.T) func(ctx context.Context, n *topology.Net) error {
				return func(ctx context.Context, n *topology.Net) error {
					return quicInitial(ctx, n, "alice", "blocked.example")
				}
			},
			check: func(t *testing.T, rep *Report, evs []censor.Event) {
				t.Helper()
				wantRules(t, evs, map[string]bool{"quic-sni": true})
			},
		},
		{
			// The JA4 allowlist of browsers. reality's utls Chrome hello
			// passes; the same client replaying Go's crypto/tls hello
			// (--fingerprint) is reset, and so is a plain crypto/tls
			// connection. websocket is reset too: the invite addresses the
			// gateway by IP, so its Chrome hello carries no SNI and its JA4
			// starts t13i, which no browser on the list sends to a name.
			profile: "gfw-tlsfp", blocked: map[string]string{"websocket": "tls-fingerprint"},
			onRun: func(t *testing.T) func(ctx context.Context, n *topology.Net) error {
				return func(ctx context.Context, n *topology.Net) error {
					if err := tlsHandshake(ctx, n, "alice", DefaultCoverName, nil); err == nil {
						return errors.New("a crypto/tls handshake passed the fingerprint allowlist")
					}
					return nil
				}
			},
			check: func(t *testing.T, rep *Report, evs []censor.Event) {
				t.Helper()
				var goResets, wsNoSNI int
				for _, e := range evs {
					if e.Rule != "tls-fingerprint" || e.Action != "reset" {
						continue
					}
					switch e.Detail["ja4"] {
					case goJA4:
						goResets++
					default:
						if strings.HasPrefix(e.Detail["ja4"], "t13i") {
							wsNoSNI++
						} else {
							t.Errorf("reset of an unexpected fingerprint %s (%s -> %s)", e.Detail["ja4"], e.Client, e.Server)
						}
					}
				}
				// The crypto/tls control and the reality client with Go's hello.
				if goResets < 2 {
					t.Errorf("%d resets of Go's fingerprint %s, want the control's and the reality client's", goResets, goJA4)
				}
				if wsNoSNI == 0 {
					t.Error("websocket without SNI was not reset")
				}
				ok := false
				for _, p := range rep.Probes {
					if p.Step == "run[1]" && p.Transport == "reality" && !p.OK {
						ok = true
					}
				}
				if !ok {
					t.Error("the reality client with Go's ClientHello got through")
				}
				n, _ := matches(rep, RuleMatch{Rule: "tls-fingerprint", Action: "reset", Transport: "reality"})
				if n == 0 {
					t.Error("no reset of reality's flow with Go's ClientHello in the log")
				}
			},
		},
		{
			// The prober replays and probes the servers of random-looking
			// flows (obfs4, tcp) and finds neither behaves like a proxy:
			// both stay silent or close like the gateway's handshake does.
			profile: "gfw-prober",
			check: func(t *testing.T, rep *Report, evs []censor.Event) {
				t.Helper()
				judged := map[string]string{}
				for _, e := range evs {
					if e.Action == censor.EventProbeResult {
						judged[transportOfServer(rep, e)] = e.Detail["verdict"]
					}
				}
				if diff := cmp.Diff(map[string]string{"obfs4": "clean", "tcp": "clean"}, judged); diff != "" {
					t.Errorf("prober verdicts (-want +got):\n%s", diff)
				}
			},
		},
		{
			// Only HTTP, TLS and DNS on ports 53, 80 and 443: obfs4 on 80.
			profile: "iran-protocol-filter", blocked: map[string]string{"obfs4": "protocol-filter"},
		},
		{
			// TLS flows freeze after 16-20 KB from the server: a 24 KB
			// message to a client over reality or websocket.
			profile: "tspu-16k", blocked: map[string]string{"reality": "freeze-16k", "websocket": "freeze-16k"},
		},
		{
			// Every non-DNS UDP flow from inside is dropped.
			profile: "udp-block", blocked: map[string]string{"quic": "udp", "kcp": "udp"},
		},
		{
			// Unknown protocols are throttled (TLS is not); no listed SNI;
			// connections are too young for the 120 s kill.
			profile:   "throttle-and-kill",
			throttled: map[string]string{"quic": "throttle-unknown", "kcp": "throttle-unknown", "obfs4": "throttle-unknown", "tcp": "throttle-unknown"},
		},
	}
}

// transportOfServer maps an event's server to a gateway transport.
func transportOfServer(rep *Report, e censor.Event) string {
	for _, ep := range rep.Gateway {
		if strings.HasSuffix(e.Server, fmt.Sprintf(":%d", ep.Port)) && (e.Proto == "" || e.Proto == ep.Proto) {
			return ep.Transport
		}
	}
	return ""
}

// wantRules checks that each rule fired at least once.
func wantRules(t *testing.T, evs []censor.Event, rules map[string]bool) {
	t.Helper()
	for r := range rules {
		if !slices.ContainsFunc(evs, func(e censor.Event) bool { return e.Rule == r }) {
			t.Errorf("rule %s never fired", r)
		}
	}
}

// tlsHandshake makes a crypto/tls handshake from host to the cover site.
func tlsHandshake(ctx context.Context, n *topology.Net, host, sni string, _ []string) error {
	ctx, cancel := context.WithTimeout(ctx, 4*time.Second)
	defer cancel()
	addr := net.JoinHostPort(n.Addr("cover").String(), "443")
	c, err := n.Dial(ctx, host, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	tc := tls.Client(c, &tls.Config{ServerName: sni, InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}})
	return tc.HandshakeContext(ctx)
}

// lookup asks the resolver for name's A record from host.
func lookup(ctx context.Context, n *topology.Net, host, name string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*time.Second)
	defer cancel()
	c, err := n.Dial(ctx, host, "udp", net.JoinHostPort(n.Addr("dns").String(), "53"))
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(4 * time.Second))
	q := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 0x1234, RecursionDesired: true})
	q.StartQuestions()
	q.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name + "."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	b, _ := q.Finish()
	if _, err := c.Write(b); err != nil {
		return "", err
	}
	buf := make([]byte, 1500)
	nr, err := c.Read(buf) // the first answer: the injected one comes first
	if err != nil {
		return "", err
	}
	var p dnsmessage.Parser
	if _, err := p.Start(buf[:nr]); err != nil {
		return "", err
	}
	p.SkipAllQuestions()
	a, err := p.AllAnswers()
	if err != nil || len(a) == 0 {
		return "", fmt.Errorf("no answer for %s (%v)", name, err)
	}
	ar, ok := a[0].Body.(*dnsmessage.AResource)
	if !ok {
		return "", fmt.Errorf("answer for %s is not an A record", name)
	}
	return fmt.Sprintf("%d.%d.%d.%d", ar.A[0], ar.A[1], ar.A[2], ar.A[3]), nil
}

// quicInitial sends quic-go client Initials with sni to the cover's UDP
// port 443 from host, where nothing answers; the censor sees them. The
// key share is X25519 alone so the ClientHello fits in the first
// datagram: Go's default post-quantum share splits it over two, which the
// GFW (and the profile) does not reassemble.
func quicInitial(ctx context.Context, n *topology.Net, host, sni string) error {
	pc, err := n.ListenPacket(ctx, host, "udp", net.JoinHostPort(n.Addr(host).String(), "0"))
	if err != nil {
		return err
	}
	tr := &quicgo.Transport{Conn: pc}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	addr := &net.UDPAddr{IP: n.Addr("cover").AsSlice(), Port: 443}
	c, err := tr.Dial(ctx, addr, &tls.Config{ServerName: sni, InsecureSkipVerify: true, NextProtos: []string{"h3"}, CurvePreferences: []tls.CurveID{tls.X25519}}, nil)
	if err == nil {
		c.CloseWithError(0, "")
		return errors.New("a QUIC handshake with the cover succeeded; nothing should listen there")
	}
	return nil
}

// profileScenario builds the scenario of one case: every transport
// probed alone (a 24 KB message to a listener over it), then a
// conversation with the client choosing freely.
func profileScenario(c profileCase, goHelloPath string) *Scenario {
	s := Standard("profile-"+c.profile, c.profile)
	s.Seed = 1
	s.Duration = 4 * time.Minute
	var blocked, open []string
	for _, t := range Transports {
		if _, ok := c.blocked[t]; ok {
			blocked = append(blocked, t)
		} else {
			open = append(open, t)
		}
	}
	attempts := max(c.attempts, 1)
	const size = 24000 // above the TSPU's cut-off
	s.Run = []Program{
		{Probe: &Probe{User: "alice", To: "bob", Transports: open, Attempts: 1, Size: size, Timeout: 20 * time.Second}},
	}
	if c.profile == "gfw-tlsfp" {
		s.Run = append(s.Run, Program{Probe: &Probe{User: "alice", To: "bob", Transports: []string{"reality"}, Size: size, Timeout: 4 * time.Second, Fingerprint: goHelloPath}})
	}
	if len(blocked) > 0 {
		s.Run = append(s.Run, Program{Probe: &Probe{User: "alice", To: "bob", Transports: blocked, Attempts: attempts, Size: size, Timeout: 4 * time.Second}})
	}
	s.Run = append(s.Run,
		Program{Listen: &Listen{User: "alice"}},
		Program{Listen: &Listen{User: "bob"}},
		Program{Send: &Send{User: "alice", To: "bob", Size: 200, Retries: 2}},
		Program{Send: &Send{User: "bob", To: "alice", Size: 2000, Retries: 2}},
		Program{Send: &Send{User: "alice", To: "bob", Size: 20000, Retries: 2}},
		Program{Send: &Send{User: "bob", To: "alice", Size: 300, Retries: 2}},
	)
	s.Drain = 20 * time.Second
	s.Expect = Expect{AllDelivered: true, ExactlyOnce: true, SendsSucceed: true, Blocked: blocked, Open: open}
	return s
}

// TestProfiles runs, under every shipped censor profile, each transport
// alone and then a conversation with the client choosing freely: the
// transports the profile's published rules block are blocked, by that
// rule, according to the censor's action log, the others are not, and
// every message of the conversation arrives exactly once.
func TestProfiles(t *testing.T) {
	requireTestnet(t)
	helloPath, goJA4 := goHello(t)
	cases := profileCases(helloPath, goJA4)
	var names []string
	for _, c := range cases {
		names = append(names, c.profile)
	}
	if diff := cmp.Diff(configs.CensorProfileNames(), sortedCopy(names)); diff != "" {
		t.Fatalf("profile cases do not cover the shipped profiles (-shipped +cases):\n%s", diff)
	}
	for _, c := range cases {
		t.Run(c.profile, func(t *testing.T) {
			s := profileScenario(c, helloPath)
			var opt Options
			if c.onRun != nil {
				opt.OnRun = c.onRun(t)
			}
			start := time.Now()
			rep := run(t, s, opt)
			t.Logf("%s: %.1fs", c.profile, time.Since(start).Seconds())
			if rep.Censor == nil {
				t.Fatal("no censor result")
			}
			for _, tr := range Transports {
				v, _ := rep.Transport(tr)
				var wantBlocked, wantThrottled []string
				if r, ok := c.blocked[tr]; ok {
					wantBlocked = []string{r}
				}
				if r, ok := c.throttled[tr]; ok {
					wantThrottled = []string{r}
				}
				if c.profile == "gfw-tlsfp" && tr == "reality" {
					wantBlocked = []string{"tls-fingerprint"} // the Go-hello client only
				}
				if diff := cmp.Diff(wantBlocked, v.Blocked); diff != "" {
					t.Errorf("%s: rules blocking it (-want +got):\n%s", tr, diff)
				}
				if diff := cmp.Diff(wantThrottled, v.Throttled); diff != "" {
					t.Errorf("%s: rules throttling it (-want +got):\n%s", tr, diff)
				}
			}
			if c.check != nil {
				c.check(t, rep, censorLog(t, rep))
			}
			if t.Failed() {
				keepLogs(t, rep)
			}
		})
	}
}

func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

// TestFailover runs the shipped failover scenario: the client router's
// path choices over time while transports are blackholed. It needs the
// binary's hidden `testnet chat` command.
func TestFailover(t *testing.T) {
	requireTestnet(t)
	bin := commucatBinary(t)
	if err := exec.Command(bin, "testnet", "chat", "--help").Run(); err != nil {
		msg := "cmd/commucat does not have the testnet command yet (main.go must add newTestnetCmd)"
		if os.Getenv("COMMUCAT_REQUIRE_ALL") == "1" || os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip("SKIPPED (LOUDLY): " + msg)
	}
	s, err := Shipped("failover")
	if err != nil {
		t.Fatal(err)
	}
	rep := run(t, s, Options{})
	if len(rep.Chats) != 1 || len(rep.Chats[0].Samples) == 0 {
		t.Fatalf("no path samples: %+v", rep.Chats)
	}
	// The best path before the first blackhole must not be the best path
	// while it is blackholed.
	c := rep.Chats[0]
	var before string
	for _, smp := range c.Samples {
		if smp.T < 4 {
			before = smp.Best()
		}
		if smp.T > 5 && smp.T < 8 && before == "reality" && smp.Best() == "reality" {
			t.Errorf("at %.1fs reality is still the best path while blackholed", smp.T)
		}
	}
}

// TestDownLeavesRunningAlone checks that Down does not touch the
// namespaces of a run whose process still runs (this one).
func TestDownLeavesRunningAlone(t *testing.T) {
	requireTestnet(t)
	s := Standard("down-test", "")
	s.Setup = nil
	n, err := Up(context.Background(), s, Options{Binary: "/bin/true", Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	res, err := Down()
	if err != nil {
		t.Fatal(err)
	}
	mine := false
	for _, r := range res {
		if r.Record.PID == os.Getpid() {
			mine = true
			if !r.Running || len(r.Removed) > 0 {
				t.Errorf("Down treated this running process's network as crashed: %+v", r)
			}
		}
	}
	if !mine {
		t.Error("Down did not find this process's run record")
	}
	for _, h := range n.Hosts() {
		if !netns.Exists(h.Namespace) {
			t.Errorf("namespace %s is gone", h.Namespace)
		}
	}
}

// TestDownRemovesCrashed records a fake crashed run (a PID that does not
// run) with one real namespace, and checks Down removes exactly it.
func TestDownRemovesCrashed(t *testing.T) {
	requireTestnet(t)
	prefix := fmt.Sprintf("cc-%d-s%d-", 1<<22+os.Getpid()%1000, runCount.Add(1))
	keep := fmt.Sprintf("cc-%d-x-keep", os.Getpid())
	ns, err := netns.Create(prefix + "a")
	if err != nil {
		t.Fatal(err)
	}
	other, err := netns.Create(keep)
	if err != nil {
		ns.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ns.Close()
		other.Close()
	})
	b := fmt.Sprintf(`{"pid": %d, "start": 1, "prefix": %q, "namespaces": [%q, %q, %q]}`, 1<<22+1, prefix, prefix+"a", prefix+"gone", keep)
	path := filepath.Join(RunDir(), strings.TrimSuffix(prefix, "-")+".json")
	if err := os.MkdirAll(RunDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(b), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path) })
	res, err := Down()
	if err != nil {
		t.Fatal(err)
	}
	var got *DownResult
	for i := range res {
		if res[i].Record.Prefix == prefix {
			got = &res[i]
		}
	}
	if got == nil {
		t.Fatal("Down ignored the record")
	}
	if diff := cmp.Diff([]string{prefix + "a"}, got.Removed); diff != "" {
		t.Errorf("removed (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{prefix + "gone"}, got.Missing); diff != "" {
		t.Errorf("missing (-want +got):\n%s", diff)
	}
	if got.Err == nil {
		t.Error("a name without the record's prefix was not reported")
	}
	if !netns.Exists(keep) {
		t.Errorf("Down removed %s, which does not start with the record's prefix", keep)
	}
	if netns.Exists(prefix + "a") {
		t.Errorf("%s is still there", prefix+"a")
	}
}
