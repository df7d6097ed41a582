package censor

import (
	"net/netip"
	"testing"
	"time"

	"github.com/commucat/commucat/testnet/packet"
)

// benchFlow returns an engine that has seen the handshake and first data
// of a connection cli -> srv443 carrying hello, and 1024 data packets of
// 1400-byte payloads of that connection, alternating directions, with
// their directions.
func benchFlow(b *testing.B, p *Profile, hello []byte) (*Engine, [][]byte, []Direction) {
	b.Helper()
	e := newTestEngine(b, p, 1)
	e.Engine.log = nil
	c := newConn(b, e, cli(cliPort), srv443)
	c.handshake()
	c.data(Client, hello)
	payload := make([]byte, 1400)
	var pkts [][]byte
	var dirs []Direction
	for i := range 1024 {
		from, dir := Client, Outbound
		if i%2 == 1 {
			from, dir = Server, Inbound
		}
		pkts = append(pkts, c.segment(from, packet.ACK, payload))
		dirs = append(dirs, dir)
		if from == Client {
			c.cseq += 1400
		} else {
			c.sseq += 1400
		}
	}
	return e.Engine, pkts, dirs
}

func runPackets(b *testing.B, e *Engine, pkts [][]byte, dirs []Direction, want PacketAction) {
	b.Helper()
	now := t0.Add(time.Second)
	b.SetBytes(int64(len(pkts[0])))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		j := i % len(pkts)
		now = now.Add(time.Microsecond)
		if v := e.Packet(dirs[j], pkts[j], now); v.Action != want {
			b.Fatalf("packet %d: %v, want %v", i, v.Action, want)
		}
	}
}

// BenchmarkEngineCleanFlow is the per-packet cost of an established
// connection the rules let through, under each shipped profile with
// rules.
func BenchmarkEngineCleanFlow(b *testing.B) {
	hello := captureGoHello(b, "www.example.com", []string{"h2"})
	for _, name := range []string{"gfw-sni", "gfw-fet", "iran-protocol-filter", "throttle-and-kill", "udp-block"} {
		b.Run(name, func(b *testing.B) {
			e, pkts, dirs := benchFlow(b, shipped(b, name), hello)
			runPackets(b, e, pkts, dirs, Pass)
		})
	}
	b.Run("no-rules", func(b *testing.B) {
		e, pkts, dirs := benchFlow(b, shipped(b, "wan-clean"), hello)
		runPackets(b, e, pkts, dirs, Pass)
	})
	b.Run("tspu-16k-below-threshold", func(b *testing.B) {
		p := mustProfile(b, "name: t\nrules:\n  - name: f\n    match: {protocols: [tls], bytes-s2c: {threshold: 999999999999}}\n    action: freeze\n")
		e, pkts, dirs := benchFlow(b, p, hello)
		runPackets(b, e, pkts, dirs, Pass)
	})
}

// BenchmarkEngineMatchedFlow is the per-packet cost of a connection a
// rule matched: throttled (delay and rate computed per packet) and
// blocked (dropped).
func BenchmarkEngineMatchedFlow(b *testing.B) {
	hello := captureGoHello(b, "blocked.example", []string{"h2"})
	b.Run("throttled", func(b *testing.B) {
		p := mustProfile(b, "name: t\nrules:\n  - name: slow\n    match: {sni: [blocked.example]}\n    action: {throttle: {delay: 50ms, rate: 100gbit}}\n")
		e, pkts, dirs := benchFlow(b, p, hello)
		runPackets(b, e, pkts, dirs, Pass)
	})
	b.Run("blocked", func(b *testing.B) {
		e, pkts, dirs := benchFlow(b, shipped(b, "gfw-sni"), hello)
		runPackets(b, e, pkts, dirs, Drop)
	})
}

// BenchmarkEngineNewFlow is the cost of a whole short connection under
// gfw-sni, six packets: handshake, a crypto/tls ClientHello parsed for
// its SNI, a response, FIN. The packets are built beforehand; their
// 5-tuples repeat every 1024 connections, each time as a new connection.
func BenchmarkEngineNewFlow(b *testing.B) {
	hello := captureGoHello(b, "www.example.com", []string{"h2"})
	e := newTestEngine(b, shipped(b, "gfw-sni"), 1)
	e.Engine.log = nil
	type pkt struct {
		dir Direction
		b   []byte
	}
	var flows [][]pkt
	for i := range 1024 {
		c := newConn(b, e, netip.AddrPortFrom(cliIP, uint16(1024+i)), srv443)
		var ps []pkt
		add := func(from Side, flags packet.TCPFlags, payload []byte) {
			dir := Outbound
			if from == Server {
				dir = Inbound
			}
			ps = append(ps, pkt{dir, c.segment(from, flags, payload)})
			n := uint32(len(payload))
			if flags&(packet.SYN|packet.FIN) != 0 {
				n++
			}
			if from == Client {
				c.cseq += n
			} else {
				c.sseq += n
			}
		}
		add(Client, packet.SYN, nil)
		add(Server, packet.SYN|packet.ACK, nil)
		add(Client, packet.ACK, nil)
		add(Client, packet.PSH|packet.ACK, hello)
		add(Server, packet.PSH|packet.ACK, make([]byte, 1000))
		add(Client, packet.FIN|packet.ACK, nil)
		flows = append(flows, ps)
	}
	now := t0
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		now = now.Add(time.Millisecond)
		for _, p := range flows[i%len(flows)] {
			if v := e.Packet(p.dir, p.b, now); v.Action != Pass {
				b.Fatal(v)
			}
		}
	}
}
