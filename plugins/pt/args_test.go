package pt

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	ptlib "gitlab.torproject.org/tpo/anti-censorship/pluggable-transports/goptlib"

	"github.com/commucat/commucat/core/transport"
)

func TestEncodeClientArgs(t *testing.T) {
	tests := []struct {
		name string
		p    transport.Params
		want string
	}{
		{"none", nil, ""},
		{"spec example", transport.Params{"shared-secret": "rahasia", "secrets-file": "/tmp/blob"},
			"secrets-file=/tmp/blob;shared-secret=rahasia"},
		{"obfs4", transport.Params{"cert": "AbC/+9", "iat-mode": "0"}, "cert=AbC/+9;iat-mode=0"},
		{"escapes", transport.Params{`k=;\`: `v=;\`}, `k\=\;\\=v\=\;\\`},
		{"empty value", transport.Params{"flag": ""}, "flag="},
		{"commas and colons pass", transport.Params{"url": "https://a,b:c"}, "url=https://a,b:c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := encodeClientArgs(tt.p)
			if err != nil {
				t.Fatalf("encodeClientArgs(%v): %v", tt.p, err)
			}
			if got != tt.want {
				t.Errorf("encodeClientArgs(%v) = %q, want %q", tt.p, got, tt.want)
			}
		})
	}
}

func TestEncodeClientArgsRejects(t *testing.T) {
	tests := []struct {
		name string
		p    transport.Params
		want string // in the error
	}{
		{"empty key", transport.Params{"": "x"}, "empty name"},
		{"nul in value", transport.Params{"cert": "a\x00b"}, `"cert"`},
		{"nul in key", transport.Params{"a\x00": "b"}, "NUL"},
		{"too long", transport.Params{"cert": strings.Repeat("x", 506)}, "cert"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := encodeClientArgs(tt.p)
			if !errors.Is(err, transport.ErrBadParams) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("encodeClientArgs: %v; want ErrBadParams naming %s", err, tt.want)
			}
		})
	}
	// 510 bytes is the most SOCKS5 carries.
	if _, err := encodeClientArgs(transport.Params{"cert": strings.Repeat("x", 505)}); err != nil {
		t.Errorf("510 encoded bytes: %v", err)
	}
}

func TestSplitSOCKSAuth(t *testing.T) {
	long := strings.Repeat("a", 300)
	tests := []struct {
		name, args, user, pass string
	}{
		{"short", "cert=x", "cert=x", "\x00"},
		{"255", long[:255], long[:255], "\x00"},
		{"256", long[:256], long[:255], "a"},
		{"300", long, long[:255], long[255:]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user, pass := splitSOCKSAuth(tt.args)
			if user != tt.user || pass != tt.pass {
				t.Errorf("splitSOCKSAuth(%d bytes) = %d, %q...; want %d, %q", len(tt.args), len(user), pass[:1], len(tt.user), tt.pass[:1])
			}
		})
	}
}

// TestServerOptionsGoptlib checks TOR_PT_SERVER_TRANSPORT_OPTIONS against
// goptlib's parser, which most Go PTs use.
func TestServerOptionsGoptlib(t *testing.T) {
	tests := []struct {
		name string
		p    transport.Params
	}{
		{"none", nil},
		{"obfs4", transport.Params{"iat-mode": "1"}},
		{"spec example", transport.Params{"key": "banana", "rule": "110"}},
		{"escapes", transport.Params{`a:b;c=d\e`: `f:g;h=i\j`, "url": "https://example.com:443/path"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts, err := encodeServerOptions("obfs4", tt.p)
			if err != nil {
				t.Fatal(err)
			}
			t.Setenv("TOR_PT_MANAGED_TRANSPORT_VER", "1")
			t.Setenv("TOR_PT_SERVER_TRANSPORTS", "obfs4")
			t.Setenv("TOR_PT_SERVER_BINDADDR", "obfs4-127.0.0.1:0")
			t.Setenv("TOR_PT_ORPORT", "127.0.0.1:1")
			t.Setenv("TOR_PT_SERVER_TRANSPORT_OPTIONS", opts)
			old := ptlib.Stdout
			var out bytes.Buffer
			ptlib.Stdout = &out
			defer func() { ptlib.Stdout = old }()
			info, err := ptlib.ServerSetup(nil)
			if err != nil {
				t.Fatalf("goptlib ServerSetup with options %q: %v (%s)", opts, err, out.String())
			}
			got := transport.Params{}
			for k, v := range info.Bindaddrs[0].Options {
				got[k] = strings.Join(v, "|")
			}
			want := tt.p
			if want == nil {
				want = transport.Params{}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("options %q parsed by goptlib (-want +got):\n%s", opts, diff)
			}
		})
	}
	if _, err := encodeServerOptions("obfs4", transport.Params{"": "x"}); !errors.Is(err, transport.ErrBadParams) {
		t.Errorf("empty option name: %v, want ErrBadParams", err)
	}
}

func TestParseSmethodArgs(t *testing.T) {
	tests := []struct {
		in   string
		want transport.Params
	}{
		{"", transport.Params{}},
		{"N=13", transport.Params{"N": "13"}},
		{"a=1,b=2", transport.Params{"a": "1", "b": "2"}},
		{`a\,b=c\=d,e=`, transport.Params{"a,b": "c=d", "e": ""}},
		{`k=a=b`, transport.Params{"k": "a=b"}},
		{`k=\\\x`, transport.Params{"k": `\x`}},
	}
	for _, tt := range tests {
		got, err := parseSmethodArgs(tt.in)
		if err != nil {
			t.Errorf("parseSmethodArgs(%q): %v", tt.in, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("parseSmethodArgs(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

// TestParseSmethodArgsControl: SMETHOD ARGS become the parameters a
// gateway publishes in its invites, so a key or a value with anything but
// printable ASCII is refused; a value ending in a carriage return would
// also lose it when it ends the line.
func TestParseSmethodArgsControl(t *testing.T) {
	for _, in := range []string{"k=\r", "k=a\x1b[2J", "k\t=v", "a=1,b=\x7f", "k=\\\n", "k=\u009b2J", "k=\xff"} {
		if p, err := parseSmethodArgs(in); !errors.Is(err, errLine) {
			t.Errorf("parseSmethodArgs(%q) = %v, %v; want an error wrapping errLine", in, p, err)
		}
	}
	if _, err := parseLine([]byte("SMETHOD obfs4 127.0.0.1:1 ARGS:cert=\x1b]0;x\x07\n")); err == nil {
		t.Error("parseLine took an SMETHOD line whose ARGS have control characters")
	}
}
