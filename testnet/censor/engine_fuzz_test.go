package censor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commucat/commucat/configs"
	"github.com/commucat/commucat/testnet/packet"
	"golang.org/x/net/dns/dnsmessage"
)

// fuzzProfile has every trigger and every action, small tables and short
// timers, so a fuzzed packet sequence reaches eviction, expiry, residual
// blocks, cut-offs and throttling.
const fuzzProfile = `
name: fuzz
flows: {idle: 20s, max: 8, reassembly: 2048, residuals: 4}
rules:
  - name: sni
    match: {reassemble: true, sni: [blocked.example]}
    action: reset
    residual: 30s
    residual-action: reset
  - name: sni-first
    match: {sni: [first.example]}
    action: drop
  - name: http
    match: {reassemble: true, host: [blocked.example], keyword: [falun]}
    action: {throttle: {delay: 10ms, loss: 0.3, rate: 64kbit, queue: 100ms}}
  - name: quic
    match: {quic-sni: [blocked.example], reassemble: true}
    action: drop
    residual: 10s
    residual-key: 4-tuple
  - name: quic-first
    match: {quic-sni: [first.example]}
    action: freeze
  - name: fet
    match: {fet: {probability: 0.5}, ports: [4000]}
    action: drop
    residual: 10s
  - name: probe
    match: {fet: {probability: 1}, ports: [5000]}
    action: probe
  - name: iran
    match: {protocol-allowlist: {protocols: [http, tls, dns], ports: [443, 53]}, transport: tcp}
    action: drop
    residual: 5s
    residual-key: server
  - name: tlsfp
    match: {tls-fingerprint: {ja4: [t13d1516h2_8daaf6152771_d8a2da3f94cd]}, ports: [8443]}
    action: reset
  - name: udp
    match: {udp: {ports: [9]}}
    action: drop
  - name: age
    match: {flow-age: {seconds: 15}, transport: tcp}
    action: reset
  - name: cut
    match: {protocols: [tls], bytes-s2c: {threshold: 3000, max: 5000}}
    action: cut-off
  - name: freeze
    match: {protocols: [unknown, http], bytes-s2c: {threshold: 4000}}
    action: freeze
  - name: dns
    match: {dns: {names: [blocked.example]}}
    action: {dns-inject: {ip: 198.18.255.1}}
  - name: dns-nx
    match: {dns: {names: [nx.example]}, initiator: any}
    action: {dns-inject: {nxdomain: true}}
  - name: log
    match: {udp: {}, initiator: outside}
    action: log
`

// fuzzPacket is one packet of a fuzz input: its direction, the seconds
// elapsed before it, and its bytes.
type fuzzPacket struct {
	dir  Direction
	wait uint8
	b    []byte
}

// encodeFuzz writes packets as FuzzEngine reads them: per packet a
// control byte (bits 0-1: direction 1-3, bits 2-7: seconds to wait), a
// 2-byte length, the packet.
func encodeFuzz(ps []fuzzPacket) []byte {
	var out []byte
	for _, p := range ps {
		out = append(out, byte(p.dir)&3|p.wait<<2)
		out = binary.BigEndian.AppendUint16(out, uint16(len(p.b)))
		out = append(out, p.b...)
	}
	return out
}

// decodeFuzz is encodeFuzz's inverse; it stops at the first truncated
// packet.
func decodeFuzz(in []byte) []fuzzPacket {
	var ps []fuzzPacket
	for len(in) >= 3 {
		n := int(binary.BigEndian.Uint16(in[1:3]))
		if len(in) < 3+n {
			break
		}
		ps = append(ps, fuzzPacket{dir: Direction(in[0] & 3), wait: in[0] >> 2, b: in[3 : 3+n]})
		in = in[3+n:]
	}
	return ps
}

// fuzzSeeds are real packet sequences: TCP connections carrying
// crypto/tls ClientHellos, HTTP, DNS over TCP and random bytes, server
// data past the cut-off, QUIC Initials, DNS queries, and idle gaps.
func fuzzSeeds(t testing.TB) [][]fuzzPacket {
	var seeds [][]fuzzPacket
	tcp := func(src, dst string, payloads ...[]byte) []fuzzPacket {
		s, d := netipAP(t, src), netipAP(t, dst)
		var ps []fuzzPacket
		cseq, sseq := uint32(clientISN), uint32(serverISN)
		add := func(fromClient bool, flags packet.TCPFlags, payload []byte) {
			spec := packet.TCPSpec{Src: s, Dst: d, Seq: cseq, Ack: sseq, Flags: flags, Payload: payload}
			dir := Outbound
			if !fromClient {
				spec = packet.TCPSpec{Src: d, Dst: s, Seq: sseq, Ack: cseq, Flags: flags, Payload: payload}
				dir = Inbound
			}
			b, err := packet.BuildTCP(spec)
			if err != nil {
				t.Fatal(err)
			}
			ps = append(ps, fuzzPacket{dir: dir, b: b})
			n := uint32(len(payload))
			if flags&(packet.SYN|packet.FIN) != 0 {
				n++
			}
			if fromClient {
				cseq += n
			} else {
				sseq += n
			}
		}
		add(true, packet.SYN, nil)
		add(false, packet.SYN|packet.ACK, nil)
		add(true, packet.ACK, nil)
		for i, p := range payloads {
			add(i%2 == 0, packet.PSH|packet.ACK, p)
		}
		add(true, packet.FIN|packet.ACK, nil)
		return ps
	}
	udpPkt := func(src, dst string, payload []byte) fuzzPacket {
		b, err := packet.BuildUDP(packet.UDPSpec{Src: netipAP(t, src), Dst: netipAP(t, dst), Payload: payload})
		if err != nil {
			t.Fatal(err)
		}
		return fuzzPacket{dir: Outbound, b: b}
	}
	hello := captureGoHello(t, "www.blocked.example", nil)
	random := randomPayload(t, 200)
	big := make([]byte, 1400)
	seeds = append(seeds,
		tcp("198.18.0.2:40000", "198.18.1.2:443", hello[:50], []byte{}, hello[50:], big, []byte("x"), big, []byte("y"), big, []byte("z"), big),
		tcp("198.18.0.2:40001", "198.18.1.2:80", []byte("GET /falun HTTP/1.1\r\nHost: blocked.example\r\n\r\n"), big, []byte("more"), big),
		tcp("198.18.0.2:40002", "198.18.1.2:4000", random, big, random, big),
		tcp("198.18.0.2:40003", "198.18.1.2:53", FrameDNSTCP(packQuery(t, 9, "blocked.example.", dnsmessage.TypeA, true))),
		tcp("198.18.0.2:40004", "198.18.1.2:8443", captureGoHello(t, "first.example", []string{"h2"}), big, big, big, big),
		tcp("198.18.0.2:40005", "198.18.1.2:9443", captureGoHello(t, "ok.example", []string{"h2"}), big, []byte("a"), big, []byte("b"), big, []byte("c"), big),
		tcp("198.18.0.2:40006", "198.18.1.2:7000", random, big, random, big, []byte("b"), big, []byte("c"), big),
		[]fuzzPacket{
			udpPkt("198.18.0.2:50000", "198.18.1.2:443", readHex(t, "rfc9001-a2-protected.hex")),
			udpPkt("198.18.0.2:50001", "198.18.1.2:443", quicInitial(t, "blocked.example")),
			udpPkt("198.18.0.2:50002", "198.18.1.53:53", packQuery(t, 1, "www.blocked.example.", dnsmessage.TypeA, true)),
			udpPkt("198.18.0.2:50003", "198.18.1.53:53", packQuery(t, 2, "nx.example.", dnsmessage.TypeAAAA, true)),
			udpPkt("198.18.0.2:50004", "198.18.1.2:9", []byte("x")),
			{dir: Outbound, wait: 40, b: []byte{0x45, 0, 0, 20}},
		},
	)
	// The same connection again after a wait, and with its packets in
	// the other directions.
	again := tcp("198.18.0.2:40000", "198.18.1.2:443", hello)
	again[0].wait = 16
	for i := range again {
		again[i].dir = 3 - again[i].dir
	}
	seeds = append(seeds, again)
	return seeds
}

func netipAP(t testing.TB, s string) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

func FuzzEngine(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(encodeFuzz(s))
	}
	prof := mustProfile(f, fuzzProfile)
	f.Fuzz(func(t *testing.T, in []byte) {
		e, err := New(Config{Profile: prof, Seed: 1, Log: discardCounter{}, SuspectQueue: 2})
		if err != nil {
			t.Fatal(err)
		}
		now := t0
		for _, p := range decodeFuzz(in) {
			now = now.Add(time.Duration(p.wait) * time.Second)
			v := e.Packet(p.dir, p.b, now)
			if v.Delay < 0 {
				t.Fatalf("negative delay %v", v.Delay)
			}
			if (v.Action == Replace) != (v.Packet != nil) {
				t.Fatalf("action %v with replacement of %d bytes", v.Action, len(v.Packet))
			}
			if v.Action == Replace {
				if err := packet.VerifyChecksums(v.Packet); err != nil {
					t.Fatalf("replacement: %v", err)
				}
			}
			for _, inj := range v.Inject {
				if err := packet.VerifyChecksums(inj.Packet); err != nil {
					t.Fatalf("injected packet: %v", err)
				}
			}
		}
		if s := e.Stats(); s.Flows > 8 || s.Residuals > 4 {
			t.Fatalf("tables over their bounds: %+v", s)
		}
	})
}

// discardCounter is a log writer that checks each write is one JSON line.
type discardCounter struct{}

func (discardCounter) Write(b []byte) (int, error) {
	if len(b) == 0 || b[0] != '{' || b[len(b)-1] != '\n' || strings.Count(string(b), "\n") != 1 {
		return 0, fmt.Errorf("log write %q is not one json line", b)
	}
	return len(b), nil
}

func FuzzProfile(f *testing.F) {
	f.Add([]byte(schemaExample))
	f.Add([]byte(fuzzProfile))
	for _, name := range configs.CensorProfileNames() {
		b, err := configs.CensorProfileYAML(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseProfile(b)
		if err != nil {
			var pe *ProfileError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *ProfileError", err)
			}
			return
		}
		// A valid profile always makes an engine, and parses the same
		// way twice.
		if _, err := New(Config{Profile: p}); err != nil {
			t.Fatalf("valid profile, New: %v", err)
		}
		p2, err := ParseProfile(b)
		if err != nil || p2.Name != p.Name || len(p2.Rules) != len(p.Rules) {
			t.Fatalf("second parse differs: %v", err)
		}
	})
}

// TestWriteEngineFuzzSeeds writes the FuzzEngine and FuzzProfile seed
// files under -update.
func TestWriteEngineFuzzSeeds(t *testing.T) {
	if !*update {
		t.Skip("run with -update to rewrite testdata/fuzz/FuzzEngine and FuzzProfile")
	}
	write := func(target string, seeds [][]byte) {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, s := range seeds {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%d", i)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	var engine [][]byte
	for _, s := range fuzzSeeds(t) {
		engine = append(engine, encodeFuzz(s))
	}
	write("FuzzEngine", engine)
	profiles := [][]byte{[]byte(schemaExample), []byte(fuzzProfile),
		[]byte("name: x\nrules:\n  - name: r\n    match: {snii: [a]}\n    action: drop\n"),
		[]byte("name: &a x\ndescription: *a\n")}
	for _, name := range []string{"gfw-sni", "throttle-and-kill", "wan-mobile-lossy"} {
		b, _ := configs.CensorProfileYAML(name)
		profiles = append(profiles, b)
	}
	write("FuzzProfile", profiles)
}
