//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/commucat/commucat/plugins"
)

// buildGoodPlugin builds plugintest's spliced TCP plugin as the transport
// "good" into dir.
func buildGoodPlugin(t *testing.T, dir string) {
	t.Helper()
	goBuild(t, filepath.Join(dir, "commucat-transport-good"), "github.com/commucat/commucat/plugins/plugintest/cmd/faulty")
}

// TestPluginMetrics runs a gateway whose endpoint is a plugin and reads
// the plugin's metrics from its /metrics, before and after a connection.
func TestPluginMetrics(t *testing.T) {
	state := filepath.Join(t.TempDir(), "gw")
	if err := os.MkdirAll(filepath.Join(state, "plugins"), 0o700); err != nil {
		t.Fatal(err)
	}
	buildGoodPlugin(t, filepath.Join(state, "plugins"))
	config := filepath.Join(t.TempDir(), "gateway.yaml")
	yaml := "listen:\n  - transport: good\n    address: 127.0.0.1:0\nops:\n  listen: 127.0.0.1:0\n"
	if err := os.WriteFile(config, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root := newRoot()
	var out syncBuffer
	root.SetOut(&out)
	root.SetErr(io.Discard)
	root.SetArgs([]string{"gateway", "--state", state, "--config", config})
	exited := make(chan error, 1)
	go func() { exited <- root.ExecuteContext(ctx) }()
	defer func() {
		cancel()
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("gateway: %v", err)
			}
		case <-time.After(time.Minute):
			t.Error("the gateway did not stop within a minute")
		}
	}()

	addrRE := regexp.MustCompile(`listening: good (\S+)`)
	opsRE := regexp.MustCompile(`ops: +http://(\S+)/metrics`)
	var addr, ops string
	for deadline := time.Now().Add(time.Minute); addr == "" || ops == ""; time.Sleep(20 * time.Millisecond) {
		select {
		case err := <-exited:
			t.Fatalf("the gateway exited: %v\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway did not announce its endpoint and ops address within a minute:\n%s", out.String())
		}
		if m := addrRE.FindStringSubmatch(out.String()); m != nil {
			addr = m[1]
		}
		if m := opsRE.FindStringSubmatch(out.String()); m != nil {
			ops = m[1]
		}
	}
	scrape := func() string {
		t.Helper()
		resp, err := http.Get("http://" + ops + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /metrics: %d, %v", resp.StatusCode, err)
		}
		return string(b)
	}
	value := func(metrics, series string) (float64, bool) {
		for line := range strings.SplitSeq(metrics, "\n") {
			if v, ok := strings.CutPrefix(line, series+" "); ok {
				f, err := strconv.ParseFloat(v, 64)
				return f, err == nil
			}
		}
		return 0, false
	}
	// scrapeUntil scrapes until done holds, for at most a minute, and
	// returns the last scrape.
	scrapeUntil := func(what string, done func(metrics string) bool) string {
		t.Helper()
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
			m := scrape()
			if done(m) {
				return m
			}
			if time.Now().After(deadline) {
				t.Fatalf("not within a minute: %s\n%s", what, m)
			}
		}
	}
	metrics := scrape()
	for series, want := range map[string]float64{
		`commucat_plugin_up{plugin="good"}`:             1,
		`commucat_plugin_restarts_total{plugin="good"}`: 0,
		`commucat_plugin_accepts_total{plugin="good"}`:  0,
		`commucat_plugin_ring_flows_limit`:              plugins.DefaultRingFlows,
	} {
		if got, ok := value(metrics, series); !ok || got != want {
			t.Errorf("%s = %v (found: %v), want %v", series, got, ok, want)
		}
	}

	// A connection to the endpoint is accepted by the plugin (and then
	// refused by the gateway, which gets no handshake).
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(c, "not a handshake")
	c.Close()
	metrics = scrapeUntil("an accepted connection counted", func(m string) bool {
		n, _ := value(m, `commucat_plugin_accepts_total{plugin="good"}`)
		return n == 1
	})
	if n, ok := value(metrics, `commucat_plugin_flows_total{plugin="good"}`); !ok || n < 1 {
		t.Errorf("commucat_plugin_flows_total = %v (found: %v), want at least 1", n, ok)
	}

	// The plugin dies; the gateway restarts it, and counts the restart.
	pid := childProcess(t, "commucat-transport-good")
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	scrapeUntil("the restart counted and the plugin up", func(m string) bool {
		restarts, _ := value(m, `commucat_plugin_restarts_total{plugin="good"}`)
		up, _ := value(m, `commucat_plugin_up{plugin="good"}`)
		return restarts == 1 && up == 1
	})
}

// childProcess returns the pid of this process's child running the
// binary named name.
func childProcess(t *testing.T, name string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and ")", so
		// the fields start after the last ")".
		i := strings.LastIndexByte(string(stat), ')')
		f := strings.Fields(string(stat)[i+1:])
		if i < 0 || len(f) < 2 || f[1] != strconv.Itoa(os.Getpid()) {
			continue
		}
		if exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && filepath.Base(exe) == name {
			return pid
		}
	}
	t.Fatalf("no child process runs %s", name)
	return 0
}

// TestPluginCollectorDown: a plugin the host refused is reported down,
// with its restarts and no counters of a process it does not have.
func TestPluginCollectorDown(t *testing.T) {
	dir := t.TempDir()
	buildGoodPlugin(t, dir)
	h, err := plugins.NewHost(plugins.HostConfig{Dirs: []string{dir}, RequirePinned: true, RingFlows: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, err := h.Discover(); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP commucat_plugin_up 1 if the transport plugin's process runs and answered the scrape's stats call, else 0.
# TYPE commucat_plugin_up gauge
commucat_plugin_up{plugin="good"} 0
# HELP commucat_plugin_restarts_total Times the gateway restarted the plugin's process.
# TYPE commucat_plugin_restarts_total counter
commucat_plugin_restarts_total{plugin="good"} 0
# HELP commucat_plugin_ring_flows_limit How many connections may have rings at once (plugins.yaml ring_flows; 0: off).
# TYPE commucat_plugin_ring_flows_limit gauge
commucat_plugin_ring_flows_limit 0
`
	c := pluginCollector{h}
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "commucat_plugin_up", "commucat_plugin_restarts_total", "commucat_plugin_ring_flows_limit"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(c, "commucat_plugin_open_flows"); n != 0 {
		t.Errorf("%d commucat_plugin_open_flows series for a plugin that does not run", n)
	}
}
