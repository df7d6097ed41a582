package tlshello

import (
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/cryptobyte"
)

// hello is a Hello with its extensions read out.
type hello struct {
	Version      uint16
	CipherSuites []uint16
	Extensions   []ext // nil: no extensions block
}

type ext struct {
	Type uint16
	Data []byte
}

// flat reads out h's extensions.
func flat(h Hello) hello {
	out := hello{Version: h.Version, CipherSuites: h.CipherSuites}
	if h.HasExtensions {
		out.Extensions = []ext{}
	}
	for typ, data := range h.Extensions() {
		out.Extensions = append(out.Extensions, ext{typ, data})
	}
	return out
}

// encode is the encoder Parse inverts: h's fields with a zero random, a
// session ID of sessionIDLen zero bytes and the null compression method;
// an extensions block only if h.Extensions is not nil.
func encode(h hello, sessionIDLen int) ([]byte, error) {
	var b cryptobyte.Builder
	b.AddUint8(typeClientHello)
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint16(h.Version)
		b.AddBytes(make([]byte, 32))
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(make([]byte, sessionIDLen)) })
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { addUint16s(b, h.CipherSuites) })
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint8(0) })
		if h.Extensions == nil {
			return
		}
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			for _, e := range h.Extensions {
				b.AddUint16(e.Type)
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(e.Data) })
			}
		})
	})
	return b.Bytes()
}

func addUint16s(b *cryptobyte.Builder, v []uint16) {
	for _, x := range v {
		b.AddUint16(x)
	}
}

// u16 and u8 frame a body with a 2- or 1-byte length.
func u16(body []byte) []byte { return append([]byte{byte(len(body) >> 8), byte(len(body))}, body...) }
func u8(body []byte) []byte  { return append([]byte{byte(len(body))}, body...) }

func mustEncode(t testing.TB, h hello, sessionIDLen int) []byte {
	t.Helper()
	msg, err := encode(h, sessionIDLen)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func TestParse(t *testing.T) {
	full := hello{Version: 0x0303, CipherSuites: []uint16{0x1301, 0x0a0a}, Extensions: []ext{
		{Type: 0, Data: u16(append([]byte{0}, u16([]byte("a.example"))...))},
		{Type: 0x1a1a, Data: []byte{}},
		{Type: 0x2a2a, Data: []byte{0}},
	}}
	good := mustEncode(t, full, 32)
	dup := full
	dup.Extensions = []ext{{Type: 23, Data: []byte{}}, {Type: 23, Data: []byte{}}}
	for _, tc := range []struct {
		name string
		msg  []byte
		want *hello // nil: an error
	}{
		{"extensions", good, &full},
		{"no extensions block", mustEncode(t, hello{Version: 0x0301, CipherSuites: []uint16{5}}, 0),
			&hello{Version: 0x0301, CipherSuites: []uint16{5}}},
		{"empty extensions block", mustEncode(t, hello{Version: 0x0303, CipherSuites: []uint16{5}, Extensions: []ext{}}, 0),
			&hello{Version: 0x0303, CipherSuites: []uint16{5}, Extensions: []ext{}}},
		{"empty", nil, nil},
		{"server hello", append([]byte{2}, good[1:]...), nil},
		{"trailing byte", append(good[:len(good):len(good)], 0), nil},
		{"truncated", good[:len(good)-1], nil},
		{"session id of 33 bytes", mustEncode(t, full, 33), nil},
		{"no cipher suites", mustEncode(t, hello{Version: 0x0303}, 0), nil},
		{"duplicate extension", mustEncode(t, dup, 0), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := Parse(tc.msg)
			if tc.want == nil {
				if err == nil {
					t.Fatalf("Parse = %+v, want an error", h)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(*tc.want, flat(h)); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReaders(t *testing.T) {
	names, ok := ServerNames(u16([]byte{0, 0, 1, 'a', 7, 0, 0}))
	if want := []ServerName{{0, "a"}, {7, ""}}; !ok || !cmp.Equal(names, want) {
		t.Errorf("ServerNames = %v, %v, want %v", names, ok, want)
	}
	protos, ok := ALPN(u16([]byte{2, 'h', '2', 0}))
	if want := []string{"h2", ""}; !ok || !cmp.Equal(protos, want) {
		t.Errorf("ALPN = %q, %v, want %q", protos, ok, want)
	}
	if v, ok := Uint16List(u8(nil), true); !ok || v == nil || len(v) != 0 {
		t.Errorf("empty Uint16List = %#v, %v, want empty and not nil", v, ok)
	}
	shares, ok := KeyShares(u16([]byte{0, 29, 0, 1, 9, 0x1a, 0x1a, 0, 0}))
	if want := []KeyShare{{29, 1}, {0x1a1a, 0}}; !ok || !cmp.Equal(shares, want) {
		t.Errorf("KeyShares = %v, %v, want %v", shares, ok, want)
	}
	for name, bad := range map[string]func() bool{
		"ServerNames short entry":   func() bool { _, ok := ServerNames(u16([]byte{0, 0, 5})); return ok },
		"ServerNames trailing byte": func() bool { _, ok := ServerNames(append(u16(nil), 0)); return ok },
		"ALPN long protocol":        func() bool { _, ok := ALPN(u16([]byte{3, 'h', '2'})); return ok },
		"Uint16List odd":            func() bool { _, ok := Uint16List(u16([]byte{0, 29, 0}), false); return ok },
		"Uint16List prefix":         func() bool { _, ok := Uint16List(u16([]byte{0, 29}), true); return ok },
		"ECPointFormats long":       func() bool { _, ok := ECPointFormats([]byte{2, 0}); return ok },
		"KeyShares short key":       func() bool { _, ok := KeyShares(u16([]byte{0, 29, 0, 2, 1})); return ok },
	} {
		if bad() {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzParse checks that Parse and the body readers never panic, that
// Parse(encode(h)) == h for every hello Parse accepts, and that every body
// a reader accepts encodes back to the same bytes. The seeds in
// testdata/fuzz are real hellos: crypto/tls and Chrome (the censor's
// captures), Firefox and Safari (utls presets).
func FuzzParse(f *testing.F) {
	f.Add(mustEncode(f, hello{Version: 0x0303, CipherSuites: []uint16{0x1301}, Extensions: []ext{
		{Type: 0, Data: u16(append([]byte{0}, u16([]byte("a.example"))...))},
		{Type: 16, Data: u16([]byte{2, 'h', '2'})},
		{Type: 10, Data: u16([]byte{0, 29})},
		{Type: 11, Data: u8([]byte{0})},
		{Type: 43, Data: u8([]byte{3, 4})},
		{Type: 51, Data: u16([]byte{0, 29, 0, 1, 9})},
	}}, 0))
	f.Fuzz(func(t *testing.T, msg []byte) {
		p, err := Parse(msg)
		if err != nil {
			return
		}
		h := flat(p)
		again, err := encode(h, 0)
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		h2, err := Parse(again)
		if err != nil {
			t.Fatalf("re-encoded hello does not parse: %v", err)
		}
		if diff := cmp.Diff(h, flat(h2)); diff != "" {
			t.Fatalf("Parse(encode(h)) != h (-h +again):\n%s", diff)
		}
		for _, e := range h.Extensions {
			checkReaders(t, e.Data)
		}
	})
}

// checkReaders runs every body reader on data and checks that what each
// accepts encodes back to data.
func checkReaders(t *testing.T, data []byte) {
	t.Helper()
	same := func(reader string, b *cryptobyte.Builder) {
		if got, err := b.Bytes(); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s: re-encoded %x (%v), read %x", reader, got, err, data)
		}
	}
	if names, ok := ServerNames(data); ok {
		var b cryptobyte.Builder
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			for _, n := range names {
				b.AddUint8(n.Type)
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(n.Name)) })
			}
		})
		same("ServerNames", &b)
	}
	if protos, ok := ALPN(data); ok {
		var b cryptobyte.Builder
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			for _, p := range protos {
				b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(p)) })
			}
		})
		same("ALPN", &b)
	}
	if v, ok := Uint16List(data, false); ok {
		var b cryptobyte.Builder
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { addUint16s(b, v) })
		same("Uint16List", &b)
	}
	if v, ok := Uint16List(data, true); ok {
		var b cryptobyte.Builder
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { addUint16s(b, v) })
		same("Uint16List short", &b)
	}
	if v, ok := ECPointFormats(data); ok {
		var b cryptobyte.Builder
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(v) })
		same("ECPointFormats", &b)
	}
	if shares, ok := KeyShares(data); ok {
		n := 2
		for _, k := range shares {
			n += 4 + k.KeyLen
		}
		if n != len(data) {
			t.Fatalf("KeyShares: %d entries of %d bytes in all, body of %d", len(shares), n, len(data))
		}
	}
}
