package pt

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/commucat/commucat/core/transport"
)

// fakeConfig returns a Config that runs the test binary as a fake PT in
// mode (see fake_test.go), logging to a new recorder.
func fakeConfig(t *testing.T, mode string) (Config, *recorder) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	return Config{
		Binary:       self,
		Method:       "fake",
		Env:          []string{fakeEnv + "=" + mode},
		Logger:       slog.New(rec),
		StartTimeout: time.Minute,
	}, rec
}

func TestStartErrors(t *testing.T) {
	tests := []struct {
		mode   string
		proxy  string
		want   error
		detail string
		exit   int // the exit code, if the PT exited on its own
		stderr string
	}{
		{mode: "env-error", want: ErrEnv, detail: "ENV-ERROR no cows available", exit: 1},
		{mode: "version-error", want: ErrVersion, detail: "VERSION-ERROR no-version", exit: 1},
		{mode: "version-2", want: ErrVersion, detail: "VERSION 2"},
		{mode: "method-error", want: ErrMethod, detail: "CMETHOD-ERROR fake no rocks available"},
		{mode: "no-method", want: ErrMethod, detail: "without a CMETHOD line"},
		{mode: "no-version", want: ErrProtocol, detail: "without a VERSION line"},
		{mode: "malformed", want: ErrProtocol, detail: `"CMETHOD fake socks5"`},
		{mode: "socks4", want: ErrProtocol, detail: "socks4"},
		{mode: "no-proxy-done", proxy: "socks5://127.0.0.1:1080", want: ErrProxy, detail: "without PROXY DONE"},
		{mode: "proxy-error", proxy: "socks5://127.0.0.1:1080", want: ErrProxy, detail: "PROXY-ERROR SOCKS 4", exit: 1},
		{mode: "exit", want: ErrExited, detail: "before CMETHODS DONE", exit: 3, stderr: "fatal: boom"},
		{mode: "no-such-mode", want: ErrExited, exit: 2, stderr: `fake pt: unknown mode "no-such-mode"`},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			cfg, _ := fakeConfig(t, tt.mode)
			cfg.Proxy = tt.proxy
			c, err := NewClient(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			err = c.Start(t.Context())
			var se *StartError
			if !errors.As(err, &se) {
				t.Fatalf("Start: %v; want a *StartError", err)
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("Start: %v; want it to wrap %v", err, tt.want)
			}
			if !strings.Contains(se.Detail, tt.detail) {
				t.Errorf("Detail %q does not hold %q", se.Detail, tt.detail)
			}
			var ee *exec.ExitError
			if tt.exit != 0 {
				if !errors.As(err, &ee) || ee.ExitCode() != tt.exit {
					t.Errorf("Start: %v; want exit status %d", err, tt.exit)
				}
			}
			if tt.stderr != "" && se.Stderr != tt.stderr {
				t.Errorf("Stderr = %q, want %q", se.Stderr, tt.stderr)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "pt: start ") || !strings.Contains(msg, "(fake)") {
				t.Errorf("error %q does not name the package, binary and method", msg)
			}
			t.Log(msg)
		})
	}
}

// TestMalformedSmethodSecret checks that a server PT's malformed SMETHOD
// line, and the SMETHOD line of another method, whose ARGS hold the
// secrets clients need, reach neither the error nor the log.
func TestMalformedSmethodSecret(t *testing.T) {
	cfg, rec := fakeConfig(t, "malformed-smethod")
	cfg.StateDir = t.TempDir()
	srv, err := NewServer(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := srv.Listen(t.Context(), "127.0.0.1:0")
	if err == nil {
		ln.Close()
		t.Fatal("Listen succeeded on a malformed SMETHOD line")
	}
	if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "malformed SMETHOD line") {
		t.Errorf("Listen: %v; want ErrProtocol naming the malformed SMETHOD line", err)
	}
	for _, secret := range []string{"malformed-line-secret", "other-method-secret"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the error shows a secret: %v", err)
		}
		if rec.contains(secret) {
			t.Errorf("a log record shows a secret:\n%s", strings.Join(rec.messages(), "\n"))
		}
	}
}

// TestStartTimeout checks a PT that never finishes its set-up and ignores
// stdin and SIGTERM: the launch times out and the PT is killed.
func TestStartTimeout(t *testing.T) {
	cfg, rec := fakeConfig(t, "hang")
	cfg.StartTimeout = 300 * time.Millisecond
	cfg.StopTimeout = 50 * time.Millisecond
	c, err := NewClient(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Start(t.Context())
	var se *StartError
	if !errors.As(err, &se) || !errors.Is(err, transport.ErrTimeout) {
		t.Fatalf("Start: %v; want a *StartError wrapping transport.ErrTimeout", err)
	}
	if se.Exit != nil {
		t.Errorf("Exit = %v; the PT did not exit on its own", se.Exit)
	}
	if !rec.contains("ignored SIGTERM; killing it") {
		t.Errorf("no note of the kill in the log:\n%s", strings.Join(rec.messages(), "\n"))
	}
}

func TestStartCancelled(t *testing.T) {
	cfg, _ := fakeConfig(t, "hang")
	cfg.StopTimeout = 50 * time.Millisecond
	c, err := NewClient(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := c.Start(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Start(cancelled ctx): %v", err)
	}
	if _, err := c.Dial(ctx, "192.0.2.1:1"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Dial(cancelled ctx): %v", err)
	}
}

// TestCloseDuringStart checks that Close cancels a launch in progress
// rather than waiting out StartTimeout.
func TestCloseDuringStart(t *testing.T) {
	cfg, rec := fakeConfig(t, "hang")
	cfg.StopTimeout = 50 * time.Millisecond
	started := make(chan struct{})
	var once sync.Once
	rec.hook = func(msg string) {
		if msg == "pt started" {
			once.Do(func() { close(started) })
		}
	}
	c, err := NewClient(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- c.Start(t.Context()) }()
	<-started
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("Start during Close: %v; want context.Canceled", err)
	}
	if err := c.Start(t.Context()); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Start after Close: %v; want transport.ErrClosed", err)
	}
}

// TestStopOrphan checks that a child the PT left behind, holding the PT's
// stdout and stderr, does not make Close hang: it is killed with the PT's
// process group.
func TestStopOrphan(t *testing.T) {
	cfg, rec := fakeConfig(t, "orphan")
	cfg.StopTimeout = 50 * time.Millisecond
	c, err := NewClient(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if !rec.contains("still holds its output") {
		t.Errorf("no note of the orphan in the log:\n%s", strings.Join(rec.messages(), "\n"))
	}
}

func TestStartMissingBinary(t *testing.T) {
	c, err := NewClient(Config{Binary: "/nonexistent/obfs4proxy", Method: "obfs4"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Start(t.Context())
	var se *StartError
	if !errors.As(err, &se) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Start: %v; want a *StartError wrapping os.ErrNotExist", err)
	}
}

// TestGarbage checks that garbage on stdout, over-long lines, unknown
// keywords and malformed LOG/STATUS lines are skipped.
func TestGarbage(t *testing.T) {
	cfg, _ := fakeConfig(t, "garbage")
	c, err := NewClient(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if c.socks != "127.0.0.1:1" {
		t.Errorf("SOCKS address %q, want 127.0.0.1:1", c.socks)
	}
}

// envOf returns the environment the fake PT reported in its first LOG
// line.
func envOf(t *testing.T, rec *recorder) []string {
	t.Helper()
	for _, m := range rec.messages() {
		if rest, ok := strings.CutPrefix(m, "env "); ok {
			rest, _, _ = strings.Cut(rest, " source=LOG")
			return strings.Split(rest, " ")
		}
	}
	t.Fatalf("the fake PT reported no environment:\n%s", strings.Join(rec.messages(), "\n"))
	return nil
}

func TestClient(t *testing.T) {
	cfg, rec := fakeConfig(t, "client")
	cfg.Proxy = "socks5://127.0.0.1:1080"
	p := transport.Params{"cert": "c=;\\", "iat-mode": "0"}
	c, err := NewClient(cfg, p)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.Name(); got != "fake" {
		t.Errorf("Name() = %q", got)
	}
	conn, err := c.Dial(t.Context(), "bridge.example:443")
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if want := "target=bridge.example:443 cert=c=;\\ iat-mode=0\n"; line != want {
		t.Errorf("the PT got %q, want %q", line, want)
	}
	if _, err := conn.Write([]byte("echo\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := r.ReadString('\n'); err != nil || line != "echo\n" {
		t.Errorf("echo: %q, %v", line, err)
	}
	if a := conn.RemoteAddr(); a.Network() != "fake" || a.String() != "bridge.example:443" {
		t.Errorf("RemoteAddr = %s %s", a.Network(), a)
	}
	if _, ok := conn.(interface{ CloseWrite() error }); ok {
		t.Error("the connection has CloseWrite, which PTs do not carry through")
	}
	if _, err := c.Dial(t.Context(), "refused.invalid:1"); !errors.Is(err, transport.ErrRefused) {
		t.Errorf("Dial to a refusing target: %v; want ErrRefused", err)
	}
	if _, err := c.Listen(t.Context(), "127.0.0.1:0"); !errors.Is(err, transport.ErrUnsupported) {
		t.Errorf("Listen: %v; want ErrUnsupported", err)
	}

	env := envOf(t, rec)
	var state string
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "TOR_PT_STATE_LOCATION="); ok {
			state = v
		}
	}
	want := []string{
		fakeEnv + "=client",
		"TOR_PT_CLIENT_TRANSPORTS=fake",
		"TOR_PT_EXIT_ON_STDIN_CLOSE=1",
		"TOR_PT_MANAGED_TRANSPORT_VER=1",
		"TOR_PT_PROXY=socks5://127.0.0.1:1080",
		"TOR_PT_STATE_LOCATION=" + state,
	}
	if diff := cmp.Diff(want, env); diff != "" {
		t.Errorf("the PT's environment (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(state); err != nil {
		t.Errorf("temporary state directory: %v", err)
	}

	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary state directory after Close: %v; want it removed", err)
	}
	if _, err := c.Dial(t.Context(), "bridge.example:443"); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Dial after Close: %v; want ErrClosed", err)
	}
	// Close waited for the readers, so everything the PT wrote is logged.
	for _, want := range []string{
		"pt version IMPLEMENTATION=fake-pt TYPE=version VERSION=1.0",
		"pt stderr line=fake pt: serving",
		"after set-up source=LOG",
		"component=pt pt=fake binary=",
	} {
		if !rec.contains(want) {
			t.Errorf("log lacks %q:\n%s", want, strings.Join(rec.messages(), "\n"))
		}
	}
	if got := slog.AnyValue(c).Resolve().String(); got != "[redacted]" {
		t.Errorf("the client logs as %q", got)
	}
}

func TestServer(t *testing.T) {
	cfg, rec := fakeConfig(t, "server")
	dir := t.TempDir()
	srv, pub, err := cfg.ServerFactory()(transport.Params{"echo": "v;1:="}, dir)
	if err != nil {
		t.Fatalf("ServerFactory: %v", err)
	}
	want := transport.Params{"secret": "a=b,c\\d", "echo": "v;1:="}
	if diff := cmp.Diff(want, pub); diff != "" {
		t.Errorf("public parameters (-want +got):\n%s", diff)
	}
	env := envOf(t, rec)
	var orport string
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "TOR_PT_ORPORT="); ok {
			orport = v
		}
	}
	wantEnv := []string{
		fakeEnv + "=server",
		"TOR_PT_EXIT_ON_STDIN_CLOSE=1",
		"TOR_PT_EXTENDED_SERVER_PORT=",
		"TOR_PT_MANAGED_TRANSPORT_VER=1",
		"TOR_PT_ORPORT=" + orport,
		"TOR_PT_SERVER_BINDADDR=fake-127.0.0.1:0",
		"TOR_PT_SERVER_TRANSPORTS=fake",
		`TOR_PT_SERVER_TRANSPORT_OPTIONS=fake:echo=v\;1\:\=`,
		"TOR_PT_STATE_LOCATION=" + dir,
	}
	if diff := cmp.Diff(wantEnv, env); diff != "" {
		t.Errorf("the PT's environment (-want +got):\n%s", diff)
	}
	if !strings.HasPrefix(orport, "127.0.0.1:") {
		t.Errorf("ORPort %q is not on loopback", orport)
	}
	if _, err := srv.Dial(t.Context(), "127.0.0.1:1"); !errors.Is(err, transport.ErrUnsupported) {
		t.Errorf("Dial: %v; want ErrUnsupported", err)
	}
	if got := slog.AnyValue(srv).Resolve().String(); got != "[redacted]" {
		t.Errorf("the server logs as %q", got)
	}
	ln, err := srv.Listen(t.Context(), "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	if a := ln.Addr().String(); !strings.HasPrefix(a, "[::1]:") {
		t.Errorf("Addr() = %s, want [::1]:port", a)
	}
	ln.Close()
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Binary: "obfs4proxy", Method: "obfs4"}
	tests := []struct {
		name string
		edit func(c *Config)
		want string // in the error; "" for none
	}{
		{"ok", func(*Config) {}, ""},
		{"no binary", func(c *Config) { c.Binary = "" }, "Binary"},
		{"dash in method", func(c *Config) { c.Method = "meek-lite" }, "Method"},
		{"digit first", func(c *Config) { c.Method = "4obfs" }, "Method"},
		{"underscore", func(c *Config) { c.Method = "meek_lite" }, ""},
		{"negative start", func(c *Config) { c.StartTimeout = -1 }, "StartTimeout"},
		{"negative stop", func(c *Config) { c.StopTimeout = -1 }, "StopTimeout"},
		{"env not kv", func(c *Config) { c.Env = []string{"HOME"} }, "Env[0]"},
		{"env tor_pt", func(c *Config) { c.Env = []string{"A=1", "TOR_PT_ORPORT=x"} }, "Env[1]"},
		{"proxy ok", func(c *Config) { c.Proxy = "socks5://user:pw@127.0.0.1:1080" }, ""},
		{"proxy no port", func(c *Config) { c.Proxy = "socks5://127.0.0.1" }, "Proxy"},
		{"proxy no scheme", func(c *Config) { c.Proxy = "127.0.0.1:1080" }, "Proxy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.edit(&c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "pt: ") {
				t.Fatalf("Validate: %v; want an error naming %s", err, tt.want)
			}
		})
	}
	if _, err := NewServer(ok, nil); err == nil || !strings.Contains(err.Error(), "StateDir") {
		t.Errorf("NewServer without StateDir: %v", err)
	}
	if _, err := NewClient(ok, transport.Params{"": "x"}); !errors.Is(err, transport.ErrBadParams) {
		t.Errorf("NewClient with an empty parameter name: %v", err)
	}
	ok.StateDir = t.TempDir()
	if _, err := NewServer(ok, transport.Params{"a": "\x00"}); !errors.Is(err, transport.ErrBadParams) {
		t.Errorf("NewServer with a NUL option: %v", err)
	}
}

func TestBindAddr(t *testing.T) {
	tests := []struct{ in, want string }{
		{"127.0.0.1:0", "127.0.0.1:0"},
		{"0.0.0.0:443", "0.0.0.0:443"},
		{":443", "0.0.0.0:443"},
		{"[::]:443", "[::]:443"},
		{"[2001:db8::1]:80", "[2001:db8::1]:80"},
		{"localhost:443", ""},
		{"127.0.0.1", ""},
		{"127.0.0.1:99999", ""},
		{":", ""},
	}
	for _, tt := range tests {
		got, err := bindAddr(tt.in)
		if tt.want == "" {
			if err == nil {
				t.Errorf("bindAddr(%q) = %q, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got.String() != tt.want {
			t.Errorf("bindAddr(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestStartErrorText(t *testing.T) {
	err := &StartError{Binary: "lyrebird", Method: "obfs4", Err: ErrMethod, Detail: "CMETHOD-ERROR obfs4 nope", Stderr: "x"}
	want := `pt: start lyrebird (obfs4): method not available: CMETHOD-ERROR obfs4 nope; last stderr line: "x"`
	if got := err.Error(); got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !slices.Contains(err.Unwrap(), ErrMethod) {
		t.Error("Unwrap lacks Err")
	}
}
