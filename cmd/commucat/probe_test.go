package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/commucat/commucat/core/handshake"
	"github.com/commucat/commucat/core/invite"
	"github.com/commucat/commucat/core/session"
	"github.com/commucat/commucat/probes/probestest"
)

// runProbeCmd runs `commucat probe args...` and returns its standard
// output and standard error.
func runProbeCmd(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	cmd := newProbeCmd()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(append([]string{"--interval", "1ms"}, args...))
	err := cmd.Execute()
	return out.String(), errOut.String(), err
}

// readReport parses a JSON-lines report.
func readReport(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ms []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("report line %q: %v", line, err)
		}
		ms = append(ms, m)
	}
	return ms
}

// tableRow returns the table's line for probe on target, or "".
func tableRow(table, target, probe string) string {
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == target && f[1] == probe {
			return line
		}
	}
	return ""
}

func TestProbeCommand(t *testing.T) {
	sys := probestest.DNSServer(t, func(name string) probestest.DNSReply {
		if name == "blocked.test." {
			return probestest.DNSReply{RCode: dnsmessage.RCodeNameError}
		}
		return probestest.DNSReply{Addrs: []netip.Addr{netip.MustParseAddr("93.184.215.14")}}
	})
	ctl := probestest.DNSServer(t, func(string) probestest.DNSReply {
		return probestest.DNSReply{Addrs: []netip.Addr{netip.MustParseAddr("93.184.215.14")}}
	})
	cert, _ := probestest.Cert(t, "blocked.test", "control.test")
	filtering := probestest.SNIServer(t, cert, "blocked.test")
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("<title>Hello there</title>")) }))
	defer site.Close()

	dir := t.TempDir()
	report := filepath.Join(dir, "report.jsonl")
	targets := filepath.Join(dir, "targets.txt")
	if err := os.WriteFile(targets, []byte("# file\nblocked.test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, err := runProbeCmd(t,
		"--targets", targets,
		"--target", filtering, "--sni", "blocked.test", "--control-sni", "control.test", "--insecure",
		"--url", site.URL+"/", "--control-url", site.URL+"/",
		"--system-resolver", sys, "--resolver", ctl,
		"--report", report)
	if err != nil {
		t.Fatalf("probe: %v\n%s", err, out)
	}
	for _, want := range []struct{ target, probe, contains string }{
		{"blocked.test", "dns_consistency", "dns_nxdomain_error (resolve)"},
		{filtering, "tcp_connect", "ok"},
		{"blocked.test@" + filtering, "sni_blocking", "connection_reset (tls_handshake)"},
		{site.URL + "/", "http_fetch", "ok"},
	} {
		row := tableRow(out, want.target, want.probe)
		if row == "" || !strings.Contains(row, want.contains) {
			t.Errorf("no %s row for %s with %q in:\n%s", want.probe, want.target, want.contains, out)
		}
	}
	ms := readReport(t, report)
	var names []string
	for _, m := range ms {
		names = append(names, m["test_name"].(string))
		if m["data_format_version"] != "0.2.0" || m["probe_cc"] != "ZZ" || m["probe_asn"] != "AS0" || m["software_name"] != "commucat" {
			t.Errorf("envelope %v", m)
		}
	}
	// Flags before the file, probes that may poison their address last.
	want := []string{"x_commucat_tcp_connect", "x_commucat_http_fetch", "x_commucat_dns_consistency", "x_commucat_sni_blocking"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("report test names (-want +got):\n%s", diff)
	}
}

func TestProbeShareLocation(t *testing.T) {
	echo := probestest.EchoServer(t)
	report := filepath.Join(t.TempDir(), "r.jsonl")
	if _, _, err := runProbeCmd(t, "--target", echo, "--probes", "tcp", "--report", report, "--share-location", "--asn", "AS3320", "--cc", "de"); err != nil {
		t.Fatal(err)
	}
	m := readReport(t, report)[0]
	if m["probe_asn"] != "AS3320" || m["probe_cc"] != "DE" {
		t.Errorf("probe_asn %v probe_cc %v", m["probe_asn"], m["probe_cc"])
	}
	out, errOut, err := runProbeCmd(t, "--target", echo, "--probes", "tcp", "--report", "-", "--asn", "AS3320", "--cc", "DE")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `"probe_asn":"AS0"`) || !strings.Contains(out, `"probe_cc":"ZZ"`) {
		t.Errorf("location written without --share-location: %s", out)
	}
	if tableRow(errOut, echo, "tcp_connect") == "" {
		t.Errorf("with --report -, the table goes to standard error; got %q", errOut)
	}
}

func TestProbeTransportsOnly(t *testing.T) {
	echo := probestest.EchoServer(t)
	state := t.TempDir()
	if err := os.Chmod(state, 0o700); err != nil {
		t.Fatal(err)
	}
	info := gatewayInfo{Gateway: "unused", Signing: "unused", Endpoints: []invite.Endpoint{
		{Transport: "tcp", Addr: echo},
		{Transport: "carrier-pigeon", Addr: echo},
	}}
	b, _ := json.Marshal(info)
	if err := os.WriteFile(filepath.Join(state, gatewayInfoFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	report := filepath.Join(state, "r.jsonl")
	out, _, err := runProbeCmd(t, "--transports-only", "--state", state, "--report", report)
	if err != nil {
		t.Fatalf("probe: %v\n%s", err, out)
	}
	if row := tableRow(out, "tcp@"+echo, "transport"); !strings.Contains(row, " ok ") {
		t.Errorf("tcp endpoint row %q in:\n%s", row, out)
	}
	if row := tableRow(out, "carrier-pigeon@"+echo, "transport"); !strings.Contains(row, "x_bad_endpoint") {
		t.Errorf("unknown transport row %q in:\n%s", row, out)
	}
	for _, m := range readReport(t, report) {
		if m["test_name"] != "x_commucat_transport" {
			t.Errorf("test_name %v", m["test_name"])
		}
	}
}

func TestProbeErrors(t *testing.T) {
	t.Setenv("COMMUCAT_STATE", "")
	empty := t.TempDir()
	if err := os.Chmod(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"nothing", nil, "nothing to probe"},
		{"unknown probe", []string{"--target", "example.org", "--probes", "dns,ping"}, `unknown probe "ping"`},
		{"transports only without state", []string{"--transports-only"}, "needs --state"},
		{"bad target", []string{"--target", "not a target"}, "bad target"},
		{"bad url", []string{"--url", "example.org:443"}, "not an http or https URL"},
		{"missing targets file", []string{"--targets", filepath.Join(t.TempDir(), "none")}, "--targets"},
		{"no gateway in state", []string{"--transports-only", "--state", empty}, "register first"},
		{"bad asn", []string{"--target", "127.0.0.1:1", "--probes", "tcp", "--share-location", "--asn", "3320"}, "Location.ASN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := runProbeCmd(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// TestSessionHandshakePlug runs the transport probe's session plug
// against the real handshake and session of a gateway on loopback.
func TestSessionHandshakePlug(t *testing.T) {
	gwKey, err := handshake.GenerateStatic()
	if err != nil {
		t.Fatal(err)
	}
	defer gwKey.Wipe()
	dev, err := handshake.GenerateStatic()
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Wipe()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		res, err := handshake.Server(ctx, c, handshake.ServerConfig{Static: gwKey, Replay: handshake.NewReplayCache(0)})
		if err != nil {
			return
		}
		keys := session.Keys{Send: res.SendKey, Recv: res.RecvKey}
		res.Wipe()
		s := session.New(c, keys, session.Config{})
		keys.Wipe()
		s.Run(ctx)
	})
	h, err := sessionHandshake(dev, gwKey.Public(), "", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
	defer pcancel()
	link, err := h(pctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	rtt, err := link.Ping(pctx)
	if err != nil || rtt <= 0 {
		t.Errorf("Ping = %v, %v", rtt, err)
	}
	if err := link.Close(); err != nil {
		t.Logf("close: %v", err)
	}
}
