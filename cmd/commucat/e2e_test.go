package main

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/commucat/commucat/core/invite"
)

// The end-to-end test runs the real binary: a gateway and two clients as
// separate processes on loopback.

func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "commucat")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// freePort returns a loopback port that is free for both TCP and UDP at the
// time of the call.
func freePort(t *testing.T) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no free port for TCP and UDP")
	return 0
}

// e2eTransport is one transport the end-to-end test runs over, with the
// gateway-side parameters it needs.
type e2eTransport struct {
	name   string
	params map[string]string
	client []string // extra client flags
}

// obfs4proxy is the path of an unmodified obfs4proxy built by the test, for
// the Tor PT endpoint.
var obfs4proxy string

// e2eTransports are the built-in transports, each served by the gateway on
// its own port, and an unmodified Tor PT (obfs4proxy) as a managed proxy.
func e2eTransports() []e2eTransport {
	return []e2eTransport{
		{name: "tcp"},
		{name: "quic"},
		{name: "kcp"},
		{name: "websocket"},
		{name: "obfs4"},
		{name: "reality"}, // cover: the gateway's own decoy site
		{name: "pt", params: map[string]string{"binary": obfs4proxy, "method": "obfs4"}, client: []string{"--pt", "obfs4=" + obfs4proxy}},
		{name: "tlsplain"}, // the example third-party plugin, dropped into plugins/
	}
}

// gatewayConfig writes a configuration file serving every transport of
// e2eTransports on its own loopback port, and returns its path.
func gatewayConfig(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("listen:\n")
	for _, tr := range e2eTransports() {
		fmt.Fprintf(&b, "  - transport: %s\n    address: 127.0.0.1:%d\n", tr.name, freePort(t))
		if len(tr.params) > 0 {
			b.WriteString("    params:\n")
			for k, v := range tr.params {
				fmt.Fprintf(&b, "      %s: %q\n", k, v)
			}
		}
	}
	fmt.Fprintf(&b, "ops:\n  listen: 127.0.0.1:%d\n", freePort(t))
	b.WriteString("log:\n  level: debug\n  format: json\n")
	path := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// syncBuffer is a bytes.Buffer safe for a writer process and a reading test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is one started commucat process.
type proc struct {
	name           string
	cmd            *exec.Cmd
	stdout, stderr syncBuffer
	done           chan struct{}
	err            error
}

// outputs collects everything every process printed, for the secrets check.
type outputs struct {
	mu  sync.Mutex
	all []*proc
}

func (o *outputs) add(p *proc) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.all = append(o.all, p)
}

func start(t *testing.T, o *outputs, bin, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	p.cmd.Env = append(os.Environ(), "COMMUCAT_STATE=") // only --state counts
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill() // only the process this test started
			<-p.done
		}
	})
	o.add(p)
	return p
}

// wait waits for the process to exit, at most d.
func (p *proc) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		t.Fatalf("%s did not exit within %v\nstdout:\n%s\nstderr:\n%s", p.name, d, p.stdout.String(), p.stderr.String())
		return nil
	}
}

// waitFor waits until the process has printed s on stdout or stderr.
func (p *proc) waitFor(t *testing.T, s string, d time.Duration) {
	t.Helper()
	if err := p.printed(s, d); err != nil {
		t.Fatal(err)
	}
}

// errExited is printed's error when the process exited first.
var errExited = errors.New("exited")

// printed waits until p printed s, for at most d. It fails, wrapping
// errExited, if p exits first.
func (p *proc) printed(s string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if strings.Contains(p.stdout.String(), s) || strings.Contains(p.stderr.String(), s) {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s %w (%v) before printing %q\nstdout:\n%s\nstderr:\n%s", p.name, errExited, p.err, s, p.stdout.String(), p.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s did not print %q within %v\nstdout:\n%s\nstderr:\n%s", p.name, s, d, p.stdout.String(), p.stderr.String())
}

// run runs a short command to completion and returns its stdout.
func run(t *testing.T, o *outputs, bin, name string, args ...string) (string, error) {
	t.Helper()
	p := start(t, o, bin, name, args...)
	err := p.wait(t, 60*time.Second)
	return p.stdout.String(), err
}

func mustRun(t *testing.T, o *outputs, bin, name string, args ...string) string {
	t.Helper()
	out, err := run(t, o, bin, name, args...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", name, err, o.all[len(o.all)-1].stderr.String())
	}
	return out
}

func startGateway(t *testing.T, o *outputs, bin, dir, config string) *proc {
	t.Helper()
	p := start(t, o, bin, "gateway", "gateway", "--state", dir, "--config", config)
	p.waitFor(t, "make an invite", 30*time.Second)
	return p
}

// startNewGateway starts the gateway on the configuration file that
// writeConfig writes with ports found free (freePort). Such a port may be
// taken by another process before the gateway binds it; then it tries
// again with a new configuration, at most five times. It returns the
// gateway and the configuration it runs on.
func startNewGateway(t *testing.T, o *outputs, bin, dir string, writeConfig func() string) (*proc, string) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		config := writeConfig()
		p := start(t, o, bin, "gateway", "gateway", "--state", dir, "--config", config)
		err := p.printed("make an invite", 30*time.Second)
		switch {
		case err == nil:
			return p, config
		case attempt < 5 && errors.Is(err, errExited) && strings.Contains(p.stderr.String(), "address already in use"):
			t.Logf("attempt %d: a port was taken before the gateway bound it; trying new ports", attempt)
		default:
			t.Fatal(err)
		}
	}
}

func stopGateway(t *testing.T, p *proc) {
	t.Helper()
	select {
	case <-p.done:
		t.Fatalf("gateway exited early: %v\nstdout:\n%s\nstderr:\n%s", p.err, p.stdout.String(), p.stderr.String())
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.wait(t, 30*time.Second); err != nil {
		t.Fatalf("gateway exit after SIGTERM: %v\n%s", err, p.stderr.String())
	}
}

type jsonMessage struct {
	ID, From, Text string
}

func parseMessages(t *testing.T, out string) []jsonMessage {
	t.Helper()
	var msgs []jsonMessage
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var m jsonMessage
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("listen --json printed %q: %v", line, err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary; skipped with -short")
	}
	bin := buildBinary(t)
	obfs4proxy = filepath.Join(filepath.Dir(bin), "obfs4proxy")
	goBuild(t, obfs4proxy, "gitlab.com/yawning/obfs4.git/obfs4proxy")
	tmp := t.TempDir()
	gwDir, aliceDir, bobDir := filepath.Join(tmp, "gw"), filepath.Join(tmp, "alice"), filepath.Join(tmp, "bob")
	// The example third-party plugin, built from its own module and
	// dropped into the plugins folder of the gateway and of both clients.
	plugin := filepath.Join(filepath.Dir(bin), "commucat-transport-tlsplain")
	build := exec.Command("go", "build", "-o", plugin, ".")
	build.Dir = filepath.Join("..", "..", "plugins", "examples", "tlsplain")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the example plugin: %v\n%s", err, out)
	}
	for _, d := range []string{gwDir, aliceDir, bobDir} {
		if err := os.MkdirAll(filepath.Join(d, "plugins"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o700); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(plugin)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "plugins", filepath.Base(plugin)), b, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	o := new(outputs)
	top := t // processes that outlive a subtest are owned by the test
	gw, config := startNewGateway(t, o, bin, gwDir, func() string { return gatewayConfig(t, tmp) })
	for _, f := range []string{"gateway.key", "signing.key", "gateway.db"} {
		fi, err := os.Stat(filepath.Join(gwDir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v, err %v; want 0600", f, fi.Mode(), err)
		}
	}
	if fi, _ := os.Stat(gwDir); fi.Mode().Perm() != 0o700 {
		t.Fatalf("state directory mode %v, want 0700", fi.Mode().Perm())
	}

	aliceInvite := strings.TrimSpace(mustRun(t, o, bin, "invite-alice", "invite", "--state", gwDir))
	bobInvite := strings.TrimSpace(mustRun(t, o, bin, "invite-bob", "invite", "--state", gwDir))
	var codes []string
	for _, line := range []string{aliceInvite, bobInvite} {
		in, err := invite.Parse(line)
		if err != nil {
			t.Fatalf("invite printed %q: %v", line, err)
		}
		codes = append(codes, in.Code)
	}
	invitesOut := len(o.all) // the invite commands' stdout carries the codes by design

	mustRun(t, o, bin, "register-alice", "register", "--invite", aliceInvite, "--name", "alice", "--state", aliceDir)
	mustRun(t, o, bin, "register-bob", "register", "--invite", bobInvite, "--name", "bob", "--state", bobDir)
	fi, err := os.Stat(filepath.Join(aliceDir, "device.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("device.key: %v %v, want mode 0600", fi, err)
	}

	t.Run("used code refused", func(t *testing.T) {
		_, err := run(t, o, bin, "register-reuse", "register", "--invite", bobInvite, "--name", "carol", "--state", filepath.Join(tmp, "carol"))
		stderr := o.all[len(o.all)-1].stderr.String()
		if err == nil || !strings.Contains(stderr, "already used") {
			t.Fatalf("reusing a code: err %v, stderr %q; want a refusal saying the code is already used", err, stderr)
		}
	})

	t.Run("online delivery", func(t *testing.T) {
		l := start(t, o, bin, "listen-online", "listen", "--state", bobDir, "--json", "--count", "1", "--log-level", "info")
		l.waitFor(t, "listening", 30*time.Second)
		mustRun(t, o, bin, "send-online", "send", "--state", aliceDir, "--to", "bob", "hello bob")
		if err := l.wait(t, 30*time.Second); err != nil {
			t.Fatalf("listen: %v\n%s", err, l.stderr.String())
		}
		msgs := parseMessages(t, l.stdout.String())
		if len(msgs) != 1 || msgs[0].From != "alice" || msgs[0].Text != "hello bob" {
			t.Fatalf("bob got %+v, want one message from alice", msgs)
		}
	})

	for _, tr := range e2eTransports() {
		t.Run("over "+tr.name, func(t *testing.T) {
			l := start(t, o, bin, "listen-"+tr.name, append([]string{"listen", "--state", bobDir, "--json", "--count", "1", "--log-level", "info", "--transport", tr.name}, tr.client...)...)
			l.waitFor(t, "listening", 30*time.Second)
			mustRun(t, o, bin, "send-"+tr.name, append([]string{"send", "--state", aliceDir, "--to", "bob", "--transport", tr.name}, append(tr.client, "hello over "+tr.name)...)...)
			if err := l.wait(t, 30*time.Second); err != nil {
				t.Fatalf("listen: %v\n%s", err, l.stderr.String())
			}
			msgs := parseMessages(t, l.stdout.String())
			if len(msgs) != 1 || msgs[0].Text != "hello over "+tr.name {
				t.Fatalf("bob got %+v, want the message sent over %s", msgs, tr.name)
			}
			if !strings.Contains(l.stderr.String(), "transport="+tr.name) {
				t.Fatalf("listen did not use %s: %s", tr.name, l.stderr.String())
			}
		})
	}

	t.Run("offline delivery across a gateway restart", func(t *testing.T) {
		mustRun(t, o, bin, "send-offline-1", "send", "--state", aliceDir, "--to", "bob", "first while away")
		mustRun(t, o, bin, "send-offline-2", "send", "--state", aliceDir, "--to", "bob", "second while away")
		stopGateway(t, gw)
		gw = startGateway(top, o, bin, gwDir, config)
		l := start(t, o, bin, "listen-offline", "listen", "--state", bobDir, "--json", "--count", "2")
		if err := l.wait(t, 30*time.Second); err != nil {
			t.Fatalf("listen: %v\n%s", err, l.stderr.String())
		}
		msgs := parseMessages(t, l.stdout.String())
		if len(msgs) != 2 || msgs[0].Text != "first while away" || msgs[1].Text != "second while away" {
			t.Fatalf("bob got %+v, want the two messages in order", msgs)
		}
	})

	t.Run("never shown twice", func(t *testing.T) {
		l := start(t, o, bin, "listen-again", "listen", "--state", bobDir, "--json", "--for", "2s")
		if err := l.wait(t, 30*time.Second); err != nil {
			t.Fatalf("listen: %v\n%s", err, l.stderr.String())
		}
		if out := strings.TrimSpace(l.stdout.String()); out != "" {
			t.Fatalf("messages shown again: %s", out)
		}
	})

	t.Run("text output escapes what would drive the terminal", func(t *testing.T) {
		// A sender's text tries to clear the screen, set the window
		// title and add a line that passes for a message from admin.
		body := "hi\n2026-01-02 03:04:05  admin: your account is locked\x1b[2J\x1b]0;owned\x07"
		mustRun(t, o, bin, "send-controls", "send", "--state", aliceDir, "--to", "bob", body)
		l := start(t, o, bin, "listen-text", "listen", "--state", bobDir, "--count", "1")
		if err := l.wait(t, 30*time.Second); err != nil {
			t.Fatalf("listen: %v\n%s", err, l.stderr.String())
		}
		out := l.stdout.String()
		if strings.ContainsAny(out, "\x1b\x07") {
			t.Errorf("listen printed control characters: %q", out)
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(lines) != 2 || !strings.Contains(lines[0], "alice: hi") || !strings.HasPrefix(lines[1], "\t2026-01-02 03:04:05  admin:") {
			t.Errorf("listen printed %q, want alice's first line and the second indented under it", out)
		}
	})

	t.Run("a retry with --id is stored once", func(t *testing.T) {
		const id = "00112233445566778899aabbccddeeff"
		for i := range 2 {
			out := mustRun(t, o, bin, "send-id-"+strconv.Itoa(i), "send", "--state", aliceDir, "--to", "bob", "--id", id, "sent twice")
			if !strings.Contains(out, id) {
				t.Fatalf("send --id printed %q, want the id", out)
			}
		}
		// The first listen waits for the message however slow the
		// machine; the second must show nothing more.
		l := start(t, o, bin, "listen-id", "listen", "--state", bobDir, "--json", "--count", "1")
		if err := l.wait(t, 30*time.Second); err != nil {
			t.Fatalf("listen: %v\n%s", err, l.stderr.String())
		}
		if msgs := parseMessages(t, l.stdout.String()); len(msgs) != 1 || msgs[0].Text != "sent twice" || msgs[0].ID != id {
			t.Fatalf("bob got %+v, want the message", msgs)
		}
		l = start(t, o, bin, "listen-id-again", "listen", "--state", bobDir, "--json", "--for", "2s")
		if err := l.wait(t, 30*time.Second); err != nil {
			t.Fatalf("listen: %v\n%s", err, l.stderr.String())
		}
		if msgs := parseMessages(t, l.stdout.String()); len(msgs) != 0 {
			t.Fatalf("bob got %+v after the message, want it once", msgs)
		}
		if _, err := run(t, o, bin, "send-bad-id", "send", "--state", aliceDir, "--to", "bob", "--id", "xyz", "hi"); err == nil {
			t.Fatal("send --id xyz succeeded")
		}
	})

	t.Run("ops endpoint", func(t *testing.T) {
		i := strings.Index(gw.stdout.String(), "ops:       http://")
		if i < 0 {
			t.Fatalf("gateway printed no ops address:\n%s", gw.stdout.String())
		}
		base := strings.Fields(gw.stdout.String()[i+len("ops:       "):])[0]
		base = strings.TrimSuffix(base, "/metrics")
		for path, want := range map[string]string{
			"/livez":   "ok",
			"/readyz":  "ok",
			"/metrics": "commucat_gateway_handshakes_total{result=\"ok\"}",
			"/nope":    `"status":404`,
		} {
			resp, err := http.Get(base + path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !strings.Contains(string(body), want) {
				t.Errorf("GET %s: %d %q, want it to contain %q", path, resp.StatusCode, body, want)
			}
		}
	})

	t.Run("unknown recipient", func(t *testing.T) {
		_, err := run(t, o, bin, "send-unknown", "send", "--state", aliceDir, "--to", "mallory", "hi")
		if err == nil {
			t.Fatal("sending to an unknown user succeeded")
		}
	})

	stopGateway(t, gw)

	t.Run("no secrets in output", func(t *testing.T) {
		secrets := map[string]string{}
		for i, c := range codes {
			secrets["registration code "+strconv.Itoa(i)] = c
		}
		for _, f := range []string{filepath.Join(gwDir, "gateway.key"), filepath.Join(gwDir, "signing.key"), filepath.Join(aliceDir, "device.key"), filepath.Join(bobDir, "device.key")} {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			body := strings.TrimSpace(lines[len(lines)-1])
			raw, err := base64.StdEncoding.DecodeString(body)
			if err != nil || len(raw) < 32 {
				t.Fatalf("%s: cannot read the key body", f)
			}
			secrets[f+" (base64)"] = body
			secrets[f+" (hex)"] = hex.EncodeToString(raw[:32])
			secrets[f+" (base64url)"] = base64.RawURLEncoding.EncodeToString(raw[:32])
			secrets[f+" (raw)"] = string(raw[:32])
		}
		// Transport private keys (TLS keys in PEM, shared keys): every long
		// base64 line of their files.
		filepath.WalkDir(filepath.Join(gwDir, "transports"), func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasSuffix(path, "state.json") { // obfs4's private key and seed
				var st map[string]any
				if err := json.Unmarshal(b, &st); err != nil {
					t.Fatalf("%s: %v", path, err)
				}
				for _, k := range []string{"private-key", "drbg-seed"} {
					if v, ok := st[k].(string); ok && len(v) >= 32 {
						secrets[path+" "+k] = v
					}
				}
				return nil
			}
			if strings.HasSuffix(path, "secret-path") {
				secrets[path] = strings.TrimSpace(string(b))
				return nil
			}
			if !strings.HasSuffix(path, ".key") {
				return nil
			}
			for i, line := range strings.Split(string(b), "\n") {
				if line = strings.TrimSpace(line); len(line) >= 32 && !strings.HasPrefix(line, "-----") {
					secrets[fmt.Sprintf("%s line %d", path, i+1)] = line
				}
			}
			return nil
		})
		if len(secrets) < 8 {
			t.Fatalf("only %d secrets collected; the check would prove little", len(secrets))
		}
		for i, p := range o.all {
			streams := map[string]string{"stderr": p.stderr.String()}
			if i >= invitesOut || !strings.HasPrefix(p.name, "invite") {
				streams["stdout"] = p.stdout.String()
			}
			for stream, text := range streams {
				for what, secret := range secrets {
					if strings.Contains(text, secret) {
						t.Errorf("%s %s contains the %s", p.name, stream, what)
					}
					// Any 12-character piece of a secret's text form.
					for j := 0; j+12 <= len(secret) && !strings.HasSuffix(what, "(raw)"); j += 4 {
						if strings.Contains(text, secret[j:j+12]) {
							t.Errorf("%s %s contains part of the %s", p.name, stream, what)
							break
						}
					}
				}
			}
		}
	})
}
