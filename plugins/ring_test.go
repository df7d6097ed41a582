package plugins

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/commucat/commucat/core/transport"
)

// ringed reports whether c, a connection through a plugin, has rings.
func ringed(t *testing.T, c net.Conn) bool {
	t.Helper()
	var pc *conn
	switch v := c.(type) {
	case *conn:
		pc = v
	case halfConn:
		pc = v.conn
	default:
		t.Fatalf("connection is a %T", c)
	}
	_, ok := pc.uc.(*ringStream)
	return ok
}

// TestRingFlows: at most HostConfig.RingFlows connections have rings at
// once, the others go through their socket, all carry bytes alike, and
// every ring is given back when its connection closes.
func TestRingFlows(t *testing.T) {
	h, r := startHost(t, HostConfig{RingFlows: 3}, pluginDir(t, map[string]string{"good": faultyBin(t)}))
	taken := func() int {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.rings
	}
	var with, without int
	var closers []func() error
	for i := range 4 {
		c, _, ln := echoConn(t, r, "good")
		roundTrip(t, c, fmt.Sprint("connection ", i))
		if ringed(t, c) {
			with++
		} else {
			without++
		}
		if n := taken(); n > 3 {
			t.Fatalf("%d connections have rings; RingFlows is 3", n)
		}
		closers = append(closers, c.Close, ln.Close)
	}
	for _, c := range closers {
		c()
	}
	if with == 0 || without == 0 {
		t.Errorf("%d connections with rings, %d without; want both", with, without)
	}
	deadline := time.Now().Add(10 * time.Second)
	for taken() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := taken(); n != 0 {
		t.Errorf("%d rings still taken after every connection closed", n)
	}
}

// TestNoRingsAfterHandOver: once a plugin handed a socket over, its new
// flows get no rings, which they would not use.
func TestNoRingsAfterHandOver(t *testing.T) {
	bin := buildPlugin(t, "tcp", "./cmd/commucat-transport-tcp")
	h, r := startHost(t, HostConfig{}, pluginDir(t, map[string]string{"tcp": bin}))
	g := currentGen(t, h, "tcp")
	open := func() bool {
		t.Helper()
		id, uc, dc, err := g.openFlow(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		_, rings := uc.(*ringStream)
		uc.Close()
		closeConns(dc)
		g.abandon(id)
		return rings
	}
	if !open() {
		t.Fatal("a flow of a plugin that never handed a socket over has no rings")
	}
	c, _, _ := echoConn(t, r, "tcp")
	roundTrip(t, c, "handed over")
	c.Close()
	if open() {
		t.Error("a flow of a plugin that handed a socket over has rings")
	}
}

// TestWriteAfterDeath: a write to a ring flow whose plugin died fails at
// once, although its ring has room, as a write to a socket whose other
// end closed does; it does not vanish into memory that nobody reads.
func TestWriteAfterDeath(t *testing.T) {
	h, r := startHost(t, HostConfig{}, pluginDir(t, map[string]string{"good": faultyBin(t)}))
	c, _, _ := echoConn(t, r, "good")
	if !ringed(t, c) {
		t.Fatal("the connection has no rings")
	}
	roundTrip(t, c, "before")
	old := currentGen(t, h, "good")
	if err := syscall.Kill(old.pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-old.ctlDone:
	case <-time.After(time.Minute):
		t.Fatal("the host did not see the plugin die within a minute")
	}
	n, err := c.Write([]byte("after"))
	if n != 0 || !errors.Is(err, transport.ErrRefused) {
		t.Fatalf("Write after the plugin died = %d, %v; want 0 and transport.ErrRefused", n, err)
	}
	if !strings.Contains(err.Error(), "the plugin exited") {
		t.Errorf("error %q does not say the plugin exited", err)
	}
	// A connection closed here says so, whatever became of its plugin.
	c.Close()
	if _, err := c.Write([]byte("after close")); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Write after Close = %v; want transport.ErrClosed", err)
	}
}
