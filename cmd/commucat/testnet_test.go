//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/commucat/commucat/testnet/scenario"
)

// runTestnetCmd runs `commucat testnet ARGS` in this process.
func runTestnetCmd(t *testing.T, ctx context.Context, args ...string) (string, error) {
	t.Helper()
	cmd := newTestnetCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

func TestTestnetCommandErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("name: x\nhosts: [{name: a, up: {delya: 1s}}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"no such file", []string{"run", "/nonexistent/x.yaml"}, "no scenario file"},
		{"unknown shipped", []string{"run", "nope"}, "no shipped scenario"},
		{"field path", []string{"run", bad}, "hosts[0].up.delya"},
		{"unknown profile", []string{"run", "conversation", "--censor", "gfw-nope"}, "not shipped"},
		{"chat without --to", []string{"chat", "--tag", "x"}, "chat needs --to"},
		{"matrix unknown transport", []string{"matrix", "--transports", "carrier-pigeon", "--dir", t.TempDir()}, "unknown transport"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runTestnetCmd(t, context.Background(), tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err %v (output %q), want one containing %q", err, out, tt.wantErr)
			}
		})
	}
}

// TestTestnetNeedsRoot runs the command as an unprivileged user: it must
// say that it needs root and exit non-zero, without touching anything.
func TestTestnetNeedsRoot(t *testing.T) {
	if os.Getenv("COMMUCAT_TESTNET_HELPER") == "1" {
		return // the helper process runs TestHelperTestnet
	}
	if os.Getuid() != 0 {
		out, err := runTestnetCmd(t, context.Background(), "run", "conversation")
		if err == nil || !strings.Contains(err.Error(), "needs root") {
			t.Fatalf("as uid %d: err %v, output %q; want a refusal naming root", os.Getuid(), err, out)
		}
		return
	}
	// As root: run this test binary as nobody.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "commucat-noroot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "commucat.test")
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, sub := range [][]string{{"run", "conversation"}, {"up"}, {"down"}, {"matrix"}} {
		t.Run(strings.Join(sub, " "), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "-test.run=^TestHelperTestnet$")
			cmd.Env = append(os.Environ(), "COMMUCAT_TESTNET_HELPER=1", "COMMUCAT_TESTNET_ARGS="+strings.Join(sub, ","), "HOME="+dir)
			cmd.Dir = dir
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if err == nil || !errors.As(err, &ee) || ee.ExitCode() == 0 {
				t.Fatalf("as nobody: err %v, want a non-zero exit\n%s", err, out)
			}
			if !strings.Contains(string(out), "needs root") {
				t.Errorf("as nobody: output does not say it needs root:\n%s", out)
			}
		})
	}
}

// TestHelperTestnet is the helper process of TestTestnetNeedsRoot: it runs
// `commucat testnet ARGS` and exits as main does.
func TestHelperTestnet(t *testing.T) {
	if os.Getenv("COMMUCAT_TESTNET_HELPER") != "1" {
		t.Skip("helper process")
	}
	cmd := newTestnetCmd()
	cmd.SetArgs(strings.Split(os.Getenv("COMMUCAT_TESTNET_ARGS"), ","))
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "commucat:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// TestTestnetChat runs the hidden chat command in this process against a
// real gateway on loopback (no root needed): every message is stored and
// reaches a listener once, and the router's path statistics are printed.
func TestTestnetChat(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary; skipped with -short")
	}
	bin := buildBinary(t)
	tmp := t.TempDir()
	gwDir, aliceDir, bobDir := filepath.Join(tmp, "gw"), filepath.Join(tmp, "alice"), filepath.Join(tmp, "bob")
	o := new(outputs)
	gw, config := startNewGateway(t, o, bin, gwDir, func() string {
		config := filepath.Join(tmp, "gateway.yaml")
		cfg := fmt.Sprintf("listen:\n  - transport: tcp\n    address: 127.0.0.1:%d\n  - transport: quic\n    address: 127.0.0.1:%d\nops:\n  listen: \"\"\n", freePort(t), freePort(t))
		if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return config
	})
	for _, u := range []struct{ name, dir string }{{"alice", aliceDir}, {"bob", bobDir}} {
		line := strings.TrimSpace(mustRun(t, o, bin, "invite-"+u.name, "invite", "--state", gwDir, "--config", config))
		mustRun(t, o, bin, "register-"+u.name, "register", "--invite", line, "--name", u.name, "--state", u.dir)
	}
	const count = 20
	l := start(t, o, bin, "listen", "listen", "--state", bobDir, "--json", "--count", strconv.Itoa(count), "--log-level", "info")
	l.waitFor(t, "listening", 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := runTestnetCmd(t, ctx, "chat", "--state", aliceDir, "--to", "bob", "--tag", "t1", "--count", strconv.Itoa(count),
		"--size", "3000", "--parallel", "4", "--stats", "20ms", "--for", "50s", "--log-level", "error")
	if err != nil {
		t.Fatalf("chat: %v\n%s", err, out)
	}
	if err := l.wait(t, 30*time.Second); err != nil {
		t.Fatalf("listen: %v\n%s", err, l.stderr.String())
	}
	stopGateway(t, gw)

	sent := map[int]bool{}
	stats, sessions := 0, 0
	var done scenario.ChatEvent
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var e scenario.ChatEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("chat printed %q: %v", line, err)
		}
		switch e.Ev {
		case "sent":
			if sent[e.N] {
				t.Errorf("message %d reported sent twice", e.N)
			}
			sent[e.N] = true
			if e.Start == nil || e.Start.After(e.T) {
				t.Errorf("message %d: start %v, stored %v", e.N, e.Start, e.T)
			}
		case "stats":
			stats++
			if len(e.Paths) == 0 {
				t.Errorf("stats without paths: %s", line)
			}
		case "session":
			sessions++
		case "done":
			done = e
		}
	}
	if len(sent) != count || done.Stored != count || done.Sent != count || sessions != 1 {
		t.Errorf("%d sent events, done %+v, %d sessions; want %d, all stored, one session\n%s", len(sent), done, sessions, count, out)
	}
	if stats == 0 {
		t.Error("no router statistics printed")
	}
	got := map[int]int{}
	for _, m := range parseMessages(t, l.stdout.String()) {
		step, n, ok := scenario.ParseTag(m.Text)
		if !ok || step != "t1" || m.From != "alice" {
			t.Errorf("bob got %q from %s", m.Text[:min(len(m.Text), 40)], m.From)
			continue
		}
		got[n]++
	}
	for n := range count {
		if got[n] != 1 {
			t.Errorf("message %d shown %d times, want once", n, got[n])
		}
	}
}
