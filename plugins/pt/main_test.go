package pt

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

// fakeEnv selects a fake PT mode: when it is set, the test binary is a PT
// (see fake_test.go) instead of running the tests.
const fakeEnv = "COMMUCAT_PT_FAKE"

// binDir holds the PT binaries the tests build; removed at exit.
var binDir string

func TestMain(m *testing.M) {
	if mode := os.Getenv(fakeEnv); mode != "" {
		os.Exit(fakePT(mode))
	}
	dir, err := os.MkdirTemp("", "commucat-pt-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	binDir = dir
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) { os.RemoveAll(dir) }))
}

// obfs4Module is the obfs4proxy main package, from the same module
// version as the obfs4 library in go.mod.
const obfs4Module = "gitlab.com/yawning/obfs4.git/obfs4proxy"

var obfs4 struct {
	once sync.Once
	path string
	err  error
}

// obfs4proxy builds obfs4proxy once and returns its path. If it cannot be
// built, the test fails when COMMUCAT_REQUIRE_ALL=1 or CI=true, and skips
// loudly otherwise.
func obfs4proxy(t testing.TB) string {
	t.Helper()
	obfs4.once.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			obfs4.err = fmt.Errorf("no go command to build it with: %w", err)
			return
		}
		out := filepath.Join(binDir, "obfs4proxy")
		cmd := exec.Command(goBin, "build", "-o", out, obfs4Module)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			obfs4.err = fmt.Errorf("go build %s: %w: %s", obfs4Module, err, strings.TrimSpace(stderr.String()))
			return
		}
		obfs4.path = out
	})
	if obfs4.err != nil {
		if os.Getenv("COMMUCAT_REQUIRE_ALL") == "1" || os.Getenv("CI") == "true" {
			t.Fatalf("cannot build obfs4proxy (required by COMMUCAT_REQUIRE_ALL=1 or CI=true): %v", obfs4.err)
		}
		t.Skipf("SKIPPING: cannot build obfs4proxy, so the PT host is untested against a real PT: %v", obfs4.err)
	}
	return obfs4.path
}

// recorder is a slog.Handler that keeps every record, for tests that
// check what the PT logged.
type recorder struct {
	mu    sync.Mutex
	recs  []slog.Record
	attrs []slog.Attr
	hook  func(msg string) // if set, called with each record's message
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec = rec.Clone()
	rec.AddAttrs(r.attrs...)
	r.recs = append(r.recs, rec)
	if r.hook != nil {
		r.hook(rec.Message)
	}
	return nil
}

func (r *recorder) WithAttrs(as []slog.Attr) slog.Handler {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attrs = append(r.attrs, as...)
	return r
}

func (r *recorder) WithGroup(string) slog.Handler { return r }

// messages returns each record as its message and attributes.
func (r *recorder) messages() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rec := range r.recs {
		s := rec.Message
		rec.Attrs(func(a slog.Attr) bool {
			s += " " + a.String()
			return true
		})
		out = append(out, s)
	}
	return out
}

// levelOf returns the level of the first record whose message is msg.
func (r *recorder) levelOf(msg string) (slog.Level, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range r.recs {
		if rec.Message == msg {
			return rec.Level, true
		}
	}
	return 0, false
}

// count returns how many records have the message msg.
func (r *recorder) count(msg string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, rec := range r.recs {
		if rec.Message == msg {
			n++
		}
	}
	return n
}

// contains reports whether some record's text holds sub.
func (r *recorder) contains(sub string) bool {
	for _, m := range r.messages() {
		if strings.Contains(m, sub) {
			return true
		}
	}
	return false
}
