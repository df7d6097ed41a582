package pt

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/commucat/commucat/core/transport"
)

// FuzzParseLine checks that parseLine never panics on a PT's stdout and
// that what it parses survives a round trip through formatLine. Seeds are
// goptlib's own lines, the spec's examples and testdata/fuzz.
func FuzzParseLine(f *testing.F) {
	for _, line := range goptlibLines(f) {
		f.Add([]byte(line))
	}
	for _, line := range []string{
		"VERSION 1\n",
		"CMETHOD trebuchet socks5 127.0.0.1:19999\n",
		"SMETHOD rot_by_N 198.51.100.1:2323 ARGS:N=13\n",
		`LOG SEVERITY=debug MESSAGE="Connected to bridge A"` + "\n",
		"STATUS TRANSPORT=obfs4 ADDRESS=198.51.100.123:1234 CONNECT=Success\n",
		"\x00\xff garbage\r\n",
	} {
		f.Add([]byte(line))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		m, err := parseLine(line)
		if err != nil {
			if !errors.Is(err, errLine) {
				t.Fatalf("parseLine(%q): error %v does not wrap errLine", line, err)
			}
			return
		}
		again := formatLine(m)
		m2, err := parseLine([]byte(again))
		if err != nil {
			t.Fatalf("parseLine(%q) = %+v, but its formatting %q does not parse: %v", line, m, again, err)
		}
		if diff := cmp.Diff(m, m2, cmpMessage); diff != "" {
			t.Fatalf("round trip of %q through %q (-first +second):\n%s", line, again, diff)
		}
	})
}

// hostKey normalises a reply's host for comparison: an IP address (a
// host name that is one is sent as one) by its value.
func hostKey(h string) string {
	if ip, err := netip.ParseAddr(h); err == nil && ip.Zone() == "" {
		return ip.Unmap().String()
	}
	return h
}

// FuzzSOCKSReply checks that readReply never panics on what a PT's SOCKS
// listener sends, never reads past what it returns, and that a reply it
// accepts survives a round trip through appendReply.
func FuzzSOCKSReply(f *testing.F) {
	for _, r := range []socksReply{
		{0, "0.0.0.0", 0},
		{5, "2001:db8::1", 443},
		{1, "example.com", 80},
	} {
		b, err := appendReply(nil, r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{5, 0, 0, 3, 0})
	f.Add([]byte{5, 0, 0, 9})
	f.Fuzz(func(t *testing.T, data []byte) {
		rd := bytes.NewReader(data)
		r, err := readReply(rd)
		if err != nil {
			return
		}
		enc, err := appendReply(nil, r)
		if err != nil {
			t.Fatalf("reply %+v from %x does not encode: %v", r, data, err)
		}
		rd2 := bytes.NewReader(append(enc, "stream"...))
		r2, err := readReply(rd2)
		if err != nil {
			t.Fatalf("readReply(appendReply(%+v)) = %v", r, err)
		}
		if rd2.Len() != len("stream") {
			t.Fatalf("readReply of %x read past the reply: %d bytes left of the stream", enc, rd2.Len())
		}
		if r2.code != r.code || r2.port != r.port || hostKey(r2.host) != hostKey(r.host) {
			t.Fatalf("round trip: %+v, then %+v", r, r2)
		}
	})
}

// decodeClientArgs joins a SOCKS5 username and password and parses them
// as a PT does (goptlib's and obfs4proxy's parseClientParameters).
func decodeClientArgs(user, pass string) (transport.Params, error) {
	s := user
	if pass != "\x00" {
		s += pass
	}
	p := transport.Params{}
	for s != "" {
		key, n, err := unescapeUntil(s, "=;")
		if err != nil {
			return nil, err
		}
		if n >= len(s) || s[n] != '=' || key == "" {
			return nil, errors.New("bad pair")
		}
		s = s[n+1:]
		val, n, err := unescapeUntil(s, ";")
		if err != nil {
			return nil, err
		}
		p[key] = val
		if n >= len(s) {
			break
		}
		s = s[n+1:]
	}
	return p, nil
}

// FuzzClientArgs checks that per-connection arguments survive encoding,
// the split into SOCKS5 username and password, and a PT's parsing.
func FuzzClientArgs(f *testing.F) {
	f.Add("cert", "HszPy3vWfjsESCEOo9ZBkRv6zQ/1mGHzc8arF0y2SpwFr3WhsMu8rK0zyaoyERfbz3ddFw", "iat-mode", "0")
	f.Add(`k=;\`, `v=;\`, "url", "https://a.example/?q=1;x")
	f.Add("front", strings.Repeat("f", 251)+";;;", "b", "")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		p := transport.Params{k1: v1, k2: v2}
		enc, err := encodeClientArgs(p)
		if err != nil {
			if !errors.Is(err, transport.ErrBadParams) {
				t.Fatalf("encodeClientArgs: %v does not wrap ErrBadParams", err)
			}
			return
		}
		user, pass := splitSOCKSAuth(enc)
		if len(user) < 1 || len(user) > 255 || len(pass) < 1 || len(pass) > 255 {
			t.Fatalf("username of %d bytes, password of %d: outside RFC 1929", len(user), len(pass))
		}
		got, err := decodeClientArgs(user, pass)
		if err != nil {
			t.Fatalf("decode %q: %v", enc, err)
		}
		if diff := cmp.Diff(p, got); diff != "" {
			t.Fatalf("round trip through %q (-want +got):\n%s", enc, diff)
		}
	})
}
