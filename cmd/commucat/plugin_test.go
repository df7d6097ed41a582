package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/plugins"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.yaml.in/yaml/v3"
)

// runPluginCmd runs `commucat plugin args...` and returns its output.
func runPluginCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return runRoot(append([]string{"plugin"}, args...)...)
}

func TestPluginListAndPin(t *testing.T) {
	state := t.TempDir()
	if err := os.Chmod(state, 0o700); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(state, "plugins")
	bin := filepath.Join(dir, "commucat-transport-tcp")
	goBuild(t, bin, "github.com/commucat/commucat/cmd/commucat-transport-tcp")
	// Only the state directory's folder, not bin/plugins beside the test.
	if err := savePluginSettings(state, pluginSettings{Dirs: []string{dir}}); err != nil {
		t.Fatal(err)
	}

	out, err := runPluginCmd(t, "list", "--state", state)
	if err != nil {
		t.Fatalf("plugin list: %v\n%s", err, out)
	}
	// tcp is also built in, so the plugin is listed but not used.
	for _, want := range []string{"NAME", "tcp", "dev", "stream,client,server", bin, "not used: shadowed by the built-in tcp"} {
		if !strings.Contains(out, want) {
			t.Errorf("plugin list lacks %q:\n%s", want, out)
		}
	}

	out, err = runPluginCmd(t, "pin", "tcp", "--state", state)
	if err != nil {
		t.Fatalf("plugin pin: %v\n%s", err, out)
	}
	s, err := loadPluginSettings(state)
	if err != nil {
		t.Fatal(err)
	}
	sum := strings.Fields(out)[2]
	if diff := cmp.Diff(pluginSettings{Dirs: []string{dir}, Pins: map[string]string{"tcp": sum}}, s); diff != "" {
		t.Errorf("plugins.yaml after pin (-want +got):\n%s", diff)
	}
	if fi, err := os.Stat(filepath.Join(state, pluginsFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("plugins.yaml: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}

	// Pinned, and required: listed as pinned and usable.
	s.RequirePinned = true
	if err := savePluginSettings(state, s); err != nil {
		t.Fatal(err)
	}
	out, err = runPluginCmd(t, "list", "--state", state)
	if err != nil || !strings.Contains(out, " yes ") || !strings.Contains(out, "not used: shadowed") {
		t.Errorf("plugin list after pin: %v\n%s", err, out)
	}

	// A changed binary no longer matches its pin and is refused.
	s.Pins["tcp"] = strings.Repeat("0", 64)
	if err := savePluginSettings(state, s); err != nil {
		t.Fatal(err)
	}
	out, err = runPluginCmd(t, "list", "--state", state)
	if err != nil || !strings.Contains(out, "refused: plugins: binary does not match its pin") || !strings.Contains(out, " mismatch ") {
		t.Errorf("plugin list with a wrong pin: %v\n%s", err, out)
	}

	if out, err := runPluginCmd(t, "pin", "nosuch", "--state", state); err == nil {
		t.Errorf("plugin pin nosuch succeeded:\n%s", out)
	}

	// env for a name no plugin has, such as a typo, is worth a word.
	s.Env = map[string][]string{"tcp": {"GOGC=200"}, "tpc": {"GOGC=200"}}
	if err := savePluginSettings(state, s); err != nil {
		t.Fatal(err)
	}
	out, err = runPluginCmd(t, "list", "--state", state)
	if err != nil || !strings.Contains(out, "env names tpc, but no plugin of that name was found") || strings.Contains(out, "env names tcp") {
		t.Errorf("plugin list with env for a missing plugin: %v\n%s", err, out)
	}
}

func TestPluginSettingsRingFlows(t *testing.T) {
	for _, tt := range []struct {
		yaml string
		want int
		ok   bool
	}{
		{"", 0, true},
		{"ring_flows: -1\n", -1, true},
		{"ring_flows: 8\n", 8, true},
		{"ring_flows: -2\n", 0, false},
		{"ring_flows: many\n", 0, false},
	} {
		state := t.TempDir()
		if err := os.WriteFile(filepath.Join(state, pluginsFile), []byte(tt.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := pluginHostConfig(state)
		if (err == nil) != tt.ok || err == nil && cfg.RingFlows != tt.want {
			t.Errorf("%q: RingFlows %d, error %v; want %d, ok %v", tt.yaml, cfg.RingFlows, err, tt.want, tt.ok)
		}
	}
}

func TestPluginSettingsEnv(t *testing.T) {
	for _, tt := range []struct {
		name string
		yaml string
		want map[string][]string
		err  string // in the error; empty: none
	}{
		{"none", "", nil, ""},
		{"two plugins", "env:\n  quic: [GOMAXPROCS=1]\n  kcp: [GOMAXPROCS=1, GOGC=200]\n",
			map[string][]string{"quic": {"GOMAXPROCS=1"}, "kcp": {"GOMAXPROCS=1", "GOGC=200"}}, ""},
		{"no equal sign", "env:\n  quic: [SECRET]\n", nil, "env.quic[0] is not KEY=value"},
		{"bad name", "env:\n  Quic: [A=1]\n", nil, "line 2: env: a key that is not a plugin name"},
		{"protocol variable", "env:\n  quic: [COMMUCAT_PLUGIN_CONTROL_FD=5]\n", nil, "a variable of the plugin protocol"},
		{"not a list", "env:\n  quic: SECRET=hunter2\n", nil, `line 2: env: plugin "quic": want a list of KEY=value`},
		{"short value", "env:\n  quic: A=pw\n", nil, "want a list of KEY=value"},
		{"nested list", "env:\n  quic: [[SECRET=hunter2]]\n", nil, `line 2: env: plugin "quic", entry 0: want KEY=value`},
		{"not a map", "env: [SECRET=hunter2]\n", nil, "line 1: env: want plugin names"},
		{"twice", "env:\n  quic: [A=1]\n  quic: [SECRET=hunter2]\n", nil, `line 3: env: plugin "quic" given twice`},
		{"shared list", "env:\n  quic: &l [GOMAXPROCS=1]\n  kcp: *l\n", map[string][]string{"quic": {"GOMAXPROCS=1"}, "kcp": {"GOMAXPROCS=1"}}, ""},
		{"shared entry", "env:\n  quic: [&v GOGC=200]\n  kcp: [*v]\n", map[string][]string{"quic": {"GOGC=200"}, "kcp": {"GOGC=200"}}, ""},
		{"null list", "env:\n  quic: ~\n  kcp: []\n", map[string][]string{"quic": nil, "kcp": {}}, ""},
		{"null env", "env: ~\n", nil, ""},
		{"binary entry", "env:\n  quic: [!!binary QT0x]\n", map[string][]string{"quic": {"A=1"}}, ""},
		{"merge key", "env:\n  <<: {quic: [SECRET=hunter2]}\n", nil, "line 2: env: a key that is not a plugin name"},
		{"secret as a key", "env:\n  quic: [A=1]\n  SECRET=hunter2: []\n", nil, "line 3: env: a key that is not a plugin name"},
		{"secret as a key alone", "env: {SECRET=hunter2}\n", nil, "line 1: env: a key that is not a plugin name"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			state := t.TempDir()
			if err := os.WriteFile(filepath.Join(state, pluginsFile), []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := pluginHostConfig(state)
			switch {
			case tt.err == "" && err != nil:
				t.Errorf("%q: %v", tt.yaml, err)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), pluginsFile)):
				t.Errorf("%q: error %v; want one naming %s with %q", tt.yaml, err, pluginsFile, tt.err)
			case tt.err == "" && !cmp.Equal(cfg.PluginEnv, tt.want, cmpopts.EquateEmpty()):
				t.Errorf("%q: PluginEnv %v; want %v", tt.yaml, cfg.PluginEnv, tt.want)
			}
			for _, secret := range []string{"SECRET", "hunter2", "pw"} {
				if err != nil && strings.Contains(err.Error(), secret) {
					t.Errorf("%q: error %q shows a value", tt.yaml, err)
				}
			}
		})
	}
}

func TestPluginSettingsStrict(t *testing.T) {
	state := t.TempDir()
	if err := os.WriteFile(filepath.Join(state, pluginsFile), []byte("pinz: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadPluginSettings(state)
	if err == nil || !strings.Contains(err.Error(), "line 1: unknown field pinz (known: dirs,") || strings.Contains(err.Error(), "main.") {
		t.Errorf("unknown field: %v; want an error naming it and the known fields, not a Go type", err)
	}
}

// FuzzPluginSettings decodes any plugins.yaml: it is accepted or refused
// with an error, never a panic; what is accepted is a valid host
// configuration, and decodes the same once encoded again, as
// savePluginSettings (`commucat plugin pin`) rewrites the file.
func FuzzPluginSettings(f *testing.F) {
	for _, s := range []string{
		"",
		"dirs: [/opt/commucat/plugins]\nrequire_pinned: true\npins:\n  tcp: " + strings.Repeat("ab", 32) + "\nring_flows: 64\n",
		"env:\n  quic: [GOMAXPROCS=1]\n  kcp: [GOMAXPROCS=1, GOGC=200]\n",
		"env: {quic: [\"=x\"]}\n",
		"ring_flows: -2\n",
		"pins: {TCP: abc}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := parsePluginSettings(b)
		if err != nil {
			return
		}
		if _, err := s.hostConfig("/state"); err != nil {
			return
		}
		out, err := yaml.Marshal(s)
		if err != nil {
			t.Fatalf("encoding accepted settings: %v", err)
		}
		back, err := parsePluginSettings(out)
		if err != nil {
			t.Fatalf("decoding %q, as encoded from %q: %v", out, b, err)
		}
		if diff := cmp.Diff(s, back, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("encoded and decoded again (-first +again):\n%s", diff)
		}
	})
}

// TestUnusablePlugin checks that a transport name with no usable plugin
// says why, where it used to be an unknown transport.
func TestUnusablePlugin(t *testing.T) {
	state := t.TempDir()
	if err := os.Chmod(state, 0o700); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(state, "plugins")
	if err := savePluginSettings(state, pluginSettings{Dirs: []string{dir}}); err != nil {
		t.Fatal(err)
	}
	r := new(transport.Registry)
	h, err := addPlugins(state, []string{"nosuch"}, r, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	want := "no plugin binary commucat-transport-nosuch in " + dir
	if _, _, err := r.NewServer("nosuch", nil, state); !errors.Is(err, transport.ErrUnknown) || !strings.Contains(err.Error(), want) {
		t.Errorf("NewServer = %v; want transport.ErrUnknown and %q", err, want)
	}
	if _, err := r.New("nosuch", nil); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("New = %v; want %q", err, want)
	}

	refused := []plugins.Info{{Name: "x", Path: "/p/commucat-transport-x", Err: fmt.Errorf("%w (require_pinned is set)", plugins.ErrNotPinned)}}
	err = unusablePlugin("x", refused, []string{dir})
	if !errors.Is(err, plugins.ErrNotPinned) || !strings.Contains(err.Error(), "/p/commucat-transport-x refused") {
		t.Errorf("unusablePlugin of a refused plugin = %v", err)
	}
	if err := unusablePlugin("x", []plugins.Info{{Name: "x"}}, nil); err != nil {
		t.Errorf("unusablePlugin of a usable plugin = %v", err)
	}
	// The same name in two folders: Discover lists the shadowed copy
	// first; the one used decides.
	twice := []plugins.Info{{Name: "x", Err: fmt.Errorf("%w by /a/commucat-transport-x", plugins.ErrShadowed)}, {Name: "x", Path: "/a/commucat-transport-x"}}
	if err := unusablePlugin("x", twice, nil); err != nil {
		t.Errorf("unusablePlugin of a usable plugin that shadows another = %v", err)
	}
}

// TestStateDirRole checks that gateway and client commands refuse each
// other's state directory, which COMMUCAT_STATE can hand to both.
func TestStateDirRole(t *testing.T) {
	for _, tt := range []struct{ key, role string }{{gatewayKeyFile, "client"}, {deviceKeyFile, "gateway"}} {
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, tt.key), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := stateDir(dir, tt.role); err == nil || !strings.Contains(err.Error(), "give the "+tt.role+" its own") {
			t.Errorf("stateDir(dir with %s, %s) = %v; want it refused", tt.key, tt.role, err)
		}
		if _, err := anyStateDir(dir, "gateway"); err != nil {
			t.Errorf("anyStateDir(dir with %s) = %v", tt.key, err)
		}
	}
}

func TestPrintPluginParams(t *testing.T) {
	var b strings.Builder
	if err := printPluginParams(&b, []plugins.Info{
		{Name: "none"},
		{Name: "tlsplain", Params: []plugins.Param{
			{Name: "pin", Doc: "the gateway's key\x1b[2J", Client: true, Required: true},
			{Name: "sni", Doc: "server name", Client: true, Server: true},
		}},
	}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"tlsplain parameters:", "pin  client,required", `the gateway's key\x1b[2J`, "sni  client,server    server name"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "none") || strings.Contains(out, "\x1b") {
		t.Errorf("output lists a plugin without parameters, or an escape:\n%q", out)
	}
}
