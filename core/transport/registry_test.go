package transport_test

import (
	"strings"
	"testing"

	"github.com/commucat/commucat/core/transport"
)

func TestCheckPublic(t *testing.T) {
	many := transport.Params{}
	for i := range transport.MaxPublicParams + 1 {
		many[string(rune('a'+i))] = "x"
	}
	tests := []struct {
		name string
		p    transport.Params
		want string // in the error; empty: accepted
	}{
		{"none", nil, ""},
		{"typical", transport.Params{"cert": "q0HhzmLn3Ph6uhA+c1gJ/w", "iat-mode": "0", "sni": "www.example.com"}, ""},
		{"space and punctuation", transport.Params{"k": " ;=&%~"}, ""},
		{"longest", transport.Params{strings.Repeat("k", transport.MaxPublicKey): strings.Repeat("v", transport.MaxPublicValue)}, ""},
		{"too many", many, "more than 16"},
		{"empty key", transport.Params{"": "v"}, "name of 0 bytes"},
		{"long key", transport.Params{strings.Repeat("k", transport.MaxPublicKey+1): "v"}, "name of 65 bytes"},
		{"long value", transport.Params{"k": strings.Repeat("v", transport.MaxPublicValue+1)}, "1025 bytes"},
		{"line break", transport.Params{"k": "a\nb"}, "byte 0xa"},
		{"carriage return", transport.Params{"k": "a\r"}, "byte 0xd"},
		{"delete", transport.Params{"k": "\x7f"}, "byte 0x7f"},
		{"not ASCII", transport.Params{"k": "é"}, "byte 0xc3"},
		{"invalid UTF-8", transport.Params{"k\xff": "v"}, "byte 0xff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := transport.CheckPublic(tt.p)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("CheckPublic = %v; want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("CheckPublic = %v; want an error with %q", err, tt.want)
			}
		})
	}
}

// closer is a Transport built by a test factory that records its Close.
type closer struct {
	transport.Transport
	closed bool
}

func (c *closer) Close() error { c.closed = true; return nil }

// Registry.NewServer refuses a server whose public parameters fail
// CheckPublic, and closes it.
func TestNewServerChecksPublic(t *testing.T) {
	var r transport.Registry
	built := &closer{}
	r.RegisterServer("odd", func(transport.Params, string) (transport.Transport, transport.Params, error) {
		return built, transport.Params{"k": "a\tb"}, nil
	})
	tr, pub, err := r.NewServer("odd", nil, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "transport odd publishes what no invite should carry: transport: public parameter \"k\" has byte 0x9") {
		t.Fatalf("NewServer = %v, %v, %v; want the transport refused", tr, pub, err)
	}
	if !built.closed {
		t.Error("the refused transport was not closed")
	}
}
