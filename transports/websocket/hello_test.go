package websocket

import (
	"context"
	"crypto/tls"
	"net"
	"slices"
	"testing"
	"time"

	utls "github.com/refraction-networking/utls"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/transports/fingerprint"
)

// captureHello accepts one connection on a raw TCP listener, runs dial
// against it and returns the ClientHello the dialler sent.
func captureHello(t *testing.T, dial func(ctx context.Context, addr string)) fingerprint.Summary {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		dial(ctx, l.Addr().String())
	}()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := fingerprint.Capture(ctx, c)
	c.Close() // fails the dial
	<-done
	if err != nil {
		t.Fatalf("Capture: %v", err)
	}
	s, err := fingerprint.Summarize(raw)
	if err != nil {
		t.Fatalf("Summarize: %v", err)
	}
	return s
}

// TestClientHello checks on the wire that Dial sends utls's Chrome
// ClientHello with ALPN http/1.1, not crypto/tls's.
func TestClientHello(t *testing.T) {
	_, _, pub := pair(t)
	dialWith := func(p transport.Params) func(context.Context, string) {
		tr, err := Factory(p)
		if err != nil {
			t.Fatal(err)
		}
		return func(ctx context.Context, addr string) {
			if c, err := tr.Dial(ctx, addr); err == nil {
				c.Close()
			}
		}
	}
	ours := captureHello(t, dialWith(pub))
	named := captureHello(t, dialWith(transport.Params{"pin": pub["pin"], "path": pub["path"], "sni": "static.example.net"}))

	chrome, err := fingerprint.Preset("chrome")
	if err != nil {
		t.Fatal(err)
	}
	referenceFor := func(sni string) func(context.Context, string) {
		return func(ctx context.Context, addr string) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return
			}
			defer c.Close()
			uc, err := chrome.Client(c, &utls.Config{ServerName: sni, InsecureSkipVerify: true}, []string{"http/1.1"}) //nolint:gosec // never completes
			if err != nil {
				return
			}
			uc.HandshakeContext(ctx) //nolint:errcheck // the capture ends it
		}
	}
	reference := captureHello(t, referenceFor(""))
	namedReference := captureHello(t, referenceFor("other.example"))
	stdlib := captureHello(t, func(ctx context.Context, addr string) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return
		}
		defer c.Close()
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}) //nolint:gosec // never completes
		tc.HandshakeContext(ctx)                                                                     //nolint:errcheck // the capture ends it
	})

	if !ours.SameShape(reference) {
		t.Errorf("ClientHello is not utls's Chrome shape with ALPN http/1.1:\n got %+v\nwant %+v", ours, reference)
	}
	if ours.SameShape(stdlib) {
		t.Error("ClientHello has crypto/tls's shape")
	}
	const x25519MLKEM768, x25519 = 0x11ec, 0x001d
	checks := []struct {
		name string
		ok   bool
	}{
		{"ALPN is http/1.1 only", slices.Equal(ours.ALPN, []string{"http/1.1"})},
		{"GREASE cipher suite first", len(ours.CipherSuites) > 1 && ours.CipherSuites[0] == fingerprint.GREASE},
		{"TLS_AES_128_GCM_SHA256 next", len(ours.CipherSuites) > 1 && ours.CipherSuites[1] == tls.TLS_AES_128_GCM_SHA256},
		{"key shares GREASE, X25519MLKEM768, X25519", slices.Equal(ours.KeyShareGroups, []uint16{fingerprint.GREASE, x25519MLKEM768, x25519})},
		{"no ALPS without h2", !slices.Contains(ours.Extensions, 17613) && !slices.Contains(ours.Extensions, 17513)},
		{"no server_name for an IP address", ours.ServerName == ""},
		{"server_name from sni", named.ServerName == "static.example.net"},
		{"same shape with a name", named.SameShape(namedReference)},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("%s: got %+v", c.name, ours)
		}
	}
}
