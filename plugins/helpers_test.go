package plugins

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/plugins/proto"
)

// binDir holds the plugin binaries the tests build, once per run.
var binDir string

func TestMain(m *testing.M) {
	if dir := os.Getenv(hostHelperEnv); dir != "" {
		runHostHelper(dir)
		return
	}
	if name := os.Getenv(peerEnv); name != "" {
		runPeer(name, os.Getenv(peerPluginsEnv))
		return
	}
	dir, err := os.MkdirTemp("", "commucat-plugins-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		// kcp-go, which the benchmarks run in process, starts goroutines
		// of its own that never exit (see transports/kcp).
		if err := goleak.Find(
			goleak.IgnoreAnyFunction("github.com/xtaci/kcp-go/v5.(*TimedSched).run"),
			goleak.IgnoreAnyFunction("github.com/xtaci/kcp-go/v5.postProcessWorker"),
		); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

var (
	buildMu sync.Mutex
	built   = map[string]error{}
)

// repoRoot is the module's root directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// buildPlugin builds the Go package pkg (relative to the repository root)
// as the plugin binary for name, once per test run, and returns its path.
func buildPlugin(t testing.TB, name, pkg string) string {
	t.Helper()
	out := filepath.Join(binDir, proto.BinaryPrefix+name)
	buildMu.Lock()
	defer buildMu.Unlock()
	err, ok := built[out]
	if !ok {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = repoRoot(t)
		if b, cerr := cmd.CombinedOutput(); cerr != nil {
			err = fmt.Errorf("go build %s: %v\n%s", pkg, cerr, b)
		}
		built[out] = err
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// pluginDir returns a new folder holding links to the given binaries,
// each under its plugin name (the key).
func pluginDir(t testing.TB, bins map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, bin := range bins {
		if err := os.Symlink(bin, filepath.Join(dir, proto.BinaryPrefix+name)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// testLog returns a logger writing to the test's log.
func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tlogWriter struct{ t testing.TB }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startHost starts a Host over dir, discovers the plugins and registers
// them with a new registry; the host is closed when t ends.
func startHost(t testing.TB, cfg HostConfig, dir string) (*Host, *transport.Registry) {
	t.Helper()
	return startHostLog(t, cfg, dir, testLog(t))
}

// startHostLog is startHost with the host logging to log.
func startHostLog(t testing.TB, cfg HostConfig, dir string, log *slog.Logger) (*Host, *transport.Registry) {
	t.Helper()
	cfg.Dirs = []string{dir}
	h, err := NewHost(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	infos, err := h.Discover()
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range infos {
		if in.Err != nil {
			t.Logf("plugin %s: %v", in.Name, in.Err)
		}
	}
	r := new(transport.Registry)
	if err := h.Register(r); err != nil {
		t.Fatal(err)
	}
	return h, r
}

// serverAndClient builds both sides of the named transport.
func serverAndClient(t testing.TB, r *transport.Registry, name string) (client, server transport.Transport) {
	t.Helper()
	return serverAndClientOver(t, r, r, name, nil)
}

// serverAndClientOver makes transport name's server with params from sreg
// and a client for it from creg: one end in-process, the other a plugin,
// when the registries differ.
func serverAndClientOver(t testing.TB, creg, sreg *transport.Registry, name string, params transport.Params) (client, server transport.Transport) {
	t.Helper()
	server, pub, err := sreg.NewServer(name, params, t.TempDir())
	if err != nil {
		t.Fatalf("NewServer(%s): %v", name, err)
	}
	client, err = creg.New(name, pub)
	if err != nil {
		t.Fatalf("New(%s, %v): %v", name, pub, err)
	}
	return client, server
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// slogTo returns a logger writing text to w.
func slogTo(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(&lockedWriter{w: w}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func isBadParams(err error) bool { return errors.Is(err, transport.ErrBadParams) }
