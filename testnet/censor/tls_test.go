package censor

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/cryptobyte"
)

// helloSpec describes a ClientHello for buildHello. Extensions are
// written in the given order; the ones the parser reads get bodies from
// the other fields, the rest are empty.
type helloSpec struct {
	Name         string   `json:"name"`
	Source       string   `json:"source"`
	Version      string   `json:"version"`
	Ciphers      []string `json:"ciphers"`
	Extensions   []string `json:"extensions"`
	Groups       []string `json:"groups"`
	PointFormats []uint8  `json:"point_formats"`
	SigAlgs      []string `json:"sigalgs"`
	Versions     []string `json:"versions"`
	ALPN         []string `json:"alpn"`
	SNI          string   `json:"sni"`
	JA3          string   `json:"ja3"`
	JA3Hash      string   `json:"ja3_hash"`
	JA4          string   `json:"ja4"`
	JA4R         string   `json:"ja4_r"`
	JA4O         string   `json:"ja4_o"`
	JA4RO        string   `json:"ja4_ro"`
}

func hex16(t testing.TB, s string) uint16 {
	t.Helper()
	v, err := strconv.ParseUint(s, 16, 16)
	if err != nil {
		t.Fatal(err)
	}
	return uint16(v)
}

func hex16s(t testing.TB, ss []string) []uint16 {
	t.Helper()
	var out []uint16
	for _, s := range ss {
		out = append(out, hex16(t, s))
	}
	return out
}

// buildHello encodes s as a ClientHello handshake message.
func buildHello(t testing.TB, s helloSpec) []byte {
	t.Helper()
	u16list := func(b *cryptobyte.Builder, v []uint16) {
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			for _, x := range v {
				b.AddUint16(x)
			}
		})
	}
	var b cryptobyte.Builder
	b.AddUint8(handshakeClientHello)
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint16(hex16(t, s.Version))
		b.AddBytes(make([]byte, 32))
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(make([]byte, 32)) })
		u16list(b, hex16s(t, s.Ciphers))
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint8(0) })
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			for _, e := range hex16s(t, s.Extensions) {
				b.AddUint16(e)
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
					switch e {
					case extServerName:
						b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
							b.AddUint8(0)
							b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(s.SNI)) })
						})
					case extALPN:
						b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
							for _, p := range s.ALPN {
								b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(p)) })
							}
						})
					case extSupportedGrps:
						u16list(b, hex16s(t, s.Groups))
					case extSigAlgs:
						u16list(b, hex16s(t, s.SigAlgs))
					case extECPointFormats:
						b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(s.PointFormats) })
					case extSupportedVers:
						b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) {
							for _, v := range hex16s(t, s.Versions) {
								b.AddUint16(v)
							}
						})
					}
				})
			}
		})
	})
	msg, err := b.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// records frames msg as handshake records of at most size payload bytes.
func records(msg []byte, size int) []byte {
	var out []byte
	for len(msg) > 0 {
		n := min(size, len(msg))
		out = append(out, recordHandshake, 3, 1, byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

func loadVectors(t testing.TB) []helloSpec {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "ja-vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var v []helloSpec
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestFingerprintVectors checks JA3 and JA4 against published values.
func TestFingerprintVectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			h, err := ParseClientHello(buildHello(t, v))
			if err != nil {
				t.Fatal(err)
			}
			checks := []struct{ field, got, want string }{
				{"ja3", h.JA3(), v.JA3},
				{"ja3_hash", h.JA3Hash(), v.JA3Hash},
				{"ja4", h.JA4(JA4TCP), v.JA4},
				{"ja4_r", h.JA4R(JA4TCP), v.JA4R},
				{"ja4_o", h.JA4O(JA4TCP), v.JA4O},
				{"ja4_ro", h.JA4RO(JA4TCP), v.JA4RO},
				{"sni", h.ServerName, v.SNI},
			}
			for _, c := range checks {
				if c.want != "" && c.got != c.want {
					t.Errorf("%s:\n got %s\nwant %s", c.field, c.got, c.want)
				}
			}
		})
	}
}

func TestJA4Fields(t *testing.T) {
	base := helloSpec{Version: "0303", Ciphers: []string{"1301"}, Extensions: []string{"0010", "000d"},
		SigAlgs: []string{"0403"}, ALPN: []string{"h2"}}
	tests := []struct {
		name   string
		edit   func(s *helloSpec)
		wantA  string // JA4_a
		wantTr JA4Transport
	}{
		{"no sni is i", func(s *helloSpec) {}, "t12i0102h2", JA4TCP},
		{"quic", func(s *helloSpec) {}, "q12i0102h2", JA4QUIC},
		{"supported_versions wins, grease ignored", func(s *helloSpec) {
			s.Extensions = append(s.Extensions, "002b")
			s.Versions = []string{"fafa", "0304", "0303"}
		}, "t13i0103h2", JA4TCP},
		{"no alpn", func(s *helloSpec) { s.ALPN = nil; s.Extensions = []string{"000d"} }, "t12i0101" + "00", JA4TCP},
		{"empty first alpn", func(s *helloSpec) { s.ALPN = []string{"", "h2"} }, "t12i010200", JA4TCP},
		{"http/1.1", func(s *helloSpec) { s.ALPN = []string{"http/1.1"} }, "t12i0102h1", JA4TCP},
		{"single character alpn", func(s *helloSpec) { s.ALPN = []string{"x"} }, "t12i0102xx", JA4TCP},
		{"non-alphanumeric end uses hex", func(s *helloSpec) { s.ALPN = []string{"0\xab"} }, "t12i01023b", JA4TCP},
		{"non-alphanumeric only", func(s *helloSpec) { s.ALPN = []string{"\xab\xcd"} }, "t12i0102ad", JA4TCP},
		{"unknown version", func(s *helloSpec) { s.Version = "0305" }, "t00i0102h2", JA4TCP},
		{"ssl3", func(s *helloSpec) { s.Version = "0300" }, "ts3i0102h2", JA4TCP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := base
			s.Extensions = append([]string(nil), base.Extensions...)
			tt.edit(&s)
			h, err := ParseClientHello(buildHello(t, s))
			if err != nil {
				t.Fatal(err)
			}
			got := h.JA4(tt.wantTr)
			if got[:10] != tt.wantA {
				t.Errorf("JA4 = %s, want prefix %s", got, tt.wantA)
			}
		})
	}
	t.Run("more than 99 ciphers caps at 99", func(t *testing.T) {
		s := base
		s.Ciphers = nil
		for i := range 120 {
			s.Ciphers = append(s.Ciphers, hex.EncodeToString([]byte{0x10, byte(i)}))
		}
		h, err := ParseClientHello(buildHello(t, s))
		if err != nil {
			t.Fatal(err)
		}
		if got := h.JA4(JA4TCP); got[4:6] != "99" {
			t.Errorf("JA4 = %s", got)
		}
	})
	t.Run("only sni and alpn hash to zeros", func(t *testing.T) {
		s := base
		s.Extensions = []string{"0000", "0010"}
		s.SNI = "a.example"
		h, err := ParseClientHello(buildHello(t, s))
		if err != nil {
			t.Fatal(err)
		}
		if got := h.JA4(JA4TCP); got != "t12d0102h2_"+ja4Hash("1301", false)+"_000000000000" {
			t.Errorf("JA4 = %s", got)
		}
	})
}

func TestParseClientHelloErrors(t *testing.T) {
	good := buildHello(t, helloSpec{Version: "0303", Ciphers: []string{"1301"}, Extensions: []string{"0000", "0010"},
		SNI: "x.example", ALPN: []string{"h2"}})
	edit := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	tests := []struct {
		name string
		msg  []byte
	}{
		{"empty", nil},
		{"server hello type", edit(func(b []byte) []byte { b[0] = 2; return b })},
		{"length too long", edit(func(b []byte) []byte { b[3]++; return b })},
		{"trailing byte", append(append([]byte(nil), good...), 0)},
		{"truncated", good[:len(good)-1]},
		{"session id 33", edit(func(b []byte) []byte { b[38] = 33; return b })},
		{"odd cipher list", edit(func(b []byte) []byte { b[72] = 3; return b })},
		{"duplicate extension", buildHello(t, helloSpec{Version: "0303", Ciphers: []string{"1301"}, Extensions: []string{"0017", "0017"}})},
		{"bad server_name body", buildHelloRawExt(t, extServerName, []byte{0, 5, 0})},
		{"bad alpn body", buildHelloRawExt(t, extALPN, []byte{0, 2, 5, 'x'})},
		{"odd supported_groups", buildHelloRawExt(t, extSupportedGrps, []byte{0, 3, 0, 0x1d, 0})},
		{"bad ec_point_formats", buildHelloRawExt(t, extECPointFormats, []byte{2, 0})},
		{"bad supported_versions", buildHelloRawExt(t, extSupportedVers, []byte{4, 3, 4})},
		{"bad signature_algorithms", buildHelloRawExt(t, extSigAlgs, []byte{0})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseClientHello(tt.msg); !errors.Is(err, ErrNotClientHello) {
				t.Errorf("ParseClientHello = %v, want ErrNotClientHello", err)
			}
		})
	}
}

// buildHelloRawExt is a minimal hello with one extension of the given raw
// body.
func buildHelloRawExt(t testing.TB, typ uint16, body []byte) []byte {
	t.Helper()
	var b cryptobyte.Builder
	b.AddUint8(handshakeClientHello)
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint16(0x0303)
		b.AddBytes(make([]byte, 32))
		b.AddUint8(0)
		b.AddBytes([]byte{0, 2, 0x13, 0x01, 1, 0})
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			b.AddUint16(typ)
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(body) })
		})
	})
	return b.BytesOrPanic()
}

// TestRealHellos parses ClientHellos captured from crypto/tls and from
// utls's Chrome preset, stored in testdata (rewritten under -update), and
// checks their fingerprints against the golden file.
func TestRealHellos(t *testing.T) {
	type golden struct {
		SNI     string   `json:"sni"`
		ALPN    []string `json:"alpn"`
		JA3     string   `json:"ja3"`
		JA3Hash string   `json:"ja3_hash"`
		JA4     string   `json:"ja4"`
		JA4R    string   `json:"ja4_r"`
	}
	files := []struct {
		file    string
		capture func() []byte
	}{
		{"hello-go.bin", func() []byte { return captureGoHello(t, "www.blocked.example", []string{"h2", "http/1.1"}) }},
		{"hello-chrome.bin", func() []byte { return captureChromeHello(t, "www.blocked.example") }},
	}
	goldenPath := filepath.Join("testdata", "hellos.golden.json")
	want := map[string]golden{}
	got := map[string]golden{}
	if !*update {
		b, err := os.ReadFile(goldenPath)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range files {
		path := filepath.Join("testdata", f.file)
		if *update {
			if err := os.WriteFile(path, f.capture(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		h, err := ClientHelloFromStream(raw, 0)
		if err != nil {
			t.Fatalf("%s: %v", f.file, err)
		}
		got[f.file] = golden{SNI: h.ServerName, ALPN: h.ALPN, JA3: h.JA3(), JA3Hash: h.JA3Hash(), JA4: h.JA4(JA4TCP), JA4R: h.JA4R(JA4TCP)}
	}
	if *update {
		b, _ := json.MarshalIndent(got, "", "  ")
		if err := os.WriteFile(goldenPath, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("fingerprints differ from %s (-want +got):\n%s", goldenPath, diff)
	}
}

// TestLiveHellos captures fresh hellos from the real encoders. utls's
// Chrome preset is pinned by go.mod, so its JA4 (which sorts away Chrome's
// extension shuffling) must equal the stored capture's; crypto/tls's hello
// follows the Go toolchain, so only its parse is checked.
func TestLiveHellos(t *testing.T) {
	tests := []struct {
		name    string
		raw     []byte
		stored  string // capture whose JA4 must match; "" for none
		wantSNI string
	}{
		{"crypto/tls", captureGoHello(t, "live.blocked.example", []string{"h2"}), "", "live.blocked.example"},
		{"utls chrome", captureChromeHello(t, "live.blocked.example"), "hello-chrome.bin", "live.blocked.example"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := ClientHelloFromStream(tt.raw, 0)
			if err != nil {
				t.Fatal(err)
			}
			if h.ServerName != tt.wantSNI {
				t.Errorf("ServerName = %q, want %q", h.ServerName, tt.wantSNI)
			}
			if tt.stored == "" {
				return
			}
			stored, err := os.ReadFile(filepath.Join("testdata", tt.stored))
			if err != nil {
				t.Fatal(err)
			}
			s, err := ClientHelloFromStream(stored, 0)
			if err != nil {
				t.Fatal(err)
			}
			if h.JA4(JA4TCP) != s.JA4(JA4TCP) {
				t.Errorf("live JA4 %s, stored JA4 %s", h.JA4(JA4TCP), s.JA4(JA4TCP))
			}
		})
	}
}

func TestReassembleClientHello(t *testing.T) {
	msg := mustReassemble(t, captureGoHello(t, "split.example", nil))
	tests := []struct {
		name   string
		stream []byte
	}{
		{"one record", records(msg, 1<<14)},
		{"records of 100 bytes", records(msg, 100)},
		{"one-byte records split the header", records(msg, 1)},
		{"records of 3 bytes", records(msg, 3)},
		{"hello followed by application data", append(records(msg, 500), 0x17, 3, 3, 0, 1, 0xff)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Every prefix shorter than the hello's records needs more.
			full := len(records(msg, 1<<14))
			end := 0
			for n := 0; n <= len(tt.stream); n++ {
				got, err := ReassembleClientHello(tt.stream[:n], 64<<10)
				if err == nil {
					end = n
					if !bytes.Equal(got, msg) {
						t.Fatalf("prefix %d: reassembled message differs", n)
					}
					break
				}
				if !errors.Is(err, ErrNeedMore) {
					t.Fatalf("prefix %d: err = %v, want ErrNeedMore", n, err)
				}
			}
			if end == 0 || end < full {
				t.Fatalf("hello complete after %d bytes (records need %d)", end, full)
			}
		})
	}
}

func TestReassembleClientHelloErrors(t *testing.T) {
	msg := mustReassemble(t, captureGoHello(t, "split.example", nil))
	rec := records(msg, 1<<14)
	edit := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), rec...)) }
	tests := []struct {
		name   string
		stream []byte
		limit  int
		want   error
	}{
		{"http", []byte("GET / HTTP/1.1\r\n"), 0, ErrNotTLS},
		{"application data record", []byte{0x17, 3, 3, 0, 5}, 0, ErrNotTLS},
		{"first byte decides", []byte{0x00}, 0, ErrNotTLS},
		{"bad major version", []byte{0x16, 2}, 0, ErrNotTLS},
		{"bad minor version", []byte{0x16, 3, 9}, 0, ErrNotTLS},
		{"zero length record", []byte{0x16, 3, 1, 0, 0}, 0, ErrNotTLS},
		{"oversized record", []byte{0x16, 3, 1, 0x40, 1}, 0, ErrNotTLS},
		{"server hello", []byte{0x16, 3, 3, 0, 4, 2, 0, 0, 0}, 0, ErrNotTLS},
		{"alert inside the hello", append(records(msg[:10], 10), 0x15, 3, 3, 0, 2, 2, 40), 0, ErrNotTLS},
		{"empty needs more", nil, 0, ErrNeedMore},
		{"partial header needs more", []byte{0x16, 3}, 0, ErrNeedMore},
		{"message over the cap", rec, len(rec) - 1, ErrTooLong},
		{"first segment cap", rec[:100], 100, ErrTooLong},
		{"declared length huge", []byte{0x16, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff}, 0, ErrTooLong},
		{"records beyond cap", records(msg, 10)[:200], 200, ErrTooLong},
		{"exact cap fits", rec, len(rec), nil},
		{"truncated record needs more", edit(func(b []byte) []byte { return b[:len(b)-1] }), 0, ErrNeedMore},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReassembleClientHello(tt.stream, tt.limit)
			if !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}
