package plugins

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/plugins/proto"
)

// faultyBin builds plugintest's misbehaving plugin.
func faultyBin(t testing.TB) string {
	t.Helper()
	return buildPlugin(t, "faulty", "./plugins/plugintest/cmd/faulty")
}

// currentGen returns the running generation of the named plugin.
func currentGen(t testing.TB, h *Host, name string) *generation {
	t.Helper()
	p, err := h.plugin(name)
	if err != nil {
		t.Fatal(err)
	}
	g, err := p.live(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// checkCutOff checks that generation old of plugin name was cut off for a
// reason containing want, and restarted once.
func checkCutOff(t testing.TB, h *Host, old *generation, name, want string) {
	t.Helper()
	if reason := old.deathReason(); !strings.Contains(reason.Error(), want) {
		t.Errorf("cut off for %q, want %q", reason, want)
	}
	st, err := h.Stats(testCtx(t), name)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if st.Restarts != 1 {
		t.Errorf("Restarts = %d, want 1", st.Restarts)
	}
}

// echoServer accepts connections on ln and echoes each until ln closes.
// It returns how the echo of each connection ended (nil for a clean end of
// stream), in order, for the first 16 that end.
func echoServer(t testing.TB, ln transport.Listener) <-chan error {
	t.Helper()
	ends := make(chan error, 16)
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept(ctx)
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, transport.ErrClosed) {
					return
				}
				continue // a restart in progress
			}
			go func() {
				defer c.Close()
				_, err := io.Copy(c, c)
				select {
				case ends <- err:
				default:
				}
			}()
		}
	}()
	t.Cleanup(func() {
		cancel()
		ln.Close()
		<-done
	})
	return ends
}

// echoConn returns a client connection to an echo server over the named
// transport.
func echoConn(t testing.TB, r *transport.Registry, name string) (net.Conn, transport.Transport, transport.Listener) {
	t.Helper()
	client, server := serverAndClient(t, r, name)
	ctx := testCtx(t)
	ln, err := server.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	echoServer(t, ln)
	c, err := client.Dial(ctx, ln.Addr().String())
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c, client, ln
}

// roundTrip checks that c echoes msg.
func roundTrip(t testing.TB, c net.Conn, msg string) {
	t.Helper()
	if err := c.SetDeadline(time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("Write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("Read: %v", err)
	}
	if string(got) != msg {
		t.Fatalf("echoed %q, want %q", got, msg)
	}
}

// TestKilledMidTransfer kills a plugin while a connection through it
// carries bytes both ways, over rings and over its socket alone: both ends
// of the connection (the client's and the one the server accepted) fail
// with transport.ErrRefused, the plugin comes back, its listener listens
// again, and connections through other plugins are undisturbed.
func TestKilledMidTransfer(t *testing.T) {
	tests := []struct {
		name      string
		ringFlows int
	}{
		{"rings", 0},
		{"sockets", -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { testKilledMidTransfer(t, tt.ringFlows) })
	}
}

func testKilledMidTransfer(t *testing.T, ringFlows int) {
	// "good" is TCP spliced through the plugin, which is killed; "tcp"
	// hands its sockets over, so they do not depend on the plugin at all.
	dir := pluginDir(t, map[string]string{
		"tcp":  buildPlugin(t, "tcp", "./cmd/commucat-transport-tcp"),
		"good": faultyBin(t),
		"kcp":  buildPlugin(t, "kcp", "./cmd/commucat-transport-kcp"),
	})
	h, r := startHost(t, HostConfig{Backoff: 10 * time.Millisecond, RingFlows: ringFlows}, dir)
	others := map[string]net.Conn{}
	for _, name := range []string{"tcp", "kcp"} {
		others[name], _, _ = echoConn(t, r, name)
		roundTrip(t, others[name], "before")
	}

	ctx := testCtx(t)
	client, server := serverAndClient(t, r, "good")
	ln, err := server.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	echoEnds := echoServer(t, ln)
	c, err := client.Dial(ctx, ln.Addr().String())
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer c.Close()
	if got, want := ringed(t, c), ringFlows >= 0; got != want {
		t.Fatalf("connection has rings: %v, want %v", got, want)
	}
	old := currentGen(t, h, "good")
	progress := make(chan struct{})
	readErr := make(chan error, 1)
	writeErr := make(chan error, 1)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				writeErr <- err
				return
			}
		}
	}()
	go func() {
		buf := make([]byte, 64<<10)
		var total int
		signal := progress
		for {
			n, err := c.Read(buf)
			total += n
			if total >= 1<<20 && signal != nil {
				close(signal)
				signal = nil
			}
			if err != nil {
				readErr <- err
				return
			}
		}
	}()
	<-progress
	if err := syscall.Kill(old.pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for _, end := range []struct {
		what string
		errs <-chan error
	}{
		{"client read", readErr},
		{"client write", writeErr},
		{"server echo", echoEnds},
	} {
		select {
		case err := <-end.errs:
			if !errors.Is(err, transport.ErrRefused) || !strings.Contains(err.Error(), "(the plugin exited)") {
				t.Errorf("%s on a connection whose plugin died: %v; want transport.ErrRefused, saying the plugin exited", end.what, err)
			}
			t.Logf("%s after the kill: %v", end.what, err)
		case <-time.After(hangBound):
			t.Fatalf("%s still blocked %v after the plugin was killed", end.what, hangBound)
		}
	}
	c.Close()

	// The plugin comes back and the listener listens again.
	for {
		st, err := h.Stats(ctx, "good")
		if err != nil {
			t.Fatalf("Stats: %v", err)
		}
		if st.Restarts != 1 {
			t.Fatalf("Restarts = %d, want 1", st.Restarts)
		}
		if st.Listeners == 1 {
			break
		}
	}
	if g := currentGen(t, h, "good"); g == old || g.pid() == old.pid() {
		t.Fatalf("still generation %d, pid %d", g.n, g.pid())
	}
	c2, err := client.Dial(ctx, ln.Addr().String())
	if err != nil {
		t.Fatalf("Dial after the restart: %v", err)
	}
	defer c2.Close()
	roundTrip(t, c2, "after the restart")
	for name, other := range others {
		roundTrip(t, other, "undisturbed "+name)
	}
}

// stopPlugin stops generation g's process with SIGSTOP: it answers
// nothing any more, and exits on nothing but SIGKILL. Whatever happens,
// it does not outlive the test.
func stopPlugin(t testing.TB, g *generation) {
	t.Helper()
	t.Cleanup(func() {
		// Through os.Process, which cannot signal another process
		// that reused the pid.
		g.cmd.Process.Signal(syscall.SIGKILL) //nolint:errcheck // gone already if the host cut it off
	})
	if err := g.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("stop plugin %d: %v", g.pid(), err)
	}
}

// TestUnhealthyCutOff: a plugin that stops answering (stopped with
// SIGSTOP) is cut off by the first health check it does not answer within
// CallTimeout, and restarted; a connection through another plugin is
// undisturbed.
func TestUnhealthyCutOff(t *testing.T) {
	dir := pluginDir(t, map[string]string{
		"good": faultyBin(t),
		"kcp":  buildPlugin(t, "kcp", "./cmd/commucat-transport-kcp"),
	})
	h, r := startHost(t, HostConfig{HealthInterval: 100 * time.Millisecond, CallTimeout: time.Second, Backoff: 10 * time.Millisecond}, dir)
	other, _, _ := echoConn(t, r, "kcp")
	roundTrip(t, other, "before")
	otherGen := currentGen(t, h, "kcp")

	old := currentGen(t, h, "good")
	stopPlugin(t, old)
	select {
	case <-old.dead:
	case <-time.After(hangBound):
		t.Fatalf("plugin %d stopped for %v and not cut off", old.pid(), hangBound)
	}
	checkCutOff(t, h, old, "good", "health check failed")
	t.Logf("cut off: %v", old.deathReason())
	if g := currentGen(t, h, "good"); g.pid() == old.pid() {
		t.Fatalf("still pid %d", g.pid())
	}
	c, _, _ := echoConn(t, r, "good")
	roundTrip(t, c, "after the restart")

	if g := currentGen(t, h, "kcp"); g != otherGen {
		t.Errorf("kcp is generation %d, pid %d; want %d, pid %d, undisturbed", g.n, g.pid(), otherGen.n, otherGen.pid())
	}
	roundTrip(t, other, "undisturbed")
}

func TestGarbage(t *testing.T) {
	bin := faultyBin(t)
	tests := []struct {
		mode string
		want string // in the cut-off reason
	}{
		{"garbagectl", "protocol violation"},
		{"garbagegrpc", "protocol violation"},
		{"badaddr", "protocol violation"},
		{"garbagering", "protocol violation in read on flow"},
	}
	dir := pluginDir(t, map[string]string{"garbagectl": bin, "garbagegrpc": bin, "badaddr": bin, "garbagering": bin, "good": bin})
	h, r := startHost(t, HostConfig{Backoff: 10 * time.Millisecond}, dir)
	other, _, ln := echoConn(t, r, "good")
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			ctx := testCtx(t)
			client, err := r.New(tt.mode, nil)
			if err != nil {
				t.Fatal(err)
			}
			old := currentGen(t, h, tt.mode)
			c, err := client.Dial(ctx, ln.Addr().String())
			if err == nil && tt.mode == "garbagering" {
				// The broken ring is seen when the host reads it.
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Read(make([]byte, 10)); !errors.Is(err, transport.ErrRefused) {
					t.Errorf("Read = %v; want transport.ErrRefused", err)
				}
			}
			if err == nil {
				// The garbage on the control socket may be read after the
				// call returned; the plugin is cut off all the same.
				c.Close()
			} else if !errors.Is(err, transport.ErrRefused) {
				t.Errorf("Dial = %v; want transport.ErrRefused", err)
			}
			t.Logf("Dial: %v", err)
			checkCutOff(t, h, old, tt.mode, tt.want)
		})
	}
	roundTrip(t, other, "undisturbed")
}

func TestStderrJunk(t *testing.T) {
	var logs bytes.Buffer
	h, r := startHostLog(t, HostConfig{}, pluginDir(t, map[string]string{"stderrjunk": faultyBin(t)}), slogTo(&logs))
	c, _, _ := echoConn(t, r, "stderrjunk")
	roundTrip(t, c, "still serving")
	c.Close()
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	for _, want := range []string{"plugin=stderrjunk", "msg=typed", "truncated=true", "dropping lines"} {
		if !strings.Contains(out, want) {
			t.Errorf("host log lacks %q", want)
		}
	}
}

// TestHandOverSurvivesPlugin checks that a connection whose socket the
// plugin handed over does not depend on the plugin process any more.
func TestHandOverSurvivesPlugin(t *testing.T) {
	h, r := startHost(t, HostConfig{Backoff: 10 * time.Millisecond},
		pluginDir(t, map[string]string{"tcp": buildPlugin(t, "tcp", "./cmd/commucat-transport-tcp")}))
	c, _, _ := echoConn(t, r, "tcp")
	if _, ok := c.(*sockConn); !ok {
		t.Fatalf("tcp connection is a %T, want a handed-over *sockConn", c)
	}
	roundTrip(t, c, "before")
	g := currentGen(t, h, "tcp")
	if err := syscall.Kill(g.pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	g.deathReason()
	roundTrip(t, c, "after the plugin died")
}

// A plugin whose server publishes a parameter no invite should carry is
// refused when the gateway builds the server, with a message that names
// the transport and the fault; the plugin itself stays up.
func TestBadPublicParams(t *testing.T) {
	bin := faultyBin(t)
	h, r := startHost(t, HostConfig{}, pluginDir(t, map[string]string{"badpublic": bin, "good": bin}))
	other, _, _ := echoConn(t, r, "good")
	server, pub, err := r.NewServer("badpublic", nil, t.TempDir())
	if err == nil {
		t.Fatalf("NewServer = %v, %v; want an error", server, pub)
	}
	for _, want := range []string{"badpublic", `"note"`, "0xa", "not printable ASCII"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("NewServer error %q lacks %q", err, want)
		}
	}
	// The refused server's instance is released in the plugin.
	st, err := h.Stats(testCtx(t), "badpublic")
	if err != nil {
		t.Fatalf("Stats(badpublic): %v", err)
	}
	if st.Instances != 0 {
		t.Errorf("%d instances left in the plugin; want 0", st.Instances)
	}
	roundTrip(t, other, "undisturbed")
}

// TestChangedAtRestart replaces a plugin's binary while it runs and
// kills the process: the host refuses the changed binary at the restart,
// its listener fails for good (transport.ErrClosed, so a gateway stops
// accepting on it instead of retrying) and dials are refused, both saying
// why: a pinned plugin is to be checked and pinned again, an unpinned one
// runs again after a restart of the host.
func TestChangedAtRestart(t *testing.T) {
	orig, err := os.ReadFile(buildPlugin(t, "tcp", "./cmd/commucat-transport-tcp"))
	if err != nil {
		t.Fatal(err)
	}
	for _, pinned := range []bool{true, false} {
		t.Run(fmt.Sprintf("pinned=%v", pinned), func(t *testing.T) {
			dir := t.TempDir()
			bin := filepath.Join(dir, proto.BinaryPrefix+"tcp")
			if err := os.WriteFile(bin, orig, 0o755); err != nil {
				t.Fatal(err)
			}
			cfg := HostConfig{Backoff: 10 * time.Millisecond, StateDir: dir}
			reason, want := ErrChanged, "tcp changed since it was discovered; restart to use the new binary"
			if pinned {
				sum, err := hashFile(bin)
				if err != nil {
					t.Fatal(err)
				}
				cfg.Pins = map[string]string{"tcp": sum}
				reason, want = ErrPinMismatch, "commucat plugin pin tcp --state "+dir
			}
			h, r := startHost(t, cfg, dir)
			client, server := serverAndClient(t, r, "tcp")
			ctx := testCtx(t)
			ln, err := server.Listen(ctx, "127.0.0.1:0")
			if err != nil {
				t.Fatalf("Listen: %v", err)
			}
			defer ln.Close()

			// A new file renamed over the old one, as an upgrade does:
			// the running process keeps its own.
			tmp := bin + ".new"
			if err := os.WriteFile(tmp, append(orig, 0), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, bin); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Kill(currentGen(t, h, "tcp").pid(), syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}

			_, err = ln.Accept(ctx)
			if !errors.Is(err, transport.ErrClosed) || !errors.Is(err, reason) {
				t.Fatalf("Accept after the restart was refused = %v; want transport.ErrClosed and %v", err, reason)
			}
			if msg := err.Error(); !strings.Contains(msg, want) || strings.Count(msg, reason.Error()) != 1 {
				t.Errorf("Accept error %q: want %q in it, and the reason once", msg, want)
			}
			_, err = client.Dial(ctx, ln.Addr().String())
			if !errors.Is(err, transport.ErrRefused) || !errors.Is(err, reason) {
				t.Errorf("Dial after the restart was refused = %v; want transport.ErrRefused and %v", err, reason)
			}
		})
	}
}
