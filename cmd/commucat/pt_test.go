package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commucat/commucat/core/transport"
)

// TestPTServerExtORPort: the gateway runs a PT behind the Extended ORPort
// unless its endpoint says ext_orport: false, so that the gateway sees
// each client's address; the PT then gets an authentication cookie in
// its state directory.
func TestPTServerExtORPort(t *testing.T) {
	if _, _, err := ptServerFactory(nil)(transport.Params{"binary": "/bin/true", "method": "obfs4", "ext_orport": "yes"}, t.TempDir()); !errors.Is(err, transport.ErrBadParams) {
		t.Errorf("ext_orport: yes: %v, want ErrBadParams", err)
	}
	if testing.Short() {
		t.Skip("builds obfs4proxy; skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "obfs4proxy")
	goBuild(t, bin, "gitlab.com/yawning/obfs4.git/obfs4proxy")
	for _, tt := range []struct {
		ext    string
		cookie bool
	}{{"", true}, {"true", true}, {"false", false}} {
		dir := t.TempDir()
		p := transport.Params{"binary": bin, "method": "obfs4"}
		if tt.ext != "" {
			p["ext_orport"] = tt.ext
		}
		var logs syncBuffer
		srv, _, err := ptServerFactory(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))(p, dir)
		if err != nil {
			t.Fatalf("ext_orport %q: %v", tt.ext, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		ln, err := srv.Listen(ctx, "127.0.0.1:0")
		cancel()
		if err != nil {
			t.Fatalf("ext_orport %q: Listen: %v", tt.ext, err)
		}
		_, err = os.Stat(filepath.Join(dir, "extended_orport_auth_cookie"))
		if got := err == nil; got != tt.cookie {
			t.Errorf("ext_orport %q: cookie file present %v, want %v (%v)", tt.ext, got, tt.cookie, err)
		}
		ln.Close()
		transport.Close(srv) //nolint:errcheck // the test is over
		// The gateway's log hears of its PT (exits, relaunches).
		if !strings.Contains(logs.String(), `msg="pt started" component=pt pt=obfs4`) {
			t.Errorf("ext_orport %q: the gateway's logger has no line of its PT:\n%s", tt.ext, logs.String())
		}
	}
}

// TestPTClientShared: the PT process behind a client's "pt" endpoints
// lives as long as the command. A session that stops closes the
// transports it was given; that must not stop the PT under the next
// session's dials.
func TestPTClientShared(t *testing.T) {
	c, err := newPTClients([]string{"obfs4=/bin/true"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := transport.Params{"method": "obfs4", "cert": "x", "iat-mode": "0"}
	first, err := c.Factory(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := first.(io.Closer); ok {
		t.Error("the PT handle has a Close that would stop the PT under other sessions")
	}
	transport.Close(first) //nolint:errcheck // as a stopped session does
	second, err := c.Factory(p)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// /bin/true is no PT: the dial fails, but for that reason, not
	// because the PT client was closed.
	if _, err := second.Dial(ctx, "127.0.0.1:9"); err == nil || errors.Is(err, transport.ErrClosed) {
		t.Errorf("Dial after the first session stopped: %v; want the PT's own failure", err)
	}
}

// TestPTClientKey: endpoints whose parameters differ get PT processes of
// their own, even where a value holds the ';' and '=' that join them.
func TestPTClientKey(t *testing.T) {
	c, err := newPTClients([]string{"obfs4=/bin/true"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, p := range []transport.Params{
		{"method": "obfs4", "cert": "X", "iat-mode": "0"},
		{"method": "obfs4", "cert": "X;iat-mode=0"},
		{"method": "obfs4", "cert": "X", "iat-mode": "0"}, // the first again
	} {
		if _, err := c.Factory(p); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(c.running); n != 2 {
		t.Errorf("%d PT clients for two endpoints, one of them given twice; want 2", n)
	}
}
