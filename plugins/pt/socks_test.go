package pt

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	ptlib "gitlab.torproject.org/tpo/anti-censorship/pluggable-transports/goptlib"

	"github.com/commucat/commucat/core/transport"
)

// TestSOCKSDialGoptlib runs socksDial against goptlib's SOCKS5 server,
// which most Go PTs use, and checks the target and arguments it parsed.
func TestSOCKSDialGoptlib(t *testing.T) {
	ln, err := ptlib.ListenSocks("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tests := []struct {
		name       string
		target     string
		p          transport.Params
		wantTarget string
	}{
		{"no args ipv4", "192.0.2.1:443", nil, "192.0.2.1:443"},
		{"obfs4 args", "192.0.2.1:443", transport.Params{"cert": "HszPy3vWfjsESCEOo9ZBkRv6zQ/1mGHzc8arF0y2SpwFr3WhsMu8rK0zyaoyERfbz3ddFw", "iat-mode": "0"}, "192.0.2.1:443"},
		{"escapes", "[2001:db8::1]:80", transport.Params{`k=;\`: `v=;\`, "url": "https://a.example/b?c=d;e"}, "[2001:db8::1]:80"},
		{"host name", "bridge.example.com:8443", transport.Params{"x": "y"}, "bridge.example.com:8443"},
		{"split at 255", "192.0.2.1:1", transport.Params{"front": strings.Repeat("f", 300)}, "192.0.2.1:1"},
		{"escape split at 255", "192.0.2.1:1", transport.Params{"a": strings.Repeat("f", 251) + ";;;"}, "192.0.2.1:1"},
		{"510 bytes", "192.0.2.1:1", transport.Params{"a": strings.Repeat("z", 508)}, "192.0.2.1:1"},
		{"v4-mapped", "[::ffff:192.0.2.1]:1", nil, "192.0.2.1:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args, err := encodeClientArgs(tt.p)
			if err != nil {
				t.Fatal(err)
			}
			got := make(chan *ptlib.SocksConn, 1)
			go func() {
				c, err := ln.AcceptSocks()
				if err != nil {
					got <- nil
					return
				}
				c.Grant(nil) //nolint:errcheck // the client's read fails if it fails
				got <- c
			}()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := socksDial(c, tt.target, args); err != nil {
				t.Fatalf("socksDial: %v", err)
			}
			s := <-got
			if s == nil {
				t.Fatal("goptlib rejected the handshake")
			}
			defer s.Close()
			if s.Req.Target != tt.wantTarget {
				t.Errorf("target %q, want %q", s.Req.Target, tt.wantTarget)
			}
			gotArgs := transport.Params{}
			for k, v := range s.Req.Args {
				gotArgs[k] = strings.Join(v, "|")
			}
			want := tt.p
			if want == nil {
				want = transport.Params{}
			}
			if diff := cmp.Diff(want, gotArgs); diff != "" {
				t.Errorf("arguments goptlib parsed (-want +got):\n%s", diff)
			}
			// The stream follows the reply, no byte lost.
			if _, err := s.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 5)
			if _, err := io.ReadFull(c, b); err != nil || string(b) != "hello" {
				t.Fatalf("read after the reply: %q, %v", b, err)
			}
		})
	}
}

// script plays a SOCKS server on one end of a pipe: it discards what the
// client writes, writes reply and, once the client has read all of it,
// hangs up.
func script(t *testing.T, reply []byte) net.Conn {
	t.Helper()
	c, s := net.Pipe()
	go io.Copy(io.Discard, s) //nolint:errcheck // ends when the pipe closes
	go func() {
		s.Write(reply) //nolint:errcheck // as above
		s.Close()
	}()
	t.Cleanup(func() { c.Close(); s.Close() })
	return c
}

func TestSOCKSDialErrors(t *testing.T) {
	okAuth := []byte{5, 2, 1, 0}
	tests := []struct {
		name  string
		args  string
		reply []byte
		want  []error
		text  string
	}{
		{"refused", "", []byte{5, 0, 5, 5, 0, 1, 0, 0, 0, 0, 0, 0}, []error{transport.ErrRefused}, "connection refused"},
		{"ttl expired", "", []byte{5, 0, 5, 6, 0, 1, 0, 0, 0, 0, 0, 0}, []error{transport.ErrTimeout}, "TTL expired"},
		{"general failure", "a=b", append(okAuth, 5, 1, 0, 1, 0, 0, 0, 0, 0, 0), nil, "general failure"},
		{"unknown code", "", []byte{5, 0, 5, 0x42, 0, 1, 0, 0, 0, 0, 0, 0}, nil, "reply 66"},
		{"bad version", "", []byte{4, 0}, []error{errSOCKS}, "version 4"},
		{"no acceptable method", "a=b", []byte{5, 0xff}, []error{errSOCKS}, "no acceptable"},
		{"other method", "a=b", []byte{5, 0}, []error{errSOCKS}, "chose authentication method 0"},
		{"auth rejected", "a=b", []byte{5, 2, 1, 1}, []error{errSOCKS}, "arguments rejected"},
		{"eof in greeting", "", []byte{5}, []error{errSOCKS}, "closed"},
		{"eof in reply", "", []byte{5, 0, 5, 0, 0, 1, 127}, []error{errSOCKS}, "closed"},
		{"bad atyp", "", []byte{5, 0, 5, 0, 0, 9}, []error{errSOCKS}, "address type 9"},
		{"bad reserved", "", []byte{5, 0, 5, 0, 7, 1}, []error{errSOCKS}, "reserved"},
		{"empty host", "", []byte{5, 0, 5, 0, 0, 3, 0, 0, 0}, []error{errSOCKS}, "empty host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := script(t, tt.reply)
			err := socksDial(c, "192.0.2.1:80", tt.args)
			if err == nil {
				t.Fatal("socksDial succeeded")
			}
			for _, w := range tt.want {
				if !errors.Is(err, w) {
					t.Errorf("error %q does not match %q", err, w)
				}
			}
			if !strings.Contains(err.Error(), tt.text) {
				t.Errorf("error %q does not say %q", err, tt.text)
			}
			if !strings.HasPrefix(err.Error(), "pt: ") {
				t.Errorf("error %q does not start with the package name", err)
			}
		})
	}
}

func TestSOCKSBadTarget(t *testing.T) {
	for _, target := range []string{"no-port", "host:http", "host:65536", ":80", strings.Repeat("h", 256) + ":1"} {
		if _, err := appendRequest(nil, target); err == nil {
			t.Errorf("appendRequest(%.20q) succeeded", target)
		}
	}
}

func TestReadReply(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want socksReply
	}{
		{"ipv4", []byte{5, 0, 0, 1, 192, 0, 2, 1, 0x01, 0xbb}, socksReply{0, "192.0.2.1", 443}},
		{"ipv6", append(append([]byte{5, 5, 0, 4}, net.ParseIP("2001:db8::1")...), 0, 80), socksReply{5, "2001:db8::1", 80}},
		{"domain", append([]byte{5, 0, 0, 3, 11}, "example.com\x00\x50"...), socksReply{0, "example.com", 80}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bytes.NewReader(append(tt.in, "stream"...))
			got, err := readReply(r)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(socksReply{})); diff != "" {
				t.Errorf("readReply (-want +got):\n%s", diff)
			}
			if rest, _ := io.ReadAll(r); string(rest) != "stream" {
				t.Errorf("readReply read past the reply: %q left", rest)
			}
			enc, err := appendReply(nil, got)
			if err != nil || !bytes.Equal(enc, tt.in) {
				t.Errorf("appendReply = %x, %v; want %x", enc, err, tt.in)
			}
		})
	}
}
