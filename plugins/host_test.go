package plugins

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/plugins/proto"
)

func TestBackoff(t *testing.T) {
	tests := []struct {
		failures int
		want     time.Duration
	}{
		{1, 100 * time.Millisecond},
		{2, 200 * time.Millisecond},
		{3, 400 * time.Millisecond},
		{5, time.Second},
		{100, time.Second},
	}
	for _, tt := range tests {
		if got := backoff(100*time.Millisecond, time.Second, tt.failures); got != tt.want {
			t.Errorf("backoff(%d failures) = %v, want %v", tt.failures, got, tt.want)
		}
	}
}

// TestRestartBackoff: a plugin that died is not started again before its
// backoff is over, and Host.Close does not wait for the backoff to end.
func TestRestartBackoff(t *testing.T) {
	h, _ := startHost(t, HostConfig{Backoff: time.Hour}, pluginDir(t, map[string]string{"good": faultyBin(t)}))
	p, err := h.plugin("good")
	if err != nil {
		t.Fatal(err)
	}
	old := currentGen(t, h, "good")
	if err := old.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-old.dead:
	case <-time.After(hangBound):
		t.Fatalf("plugin %d killed and not seen dead after %v", old.pid(), hangBound)
	}

	// Two seconds are far more than a start takes, and far less than the
	// hour of backoff.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if g, err := p.live(ctx); err == nil {
		t.Errorf("generation %d (pid %d) started during the backoff", g.n, g.pid())
	} else if !errors.Is(err, transport.ErrTimeout) {
		t.Errorf("waiting for a restart during the backoff: %v; want transport.ErrTimeout", err)
	}

	within(t, "Host.Close during the backoff", func() {
		if err := h.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if g := p.running(); g != nil {
		t.Errorf("generation %d (pid %d) runs after Close", g.n, g.pid())
	}
	if err := old.cmd.Process.Signal(syscall.Signal(0)); !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("killed plugin %d not reaped after Close: %v", old.pid(), err)
	}
}

func TestHostConfigValidate(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	tests := []struct {
		name string
		cfg  HostConfig
		want string // in the error; "" for none
	}{
		{"zero", HostConfig{}, ""},
		{"pin", HostConfig{Pins: map[string]string{"tcp": sum}}, ""},
		{"bad pin", HostConfig{Pins: map[string]string{"tcp": "abc"}}, "pins.tcp"},
		{"bad name", HostConfig{Pins: map[string]string{"TCP!": sum}}, "plugin name"},
		{"bad env", HostConfig{Env: []string{"NOEQUALS"}}, "env[0]"},
		{"plugin env", HostConfig{Env: []string{"A=1"}, PluginEnv: map[string][]string{"quic": {"GOMAXPROCS=1", "EMPTY="}}}, ""},
		{"bad plugin env", HostConfig{PluginEnv: map[string][]string{"quic": {"A=1", "=secret"}}}, "env.quic[1] is not KEY=value"},
		{"plugin env name", HostConfig{PluginEnv: map[string][]string{"TOKEN=secret": {"A=1"}}}, "env: a key is not a plugin name"},
		{"protocol variable", HostConfig{Env: []string{"COMMUCAT_PLUGIN_CONTROL_FD=4"}}, `env[0] sets "COMMUCAT_PLUGIN_CONTROL_FD"`},
		{"protocol variable for one", HostConfig{PluginEnv: map[string][]string{"kcp": {"PLUGIN_UNIX_SOCKET_DIR=/tmp"}}}, `env.kcp[0] sets "PLUGIN_UNIX_SOCKET_DIR"`},
		{"go-plugin variable", HostConfig{PluginEnv: map[string][]string{"kcp": {"PLUGIN_MULTIPLEX_GRPC=secret"}}}, `env.kcp[0] sets "PLUGIN_MULTIPLEX_GRPC", a variable of the plugin protocol`},
		{"magic cookie", HostConfig{Env: []string{"COMMUCAT_PLUGIN_MAGIC_COOKIE=x"}}, `env[0] sets "COMMUCAT_PLUGIN_MAGIC_COOKIE"`},
		{"NUL in a value", HostConfig{PluginEnv: map[string][]string{"kcp": {"A=x\x00secret"}}}, "env.kcp[0] is not KEY=value"},
		{"negative", HostConfig{DialTimeout: -time.Second}, "dial_timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("Validate() = %v, want an error with %q", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("Validate() = %v: shows a value", err)
			}
		})
	}
}

func TestScan(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	write := func(dir, name string, mode os.FileMode) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(name+dir), mode); err != nil {
			t.Fatal(err)
		}
	}
	write(a, "commucat-transport-one", 0o755)
	write(a, "commucat-transport-noexec", 0o644)
	write(a, "other-binary", 0o755)
	write(a, "commucat-transport-Bad_Name", 0o755)
	write(b, "commucat-transport-one", 0o755) // shadowed
	write(b, "commucat-transport-two", 0o755)
	if err := os.Mkdir(filepath.Join(b, "commucat-transport-dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	h, err := NewHost(HostConfig{Dirs: []string{a, b, filepath.Join(a, "missing")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	infos, err := h.Scan()
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		Name, Dir string
		Shadowed  bool
	}
	var got []row
	for _, in := range infos {
		if len(in.SHA256) != 64 {
			t.Errorf("%s: SHA256 %q", in.Name, in.SHA256)
		}
		got = append(got, row{in.Name, filepath.Dir(in.Path), in.Err != nil && strings.Contains(in.Err.Error(), "shadowed")})
	}
	want := []row{{"one", a, false}, {"one", b, true}, {"two", b, false}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Scan (-want +got):\n%s", diff)
	}
}

// TestRefused checks the plugins a host refuses and why.
func TestRefused(t *testing.T) {
	tcp := buildPlugin(t, "tcp", "./cmd/commucat-transport-tcp")
	faulty := faultyBin(t)
	tcpSum, err := hashFile(tcp)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		cfg   HostConfig
		bins  map[string]string
		check func(t *testing.T, in Info)
	}{
		{"unpinned, pins required", HostConfig{RequirePinned: true}, map[string]string{"tcp": tcp}, func(t *testing.T, in Info) {
			if !errors.Is(in.Err, ErrNotPinned) {
				t.Errorf("Err = %v, want ErrNotPinned", in.Err)
			}
		}},
		{"pinned, pins required", HostConfig{RequirePinned: true, Pins: map[string]string{"tcp": tcpSum}}, map[string]string{"tcp": tcp}, func(t *testing.T, in Info) {
			if in.Err != nil || !in.Pinned || in.Version != "dev" {
				t.Errorf("Info = %+v, want a pinned, running plugin", in)
			}
		}},
		{"wrong pin", HostConfig{Pins: map[string]string{"tcp": strings.Repeat("0", 64)}}, map[string]string{"tcp": tcp}, func(t *testing.T, in Info) {
			if !errors.Is(in.Err, ErrPinMismatch) || in.Pinned {
				t.Errorf("Info = %+v, want ErrPinMismatch", in)
			}
		}},
		{"other protocol version", HostConfig{}, map[string]string{"oldproto": faulty}, func(t *testing.T, in Info) {
			var ve *VersionError
			if !errors.As(in.Err, &ve) || ve.Plugin != 99 || ve.Host != proto.ProtocolVersion || ve.HostMin != proto.MinProtocolVersion {
				t.Fatalf("Err = %v, want a *VersionError naming 99, %d and %d", in.Err, proto.MinProtocolVersion, proto.ProtocolVersion)
			}
			want := fmt.Sprintf("versions %d to %d", proto.MinProtocolVersion, proto.ProtocolVersion)
			if msg := in.Err.Error(); !strings.Contains(msg, "version 99") || !strings.Contains(msg, want) {
				t.Errorf("message %q names not both versions", msg)
			}
		}},
		{"protocol version 1", HostConfig{}, map[string]string{"proto1": faulty}, func(t *testing.T, in Info) {
			// A plugin that speaks only version 1 runs, without datagrams
			// even though it would offer them.
			want := Capabilities{Stream: true, Client: true, Server: true}
			if in.Err != nil || in.Capabilities != want {
				t.Errorf("Info = %+v, want a running plugin with capabilities %v", in, want)
			}
		}},
		{"wrong name", HostConfig{}, map[string]string{"wrongname": faulty}, func(t *testing.T, in Info) {
			if in.Err == nil || !strings.Contains(in.Err.Error(), "somebody-else") {
				t.Errorf("Err = %v, want one naming the other name", in.Err)
			}
		}},
		{"not a plugin", HostConfig{StartTimeout: 5 * time.Second}, map[string]string{"notaplugin": "/bin/true"}, func(t *testing.T, in Info) {
			if in.Err == nil {
				t.Errorf("Info = %+v, want an error", in)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Dirs = []string{pluginDir(t, tt.bins)}
			h, err := NewHost(cfg, testLog(t))
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			infos, err := h.Discover()
			if err != nil || len(infos) != 1 {
				t.Fatalf("Discover = %+v, %v", infos, err)
			}
			t.Logf("%s: %v", infos[0].Name, infos[0].Err)
			tt.check(t, infos[0])
			r := new(transport.Registry)
			if err := h.Register(r); err != nil {
				t.Fatal(err)
			}
			if got, usable := r.Names(), infos[0].Err == nil; usable != (len(got) == 1) {
				t.Errorf("registered %v; usable %v", got, usable)
			}
		})
	}
}

func TestRegisterDuplicate(t *testing.T) {
	_, r0 := startHost(t, HostConfig{}, pluginDir(t, map[string]string{"tcp": buildPlugin(t, "tcp", "./cmd/commucat-transport-tcp")}))
	h, _ := startHost(t, HostConfig{}, pluginDir(t, map[string]string{"tcp": buildPlugin(t, "tcp", "./cmd/commucat-transport-tcp")}))
	if err := h.Register(r0); !errors.Is(err, ErrDuplicate) {
		t.Errorf("Register over a taken name: %v, want ErrDuplicate", err)
	}
	// The unused plugin's process is stopped.
	if err := h.Health(testCtx(t), "tcp"); !errors.Is(err, ErrDuplicate) {
		t.Errorf("Health of the unused plugin: %v, want ErrDuplicate", err)
	}
}

func TestOnly(t *testing.T) {
	bin := buildPlugin(t, "tcp", "./cmd/commucat-transport-tcp")
	h, r := startHost(t, HostConfig{Only: []string{"other"}}, pluginDir(t, map[string]string{"tcp": bin}))
	if names := r.Names(); len(names) != 0 {
		t.Errorf("registered %v, want nothing: only \"other\" is wanted", names)
	}
	if err := h.Health(testCtx(t), "tcp"); err == nil {
		t.Errorf("the unwanted plugin answers Health: it was started")
	}
	infos, err := h.Scan()
	if err != nil || len(infos) != 1 || infos[0].Name != "tcp" {
		t.Errorf("Scan = %v, %v; want the tcp binary listed", infos, err)
	}
	_, r = startHost(t, HostConfig{Only: []string{"tcp"}}, pluginDir(t, map[string]string{"tcp": bin}))
	if names := r.Names(); !slices.Contains(names, "tcp") {
		t.Errorf("registered %v, want tcp", names)
	}
}

func TestClosedHost(t *testing.T) {
	h, r := startHost(t, HostConfig{}, pluginDir(t, map[string]string{"tcp": buildPlugin(t, "tcp", "./cmd/commucat-transport-tcp")}))
	client, server := serverAndClient(t, r, "tcp")
	ctx := testCtx(t)
	ln, err := server.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := client.Dial(ctx, ln.Addr().String()); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Dial after Close: %v, want ErrClosed", err)
	}
	if _, err := ln.Accept(ctx); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Accept after Close: %v, want ErrClosed", err)
	}
	if _, err := server.Listen(ctx, "127.0.0.1:0"); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Listen after Close: %v, want ErrClosed", err)
	}
	ln.Close()
}

// Each plugin's environment is the protocol's variables, Env, and its own
// PluginEnv, which wins over Env; nothing of the host's own environment
// leaks in.
func TestPluginEnv(t *testing.T) {
	t.Setenv("COMMUCAT_TEST_HOST_ONLY", "leak")
	bin := faultyBin(t)
	h, _ := startHost(t, HostConfig{
		Env:       []string{"GOGC=200", "COMMUCAT_TEST_SHARED=env"},
		PluginEnv: map[string][]string{"good": {"GOMAXPROCS=1", "COMMUCAT_TEST_SHARED=good"}},
	}, pluginDir(t, map[string]string{"good": bin, "hangdial": bin}))
	for _, tt := range []struct {
		name string
		want []string
	}{
		{"good", []string{"GOGC=200", "GOMAXPROCS=1", "COMMUCAT_TEST_SHARED=good"}},
		{"hangdial", []string{"GOGC=200", "COMMUCAT_TEST_SHARED=env"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pid := currentGen(t, h, tt.name).pid()
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
			if err != nil {
				t.Fatal(err)
			}
			env := map[string]string{}
			for kv := range strings.SplitSeq(strings.TrimSuffix(string(b), "\x00"), "\x00") {
				k, v, _ := strings.Cut(kv, "=")
				env[k] = v // the last one wins, as for the process
			}
			for _, kv := range tt.want {
				k, v, _ := strings.Cut(kv, "=")
				if env[k] != v {
					t.Errorf("%s=%q, want %q", k, env[k], v)
				}
			}
			if _, ok := env["COMMUCAT_TEST_HOST_ONLY"]; ok {
				t.Error("the host's environment leaked in")
			}
			// The rest is the protocols' own: go-plugin's (with the
			// host's certificate for AutoMTLS) and the control socket.
			if !strings.Contains(env["PLUGIN_CLIENT_CERT"], "BEGIN CERTIFICATE") {
				t.Error("no PLUGIN_CLIENT_CERT: the host does not ask for mutual TLS (AutoMTLS)")
			}
			for k := range env {
				if !strings.HasPrefix(k, "PLUGIN_") && !strings.HasPrefix(k, "COMMUCAT_PLUGIN_") && !slices.ContainsFunc(tt.want, func(kv string) bool { return strings.HasPrefix(kv, k+"=") }) {
					t.Errorf("variable %s in the plugin's environment, which is to hold only the protocol's and the configured ones", k)
				}
			}
			if tt.name == "hangdial" && env["GOMAXPROCS"] != "" {
				t.Errorf("hangdial got good's GOMAXPROCS")
			}
		})
	}
}

// TestNotAPlugin checks the refusal of a binary that does not speak the
// go-plugin handshake: one sentence, with the first line it wrote, which
// is often its only clue (a usage text).
func TestNotAPlugin(t *testing.T) {
	for _, tt := range []struct{ script, want string }{
		{"#!/bin/sh\necho 'usage: frob [-x]'\nexit 2\n", `it wrote "usage: frob [-x]" on its standard output instead of the go-plugin handshake`},
		{"#!/bin/sh\nexit 3\n", "it exited before writing anything on its standard output instead of the go-plugin handshake"},
	} {
		bin := filepath.Join(t.TempDir(), "frob")
		if err := os.WriteFile(bin, []byte(tt.script), 0o700); err != nil {
			t.Fatal(err)
		}
		h, err := NewHost(HostConfig{Dirs: []string{pluginDir(t, map[string]string{"frob": bin})}}, testLog(t))
		if err != nil {
			t.Fatal(err)
		}
		infos, err := h.Discover()
		h.Close()
		if err != nil || len(infos) != 1 {
			t.Fatalf("Discover = %v, %v; want one plugin", infos, err)
		}
		if msg := fmt.Sprint(infos[0].Err); !strings.Contains(msg, tt.want) || strings.Contains(msg, "\n") {
			t.Errorf("refusal %q; want one line with %q", msg, tt.want)
		}
	}
}

// TestDefaultDirs checks the default folders: plugins/ in the state
// directory first, then plugins/ beside the running binary (here the
// test binary), and that a host finds a plugin in each.
func TestDefaultDirs(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if exe, err = filepath.EvalSymlinks(exe); err != nil {
		t.Fatal(err)
	}
	beside := filepath.Join(filepath.Dir(exe), "plugins")
	if _, err := os.Stat(beside); err == nil {
		t.Skipf("%s exists already; not touching it", beside)
	}
	if err := os.Mkdir(beside, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(beside) })
	state := t.TempDir()
	if err := os.Mkdir(filepath.Join(state, "plugins"), 0o700); err != nil {
		t.Fatal(err)
	}
	if want := []string{filepath.Join(state, "plugins"), beside}; !slices.Equal(DefaultDirs(state), want) {
		t.Fatalf("DefaultDirs = %v; want %v", DefaultDirs(state), want)
	}
	tcp := buildPlugin(t, "tcp", "./cmd/commucat-transport-tcp")
	for _, l := range []string{filepath.Join(state, "plugins", proto.BinaryPrefix+"one"), filepath.Join(beside, proto.BinaryPrefix+"two")} {
		if err := os.Symlink(tcp, l); err != nil {
			t.Fatal(err)
		}
	}
	h, err := NewHost(HostConfig{StateDir: state}, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	infos, err := h.Scan()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, in := range infos {
		got = append(got, in.Name+" "+filepath.Dir(in.Path))
	}
	if want := []string{"one " + filepath.Join(state, "plugins"), "two " + beside}; !slices.Equal(got, want) {
		t.Errorf("Scan found %v; want %v", got, want)
	}
}

// TestLargeParams checks that the plugin's gRPC server takes requests
// over gRPC's default 4 MiB (the SDK raises its limit): parameters that
// big are unusual, but refusing them would look like the plugin broke
// the protocol and get it cut off.
func TestLargeParams(t *testing.T) {
	h, r := startHost(t, HostConfig{}, pluginDir(t, map[string]string{"good": faultyBin(t)}))
	old := currentGen(t, h, "good")
	// The plugin's transport (TCP) refuses a parameter it does not know:
	// the request reached it.
	_, err := r.New("good", transport.Params{"big": strings.Repeat("x", 5<<20)})
	if !errors.Is(err, transport.ErrBadParams) || !strings.Contains(err.Error(), "unknown parameters big") {
		t.Errorf("New with a 5 MiB parameter = %v; want the transport's own refusal of it", err)
	}
	select {
	case <-old.dead:
		t.Fatalf("plugin cut off: %v", old.reason)
	default:
	}
}
