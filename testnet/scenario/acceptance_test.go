package scenario

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commucat/commucat/testnet/netns"
	"github.com/commucat/commucat/testnet/topology"
	"github.com/google/go-cmp/cmp"
)

// The acceptance test of the probes: `commucat probe`, run from a client
// host of the test network under a shipped censor profile, against
// targets served inside the network (the cover website, the resolver,
// the gateway), must classify what the profile does. It reads the OONI
// JSON lines the probe wrote.

// measurement is the part of an OONI measurement the checks read.
type measurement struct {
	TestName string `json:"test_name"`
	Input    string `json:"input"`
	TestKeys struct {
		Failure         *string `json:"failure"`
		FailedOperation *string `json:"failed_operation"`
		// Blocking is null, false or a string; kept raw.
		Blocking       json.RawMessage `json:"blocking"`
		TLSHandshakes  []handshakeKeys `json:"tls_handshakes"`
		QUICHandshakes []handshakeKeys `json:"quic_handshakes"`
		// Probe-specific keys.
		XControlFailure       *string  `json:"x_control_failure"`
		XSNIBlocked           *bool    `json:"x_sni_blocked"`
		XCutoffBytes          *int64   `json:"x_cutoff_bytes"`
		XFETBlocked           *bool    `json:"x_fet_blocked"`
		XFETPackets           int      `json:"x_fet_packets"`
		XResidualBlockSeconds *float64 `json:"x_residual_block_seconds"`
		XResidualBlockOngoing *bool    `json:"x_residual_block_ongoing"`
		XDNSDuplicates        int      `json:"x_dns_duplicate_responses"`
		XDNSConsistency       *string  `json:"x_dns_consistency"`
	} `json:"test_keys"`
}

// handshakeKeys is one entry of tls_handshakes or quic_handshakes.
type handshakeKeys struct {
	ServerName string  `json:"server_name"`
	Failure    *string `json:"failure"`
}

// blocking returns the blocking key as a string: "null", "false" or the
// value.
func (m measurement) blocking() string {
	var s string
	if json.Unmarshal(m.TestKeys.Blocking, &s) == nil {
		return s
	}
	return string(m.TestKeys.Blocking)
}

// failure returns the measurement's failure and failed operation, "" for none.
func (m measurement) failure() (string, string) {
	return deref(m.TestKeys.Failure), deref(m.TestKeys.FailedOperation)
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// readMeasurements parses the OONI JSON lines of path.
func readMeasurements(t *testing.T, path string) []measurement {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the probe wrote no report: %v", err)
	}
	var ms []measurement
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var m measurement
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		ms = append(ms, m)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return ms
}

// find returns the measurements of test (without the x_commucat_ prefix)
// whose input is input ("" for any).
func find(ms []measurement, test, input string) []measurement {
	var out []measurement
	for _, m := range ms {
		if m.TestName == "x_commucat_"+test && (input == "" || m.Input == input) {
			out = append(out, m)
		}
	}
	return out
}

// one returns the single measurement of test and input, failing otherwise.
func one(t *testing.T, ms []measurement, test, input string) measurement {
	t.Helper()
	got := find(ms, test, input)
	if len(got) != 1 {
		var names []string
		for _, m := range ms {
			names = append(names, m.TestName+" "+m.Input)
		}
		t.Fatalf("%d measurements of %s for %q, want 1; the report has %q", len(got), test, input, names)
	}
	return got[0]
}

// acceptanceCase is one profile and the probe run under it.
type acceptanceCase struct {
	name, profile string
	seed          uint64
	// args are the probe's arguments before --report, expanded by the
	// runner ({addr:HOST}, {port:TRANSPORT}).
	args []string
	// download serves the long download of the cover host.
	download bool
	check    func(t *testing.T, ms []measurement)
}

// downloadSize is the cover's long download: well past the TSPU's cut-off.
const downloadSize = 256 << 10

// downloadPort is where the cover host serves it over HTTPS.
const downloadPort = "8444"

func acceptanceCases() []acceptanceCase {
	return []acceptanceCase{
		{
			// The listed name is reset at the TLS handshake; the cover's
			// own name, tried first to the same address, is not.
			name: "gfw-sni/tls", profile: "gfw-sni", seed: 2,
			args: []string{"--target", "{addr:cover}:443", "--sni", "blocked.example", "--control-sni", DefaultCoverName,
				"--probes", "tls", "--insecure"},
			check: func(t *testing.T, ms []measurement) {
				m := one(t, ms, "sni_blocking", "")
				f, op := m.failure()
				got := map[string]string{"failure": f, "failed_operation": op, "blocking": m.blocking(),
					"x_control_failure": deref(m.TestKeys.XControlFailure), "x_sni_blocked": fmt.Sprint(deref(m.TestKeys.XSNIBlocked))}
				want := map[string]string{"failure": "connection_reset", "failed_operation": "tls_handshake", "blocking": "tls",
					"x_control_failure": "", "x_sni_blocked": "true"}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("sni_blocking (-want +got):\n%s", diff)
				}
				hs := map[string]string{}
				for _, h := range m.TestKeys.TLSHandshakes {
					if _, seen := hs[h.ServerName]; !seen { // the first handshake of each name
						hs[h.ServerName] = deref(h.Failure)
					}
				}
				if diff := cmp.Diff(map[string]string{DefaultCoverName: "", "blocked.example": "connection_reset"}, hs); diff != "" {
					t.Errorf("first TLS handshake of each name, failure (-want +got):\n%s", diff)
				}
			},
		},
		{
			// The injector answers for the listed name before the
			// resolver: two answers to one query, blocking dns. The
			// cover's name gets the resolver's answer alone, an address
			// of the testnet's 198.18.0.0/15, declared public so that it
			// is not taken for a bogon.
			name: "gfw-sni/dns", profile: "gfw-sni", seed: 2,
			args: []string{"--target", "blocked.example", "--target", DefaultCoverName, "--system-resolver", "{addr:dns}:53",
				"--dns-wait-duplicates", "500ms", "--dns-public-range", "198.18.0.0/15", "--probes", "dns"},
			check: func(t *testing.T, ms []measurement) {
				b := one(t, ms, "dns_consistency", "blocked.example")
				got := []string{b.blocking(), deref(b.TestKeys.XDNSConsistency), fmt.Sprint(b.TestKeys.XDNSDuplicates > 0)}
				if diff := cmp.Diff([]string{"dns", "inconsistent", "true"}, got); diff != "" {
					t.Errorf("blocked.example: blocking, x_dns_consistency, duplicate answers (-want +got):\n%s", diff)
				}
				c := one(t, ms, "dns_consistency", DefaultCoverName)
				if c.TestKeys.XDNSDuplicates != 0 {
					t.Errorf("%s: %d duplicate answers, want none (not listed)", DefaultCoverName, c.TestKeys.XDNSDuplicates)
				}
				if f, _ := c.failure(); f != "" || c.blocking() == "dns" {
					t.Errorf("%s: failure %q, blocking %q; want an answer that blocks nothing", DefaultCoverName, f, c.blocking())
				}
			},
		},
		{
			// Every UDP flow but DNS is dropped: the QUIC handshakes to
			// the gateway's QUIC endpoint time out.
			name: "udp-block", profile: "udp-block", seed: 3,
			args: []string{"--target", "{addr:gateway}:{port:quic}", "--sni", DefaultCoverName, "--control-sni", "www.example.com",
				"--probes", "quic", "--insecure", "--handshake-timeout", "4s"},
			check: func(t *testing.T, ms []measurement) {
				m := one(t, ms, "quic_handshake", "")
				f, op := m.failure()
				got := []string{f, op, m.blocking()}
				if diff := cmp.Diff([]string{"generic_timeout_error", "quic_handshake", "udp"}, got); diff != "" {
					t.Errorf("failure, failed_operation, blocking (-want +got):\n%s", diff)
				}
				if len(m.TestKeys.QUICHandshakes) == 0 {
					t.Error("no quic_handshakes")
				}
				for _, h := range m.TestKeys.QUICHandshakes {
					if deref(h.Failure) != "generic_timeout_error" {
						t.Errorf("QUIC handshake with %s: failure %q, want generic_timeout_error", h.ServerName, deref(h.Failure))
					}
				}
			},
		},
		{
			// A long download from the cover site over TLS freezes after
			// 16-20 KB from the server.
			name: "tspu-16k", profile: "tspu-16k", seed: 4, download: true,
			args: []string{"--target", "https://{addr:cover}:" + downloadPort + "/large.bin", "--probes", "throttle",
				"--stall", "3s", "--download-time", "30s", "--timeout", "40s"},
			check: func(t *testing.T, ms []measurement) {
				m := one(t, ms, "throttling", "")
				if m.blocking() != "throttling" {
					t.Errorf("blocking %q, want throttling", m.blocking())
				}
				n := m.TestKeys.XCutoffBytes
				if n == nil {
					t.Fatal("no x_cutoff_bytes")
				}
				// The cut-off counts the bytes the client read: TLS records
				// and headers, drawn in [16384, 20480] by the profile.
				if *n < 15000 || *n > 20480 {
					t.Errorf("x_cutoff_bytes %d, want between 15000 and 20480", *n)
				}
			},
		},
		{
			// Random first packets to the cover's port 80 are dropped
			// with probability 0.26, then the 3-tuple for 180 s: longer
			// than the probe follows it, so the block is reported ongoing.
			name: "gfw-fet", profile: "gfw-fet", seed: 5,
			args: []string{"--target", "{addr:cover}:80", "--probes", "fet", "--fet-repeats", "30",
				"--fet-max-residual", "12s", "--timeout", "150s", "--budget", "170s"},
			check: func(t *testing.T, ms []measurement) {
				m := one(t, ms, "fet", "")
				k := m.TestKeys
				if !deref(k.XFETBlocked) {
					t.Fatalf("x_fet_blocked %v after %d random packets, want true", k.XFETBlocked, k.XFETPackets)
				}
				if k.XResidualBlockSeconds == nil || *k.XResidualBlockSeconds <= 0 {
					t.Errorf("x_residual_block_seconds %v, want a positive lower bound", k.XResidualBlockSeconds)
				}
				if !deref(k.XResidualBlockOngoing) {
					t.Errorf("x_residual_block_ongoing %v, want true (the profile's residual is 180 s)", k.XResidualBlockOngoing)
				}
				if m.blocking() != "tcp_ip" {
					t.Errorf("blocking %q, want tcp_ip", m.blocking())
				}
			},
		},
	}
}

// acceptanceScenario is the network of one case: a client, the gateway
// (reality and quic), the cover website and the resolver, with the
// probe run from the client.
func acceptanceScenario(c acceptanceCase) *Scenario {
	args := append([]string{"probe"}, c.args...)
	args = append(args, "--report", "{dir}/ooni.jsonl")
	return &Scenario{
		Name:     "acceptance-" + strings.ReplaceAll(c.name, "/", "-"),
		Seed:     c.seed,
		Duration: 4 * time.Minute,
		Drain:    time.Second,
		Hosts: []Host{
			{Name: "alice"},
			{Name: "gateway", Role: RoleGateway},
			{Name: "cover", Role: RoleCover, Names: []string{DefaultCoverName}},
			{Name: "dns", Role: RoleResolver, Records: map[string]string{DefaultCoverName: "cover", "blocked.example": "cover"}},
		},
		Censor: &Censor{Profile: c.profile},
		Setup:  []Program{{Gateway: &Gateway{Host: "gateway", Transports: []string{"reality", "quic"}}}},
		Run:    []Program{{Exec: &Exec{Host: "alice", Args: args, Timeout: 3 * time.Minute}}},
	}
}

// downloadServer serves downloadSize bytes at /large.bin over HTTPS on
// the cover host's downloadPort, with a certificate for the cover's
// address that SSL_CERT_FILE makes the probe trust. It is started from
// OnRun, once the network is up, and stopped by stop.
type downloadServer struct {
	caFile string
	mu     sync.Mutex
	srv    *http.Server
	wg     sync.WaitGroup
}

// newDownloadServer returns a server not yet started; the certificate
// names the cover's address, known once the network is up, so start
// makes it and writes caFile.
func newDownloadServer(t *testing.T) *downloadServer {
	t.Helper()
	return &downloadServer{caFile: filepath.Join(t.TempDir(), "download-ca.pem")}
}

// start listens on host's downloadPort and serves.
func (d *downloadServer) start(ctx context.Context, n *topology.Net, host string) error {
	ip := n.Addr(host)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: ip.String()},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:           []net.IP{ip.AsSlice()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(d.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return err
	}
	ln, err := n.Listen(ctx, host, "tcp", net.JoinHostPort(ip.String(), downloadPort))
	if err != nil {
		return err
	}
	body := bytes.Repeat([]byte("commucat download "), downloadSize/18+1)[:downloadSize]
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/octet-stream")
			http.ServeContent(w, r, "large.bin", time.Time{}, bytes.NewReader(body))
		}),
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, NextProtos: []string{"http/1.1"}},
	}
	d.mu.Lock()
	d.srv = srv
	d.mu.Unlock()
	d.wg.Go(func() { srv.ServeTLS(ln, "", "") })
	return nil
}

// stop closes the server and waits for it.
func (d *downloadServer) stop() {
	d.mu.Lock()
	srv := d.srv
	d.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
	d.wg.Wait()
}

// TestProbeAcceptance runs `commucat probe` from the client host under
// gfw-sni, udp-block, tspu-16k and gfw-fet, against the cover website,
// the resolver and the gateway, and checks the classification in the
// OONI measurements it wrote.
func TestProbeAcceptance(t *testing.T) {
	requireTestnet(t)
	bin := commucatBinary(t)
	for _, c := range acceptanceCases() {
		t.Run(c.name, func(t *testing.T) {
			var opt Options
			opt.Binary, opt.Dir = bin, t.TempDir()
			if c.download {
				d := newDownloadServer(t)
				t.Setenv("SSL_CERT_FILE", d.caFile) // the probe inherits the environment
				opt.OnRun = func(ctx context.Context, n *topology.Net) error { return d.start(ctx, n, "cover") }
				defer d.stop()
			}
			start := time.Now()
			rep, err := Run(context.Background(), acceptanceScenario(c), opt)
			if err != nil && !errors.Is(err, ErrFailed) {
				t.Fatalf("run: %v", err)
			}
			t.Logf("%s: %.1fs", c.name, time.Since(start).Seconds())
			for _, f := range rep.Failed() {
				t.Errorf("check failed: %s: %s", f.Name, f.Detail)
			}
			ms := readMeasurements(t, filepath.Join(rep.Dir, "ooni.jsonl"))
			for _, m := range ms {
				f, op := m.failure()
				k := m.TestKeys
				t.Logf("%s %s: blocking %s, failure %q at %q; x_cutoff_bytes %v, x_fet_blocked %v, x_fet_packets %d, x_residual_block_seconds %v, ongoing %v, x_dns_duplicate_responses %d",
					m.TestName, m.Input, m.blocking(), f, op, deref(k.XCutoffBytes), deref(k.XFETBlocked), k.XFETPackets,
					deref(k.XResidualBlockSeconds), deref(k.XResidualBlockOngoing), k.XDNSDuplicates)
			}
			c.check(t, ms)
			if t.Failed() {
				keepLogs(t, rep)
			}
		})
	}
}

// firstMessageScenario is the network of one first-message run: bob
// listens over reality (which each of these profiles lets through), and
// alice's `commucat send`, started at sendAt, delivers one message with
// the client's transport probes on or off (--no-probe). order, if set,
// is the gateway's transports in invite order.
func firstMessageScenario(profile string, order []string, probe bool) *Scenario {
	s := Standard("first-message-"+profile, profile, order...)
	s.Hosts = slices.DeleteFunc(s.Hosts, func(h Host) bool { return h.Role == RoleProber })
	s.Seed = 1
	s.Duration = 4 * time.Minute
	s.Drain = time.Second
	args := []string{"send", "--state", "{state:alice}", "--to", "bob", "--timeout", "90s"}
	if !probe {
		args = append(args, "--no-probe")
	}
	args = append(args, "first message")
	s.Run = []Program{
		{Listen: &Listen{User: "bob", Transport: "reality", Count: 1}},
		{Exec: &Exec{Host: "alice", Args: args, Timeout: 2 * time.Minute, At: sendAt}},
	}
	return s
}

// sendAt gives bob's listener time to connect before alice starts.
const sendAt = 6 * time.Second

// firstMessageSeconds is the time from the start of alice's send process
// to bob's listener printing the message, from the report's program
// start times and the listener's --json output.
func firstMessageSeconds(rep *Report) (float64, error) {
	t0 := rep.Started.Add(time.Duration(rep.SetupSeconds * float64(time.Second)))
	var sendStart time.Time
	var received []byte
	for _, p := range rep.Programs {
		switch p.Kind {
		case "exec":
			if p.Exit != 0 {
				return 0, fmt.Errorf("send exited %d: see %s", p.Exit, p.Log)
			}
			sendStart = t0.Add(time.Duration(p.Start * float64(time.Second)))
		case "listen":
			b, err := os.ReadFile(strings.TrimSuffix(p.Log, ".log") + ".out")
			if err != nil {
				return 0, err
			}
			received = b
		}
	}
	line, _, _ := bytes.Cut(received, []byte("\n"))
	var m struct {
		Received time.Time `json:"received"`
	}
	if err := json.Unmarshal(line, &m); err != nil {
		return 0, fmt.Errorf("no message received (%q): %w", line, err)
	}
	if sendStart.IsZero() {
		return 0, errors.New("send did not run")
	}
	return m.Received.Sub(sendStart).Seconds(), nil
}

// BenchmarkFirstMessage measures, under each profile of the acceptance
// test (and wan-clean for reference), the time from starting the
// client's `commucat send` to the first delivered message, with the
// client's transport probes on (the default) and off (--no-probe). The
// invite lists reality first, which none of these profiles blocks; the
// udp-block-quic-first case lists the UDP transports first. Each
// iteration is a whole testnet run: use -benchtime Nx.
//
//	go test -run '^$' -bench FirstMessage -benchtime 3x ./testnet/scenario
func BenchmarkFirstMessage(b *testing.B) {
	if err := netns.Check(); err != nil {
		b.Skip("SKIPPED (LOUDLY): the testnet benchmarks need root and /dev/net/tun: " + err.Error())
	}
	bin := filepath.Join(b.TempDir(), "commucat")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/commucat").CombinedOutput(); err != nil {
		b.Fatalf("go build ./cmd/commucat: %v\n%s", err, out)
	}
	quicFirst := []string{"quic", "kcp", "obfs4", "tcp", "reality", "websocket"}
	for _, c := range []struct {
		name, profile string
		order         []string
	}{
		{"wan-clean", "wan-clean", nil}, {"gfw-sni", "gfw-sni", nil}, {"udp-block", "udp-block", nil},
		{"tspu-16k", "tspu-16k", nil}, {"gfw-fet", "gfw-fet", nil}, {"udp-block-quic-first", "udp-block", quicFirst},
	} {
		for _, probe := range []bool{true, false} {
			mode := "on"
			if !probe {
				mode = "off"
			}
			b.Run("profile="+c.name+"/probes="+mode, func(b *testing.B) {
				var total, worst float64
				for i := 0; i < b.N; i++ {
					s := firstMessageScenario(c.profile, c.order, probe)
					s.Seed = uint64(i + 1)
					rep, err := Run(context.Background(), s, Options{Binary: bin, Dir: b.TempDir()})
					if err != nil && !errors.Is(err, ErrFailed) {
						b.Fatalf("run: %v", err)
					}
					sec, err := firstMessageSeconds(rep)
					if err != nil {
						b.Fatalf("%v (run directory %s)", err, rep.Dir)
					}
					b.Logf("seed %d: %.2fs", s.Seed, sec)
					total += sec
					worst = max(worst, sec)
				}
				b.ReportMetric(total/float64(b.N), "s/first-message")
				b.ReportMetric(worst, "s/worst")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}
