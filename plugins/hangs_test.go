package plugins

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/plugins/plugintest"
	"github.com/commucat/commucat/plugins/proto"
)

// hangBound is how long a call that must not hang may take in these tests:
// far above what they take (at most CallTimeout, 2 s here), far below
// "forever".
const hangBound = 20 * time.Second

// within runs f and fails the test if it has not returned within
// hangBound.
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(hangBound):
		t.Fatalf("%s still blocked after %v", what, hangBound)
	}
}

// callerBound is the deadline of the caller's context in calls that the
// host's own limit must end: far beyond hangBound, so that only the host
// can end them in time.
const callerBound = 10 * time.Minute

// endedByHost runs call with a context that outlives the host's limits by
// far and checks that the call fails with transport.ErrTimeout while that
// context is still alive: the host's limit ended it, not the caller's.
func endedByHost(t *testing.T, what string, call func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callerBound)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- call(ctx) }()
	var err error
	select {
	case err = <-done:
	case <-time.After(hangBound):
		cancel()
		select {
		case <-done:
		case <-time.After(hangBound):
		}
		t.Fatalf("%s still blocked after %v: the host's limit did not end it", what, hangBound)
	}
	if !errors.Is(err, transport.ErrTimeout) || ctx.Err() != nil {
		t.Fatalf("%s = %v with the caller's context at %v; want transport.ErrTimeout, from the host's limit", what, err, ctx.Err())
	}
	t.Logf("%s: %v", what, err)
}

// TestHangingCalls: a Dial or Listen that the plugin never answers fails
// with transport.ErrTimeout once DialTimeout or CallTimeout is up, however
// long the caller's context lasts; the plugin stays up and others are
// undisturbed.
func TestHangingCalls(t *testing.T) {
	bin := faultyBin(t)
	dir := pluginDir(t, map[string]string{"hangdial": bin, "hanglisten": bin, "good": bin})
	h, r := startHost(t, HostConfig{DialTimeout: 300 * time.Millisecond, CallTimeout: 300 * time.Millisecond}, dir)
	other, _, _ := echoConn(t, r, "good")

	t.Run("dial", func(t *testing.T) {
		client, err := r.New("hangdial", nil)
		if err != nil {
			t.Fatal(err)
		}
		endedByHost(t, "Dial", func(ctx context.Context) error {
			c, err := client.Dial(ctx, "127.0.0.1:9")
			if c != nil {
				c.Close()
			}
			return err
		})
	})
	t.Run("listen", func(t *testing.T) {
		server, _, err := r.NewServer("hanglisten", nil, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		endedByHost(t, "Listen", func(ctx context.Context) error {
			ln, err := server.Listen(ctx, "127.0.0.1:0")
			if ln != nil {
				ln.Close()
			}
			return err
		})
	})
	// A hung call does not make a plugin unhealthy or disturb others.
	ctx := testCtx(t)
	for _, name := range []string{"hangdial", "hanglisten"} {
		if err := h.Health(ctx, name); err != nil {
			t.Errorf("Health(%s): %v", name, err)
		}
	}
	roundTrip(t, other, "undisturbed")
}

// A plugin that no longer answers anything (stopped with SIGSTOP) does not
// hold up Host.Close: asked to exit, it is killed 2 s later.
func TestCloseStoppedPlugin(t *testing.T) {
	h, _ := startHost(t, HostConfig{HealthInterval: time.Hour}, pluginDir(t, map[string]string{"good": faultyBin(t)}))
	g := currentGen(t, h, "good")
	pid := g.pid()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	within(t, "Host.Close with a stopped plugin", func() { h.Close() })
	t.Logf("Host.Close returned after %v", time.Since(start).Round(time.Millisecond))
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		syscall.Kill(pid, syscall.SIGKILL) //nolint:errcheck // the test's own plugin
		t.Fatalf("plugin %d still there after Host.Close (kill 0: %v)", pid, err)
	}
}

// A plugin restarted under a listener that hangs in Configure holds up
// neither other calls on the same transport past their own deadline nor
// the listener's Close.
func TestHangInConfigureAfterRestart(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "hang")
	h, r := startHost(t, HostConfig{
		HealthInterval: time.Hour, CallTimeout: 2 * time.Second, DialTimeout: 3 * time.Second,
		Backoff: 10 * time.Millisecond, Env: []string{plugintest.HangEnv + "=" + marker},
	}, pluginDir(t, map[string]string{"hangconfig": faultyBin(t)}))
	server, _, err := r.NewServer("hangconfig", nil, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := server.Listen(testCtx(t), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept(context.Background())
		if c != nil {
			c.Close()
		}
		accepted <- err
	}()

	// From now on a new process hangs in Configure, which the pending
	// Accept calls to listen again.
	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	old := currentGen(t, h, "hangconfig")
	if err := syscall.Kill(old.pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-old.dead
	g := currentGen(t, h, "hangconfig")
	t.Logf("restarted as pid %d", g.pid())

	within(t, "Dial with a 1 s context", func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c, err := server.Dial(ctx, ln.Addr().String())
		if err == nil {
			c.Close()
			t.Error("Dial succeeded through a plugin that hangs in Configure")
		} else if !errors.Is(err, transport.ErrTimeout) {
			t.Errorf("Dial: %v, want transport.ErrTimeout", err)
		}
	})
	within(t, "listener Close", func() { ln.Close() })
	within(t, "Accept after Close", func() {
		if err := <-accepted; !errors.Is(err, transport.ErrClosed) {
			t.Errorf("Accept: %v, want transport.ErrClosed", err)
		}
	})
	within(t, "Transport.Close", func() { server.(*Transport).Close() })
}

// Closing a transport whose plugin is down and cannot start again (its
// binary is gone) returns at once: the instance died with the process.
func TestTransportCloseWhilePluginDown(t *testing.T) {
	dir := pluginDir(t, map[string]string{"good": faultyBin(t)})
	h, r := startHost(t, HostConfig{HealthInterval: time.Hour, Backoff: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond}, dir)
	client, err := r.New("good", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, proto.BinaryPrefix+"good")); err != nil {
		t.Fatal(err)
	}
	old := currentGen(t, h, "good")
	if err := syscall.Kill(old.pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-old.dead
	within(t, "Transport.Close while the plugin cannot start", func() { client.(*Transport).Close() })
}
