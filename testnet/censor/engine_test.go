package censor

import (
	"bytes"
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/commucat/commucat/testnet/packet"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/dns/dnsmessage"
)

const sniProfile = `
name: sni-test
rules:
  - name: sni
    match:
      sni: [blocked.example]
      reassemble: true
    action: reset
    residual: 180s
    residual-action: reset
`

// TestSNIReset blocks a crypto/tls ClientHello by its SNI: the hello is
// dropped, forged RST+ACKs go to both ends with the sequence numbers each
// end accepts, the flow stays blocked, and the log says why.
func TestSNIReset(t *testing.T) {
	e := newTestEngine(t, mustProfile(t, sniProfile), 1)
	c := newConn(t, e, cli(cliPort), srv443)
	c.handshake()
	hello := captureGoHello(t, "www.blocked.example", nil)
	helloSeq := c.cseq
	v := c.data(Client, hello)
	wantAction(t, "blocked hello", v, Drop)
	if len(v.Inject) != 2 {
		t.Fatalf("injected %d packets, want 2", len(v.Inject))
	}
	got := []rstOf{describeTCP(t, v.Inject[0].Packet), describeTCP(t, v.Inject[1].Packet)}
	want := []rstOf{
		// Toward the client: the server's next sequence number, which is
		// the client's RCV.NXT.
		{Src: srv443, Dst: cli(cliPort), Seq: serverISN + 1, Ack: helloSeq, Flags: "RST|ACK"},
		// Toward the server: the hello never reached it, so its RCV.NXT
		// is the hello's own sequence number.
		{Src: cli(cliPort), Dst: srv443, Seq: helloSeq, Ack: serverISN + 1, Flags: "RST|ACK"},
	}
	if diff := cmp.Diff(want, got, cmpAddr); diff != "" {
		t.Errorf("injected resets (-want +got):\n%s", diff)
	}
	e.wantEvents(t, ev("sni", "reset", "tcp", cli(cliPort), srv443, map[string]string{"sni": "www.blocked.example", "residual": "3m0s"}))
	wantAction(t, "server's answer after the reset", c.data(Server, []byte("late")), Drop)

	// Another client (this one's 3-tuple is in residual block now).
	c2 := newConn(t, e, netip.AddrPortFrom(netip.MustParseAddr("198.18.0.3"), cliPort), srv443)
	c2.handshake()
	wantAction(t, "allowed name", c2.data(Client, captureGoHello(t, "www.example.com", nil)), Pass)
	e.wantEvents(t)
}

// TestResidual checks that the 3-tuple stays blocked after a reset, that
// a SYN meets a RST+ACK, that other ports and clients are not blocked,
// and that the block ends after its duration (on the bubble's clock).
func TestResidual(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newTestEngine(t, mustProfile(t, sniProfile), 1)
		c := newConn(t, e, cli(cliPort), srv443)
		c.now = time.Now()
		c.handshake()
		wantAction(t, "blocked hello", c.data(Client, captureGoHello(t, "blocked.example", nil)), Drop)
		e.events(t)

		time.Sleep(179 * time.Second)
		again := newConn(t, e, cli(cliPort+1), srv443)
		again.now = time.Now()
		v := again.send(Client, packet.SYN, nil)
		wantAction(t, "SYN within the residual", v, Drop)
		if len(v.Inject) != 1 {
			t.Fatalf("injected %d packets to the SYN, want 1", len(v.Inject))
		}
		if got, want := describeTCP(t, v.Inject[0].Packet), (rstOf{Src: srv443, Dst: cli(cliPort + 1), Seq: 0, Ack: clientISN + 1, Flags: "RST|ACK"}); got != want {
			t.Errorf("RST to the SYN = %+v, want %+v", got, want)
		}
		evs := e.events(t)
		if len(evs) != 1 || evs[0].Action != EventResidual || evs[0].Rule != "sni" || evs[0].Detail["residual-key"] != "3-tuple" {
			t.Errorf("residual log = %+v", evs)
		}

		other := newConn(t, e, cli(cliPort+2), netip.AddrPortFrom(srvIP, 8443))
		other.now = time.Now()
		other.handshake()
		otherClient := newConn(t, e, netip.AddrPortFrom(netip.MustParseAddr("198.18.0.3"), cliPort), srv443)
		otherClient.now = time.Now()
		otherClient.handshake()

		time.Sleep(2 * time.Second)
		after := newConn(t, e, cli(cliPort+3), srv443)
		after.now = time.Now()
		after.handshake()
		wantAction(t, "allowed hello after the residual", after.data(Client, captureGoHello(t, "ok.example", nil)), Pass)
		e.wantEvents(t)
	})
}

// TestResidualKeys checks what each residual key covers. The rule fires
// on non-DNS datagrams to port 9; the probes are DNS queries, which the
// rule ignores, so only a residual block drops them.
func TestResidualKeys(t *testing.T) {
	tests := []struct {
		key                           ResidualKind
		samePort, otherPort, otherCli bool // blocked: same client port, other client port, other client
	}{
		{Residual4Tuple, true, false, false},
		{Residual3Tuple, true, true, false},
		{ResidualServer, true, true, true},
	}
	dst := netip.AddrPortFrom(srvIP, 9)
	query := packQuery(t, 1, "ok.example.", dnsmessage.TypeA, true)
	for _, tt := range tests {
		t.Run(string(tt.key), func(t *testing.T) {
			e := newTestEngine(t, mustProfile(t, `
name: keys
rules:
  - name: udp
    match: {udp: {ports: [9]}, protocols: [unknown]}
    action: drop
    residual: 60s
    residual-key: `+string(tt.key)), 1)
			wantAction(t, "trigger", udp(t, e, Outbound, cli(cliPort), dst, []byte("x"), t0), Drop)
			e.events(t)
			for _, c := range []struct {
				name string
				src  netip.AddrPort
				want bool
			}{
				{"same client port", cli(cliPort), tt.samePort},
				{"other client port", cli(cliPort + 1), tt.otherPort},
				{"other client", netip.AddrPortFrom(netip.MustParseAddr("198.18.0.9"), cliPort), tt.otherCli},
			} {
				// A flow of its own: the blocked flow itself stays
				// blocked, so only new flows tell the key.
				src := c.src
				if c.name == "same client port" {
					e.Engine.mu.Lock()
					e.flows.remove(e.flows.m[FlowKey{packet.ProtoUDP, src, dst}])
					e.Engine.mu.Unlock()
				}
				got := udp(t, e, Outbound, src, dst, query, t0.Add(time.Second)).Action == Drop
				if got != c.want {
					t.Errorf("%s: dropped %v, want %v", c.name, got, c.want)
				}
			}
			for _, ev := range e.events(t) {
				if ev.Action != EventResidual || ev.Detail["residual-key"] != string(tt.key) {
					t.Errorf("unexpected event %+v", ev)
				}
			}
			wantAction(t, "after the residual", udp(t, e, Outbound, cli(cliPort+5), dst, query, t0.Add(61*time.Second)), Pass)
		})
	}
}

// TestSNIReassembly checks the reassemble switch: a ClientHello split
// over two segments is seen only by a reassembling censor, and an
// out-of-order split is not seen at all (in-order reassembly only).
func TestSNIReassembly(t *testing.T) {
	hello := captureGoHello(t, "blocked.example", nil)
	cut := 40
	tests := []struct {
		name       string
		reassemble bool
		reorder    bool
		want       [2]PacketAction
	}{
		{"reassembled", true, false, [2]PacketAction{Pass, Drop}},
		{"first segment only", false, false, [2]PacketAction{Pass, Pass}},
		{"out of order is not reassembled", true, true, [2]PacketAction{Pass, Pass}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			yml := strings.Replace(sniProfile, "reassemble: true", "reassemble: "+map[bool]string{true: "true", false: "false"}[tt.reassemble], 1)
			e := newTestEngine(t, mustProfile(t, yml), 1)
			c := newConn(t, e, cli(cliPort), srv443)
			c.handshake()
			var got [2]PacketAction
			if tt.reorder {
				start := c.cseq
				c.cseq = start + uint32(cut)
				got[0] = c.data(Client, hello[cut:]).Action
				c.cseq = start
				got[1] = c.data(Client, hello[:cut]).Action
			} else {
				got[0] = c.data(Client, hello[:cut]).Action
				got[1] = c.data(Client, hello[cut:]).Action
			}
			if got != tt.want {
				t.Errorf("verdicts %v, want %v", got, tt.want)
			}
		})
	}
}

func TestHTTPHostKeyword(t *testing.T) {
	p := mustProfile(t, `
name: http
rules:
  - name: http
    match:
      reassemble: true
      host: [blocked.example]
      keyword: [falun]
    action: reset
`)
	tests := []struct {
		name     string
		segments []string
		want     []PacketAction
		detail   map[string]string
	}{
		{"blocked host", []string{"GET / HTTP/1.1\r\nHost: www.blocked.example\r\n\r\n"}, []PacketAction{Drop},
			map[string]string{"http-host": "blocked.example", "host": "www.blocked.example"}},
		{"keyword in the target", []string{"GET /search?q=%46alun HTTP/1.1\r\nHost: ok.example\r\n\r\n"}, []PacketAction{Drop},
			map[string]string{"http-target": "falun", "host": "ok.example"}},
		{"host in the second segment", []string{"GET / HTTP/1.1\r\nUser-Agent: x\r\n", "Host: blocked.example\r\n\r\n"}, []PacketAction{Pass, Drop},
			map[string]string{"http-host": "blocked.example", "host": "blocked.example"}},
		{"allowed", []string{"GET / HTTP/1.1\r\nHost: ok.example\r\n\r\n", "GET /falun HTTP/1.1\r\n\r\n"}, []PacketAction{Pass, Pass}, nil},
		{"not http", []string{"SSH-2.0-OpenSSH_9.6\r\n", "falun"}, []PacketAction{Pass, Pass}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEngine(t, p, 1)
			c := newConn(t, e, cli(cliPort), netip.AddrPortFrom(srvIP, 80))
			c.handshake()
			for i, s := range tt.segments {
				wantAction(t, "segment "+string(rune('0'+i)), c.data(Client, []byte(s)), tt.want[i])
			}
			if tt.detail == nil {
				e.wantEvents(t)
				return
			}
			e.wantEvents(t, ev("http", "reset", "tcp", cli(cliPort), c.s, tt.detail))
		})
	}
}

// TestQUICSNI blocks QUIC Initials by SNI: the RFC 9001 A.2 client
// Initial, a crafted one-datagram Initial, and quic-go's real Initials,
// which a censor reading single datagrams misses when they split the
// ClientHello.
func TestQUICSNI(t *testing.T) {
	prof := func(reassemble bool) *Profile {
		return mustProfile(t, `
name: quic
rules:
  - name: quic-sni
    match:
      quic-sni: [example.com, blocked.example]
      reassemble: `+map[bool]string{true: "true", false: "false"}[reassemble]+`
    action: drop
    residual: 180s
`)
	}
	srv := netip.AddrPortFrom(srvIP, 443)
	t.Run("rfc9001 a.2", func(t *testing.T) {
		e := newTestEngine(t, prof(false), 1)
		v := udp(t, e, Outbound, cli(cliPort), srv, readHex(t, "rfc9001-a2-protected.hex"), t0)
		wantAction(t, "initial", v, Drop)
		e.wantEvents(t, ev("quic-sni", "drop", "udp", cli(cliPort), srv, map[string]string{"quic-sni": "example.com", "residual": "3m0s"}))
		wantAction(t, "later datagram", udp(t, e, Outbound, cli(cliPort), srv, []byte{0x40, 1, 2, 3}, t0), Drop)
		wantAction(t, "new port, same 3-tuple", udp(t, e, Outbound, cli(cliPort+1), srv, []byte{0x40, 1, 2, 3}, t0), Drop)
	})
	t.Run("crafted initial", func(t *testing.T) {
		e := newTestEngine(t, prof(false), 1)
		wantAction(t, "blocked", udp(t, e, Outbound, cli(cliPort), srv, quicInitial(t, "www.blocked.example"), t0), Drop)
		wantAction(t, "allowed", udp(t, e, Outbound, cli(cliPort+1), netip.AddrPortFrom(srvIP, 4433), quicInitial(t, "ok.example"), t0), Pass)
		wantAction(t, "not quic", udp(t, e, Outbound, cli(cliPort+2), netip.AddrPortFrom(srvIP, 4434), []byte("hello"), t0), Pass)
	})
	datagrams := captureQUICInitials(t, "quic.blocked.example")
	t.Logf("quic-go sends its ClientHello in %d datagram(s)", len(datagrams))
	for _, reassemble := range []bool{false, true} {
		t.Run("quic-go reassemble="+map[bool]string{true: "true", false: "false"}[reassemble], func(t *testing.T) {
			e := newTestEngine(t, prof(reassemble), 1)
			var acts []PacketAction
			for _, d := range datagrams {
				acts = append(acts, udp(t, e, Outbound, cli(cliPort), srv, d, t0).Action)
			}
			blocked := acts[len(acts)-1] == Drop
			want := reassemble || len(datagrams) == 1
			if blocked != want {
				t.Errorf("%d datagram(s): verdicts %v, blocked %v, want %v", len(datagrams), acts, blocked, want)
			}
		})
	}
}

// TestFET runs the fully-encrypted-traffic rule: random first packets
// are blocked with the configured probability, exempt ones never, and
// the draws repeat with the seed.
func TestFET(t *testing.T) {
	random := randomPayload(t, 300)
	t.Run("deterministic", func(t *testing.T) {
		e := newTestEngine(t, mustProfile(t, "name: f\nrules:\n  - name: fet\n    match: {fet: {probability: 1}}\n    action: drop\n    residual: 180s\n"), 1)
		for _, tt := range []struct {
			name    string
			payload []byte
			want    PacketAction
		}{
			{"tls", captureGoHello(t, "ok.example", nil), Pass},
			{"http", []byte("GET / HTTP/1.1\r\nHost: ok.example\r\n\r\n"), Pass},
			{"ssh banner", []byte("SSH-2.0-OpenSSH_9.6\r\n"), Pass},
			{"random", random, Drop},
		} {
			port := uint16(1000 + len(tt.name))
			c := newConn(t, e, cli(cliPort), netip.AddrPortFrom(srvIP, port))
			c.handshake()
			wantAction(t, tt.name, c.data(Client, tt.payload), tt.want)
		}
		evs := e.events(t)
		if len(evs) != 1 || evs[0].Detail["fet"] != "fully-encrypted" || evs[0].Detail["length"] != "300" {
			t.Errorf("log = %+v", evs)
		}
	})
	t.Run("probability", func(t *testing.T) {
		run := func(seed uint64) []PacketAction {
			e := newTestEngine(t, shipped(t, "gfw-fet"), seed)
			var got []PacketAction
			for i := range 200 {
				c := newConn(t, e, cli(cliPort), netip.AddrPortFrom(srvIP, uint16(2000+i)))
				c.handshake()
				got = append(got, c.data(Client, random).Action)
			}
			return got
		}
		a, b := run(7), run(7)
		if !slices_equal(a, b) {
			t.Error("two runs with one seed differ")
		}
		blocked := 0
		for _, x := range a {
			if x == Drop {
				blocked++
			}
		}
		t.Logf("%d of 200 flagged flows blocked", blocked)
		// 200 draws at 0.26 with a fixed seed: the count is fixed; it
		// must look like 26%.
		if blocked < 30 || blocked > 80 {
			t.Errorf("%d of 200 blocked, want about 52", blocked)
		}
	})
}

func slices_equal(a, b []PacketAction) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestProtocolAllowlist(t *testing.T) {
	e := newTestEngine(t, shipped(t, "iran-protocol-filter"), 1)
	random := randomPayload(t, 200)
	dnsQuery := FrameDNSTCP(packQuery(t, 7, "ok.example.", dnsmessage.TypeA, true))
	tests := []struct {
		name     string
		port     uint16
		segments [][]byte
		want     []PacketAction
	}{
		{"random on 443", 443, [][]byte{random[:100], random[100:]}, []PacketAction{Pass, Drop}},
		{"tls on 443", 443, [][]byte{captureGoHello(t, "ok.example", nil), random}, []PacketAction{Pass, Pass}},
		{"http on 443 in two packets", 443, [][]byte{[]byte("GE"), []byte("T / HTTP/1.1\r\n\r\n"), random}, []PacketAction{Pass, Pass, Pass}},
		{"http on 80", 80, [][]byte{[]byte("GET / HTTP/1.1\r\n\r\n"), random}, []PacketAction{Pass, Pass}},
		{"dns on 53", 53, [][]byte{dnsQuery, random}, []PacketAction{Pass, Pass}},
		{"random on 8443", 8443, [][]byte{random[:100], random[100:]}, []PacketAction{Pass, Pass}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newConn(t, e, cli(cliPort+uint16(i)), netip.AddrPortFrom(srvIP, tt.port))
			c.handshake()
			for j, s := range tt.segments {
				wantAction(t, "segment", c.data(Client, s), tt.want[j])
			}
		})
	}
	evs := e.events(t)
	if len(evs) != 1 || evs[0].Rule != "protocol-filter" || evs[0].Detail["protocol"] != "unknown" {
		t.Errorf("log = %+v", evs)
	}
}

func TestUDPBlock(t *testing.T) {
	tests := []struct {
		name string
		yml  string
		port uint16
		data []byte
		want PacketAction
	}{
		{"all udp", "udp: {}", 4500, []byte("x"), Drop},
		{"by port, matched", "udp: {ports: [443]}", 443, []byte("x"), Drop},
		{"by port, other", "udp: {ports: [443]}", 4500, []byte("x"), Pass},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEngine(t, mustProfile(t, "name: u\nrules:\n  - name: udp\n    match: {"+tt.yml+"}\n    action: drop\n"), 1)
			wantAction(t, "datagram", udp(t, e, Outbound, cli(cliPort), netip.AddrPortFrom(srvIP, tt.port), tt.data, t0), tt.want)
			c := newConn(t, e, cli(cliPort), netip.AddrPortFrom(srvIP, tt.port))
			c.handshake()
			wantAction(t, "tcp", c.data(Client, tt.data), Pass)
		})
	}
	t.Run("shipped keeps dns", func(t *testing.T) {
		e := newTestEngine(t, shipped(t, "udp-block"), 1)
		wantAction(t, "quic", udp(t, e, Outbound, cli(cliPort), srv443, readHex(t, "rfc9001-a2-protected.hex"), t0), Drop)
		wantAction(t, "dns", udp(t, e, Outbound, cli(cliPort), resolv, packQuery(t, 1, "ok.example.", dnsmessage.TypeA, true), t0), Pass)
	})
}

// TestFlowAgeKill resets a connection older than the limit, with
// sequence numbers that include the data both ends sent.
func TestFlowAgeKill(t *testing.T) {
	e := newTestEngine(t, mustProfile(t, "name: k\nrules:\n  - name: kill\n    match: {transport: tcp, flow-age: {seconds: 60}}\n    action: reset\n"), 1)
	c := newConn(t, e, cli(cliPort), srv443)
	c.handshake()
	c.data(Client, []byte("hello"))
	c.data(Server, bytes.Repeat([]byte{1}, 1000))
	c.now = t0.Add(59 * time.Second)
	wantAction(t, "young", c.send(Client, packet.ACK, nil), Pass)
	c.now = t0.Add(61 * time.Second)
	cseq, sseq := c.cseq, c.sseq
	v := c.data(Server, []byte("more"))
	wantAction(t, "old", v, Drop)
	if len(v.Inject) != 2 {
		t.Fatalf("injected %d", len(v.Inject))
	}
	want := []rstOf{
		{Src: srv443, Dst: cli(cliPort), Seq: sseq, Ack: cseq, Flags: "RST|ACK"},
		{Src: cli(cliPort), Dst: srv443, Seq: cseq, Ack: sseq, Flags: "RST|ACK"},
	}
	got := []rstOf{describeTCP(t, v.Inject[0].Packet), describeTCP(t, v.Inject[1].Packet)}
	if diff := cmp.Diff(want, got, cmpAddr); diff != "" {
		t.Errorf("resets (-want +got):\n%s", diff)
	}
	e.wantEvents(t, ev("kill", "reset", "tcp", cli(cliPort), srv443, map[string]string{"age": "1m1s"}))
}

func TestFreezeAfterBytes(t *testing.T) {
	e := newTestEngine(t, mustProfile(t, "name: z\nrules:\n  - name: freeze\n    match: {transport: tcp, bytes-s2c: {threshold: 16384}}\n    action: freeze\n"), 1)
	c := newConn(t, e, cli(cliPort), srv443)
	c.handshake()
	c.data(Client, []byte("request"))
	seg := bytes.Repeat([]byte{7}, 1000)
	for i := 1; i <= 16; i++ {
		wantAction(t, "below the threshold", c.data(Server, seg), Pass)
	}
	wantAction(t, "crossing", c.data(Server, seg), Drop)
	wantAction(t, "client after the freeze", c.send(Client, packet.ACK, nil), Drop)
	e.wantEvents(t, ev("freeze", "freeze", "tcp", cli(cliPort), srv443, map[string]string{"bytes-s2c": "17000", "threshold": "16384"}))
}

func TestBytesThresholdDraw(t *testing.T) {
	e := newTestEngine(t, shipped(t, "tspu-16k"), 3)
	seen := map[int]bool{}
	for i := range 20 {
		c := newConn(t, e, cli(uint16(30000+i)), srv443)
		c.handshake()
		c.data(Client, captureGoHello(t, "ok.example", nil))
		for range 25 {
			if c.data(Server, make([]byte, 1000)).Action == Drop {
				break
			}
		}
		evs := e.events(t)
		if len(evs) != 1 {
			t.Fatalf("flow %d: log %+v", i, evs)
		}
		thr, err := strconv.Atoi(evs[0].Detail["threshold"])
		if err != nil || thr < 16384 || thr > 20480 {
			t.Errorf("threshold %q outside [16384, 20480]", evs[0].Detail["threshold"])
		}
		seen[thr] = true
	}
	if len(seen) < 2 {
		t.Errorf("one threshold for every flow: %v", seen)
	}
}

// TestCutOff lets exactly the threshold through: the crossing segment is
// truncated, later data dropped, the client's packets pass.
func TestCutOff(t *testing.T) {
	e := newTestEngine(t, mustProfile(t, "name: c\nrules:\n  - name: cut\n    match: {transport: tcp, bytes-s2c: {threshold: 2500}}\n    action: cut-off\n"), 1)
	c := newConn(t, e, cli(cliPort), srv443)
	c.handshake()
	seg := bytes.Repeat([]byte{7}, 1000)
	wantAction(t, "first", c.data(Server, seg), Pass)
	second := c.sseq
	wantAction(t, "second", c.data(Server, seg), Pass)
	third := c.sseq
	v := c.data(Server, seg)
	wantAction(t, "crossing", v, Replace)
	p := parsed(t, v.Packet)
	if p.TCP.Seq != third || len(p.Payload) != 500 || p.TCP.Flags != packet.ACK {
		t.Errorf("truncated segment: seq %d (want %d), %d bytes (want 500), flags %v", p.TCP.Seq, third, len(p.Payload), p.TCP.Flags)
	}
	wantAction(t, "beyond", c.data(Server, seg), Drop)
	wantAction(t, "client ack", c.send(Client, packet.ACK, nil), Pass)
	wantAction(t, "client data", c.data(Client, []byte("more please")), Pass)
	wantAction(t, "server pure ack", c.send(Server, packet.ACK, nil), Pass)
	end := c.sseq
	c.sseq = second
	wantAction(t, "retransmission below the cut", c.data(Server, seg), Pass)
	c.sseq = end
	wantAction(t, "server fin beyond", c.send(Server, packet.FIN|packet.ACK, nil), Drop)
}

// TestThrottle checks throttle's delay, rate queueing, drop-tail and
// seeded loss.
func TestThrottle(t *testing.T) {
	prof := func(params string) *Profile {
		return mustProfile(t, "name: t\nrules:\n  - name: slow\n    match: {sni: [blocked.example]}\n    action: {throttle: "+params+"}\n")
	}
	t.Run("delay and rate", func(t *testing.T) {
		e := newTestEngine(t, prof("{delay: 100ms, rate: 64kbit, queue: 1s, direction: s2c}"), 1)
		c := newConn(t, e, cli(cliPort), srv443)
		c.handshake()
		v := c.data(Client, captureGoHello(t, "blocked.example", nil))
		if v.Action != Pass || v.Delay != 0 {
			t.Errorf("client hello with s2c throttling: %+v", v)
		}
		seg := make([]byte, 960) // 1000-byte IPv4 packets: 125 ms each at 8000 B/s
		var delays []time.Duration
		for range 10 {
			v := c.data(Server, seg)
			if v.Action == Drop {
				delays = append(delays, -1)
				continue
			}
			delays = append(delays, v.Delay)
		}
		var want []time.Duration
		for i := range 10 {
			d := 100*time.Millisecond + time.Duration(i+1)*125*time.Millisecond
			if i >= 8 { // queueing over 1s: dropped
				d = -1
			}
			want = append(want, d)
		}
		if diff := cmp.Diff(want, delays); diff != "" {
			t.Errorf("delays (-want +got):\n%s", diff)
		}
		c.now = c.now.Add(10 * time.Second)
		if v := c.data(Server, seg); v.Delay != 225*time.Millisecond {
			t.Errorf("after the queue drained: delay %v, want 225ms", v.Delay)
		}
	})
	t.Run("loss", func(t *testing.T) {
		run := func() []PacketAction {
			e := newTestEngine(t, prof("{loss: 0.5}"), 9)
			c := newConn(t, e, cli(cliPort), srv443)
			c.handshake()
			var acts []PacketAction
			acts = append(acts, c.data(Client, captureGoHello(t, "blocked.example", nil)).Action)
			for range 40 {
				acts = append(acts, c.data(Server, []byte("x")).Action)
			}
			return acts
		}
		a, b := run(), run()
		if !slices_equal(a, b) {
			t.Errorf("seeded losses differ: %v / %v", a, b)
		}
		drops := 0
		for _, x := range a {
			if x == Drop {
				drops++
			}
		}
		if drops == 0 || drops == len(a) {
			t.Errorf("%d of %d dropped at loss 0.5", drops, len(a))
		}
	})
}

func TestDNSInject(t *testing.T) {
	prof := func(action string) *Profile {
		return mustProfile(t, "name: d\nrules:\n  - name: dns\n    match: {dns: {names: [blocked.example]}}\n    action: {dns-inject: "+action+"}\n")
	}
	query := packQuery(t, 0x1234, "www.Blocked.example.", dnsmessage.TypeA, true)
	t.Run("udp answer", func(t *testing.T) {
		e := newTestEngine(t, prof("{ip: 198.18.255.254}"), 1)
		v := udp(t, e, Outbound, cli(cliPort), resolv, query, t0)
		if v.Action != Pass || len(v.Inject) != 1 {
			t.Fatalf("verdict %+v", v)
		}
		p := parsed(t, v.Inject[0].Packet)
		if p.SrcAddrPort() != resolv || p.DstAddrPort() != cli(cliPort) {
			t.Errorf("answer from %v to %v", p.SrcAddrPort(), p.DstAddrPort())
		}
		var m dnsmessage.Message
		if err := m.Unpack(p.Payload); err != nil {
			t.Fatal(err)
		}
		if m.ID != 0x1234 || len(m.Answers) != 1 || m.Answers[0].Body.(*dnsmessage.AResource).A != [4]byte{198, 18, 255, 254} {
			t.Errorf("forged answer %+v", m)
		}
		e.wantEvents(t, ev("dns", "dns-inject", "udp", cli(cliPort), resolv, map[string]string{"query": "www.blocked.example"}))
		// Every query is answered, not only the flow's first.
		if v := udp(t, e, Outbound, cli(cliPort), resolv, query, t0); len(v.Inject) != 1 {
			t.Errorf("second query: %d injected", len(v.Inject))
		}
		if v := udp(t, e, Outbound, cli(cliPort), resolv, packQuery(t, 1, "ok.example.", dnsmessage.TypeA, true), t0); len(v.Inject) != 0 {
			t.Errorf("allowed name answered")
		}
	})
	t.Run("nxdomain", func(t *testing.T) {
		e := newTestEngine(t, prof("{nxdomain: true}"), 1)
		v := udp(t, e, Outbound, cli(cliPort), resolv, query, t0)
		var m dnsmessage.Message
		if len(v.Inject) != 1 || m.Unpack(parsed(t, v.Inject[0].Packet).Payload) != nil || m.RCode != dnsmessage.RCodeNameError {
			t.Errorf("verdict %+v, message %+v", v, m)
		}
	})
	t.Run("tcp answer", func(t *testing.T) {
		e := newTestEngine(t, prof("{ip: 198.18.255.254}"), 1)
		c := newConn(t, e, cli(cliPort), resolv)
		c.handshake()
		v := c.data(Client, FrameDNSTCP(query))
		if v.Action != Pass || len(v.Inject) != 1 {
			t.Fatalf("verdict %+v", v)
		}
		got := describeTCP(t, v.Inject[0].Packet)
		want := rstOf{Src: resolv, Dst: cli(cliPort), Seq: serverISN + 1, Ack: c.cseq, Flags: "PSH|ACK"}
		if got != want {
			t.Errorf("forged segment %+v, want %+v", got, want)
		}
		q, err := ParseDNSQueryTCP(parsed(t, v.Inject[0].Packet).Payload)
		if err == nil || !errors.Is(err, ErrNotDNS) {
			t.Errorf("forged payload parses as a query (%+v, %v): want a response", q, err)
		}
	})
}

func TestProbeAction(t *testing.T) {
	e := newTestEngine(t, shipped(t, "gfw-prober"), 1)
	random := randomPayload(t, 300)
	c := newConn(t, e, cli(cliPort), srv443)
	c.handshake()
	wantAction(t, "suspected flow", c.data(Client, random), Pass)
	select {
	case s := <-e.Suspects():
		want := Suspect{Time: t0, Rule: "suspect-fet", Client: cli(cliPort), Server: srv443, First: random}
		if diff := cmp.Diff(want, s, cmpAddr); diff != "" {
			t.Errorf("suspect (-want +got):\n%s", diff)
		}
	default:
		t.Fatal("no suspect queued")
	}
	c2 := newConn(t, e, cli(cliPort+1), srv443)
	c2.handshake()
	c2.data(Client, captureGoHello(t, "ok.example", nil))
	if len(e.Suspects()) != 0 {
		t.Error("a TLS flow was suspected")
	}
}

// TestActionLogLine pins the JSON form of a log line.
func TestActionLogLine(t *testing.T) {
	e := newTestEngine(t, mustProfile(t, "name: line\nrules:\n  - name: udp\n    match: {udp: {}}\n    action: drop\n"), 1)
	udp(t, e, Outbound, cli(cliPort), srv443, []byte("x"), t0.Add(1500*time.Millisecond))
	want := `{"time":"2025-01-01T00:00:01.5Z","profile":"line","rule":"udp","action":"drop","proto":"udp","client":"198.18.0.2:40000","server":"198.18.1.2:443","detail":{"udp-port":"443"}}` + "\n"
	if got := e.log.String(); got != want {
		t.Errorf("log line\n got %s\nwant %s", got, want)
	}
}

// TestScope checks the scope fields: initiator, ports, servers, exempt
// addresses, and Local packets.
func TestScope(t *testing.T) {
	base := "name: s\nrules:\n  - name: udp\n    match: {udp: {}%s}\n    action: drop\n"
	tests := []struct {
		name  string
		extra string
		dir   Direction
		dst   netip.AddrPort
		want  PacketAction
	}{
		{"inside initiator by default", "", Outbound, srv443, Drop},
		{"outside initiator ignored by default", "", Inbound, srv443, Pass},
		{"outside initiator", ", initiator: outside", Inbound, srv443, Drop},
		{"any initiator", ", initiator: any", Inbound, srv443, Drop},
		{"local packets pass", ", initiator: any", Local, srv443, Pass},
		{"server in range", ", servers: [198.18.1.0/24]", Outbound, srv443, Drop},
		{"server out of range", ", servers: [198.19.0.0/16, 198.18.1.3]", Outbound, srv443, Pass},
		{"port listed", ", ports: [443, 80]", Outbound, srv443, Drop},
		{"port not listed", ", ports: [80]", Outbound, srv443, Pass},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEngine(t, mustProfile(t, strings.Replace(base, "%s", tt.extra, 1)), 1)
			wantAction(t, "datagram", udp(t, e, tt.dir, cli(cliPort), tt.dst, []byte("x"), t0), tt.want)
		})
	}
	t.Run("exempt", func(t *testing.T) {
		e, err := New(Config{Profile: mustProfile(t, strings.Replace(base, "%s", "", 1)), Exempt: []netip.Prefix{netip.MustParsePrefix("198.18.0.2/32")}})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := packet.BuildUDP(packet.UDPSpec{Src: cli(cliPort), Dst: srv443, Payload: []byte("x")})
		if v := e.Packet(Outbound, b, t0); v.Action != Pass {
			t.Errorf("exempt host's packet: %+v", v)
		}
		if s := e.Stats(); s.Packets != 0 || s.Flows != 0 {
			t.Errorf("exempt packet counted: %+v", s)
		}
	})
}

// TestSYNACKFirst: a flow first seen at its SYN+ACK belongs to the
// receiver of that packet.
func TestSYNACKFirst(t *testing.T) {
	e := newTestEngine(t, mustProfile(t, sniProfile), 1)
	c := newConn(t, e, cli(cliPort), srv443)
	c.sseq = serverISN
	c.cseq = clientISN + 1
	c.send(Server, packet.SYN|packet.ACK, nil)
	c.send(Client, packet.ACK, nil)
	wantAction(t, "hello", c.data(Client, captureGoHello(t, "blocked.example", nil)), Drop)
	evs := e.events(t)
	if len(evs) != 1 || evs[0].Client != cli(cliPort).String() {
		t.Errorf("log = %+v", evs)
	}
}

// TestPortReuse: a new SYN on a 5-tuple whose connection ended starts a
// new flow, so a block without residual does not outlive its connection.
func TestPortReuse(t *testing.T) {
	e := newTestEngine(t, mustProfile(t, "name: r\nrules:\n  - name: sni\n    match: {sni: [blocked.example]}\n    action: reset\n"), 1)
	c := newConn(t, e, cli(cliPort), srv443)
	c.handshake()
	wantAction(t, "blocked", c.data(Client, captureGoHello(t, "blocked.example", nil)), Drop)
	c.send(Client, packet.RST, nil) // the client's stack answers the forged RST
	c2 := newConn(t, e, cli(cliPort), srv443)
	c2.cseq, c2.sseq = 77777, 88888
	c2.handshake()
	wantAction(t, "new connection", c2.data(Client, captureGoHello(t, "ok.example", nil)), Pass)
}

func TestMalformedAndOtherProtocols(t *testing.T) {
	e := newTestEngine(t, mustProfile(t, "name: m\nrules:\n  - name: udp\n    match: {udp: {}}\n    action: drop\n"), 1)
	for _, b := range [][]byte{nil, {0x45}, []byte("not a packet at all, not at all")} {
		if v := e.Packet(Outbound, b, t0); v.Action != Pass {
			t.Errorf("malformed %x: %+v", b, v)
		}
	}
	icmp := []byte{0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 198, 18, 0, 2, 198, 18, 1, 2, 8, 0, 0, 0, 0, 0, 0, 0}
	if v := e.Packet(Outbound, icmp, t0); v.Action != Pass {
		t.Errorf("icmp: %+v", v)
	}
	if s := e.Stats(); s.Malformed != 3 || s.Flows != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestNilProfile(t *testing.T) {
	e, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	c := newConn(t, &testEngine{Engine: e, log: new(bytes.Buffer)}, cli(cliPort), srv443)
	c.handshake()
	wantAction(t, "data", c.data(Client, randomPayload(t, 100)), Pass)
}

// TestIPv6 runs the SNI rule over IPv6 (2001:2::/48, RFC 5180): the
// forged resets are IPv6 packets with the flow's sequence numbers.
func TestIPv6(t *testing.T) {
	e := newTestEngine(t, mustProfile(t, sniProfile), 1)
	c6 := netip.MustParseAddrPort("[2001:2::2]:40000")
	s6 := netip.MustParseAddrPort("[2001:2:0:1::2]:443")
	c := newConn(t, e, c6, s6)
	c.handshake()
	helloSeq := c.cseq
	v := c.data(Client, captureGoHello(t, "blocked.example", nil))
	wantAction(t, "hello", v, Drop)
	if len(v.Inject) != 2 {
		t.Fatalf("injected %d", len(v.Inject))
	}
	got := describeTCP(t, v.Inject[1].Packet)
	if want := (rstOf{Src: c6, Dst: s6, Seq: helloSeq, Ack: serverISN + 1, Flags: "RST|ACK"}); got != want {
		t.Errorf("reset toward the server %+v, want %+v", got, want)
	}
	if p := parsed(t, v.Inject[0].Packet); p.Version != 6 {
		t.Errorf("reset is IPv%d", p.Version)
	}
}
