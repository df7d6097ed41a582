package pt

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/core/transport/transporttest"
)

// newObfs4 returns a Server for obfs4proxy with its state in a new
// temporary directory, its public parameters, and a Client built from
// them, both closed when t ends.
func newObfs4(t testing.TB) (*Client, *Server, transport.Params) {
	t.Helper()
	bin := obfs4proxy(t)
	srv, pub, err := ServerFactory(bin, "obfs4")(nil, t.TempDir())
	if err != nil {
		t.Fatalf("ServerFactory: %v", err)
	}
	cli, err := Factory(bin, "obfs4")(pub)
	if err != nil {
		t.Fatalf("Factory(%v): %v", pub, err)
	}
	t.Cleanup(func() { cli.(*Client).Close() })
	return cli.(*Client), srv.(*Server), pub
}

// TestObfs4proxyConformance carries streams through two unmodified
// obfs4proxy processes, client and server, and runs the conformance
// suite over them.
func TestObfs4proxyConformance(t *testing.T) {
	obfs4proxy(t)
	transporttest.Run(t, func(t *testing.T) (transport.Transport, transport.Transport, string) {
		cli, srv, _ := newObfs4(t)
		return cli, srv, "127.0.0.1:0"
	})
}

// TestObfs4proxyParams checks the public parameters: obfs4's cert and
// iat-mode, stable across launches on one state directory, as in the
// bridge line obfs4proxy writes.
func TestObfs4proxyParams(t *testing.T) {
	bin := obfs4proxy(t)
	dir := t.TempDir()
	_, pub, err := ServerFactory(bin, "obfs4")(nil, dir)
	if err != nil {
		t.Fatalf("ServerFactory: %v", err)
	}
	if len(pub["cert"]) != 70 || pub["iat-mode"] != "0" || len(pub) != 2 {
		t.Fatalf("public parameters %v; want a 70-character cert and iat-mode=0", pub)
	}
	line, err := os.ReadFile(filepath.Join(dir, "obfs4_bridgeline.txt"))
	if err != nil {
		t.Fatalf("obfs4proxy wrote no bridge line: %v", err)
	}
	if !strings.Contains(string(line), "cert="+pub["cert"]) {
		t.Errorf("bridge line does not hold cert %s", pub["cert"])
	}
	srv2, pub2, err := ServerFactory(bin, "obfs4")(nil, dir)
	if err != nil {
		t.Fatalf("second ServerFactory: %v", err)
	}
	if pub2["cert"] != pub["cert"] {
		t.Errorf("cert changed across launches on one state directory: %s, then %s", pub["cert"], pub2["cert"])
	}
	ln, err := srv2.Listen(t.Context(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if got := srv2.(*Server).Params(); got["cert"] != pub["cert"] {
		t.Errorf("Listen published cert %s, want %s", got["cert"], pub["cert"])
	}

	// Server options reach the PT: iat-mode=1 is published back.
	_, pub3, err := ServerFactory(bin, "obfs4")(transport.Params{"iat-mode": "1"}, t.TempDir())
	if err != nil {
		t.Fatalf("ServerFactory with iat-mode=1: %v", err)
	}
	if pub3["iat-mode"] != "1" {
		t.Errorf("iat-mode option not applied: published %v", pub3)
	}
}

// TestObfs4proxyWrongCert checks that a client with another server's cert
// does not get through, and that the failure is an error, not a hang.
func TestObfs4proxyWrongCert(t *testing.T) {
	bin := obfs4proxy(t)
	_, srv, _ := newObfs4(t)
	_, other, err := ServerFactory(bin, "obfs4")(nil, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cli, err := NewClient(Config{Binary: bin, Method: "obfs4"}, other)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ln, err := srv.Listen(t.Context(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// The server never answers a handshake it cannot authenticate; the
	// client gives up at its deadline.
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	c, err := cli.Dial(ctx, ln.Addr().String())
	if err == nil {
		c.Close()
		t.Fatal("Dial with the wrong cert succeeded")
	}
	t.Logf("Dial with the wrong cert: %v", err)
}

// TestObfs4proxyBadArgs checks that arguments obfs4proxy rejects fail the
// dial with the PT's SOCKS reply.
func TestObfs4proxyBadArgs(t *testing.T) {
	bin := obfs4proxy(t)
	_, srv, _ := newObfs4(t)
	ln, err := srv.Listen(t.Context(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cli, err := NewClient(Config{Binary: bin, Method: "obfs4"}, transport.Params{"cert": "not-a-cert", "iat-mode": "0"})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	_, err = cli.Dial(t.Context(), ln.Addr().String())
	var se *SOCKSError
	if !errors.As(err, &se) || se.Code != 1 {
		t.Fatalf("Dial with a bad cert: %v; want a SOCKS general failure", err)
	}
}

// TestObfs4proxyRestart checks that a client whose PT died starts a new
// one at the next Dial, and that a listener whose PT was killed launches
// it again: the connection the dead PT carried ends, a new one gets
// through with the parameters already published, and Close leaves no
// process.
func TestObfs4proxyRestart(t *testing.T) {
	bin := obfs4proxy(t)
	rec := &recorder{}
	wake := logWaker(rec)
	cfg := Config{Binary: bin, Method: "obfs4", Logger: slog.New(rec)}
	srv, pub, err := cfg.ServerFactory()(nil, t.TempDir())
	if err != nil {
		t.Fatalf("ServerFactory: %v", err)
	}
	cli, err := NewClient(Config{Binary: bin, Method: "obfs4"}, pub)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ln, err := srv.Listen(t.Context(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dialEcho := func() (net.Conn, net.Conn) {
		t.Helper()
		acc := make(chan net.Conn, 1)
		go func() {
			s, err := ln.Accept(t.Context())
			if err != nil {
				acc <- nil
				return
			}
			acc <- s
		}()
		c, err := cli.Dial(t.Context(), ln.Addr().String())
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		s := <-acc
		if s == nil {
			t.Fatal("Accept failed")
		}
		t.Cleanup(func() { s.Close() })
		pingThrough(t, c, s)
		return c, s
	}
	dialEcho()
	cli.mu.Lock()
	p := cli.p
	cli.mu.Unlock()
	kill(t, p)
	dialEcho()

	l := ln.(*listener)
	c1, s1 := dialEcho()
	kill(t, l.current())
	checkEnded(t, s1, "the accepted connection")
	checkEnded(t, c1, "the client's connection")
	waitLog(t, rec, wake, "pt running again", 1)
	dialEcho()
	if got := srv.(*Server).Params(); got["cert"] != pub["cert"] {
		t.Errorf("cert after the relaunch: %s, want the published %s", got["cert"], pub["cert"])
	}
	if rec.contains("published parameters changed") {
		t.Error("the relaunched obfs4proxy was reported to publish other parameters")
	}
	if err := ln.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	checkGone(t, rec)
}
