package pt

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/commucat/commucat/core/transport"
)

// logWait is how long a test waits for a record it expects: a bound on a
// hang, not a measure of speed.
const logWait = 20 * time.Second

// logWaker returns a channel that is signalled whenever rec records
// something. It must be set up before rec is in use.
func logWaker(rec *recorder) <-chan struct{} {
	wake := make(chan struct{}, 1)
	rec.hook = func(string) {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	return wake
}

// waitLog waits until rec holds n records with the message msg, for at
// most logWait.
func waitLog(t *testing.T, rec *recorder, wake <-chan struct{}, msg string, n int) {
	t.Helper()
	timer := time.NewTimer(logWait)
	defer timer.Stop()
	for rec.count(msg) < n {
		select {
		case <-wake:
		case <-timer.C:
			t.Fatalf("%d records %q after %v; want %d:\n%s", rec.count(msg), msg, logWait, n, strings.Join(rec.messages(), "\n"))
		}
	}
}

// current returns the listener's newest PT process.
func (l *listener) current() *proc {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.p
}

// kill sends SIGKILL to the PT process p, which this test started, and
// waits until it has been reaped.
func kill(t *testing.T, p *proc) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill pt %d: %v", p.cmd.Process.Pid, err)
	}
	<-p.exited
}

// checkGone fails the test if a process whose pid some "pt started"
// record names still exists.
func checkGone(t *testing.T, rec *recorder) {
	t.Helper()
	pids := 0
	for _, m := range rec.messages() {
		rest, ok := strings.CutPrefix(m, "pt started pid=")
		if !ok {
			continue
		}
		f, _, _ := strings.Cut(rest, " ")
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("record %q: %v", m, err)
		}
		pids++
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("pt process %d still exists after Close (kill 0: %v)", pid, err)
		}
	}
	if pids == 0 {
		t.Error("no \"pt started\" record names a pid")
	}
}

// pingThrough sends "ping" from c and reads it from s, with a deadline
// that bounds a hang.
func pingThrough(t *testing.T, c, s net.Conn) {
	t.Helper()
	s.SetReadDeadline(time.Now().Add(logWait)) //nolint:errcheck // checked by the read
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatalf("write: %v", err)
	}
	b := make([]byte, 4)
	if _, err := io.ReadFull(s, b); err != nil || string(b) != "ping" {
		t.Fatalf("read %q, %v; want ping", b, err)
	}
	s.SetReadDeadline(time.Time{}) //nolint:errcheck // as above
}

// checkEnded fails the test unless a read on c ends (EOF or an error)
// within logWait.
func checkEnded(t *testing.T, c net.Conn, which string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(logWait)) //nolint:errcheck // checked by the read
	_, err := io.ReadAll(c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("%s did not end with the PT that carried it", which)
	}
}

// TestServerRelaunch kills a listener's PT with SIGKILL and checks that
// the listener launches it again on the same address, that an Accept
// waiting meanwhile gets the next connection, that the connection the
// dead PT carried ended, and that Close leaves no process.
func TestServerRelaunch(t *testing.T) {
	tests := []struct {
		name   string
		ext    bool
		refuse bool   // the first two relaunches fail
		secret string // if set, the relaunched PT publishes this secret
	}{
		{name: "plain"},
		{name: "ext_orport", ext: true},
		{name: "relaunch fails twice", refuse: true},
		{name: "new parameters", secret: "new-secret-value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, rec := fakeConfig(t, "server")
			cfg.ExtORPort = tt.ext
			cfg.StopTimeout = 50 * time.Millisecond
			wake := logWaker(rec)
			dir := t.TempDir()
			cfg.StateDir = dir
			srv, err := NewServer(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			ln, err := srv.Listen(t.Context(), "127.0.0.1:0")
			if err != nil {
				t.Fatalf("Listen: %v", err)
			}
			defer ln.Close()
			l := ln.(*listener)
			published := srv.Params()

			accepted := make(chan net.Conn, 1)
			acceptErr := make(chan error, 1)
			accept := func() {
				go func() {
					s, err := ln.Accept(t.Context())
					if err != nil {
						acceptErr <- err
						return
					}
					accepted <- s
				}()
			}
			dial := func() (net.Conn, net.Conn) {
				t.Helper()
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatalf("dial %s: %v", ln.Addr(), err)
				}
				t.Cleanup(func() { c.Close() })
				timer := time.NewTimer(logWait)
				defer timer.Stop()
				select {
				case s := <-accepted:
					t.Cleanup(func() { s.Close() })
					pingThrough(t, c, s)
					return c, s
				case err := <-acceptErr:
					t.Fatalf("Accept: %v", err)
				case <-timer.C:
					t.Fatalf("no connection accepted within %v", logWait)
				}
				return nil, nil
			}

			accept()
			c1, s1 := dial()
			if tt.refuse {
				if err := os.WriteFile(filepath.Join(dir, "refuse"), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if tt.secret != "" {
				if err := os.WriteFile(filepath.Join(dir, "secret"), []byte(tt.secret), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			accept() // waits across the relaunch
			first := l.current()
			kill(t, first)
			checkEnded(t, s1, "the accepted connection")
			checkEnded(t, c1, "the client's connection")
			if tt.refuse {
				waitLog(t, rec, wake, "pt relaunch failed", 2)
				if err := os.Remove(filepath.Join(dir, "refuse")); err != nil {
					t.Fatal(err)
				}
			}
			waitLog(t, rec, wake, "pt running again", 1)
			select {
			case err := <-acceptErr:
				t.Fatalf("Accept while the PT was relaunched: %v; want it to wait", err)
			default:
			}
			if l.current() == first {
				t.Fatal("the listener still holds the dead PT")
			}
			dial()

			// A PT that fails its set-up may exit before it is stopped,
			// which is logged too.
			if n := rec.count("pt exited"); n != 1 && !(tt.refuse && n > 1) {
				t.Errorf("%d records \"pt exited\"; want 1 for the killed PT", n)
			}
			if !rec.contains("pt running again restarts=1") {
				t.Errorf("no restart count in the log:\n%s", strings.Join(rec.messages(), "\n"))
			}
			const changed = "pt published other client parameters than before: the published parameters changed and existing invites no longer work"
			level, logged := rec.levelOf(changed)
			if tt.secret == "" {
				if logged {
					t.Error("the parameters were reported changed, but the PT published the same ones")
				}
				if got := srv.Params(); got["secret"] != published["secret"] {
					t.Errorf("Params after the relaunch: %v; want %v", got, published)
				}
			} else {
				if !logged || level != slog.LevelError {
					t.Errorf("changed parameters logged: %v at %v; want an error", logged, level)
				}
				if got := srv.Params()["secret"]; got != tt.secret {
					t.Errorf("Params()[secret] = %q after the relaunch, want the newest, %q", got, tt.secret)
				}
				for _, m := range rec.messages() {
					if strings.Contains(m, tt.secret) || strings.Contains(m, published["secret"]) {
						t.Errorf("a record shows a published parameter: %q", m)
					}
				}
			}
			if tt.refuse {
				if n := rec.count("pt relaunch failed"); n < 2 {
					t.Errorf("%d records \"pt relaunch failed\"; want one per failed relaunch, at least 2", n)
				}
			}

			if err := ln.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if _, err := ln.Accept(t.Context()); !errors.Is(err, transport.ErrClosed) {
				t.Errorf("Accept after Close: %v; want ErrClosed", err)
			}
			checkGone(t, rec)
		})
	}
}

// TestServerCloseWhileRelaunching checks that Close ends the wait before
// a relaunch and a relaunch that hangs in its set-up, and leaves no
// process: the waits here are an hour long, so a Close that did not end
// them would not return.
func TestServerCloseWhileRelaunching(t *testing.T) {
	tests := []struct {
		name string
		hang bool // the relaunched PT hangs in its set-up
	}{
		{name: "waiting"},
		{name: "launching", hang: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, rec := fakeConfig(t, "server")
			cfg.StopTimeout = 50 * time.Millisecond
			cfg.StartTimeout = time.Hour
			wake := logWaker(rec)
			dir := t.TempDir()
			cfg.StateDir = dir
			srv, err := NewServer(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			srv.wait = time.Hour
			if tt.hang {
				srv.wait = time.Millisecond
			}
			ln, err := srv.Listen(t.Context(), "127.0.0.1:0")
			if err != nil {
				t.Fatalf("Listen: %v", err)
			}
			defer ln.Close()
			acceptErr := make(chan error, 1)
			go func() {
				_, err := ln.Accept(t.Context())
				acceptErr <- err
			}()
			if tt.hang {
				if err := os.WriteFile(filepath.Join(dir, "hang"), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			kill(t, ln.(*listener).current())
			if tt.hang {
				waitLog(t, rec, wake, "pt started", 2)
			} else {
				waitLog(t, rec, wake, "pt exited", 1)
			}
			if err := ln.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if err := <-acceptErr; !errors.Is(err, transport.ErrClosed) {
				t.Errorf("Accept waiting across Close: %v; want ErrClosed", err)
			}
			if rec.contains("pt running again") {
				t.Error("the PT ran again after Close")
			}
			checkGone(t, rec)
		})
	}
}
