package censor

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/net/dns/dnsmessage"
)

// encodeHello is the encoder that ParseClientHello inverts: it writes h's
// fields back as a ClientHello message (zero random and session ID, no
// compression but null, known extensions with bodies from h, the others
// empty).
func encodeHello(h *ClientHello) ([]byte, error) {
	u16s := func(b *cryptobyte.Builder, v []uint16) {
		for _, x := range v {
			b.AddUint16(x)
		}
	}
	var b cryptobyte.Builder
	b.AddUint8(handshakeClientHello)
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint16(h.Version)
		b.AddBytes(make([]byte, 32))
		b.AddUint8(0)
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { u16s(b, h.CipherSuites) })
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint8(0) })
		if h.Extensions == nil {
			return
		}
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			for _, e := range h.Extensions {
				b.AddUint16(e)
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
					switch e {
					case extServerName:
						b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
							if h.ServerName != "" {
								b.AddUint8(0)
								b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(h.ServerName)) })
							}
						})
					case extALPN:
						b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
							for _, p := range h.ALPN {
								b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(p)) })
							}
						})
					case extSupportedGrps:
						b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { u16s(b, h.SupportedGroups) })
					case extSigAlgs:
						b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { u16s(b, h.SignatureAlgorithms) })
					case extSupportedVers:
						b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { u16s(b, h.SupportedVersions) })
					case extECPointFormats:
						b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(h.ECPointFormats) })
					}
				})
			}
		})
	})
	return b.Bytes()
}

// helloSeeds are real ClientHello messages.
func helloSeeds(t testing.TB) [][]byte {
	var seeds [][]byte
	for _, f := range []string{"hello-go.bin", "hello-chrome.bin"} {
		raw, err := os.ReadFile(filepath.Join("testdata", f))
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, mustReassemble(t, raw))
	}
	for _, v := range loadVectors(t) {
		seeds = append(seeds, buildHello(t, v))
	}
	return seeds
}

func FuzzClientHello(f *testing.F) {
	for _, s := range helloSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		h, err := ParseClientHello(msg)
		if err != nil {
			if !errors.Is(err, ErrNotClientHello) {
				t.Fatalf("undocumented error %v", err)
			}
			return
		}
		_, _, _, _ = h.JA3Hash(), h.JA4(JA4TCP), h.JA4RO(JA4QUIC), h.JA4R(JA4DTLS)
		if ja4 := h.JA4(JA4TCP); len(ja4) != 36 {
			t.Fatalf("JA4 %q is not 36 characters", ja4)
		}
		again, err := encodeHello(h)
		if err != nil {
			return // a field too long to re-encode in its length prefix
		}
		h2, err := ParseClientHello(again)
		if err != nil {
			t.Fatalf("re-encoded hello does not parse: %v", err)
		}
		if diff := cmp.Diff(h, h2, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("decode(encode(x)) != x (-first +second):\n%s", diff)
		}
	})
}

func FuzzReassemble(f *testing.F) {
	for _, s := range helloSeeds(f) {
		f.Add(records(s, 1<<14), 0)
		f.Add(records(s, 7), 300)
	}
	f.Add([]byte("GET / HTTP/1.1\r\n"), 10)
	f.Fuzz(func(t *testing.T, stream []byte, limit int) {
		msg, err := ReassembleClientHello(stream, limit)
		switch {
		case err == nil:
			if len(msg) < handshakeHeaderLen || msg[0] != handshakeClientHello ||
				len(msg) != handshakeHeaderLen+(int(msg[1])<<16|int(msg[2])<<8|int(msg[3])) {
				t.Fatalf("returned message of %d bytes has a wrong header", len(msg))
			}
			// More bytes after a complete hello change nothing.
			more, err := ReassembleClientHello(append(append([]byte(nil), stream...), 0x17, 3, 3), limit)
			if err != nil || !bytes.Equal(more, msg) {
				t.Fatalf("appending bytes changed the result: %v", err)
			}
		case errors.Is(err, ErrNeedMore), errors.Is(err, ErrNotTLS), errors.Is(err, ErrTooLong):
		default:
			t.Fatalf("undocumented error %v", err)
		}
	})
}

func FuzzQUICInitial(f *testing.F) {
	f.Add(readHex(f, "rfc9001-a2-protected.hex"))
	for _, name := range []string{"quicgo-initial-1.bin", "quicgo-initial-2.bin"} {
		if b, err := os.ReadFile(filepath.Join("testdata", name)); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, datagram []byte) {
		if init, n, err := OpenInitial(datagram, nil); err == nil {
			if n > len(datagram) || len(init.Payload) > len(datagram) {
				t.Fatalf("consumed %d of %d bytes", n, len(datagram))
			}
		} else if !errors.Is(err, ErrNotInitial) && !errors.Is(err, ErrQUICVersion) && !errors.Is(err, ErrDecrypt) {
			t.Fatalf("undocumented error %v", err)
		}
		a := NewQUICHelloAssembler(0)
		_ = a.AddDatagram(datagram)
		_, _ = a.ClientHello()
	})
}

func FuzzCryptoFrames(f *testing.F) {
	frames := readHex(f, "rfc9001-a2-frames.hex")
	f.Add(frames)
	f.Add(append([]byte{0x01, 0x02, 5, 0, 1, 0, 2, 3, 0x1c, 1, 2, 1, 'x'}, cryptoFrame(9, []byte("abc"))...))
	f.Fuzz(func(t *testing.T, payload []byte) {
		fs, err := CryptoFrames(payload)
		if err != nil {
			if !errors.Is(err, ErrFrame) {
				t.Fatalf("undocumented error %v", err)
			}
			return
		}
		a := NewQUICHelloAssembler(4096)
		for _, fr := range fs {
			if err := a.add(fr); err != nil && !errors.Is(err, ErrTooLong) {
				t.Fatalf("add: %v", err)
			}
		}
		for i := 1; i < len(a.spans); i++ {
			if a.spans[i-1].end >= a.spans[i].start {
				t.Fatalf("spans not sorted and disjoint: %v", a.spans)
			}
		}
		_, _ = a.ClientHello()
	})
}

func FuzzDNS(f *testing.F) {
	f.Add(packQuery(f, 1, "www.blocked.example.", dnsmessage.TypeA, true))
	f.Add(packQuery(f, 2, "v6.example.", dnsmessage.TypeAAAA, false))
	f.Add([]byte("\x00\x07\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		q, err := ParseDNSQuery(msg)
		if err != nil {
			if !errors.Is(err, ErrNotDNS) {
				t.Fatalf("undocumented error %v", err)
			}
			return
		}
		if q2, err := ParseDNSQueryTCP(FrameDNSTCP(msg)); len(msg) <= 0xffff && (err != nil || q2.Name != q.Name) {
			t.Fatalf("tcp framing changed the query: %v", err)
		}
		answer, err := ForgeDNSAnswer(q, netip.MustParseAddr("198.18.0.66"), 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, resp := range [][]byte{answer, ForgeNXDOMAIN(q)} {
			if len(resp) < 12 || resp[0] != msg[0] || resp[1] != msg[1] || !bytes.Equal(resp[12:12+len(q.Question)], q.Question) {
				t.Fatalf("response does not echo the id and question")
			}
			if q.Question[0]&0xc0 == 0 && !strings.Contains(q.Name, `\`) {
				// Plain names: x/net's parser must read the forgery.
				var p dnsmessage.Parser
				if _, err := p.Start(resp); err != nil {
					t.Fatalf("forged response does not parse: %v", err)
				}
			}
		}
	})
}

// fetReference is Algorithm 1 written the way the authors' detect.py
// does, as an oracle for FET.
func fetReference(b []byte) bool {
	if len(b) == 0 {
		return true
	}
	ones, ascii, lead, run, best := 0, 0, 0, 0, 0
	leading := true
	for _, c := range b {
		for x := c; x != 0; x &= x - 1 {
			ones++
		}
		if c >= 0x20 && c < 0x7f {
			ascii++
			run++
			if leading {
				lead++
			}
		} else {
			best = max(best, run)
			run, leading = 0, false
		}
	}
	best = max(best, run)
	ex1 := 10*ones <= 34*len(b) || 10*ones >= 46*len(b)
	ex5 := len(b) >= 3 && (b[0] == 0x16 || b[0] == 0x17) && b[1] == 3 && b[2] <= 9 ||
		bytes.HasPrefix(b, []byte("GET ")) || bytes.HasPrefix(b, []byte("PUT ")) ||
		bytes.HasPrefix(b, []byte("POST ")) || bytes.HasPrefix(b, []byte("HEAD "))
	return lead >= 6 || best > 20 || ex1 || 2*ascii > len(b) || ex5
}

func FuzzFET(f *testing.F) {
	f.Add(randomPayload(f, 200))
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Add([]byte{0x16, 0x03, 0x01, 0x02, 0x00})
	f.Add(filler(64))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := FET(b)
		if got, want := r.Exempt(), fetReference(b); got != want {
			t.Fatalf("FET exempt = %v, reference = %v (%+v)", got, want, r)
		}
		if (r.Reason() == "") != !r.Exempt() {
			t.Fatalf("Reason %q disagrees with Exempt %v", r.Reason(), r.Exempt())
		}
	})
}

func FuzzClassify(f *testing.F) {
	f.Add([]byte("GE"), []byte("T / HTTP/1.1\r\n"))
	f.Add([]byte{0x16, 3, 1}, []byte{2, 0, 1, 0, 1, 0xfc, 3, 3})
	f.Add(FrameDNSTCP(packQuery(f, 5, "example.com.", dnsmessage.TypeA, true)), []byte{})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		joined := append(append([]byte(nil), a...), b...)
		if got, want := ClassifyTCP(a, b), ClassifyTCP(joined); got != want {
			t.Fatalf("ClassifyTCP(a, b) = %v, ClassifyTCP(a+b) = %v", got, want)
		}
		_ = ClassifyUDP(joined)
	})
}

func FuzzHTTP(f *testing.F) {
	f.Add([]byte("GET /index.html HTTP/1.1\r\nHost: WWW.Example.COM:8080\r\n\r\n"))
	f.Add([]byte("CONNECT a.example:443 HTTP/1.1\r\nhost: [::1]:443\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := ParseHTTPRequest(b)
		if err != nil {
			if !errors.Is(err, ErrNeedMore) && !errors.Is(err, ErrNotHTTP) {
				t.Fatalf("undocumented error %v", err)
			}
			return
		}
		if req.Host != strings.ToLower(req.Host) {
			t.Fatalf("host %q not lower-cased", req.Host)
		}
		_, _ = (HTTPRule{Hosts: DomainList{"example.com", "*ample"}, Keywords: []string{"x"}}).Match(req)
	})
}

// TestWriteFuzzSeeds writes the seed corpus files (and the quic-go
// captures they use) under -update.
func TestWriteFuzzSeeds(t *testing.T) {
	if !*update {
		t.Skip("run with -update to rewrite testdata/fuzz")
	}
	for i, d := range captureQUICInitials(t, "quic.blocked.example") {
		if err := os.WriteFile(filepath.Join("testdata", fmt.Sprintf("quicgo-initial-%d.bin", i+1)), d, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	hellos := helloSeeds(t)
	quicgo, _ := os.ReadFile(filepath.Join("testdata", "quicgo-initial-1.bin"))
	seeds := map[string][][][]byte{
		"FuzzClientHello": {{hellos[0]}, {hellos[1]}},
		"FuzzReassemble":  {{records(hellos[1], 100)}, {records(hellos[0], 1)}},
		"FuzzQUICInitial": {{readHex(t, "rfc9001-a2-protected.hex")}, {quicgo}},
		"FuzzCryptoFrames": {{readHex(t, "rfc9001-a2-frames.hex")},
			{append(cryptoFrame(40, hellos[0][40:80]), cryptoFrame(0, hellos[0][:40])...)}},
		"FuzzDNS": {{packQuery(t, 0xbeef, "WwW.BlOcKed.Example.", dnsmessage.TypeA, true)},
			{packQuery(t, 1, "v6.example.", dnsmessage.TypeAAAA, false)}},
		"FuzzFET":      {{randomPayload(t, 200)}, {cat([]byte("Ab3$x~"), filler(100))}, {cat([]byte{0x17, 3, 3}, filler(100))}},
		"FuzzClassify": {{[]byte("PO"), []byte("ST / HTTP/1.1\r\n")}, {mustReassemble(t, records(hellos[0], 1<<14))[:3], []byte{0x16}}},
		"FuzzHTTP":     {{[]byte("GET /%66alun%67ong HTTP/1.1\r\nHost: ok.example\r\n\r\n")}},
	}
	for target, cases := range seeds {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, args := range cases {
			var sb strings.Builder
			sb.WriteString("go test fuzz v1\n")
			for _, a := range args {
				fmt.Fprintf(&sb, "[]byte(%q)\n", a)
			}
			if target == "FuzzReassemble" {
				sb.WriteString("int(0)\n")
			}
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%d", i)), []byte(sb.String()), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
