package censor

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commucat/commucat/testnet/packet"
)

// probeTimeout is the probes' wait in these tests. The silent servers
// make a probe wait this long whatever the machine's speed; the others
// must answer or reset within it, so it leaves a loaded machine room
// (a stall of the loopback servers past it would read as silence).
const probeTimeout = 2 * time.Second

// startServer runs handle for every connection to a new loopback
// listener until the test ends.
func startServer(t *testing.T, handle func(c *net.TCPConn)) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				handle(c.(*net.TCPConn))
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// echoServer is proxy-like: it answers whatever it reads, replays
// included, as a relay would.
func echoServer(c *net.TCPConn) { io.Copy(c, c) }

// silentServer is obfs4-like: it reads and never answers.
func silentServer(c *net.TCPConn) { io.Copy(io.Discard, c) }

// coverServer is reality-like: a TLS server (its cover site) answers a
// ClientHello with a ServerHello record and anything else with an alert.
func coverServer(c *net.TCPConn) {
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		return
	}
	if n >= 6 && buf[0] == 0x16 && buf[1] == 3 && buf[5] == handshakeClientHello {
		c.Write([]byte{0x16, 3, 3, 0, 4, 2, 0, 0, 0})
		io.Copy(io.Discard, c)
		return
	}
	c.Write([]byte{0x15, 3, 3, 0, 2, 2, 50})
}

// thresholdServer is a Shadowsocks-like proxy that reads a 50-byte header
// and resets the connection when it does not authenticate.
func thresholdServer(c *net.TCPConn) {
	buf := make([]byte, 4096)
	total := 0
	for total < 50 {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		total += n
	}
	c.SetLinger(0)
}

func loopbackDial(ctx context.Context, network, address string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, address)
}

func TestProbeClassify(t *testing.T) {
	random := randomPayload(t, 300)
	hello := captureGoHello(t, "www.example.com", nil)
	closed := func() netip.AddrPort {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		a := ln.Addr().(*net.TCPAddr).AddrPort()
		ln.Close()
		return a
	}
	tests := []struct {
		name    string
		server  func(*net.TCPConn)
		first   []byte
		proxy   bool
		reason  string
		replay  Reaction
		random7 Reaction
	}{
		{"echo answers a replay", echoServer, random, true, "answered with", ReactData, ReactData},
		{"silent like obfs4", silentServer, random, false, "consistent", ReactTimeout, ReactTimeout},
		{"cover site like reality", coverServer, hello, false, "consistent", ReactData, ReactData},
		{"fixed read threshold", thresholdServer, random, true, "fixed read threshold", ReactRST, ReactTimeout},
		{"no replay without a first packet", silentServer, nil, false, "consistent", "", ReactTimeout},
		{"closed port", nil, random, false, "unreachable", ReactRefused, ReactRefused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The silent cases each wait out probeTimeout, so the cases
			// with a server run at once; the closed port's case runs
			// alone, before them, so no listener of theirs takes its port.
			if tt.server != nil {
				t.Parallel()
			}
			var srv netip.AddrPort
			if tt.server != nil {
				srv = startServer(t, tt.server)
			} else {
				srv = closed()
			}
			p := NewProber(ProberConfig{Timeout: probeTimeout}, loopbackDial, 1)
			rep := p.Probe(t.Context(), Suspect{Server: srv, First: tt.first})
			got := map[string]Reaction{}
			for _, r := range rep.Results {
				got[r.Name] = r.Reaction
			}
			t.Logf("%v: proxy=%v %s", got, rep.Proxy, rep.Reason)
			if rep.Proxy != tt.proxy || !strings.Contains(rep.Reason, tt.reason) {
				t.Errorf("proxy %v (%s), want %v (%q)", rep.Proxy, rep.Reason, tt.proxy, tt.reason)
			}
			if got["replay"] != tt.replay || got["random-7"] != tt.random7 {
				t.Errorf("replay %q random-7 %q, want %q %q", got["replay"], got["random-7"], tt.replay, tt.random7)
			}
			wantProbes := len(DefaultProbeLengths)
			if tt.first != nil {
				wantProbes += 4
			}
			if len(rep.Results) != wantProbes {
				t.Errorf("%d probes, want %d", len(rep.Results), wantProbes)
			}
		})
	}
}

func TestProbesMutateReplays(t *testing.T) {
	p := NewProber(ProberConfig{}, loopbackDial, 1)
	first := randomPayload(t, 100)
	ps := p.probes(first)
	changed := map[string][]int{}
	for _, pr := range ps[:4] {
		for i := range first {
			if pr.payload[i] != first[i] {
				changed[pr.name] = append(changed[pr.name], i)
			}
		}
	}
	want := map[string][]int{"replay-byte0": {0}, "replay-bytes0-7,62-63": {0, 1, 2, 3, 4, 5, 6, 7, 62, 63}, "replay-byte16": {16}}
	for name, w := range want {
		if len(changed[name]) != len(w) {
			t.Errorf("%s changed bytes %v, want %v", name, changed[name], w)
		}
	}
	if len(changed["replay"]) != 0 {
		t.Errorf("identical replay changed bytes %v", changed["replay"])
	}
	for _, pr := range ps[4:] {
		if !strings.HasPrefix(pr.name, "random-") || !pr.random {
			t.Errorf("probe %s after the replays", pr.name)
		}
	}
}

func TestLegitimate(t *testing.T) {
	tests := []struct {
		name       string
		sent, resp string
		want       bool
	}{
		{"tls alert", "\x16\x03\x01\x00\x05\x01", "\x15\x03\x03\x00\x02\x02\x32", true},
		{"server hello", "\x16\x03\x01\x00\x05\x01", "\x16\x03\x03\x00\x04\x02\x00", true},
		{"client hello echoed", "\x16\x03\x01\x00\x05\x01xyz", "\x16\x03\x01\x00\x05\x01", false},
		{"client hello back, not echoed", "abc", "\x16\x03\x01\x00\x05\x01", false},
		{"http", "GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request\r\n", true},
		{"ssh", "xyz", "SSH-2.0-OpenSSH_9.6\r\n", true},
		{"random bytes", "xyz", "\x8f\x13\xa0\x01\x02", false},
		{"echo", "\x8f\x13\xa0\x01", "\x8f\x13", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := legitimate([]byte(tt.sent), []byte(tt.resp)); got != tt.want {
				t.Errorf("legitimate = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestProberCooldown(t *testing.T) {
	now := t0
	p := NewProber(ProberConfig{Cooldown: time.Minute}, loopbackDial, 1)
	p.Now = func() time.Time { return now }
	a, b := netip.MustParseAddrPort("198.18.1.2:443"), netip.MustParseAddrPort("198.18.1.3:443")
	if !p.due(a) || p.due(a) || !p.due(b) {
		t.Fatal("first probes of two servers not due, or a repeat due")
	}
	now = now.Add(time.Minute)
	if !p.due(a) {
		t.Error("not due again after the cooldown")
	}
}

// notifyingTarget wraps an engine and reports what the prober did.
type notifyingTarget struct {
	*Engine
	events chan Event
}

func (n *notifyingTarget) Record(ev Event) {
	n.Engine.Record(ev)
	n.events <- ev
}

func (n *notifyingTarget) Block(now time.Time, key ResidualKey, d time.Duration, rule string, detail map[string]string) {
	n.Engine.Block(now, key, d, rule, detail)
	n.events <- Event{Action: EventBlock, Server: key.Server.String()}
}

// TestProberRun runs the engine's gfw-prober profile with a real prober
// against loopback servers: the echoing server is blocked for every
// client, the silent one is not.
func TestProberRun(t *testing.T) {
	p := shipped(t, "gfw-prober")
	e := newTestEngine(t, p, 1)
	target := &notifyingTarget{Engine: e.Engine, events: make(chan Event, 16)}
	cfg := *p.Prober
	cfg.Timeout = probeTimeout
	prober := NewProber(cfg, loopbackDial, 1)
	prober.Now = func() time.Time { return t0.Add(time.Second) }
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- prober.Run(ctx, target) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	random := randomPayload(t, 300)
	echo, silent := startServer(t, echoServer), startServer(t, silentServer)
	client := netip.MustParseAddrPort("198.18.0.2:40000")

	tlsFlow(t, e, client, silent, random)
	if ev := <-target.events; ev.Action != EventProbeResult || ev.Detail["verdict"] != "clean" {
		t.Fatalf("silent server: %+v", ev)
	}
	tlsFlow(t, e, client, echo, random)
	if ev := <-target.events; ev.Action != EventProbeResult || ev.Detail["verdict"] != "proxy" || ev.Detail["replay"] != "data" {
		t.Fatalf("echo server: %+v", ev)
	}
	if ev := <-target.events; ev.Action != EventBlock || ev.Server != echo.String() {
		t.Fatalf("echo server not blocked: %+v", ev)
	}

	other := newConn(t, e, netip.MustParseAddrPort("198.18.0.7:50000"), echo)
	other.now = t0.Add(2 * time.Second)
	wantAction(t, "another client's SYN to the blocked server", other.send(Client, packet.SYN, nil), Drop)
	fine := newConn(t, e, netip.MustParseAddrPort("198.18.0.7:50001"), silent)
	fine.now = t0.Add(2 * time.Second)
	fine.handshake()

	var actions []string
	for _, ev := range e.events(t) {
		actions = append(actions, ev.Rule+"/"+ev.Action)
	}
	want := "suspect-fet/probe suspect-fet/probe-result suspect-fet/probe suspect-fet/probe-result suspect-fet/block suspect-fet/residual"
	if got := strings.Join(actions, " "); got != want {
		t.Errorf("log actions\n got %s\nwant %s", got, want)
	}
}

// TestProbeCancel: Probe returns when its context ends.
func TestProbeCancel(t *testing.T) {
	srv := startServer(t, silentServer)
	p := NewProber(ProberConfig{Timeout: time.Hour}, loopbackDial, 1)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	rep := p.Probe(ctx, Suspect{Server: srv, First: []byte("x")})
	for _, r := range rep.Results {
		if r.Reaction == ReactData {
			t.Errorf("%s: data after cancel", r.Name)
		}
	}
	if errors.Is(ctx.Err(), context.Canceled) && rep.Proxy {
		t.Error("cancelled probe judged a proxy")
	}
}
