package censor

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/commucat/commucat/testnet/packet"
	"golang.org/x/net/dns/dnsmessage"
)

func readTestdata(b *testing.B, name string) []byte {
	b.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		b.Fatal(err)
	}
	return raw
}

// BenchmarkSNI is the per-connection cost of TLS SNI blocking: reassemble
// and parse a Chrome ClientHello from the stream and read its SNI.
func BenchmarkSNI(b *testing.B) {
	raw := readTestdata(b, "hello-chrome.bin")
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		h, err := ClientHelloFromStream(raw, 0)
		if err != nil || h.ServerName == "" {
			b.Fatal(err)
		}
	}
}

// BenchmarkSNISplit reassembles a hello split into 100-byte records.
func BenchmarkSNISplit(b *testing.B) {
	raw := records(mustReassemble(b, readTestdata(b, "hello-chrome.bin")), 100)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ClientHelloFromStream(raw, 0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkJA4(b *testing.B) {
	h, err := ClientHelloFromStream(readTestdata(b, "hello-chrome.bin"), 0)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = h.JA4(JA4TCP)
	}
}

func BenchmarkJA3Hash(b *testing.B) {
	h, err := ClientHelloFromStream(readTestdata(b, "hello-chrome.bin"), 0)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = h.JA3Hash()
	}
}

// BenchmarkQUICSNI decrypts the RFC 9001 client Initial and reads the SNI.
func BenchmarkQUICSNI(b *testing.B) {
	pkt := readHex(b, "rfc9001-a2-protected.hex")
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	for b.Loop() {
		h, err := QUICClientHello(pkt)
		if err != nil || h.ServerName != "example.com" {
			b.Fatal(err)
		}
	}
}

// BenchmarkFET runs the fully-encrypted-traffic test on a full-size
// random first packet (the worst case: no early exit).
func BenchmarkFET(b *testing.B) {
	p := randomPayload(b, 1400)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		if FET(p).Exempt() {
			b.Fatal("exempt")
		}
	}
}

func BenchmarkFETRuleDecide(b *testing.B) {
	p := randomPayload(b, 1400)
	rnd := rand.New(rand.NewPCG(1, 2))
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		_ = FETRule{}.Decide(p, rnd)
	}
}

func BenchmarkClassifyTCP(b *testing.B) {
	hello := readTestdata(b, "hello-go.bin")
	b.SetBytes(int64(len(hello)))
	b.ReportAllocs()
	for b.Loop() {
		if ClassifyTCP(hello[:100], hello[100:]) != ProtoTLS {
			b.Fatal("not tls")
		}
	}
}

func BenchmarkParseDNSQuery(b *testing.B) {
	q := packQuery(b, 1, "www.blocked.example.", dnsmessage.TypeA, true)
	b.SetBytes(int64(len(q)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseDNSQuery(q); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseHTTPRequest(b *testing.B) {
	req := []byte("GET /search?q=news HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: Mozilla/5.0\r\nAccept: */*\r\n\r\n")
	b.SetBytes(int64(len(req)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseHTTPRequest(req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkForgeResetPair forges the two RST+ACK packets of a teardown.
func BenchmarkForgeResetPair(b *testing.B) {
	p, err := packet.Parse(mustBuildTCP(b, packet.TCPSpec{Src: cli4, Dst: srv4, Seq: 1, Ack: 2, Flags: packet.PSH | packet.ACK, Payload: make([]byte, 517)}))
	if err != nil {
		b.Fatal(err)
	}
	s, err := NewTCPState(&p)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Forge(Client, packet.RST|packet.ACK, nil); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Forge(Server, packet.RST|packet.ACK, nil); err != nil {
			b.Fatal(err)
		}
	}
}
