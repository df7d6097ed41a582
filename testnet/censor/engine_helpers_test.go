package censor

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/commucat/commucat/configs"
	"github.com/commucat/commucat/testnet/packet"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	utls "github.com/refraction-networking/utls"
)

var (
	// t0 is the start of the engine tests' clock.
	t0      = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	cliIP   = netip.MustParseAddr("198.18.0.2")
	srvIP   = netip.MustParseAddr("198.18.1.2")
	srv443  = netip.AddrPortFrom(srvIP, 443)
	resolv  = netip.AddrPortFrom(netip.MustParseAddr("198.18.1.53"), 53)
	cliPort = uint16(40000)
)

// cli returns the client's address with port n.
func cli(n uint16) netip.AddrPort { return netip.AddrPortFrom(cliIP, n) }

// cmpAddr lets go-cmp compare netip values.
var cmpAddr = cmpopts.EquateComparable(netip.AddrPort{}, netip.Addr{}, netip.Prefix{})

// mustProfile parses an inline profile.
func mustProfile(t testing.TB, yml string) *Profile {
	t.Helper()
	p, err := ParseProfile([]byte(yml))
	if err != nil {
		t.Fatalf("profile: %v\n%s", err, yml)
	}
	return p
}

// shipped parses a shipped profile.
func shipped(t testing.TB, name string) *Profile {
	t.Helper()
	b, err := configs.CensorProfileYAML(name)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParseProfile(b)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return p
}

// testEngine is an engine with its action log in a buffer.
type testEngine struct {
	*Engine
	log *bytes.Buffer
}

func newTestEngine(t testing.TB, p *Profile, seed uint64) *testEngine {
	t.Helper()
	var buf bytes.Buffer
	e, err := New(Config{Profile: p, Seed: seed, Log: &buf})
	if err != nil {
		t.Fatal(err)
	}
	return &testEngine{Engine: e, log: &buf}
}

// events returns the action log so far, and empties it.
func (e *testEngine) events(t testing.TB) []Event {
	t.Helper()
	evs, err := ParseLog(e.log)
	if err != nil {
		t.Fatal(err)
	}
	e.log.Reset()
	return evs
}

// wantEvents compares the log so far with want, ignoring times and the
// profile name.
func (e *testEngine) wantEvents(t testing.TB, want ...Event) {
	t.Helper()
	got := e.events(t)
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(Event{}, "Time", "Profile"), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("action log (-want +got):\n%s", diff)
	}
}

// ev is an expected log event about flow cli -> srv.
func ev(rule, action string, proto string, client, server netip.AddrPort, detail map[string]string) Event {
	return Event{Rule: rule, Action: action, Proto: proto, Client: client.String(), Server: server.String(), Detail: detail}
}

// conn drives one TCP connection through an engine: it builds real IP
// packets with testnet/packet and keeps both ends' sequence numbers as
// the hosts would (every packet sent is taken as delivered).
type conn struct {
	t          testing.TB
	e          *testEngine
	c, s       netip.AddrPort
	cseq, sseq uint32 // next sequence number of each end
	now        time.Time
	dir        Direction // direction of the client's packets
}

const (
	clientISN = 1000
	serverISN = 5000
)

func newConn(t testing.TB, e *testEngine, c, s netip.AddrPort) *conn {
	return &conn{t: t, e: e, c: c, s: s, cseq: clientISN, sseq: serverISN, now: t0, dir: Outbound}
}

// segment builds a segment from side `from` with the current numbers.
func (c *conn) segment(from Side, flags packet.TCPFlags, payload []byte) []byte {
	c.t.Helper()
	spec := packet.TCPSpec{Src: c.c, Dst: c.s, Seq: c.cseq, Ack: c.sseq, Flags: flags, Payload: payload}
	if from == Server {
		spec = packet.TCPSpec{Src: c.s, Dst: c.c, Seq: c.sseq, Ack: c.cseq, Flags: flags, Payload: payload}
	}
	if flags&packet.ACK == 0 {
		spec.Ack = 0
	}
	b, err := packet.BuildTCP(spec)
	if err != nil {
		c.t.Fatal(err)
	}
	return b
}

// send passes a segment from `from` through the engine and advances that
// end's sequence number.
func (c *conn) send(from Side, flags packet.TCPFlags, payload []byte) Verdict {
	c.t.Helper()
	b := c.segment(from, flags, payload)
	dir := c.dir
	if from == Server {
		dir = dir.reverse()
	}
	v := c.e.Packet(dir, b, c.now)
	n := uint32(len(payload))
	if flags&(packet.SYN|packet.FIN) != 0 {
		n++
	}
	if from == Client {
		c.cseq += n
	} else {
		c.sseq += n
	}
	return v
}

// handshake runs the three-way handshake and checks that it passes.
func (c *conn) handshake() {
	c.t.Helper()
	for i, v := range []Verdict{
		c.send(Client, packet.SYN, nil),
		c.send(Server, packet.SYN|packet.ACK, nil),
		c.send(Client, packet.ACK, nil),
	} {
		if v.Action != Pass || len(v.Inject) > 0 {
			c.t.Fatalf("handshake packet %d: verdict %+v", i, v)
		}
	}
}

// data sends a data segment (PSH|ACK) from `from`.
func (c *conn) data(from Side, payload []byte) Verdict {
	c.t.Helper()
	return c.send(from, packet.PSH|packet.ACK, payload)
}

// udp passes one UDP datagram through an engine.
func udp(t testing.TB, e *testEngine, dir Direction, src, dst netip.AddrPort, payload []byte, now time.Time) Verdict {
	t.Helper()
	b, err := packet.BuildUDP(packet.UDPSpec{Src: src, Dst: dst, Payload: payload})
	if err != nil {
		t.Fatal(err)
	}
	return e.Packet(dir, b, now)
}

// wantAction checks a verdict's action.
func wantAction(t testing.TB, what string, v Verdict, want PacketAction) {
	t.Helper()
	if v.Action != want {
		t.Errorf("%s: action %v, want %v (verdict %+v)", what, v.Action, want, v)
	}
}

// parsed parses an injected packet.
func parsed(t testing.TB, b []byte) packet.Packet {
	t.Helper()
	if err := packet.VerifyChecksums(b); err != nil {
		t.Fatalf("injected packet: %v", err)
	}
	p, err := packet.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// rstOf describes an injected TCP segment for comparison.
type rstOf struct {
	Src, Dst netip.AddrPort
	Seq, Ack uint32
	Flags    string
}

func describeTCP(t testing.TB, b []byte) rstOf {
	t.Helper()
	p := parsed(t, b)
	if !p.IsTCP() {
		t.Fatalf("injected packet is not tcp: %+v", p)
	}
	return rstOf{Src: p.SrcAddrPort(), Dst: p.DstAddrPort(), Seq: p.TCP.Seq, Ack: p.TCP.Ack, Flags: p.TCP.Flags.String()}
}

// helloOf returns the ClientHello bytes (TLS records) a utls parrot
// writes.
func helloOf(t testing.TB, id utls.ClientHelloID, serverName string) []byte {
	t.Helper()
	cl, sv := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c := utls.UClient(cl, &utls.Config{ServerName: serverName, InsecureSkipVerify: true}, id)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Handshake()
	}()
	raw := readRecords(t, sv)
	sv.Close()
	cl.Close()
	<-done
	return raw
}

// quicInitial returns a one-datagram QUIC v1 client Initial carrying a
// ClientHello for serverName, padded to 1200 bytes as clients do.
func quicInitial(t testing.TB, serverName string) []byte {
	t.Helper()
	msg, err := encodeHello(&ClientHello{
		Version: 0x0303, CipherSuites: []uint16{0x1301, 0x1302},
		Extensions: []uint16{extServerName, extALPN, extSupportedVers}, ServerName: serverName,
		ALPN: []string{"h3"}, SupportedVersions: []uint16{0x0304},
	})
	if err != nil {
		t.Fatal(err)
	}
	payload := cryptoFrame(0, msg)
	payload = append(payload, make([]byte, 1200-len(payload)-60)...)
	dcid := []byte{8, 7, 6, 5, 4, 3, 2, 1}
	return sealInitial(t, dcid, dcid, []byte{9, 9}, 0, 2, payload)
}
