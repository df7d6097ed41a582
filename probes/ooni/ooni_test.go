package ooni_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	quicgo "github.com/quic-go/quic-go"
	"go.uber.org/goleak"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/probes/ooni"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// golden compares got with testdata/name, or rewrites it under -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs (-want +got):\n%s", name, diff)
	}
}

func TestClassify(t *testing.T) {
	deadline := &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"nil", nil, ""},
		{"refused", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, ooni.FailureConnectionRefused},
		{"reset", &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, ooni.FailureConnectionReset},
		{"epipe", &net.OpError{Op: "write", Err: os.NewSyscallError("write", syscall.EPIPE)}, ooni.FailureConnectionReset},
		{"host unreachable", syscall.EHOSTUNREACH, ooni.FailureHostUnreachable},
		{"network unreachable", syscall.ENETUNREACH, ooni.FailureNetworkUnreachable},
		{"etimedout", syscall.ETIMEDOUT, ooni.FailureTimedOut},
		{"deadline", deadline, ooni.FailureGenericTimeoutError},
		{"context deadline", fmt.Errorf("dial: %w", context.DeadlineExceeded), ooni.FailureGenericTimeoutError},
		{"canceled", context.Canceled, ooni.FailureInterrupted},
		{"transport timeout", fmt.Errorf("quic: dial: %w", transport.ErrTimeout), ooni.FailureGenericTimeoutError},
		{"eof", io.EOF, ooni.FailureEOFError},
		{"unexpected eof", fmt.Errorf("read body: %w", io.ErrUnexpectedEOF), ooni.FailureEOFError},
		{"closed", net.ErrClosed, ooni.FailureConnectionAlreadyClosed},
		{"nxdomain", &net.DNSError{Err: "no such host", Name: "x.test", IsNotFound: true}, ooni.FailureDNSNXDOMAINError},
		{"dns timeout", &net.DNSError{Err: "i/o timeout", Name: "x.test", IsTimeout: true}, ooni.FailureGenericTimeoutError},
		{"dns other", &net.DNSError{Err: "server misbehaving", Name: "x.test"}, ooni.FailureDNSServerMisbehaving},
		{"dns sentinels", fmt.Errorf("x: %w", ooni.ErrDNSNXDOMAIN), ooni.FailureDNSNXDOMAINError},
		{"servfail", ooni.ErrDNSServfail, ooni.FailureDNSServfailError},
		{"refused rcode", ooni.ErrDNSRefused, ooni.FailureDNSRefusedError},
		{"no answer", ooni.ErrDNSNoAnswer, ooni.FailureDNSNoAnswer},
		{"bogon", ooni.ErrDNSBogon, ooni.FailureDNSBogonError},
		{"residual", fmt.Errorf("probes: %w", ooni.ErrResidual), ooni.FailureResidualAvoided},
		{"unknown scrubbed", errors.New("weird thing at 192.0.2.7:443"), "unknown_failure: weird thing at [scrubbed]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ooni.Classify(tt.err); got != tt.want {
				t.Errorf("Classify(%v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}

func TestClassifyTLS(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"hostname", &tls.CertificateVerificationError{Err: x509.HostnameError{Certificate: &x509.Certificate{}, Host: "x.test"}}, ooni.FailureSSLInvalidHostname},
		{"authority", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, ooni.FailureSSLUnknownAuthority},
		{"invalid", x509.CertificateInvalidError{Reason: x509.Expired}, ooni.FailureSSLInvalidCertificate},
		{"record header", tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, ooni.FailureSSLFailedHandshake},
		{"alert", tls.AlertError(40), ooni.FailureSSLFailedHandshake},
		{"remote alert", &net.OpError{Op: "remote error", Err: errors.New("tls: handshake failure")}, ooni.FailureSSLFailedHandshake},
		{"reset falls through", syscall.ECONNRESET, ooni.FailureConnectionReset},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ooni.ClassifyTLS(tt.err); got != tt.want {
				t.Errorf("ClassifyTLS(%v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}

func TestClassifyQUIC(t *testing.T) {
	crypto := func(alert uint8) error {
		return &quicgo.TransportError{ErrorCode: quicgo.TransportErrorCode(0x100 + uint64(alert)), Remote: true}
	}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"handshake timeout", &quicgo.HandshakeTimeoutError{}, ooni.FailureGenericTimeoutError},
		{"idle timeout", &quicgo.IdleTimeoutError{}, ooni.FailureGenericTimeoutError},
		{"stateless reset", &quicgo.StatelessResetError{}, ooni.FailureConnectionReset},
		{"version", &quicgo.VersionNegotiationError{}, ooni.FailureQUICIncompatibleVersion},
		{"refused", &quicgo.TransportError{ErrorCode: quicgo.ConnectionRefused, Remote: true}, ooni.FailureConnectionRefused},
		{"bad certificate", crypto(42), ooni.FailureSSLInvalidCertificate},
		{"unknown ca", crypto(48), ooni.FailureSSLUnknownAuthority},
		{"unrecognized name", crypto(112), ooni.FailureSSLInvalidHostname},
		{"handshake failure", crypto(40), ooni.FailureSSLFailedHandshake},
		{"no application protocol", crypto(120), ooni.FailureSSLFailedHandshake},
		{"local x509", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, ooni.FailureSSLUnknownAuthority},
		{"generic", context.DeadlineExceeded, ooni.FailureGenericTimeoutError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ooni.ClassifyQUIC(tt.err); got != tt.want {
				t.Errorf("ClassifyQUIC(%v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}

// TestClassifyLive classifies errors of real loopback operations.
func TestClassifyLive(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()
	_, err = net.Dial("tcp", refused)
	if got := ooni.Classify(err); got != ooni.FailureConnectionRefused {
		t.Errorf("dial to a closed port: %q, want connection_refused (%v)", got, err)
	}

	ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc := <-accepted
	if sc == nil {
		t.Fatal("no connection accepted")
	}
	sc.(*net.TCPConn).SetLinger(0)
	sc.Close()
	_, err = c.Read(make([]byte, 1))
	if got := ooni.Classify(err); got != ooni.FailureConnectionReset {
		t.Errorf("read after RST: %q, want connection_reset (%v)", got, err)
	}
}

func TestScrub(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"your address 203.0.113.9 is blocked", "your address [scrubbed] is blocked"},
		{"dial tcp 10.0.0.1:443: refused", "dial tcp [scrubbed]: refused"},
		{"v6 [2001:db8::1]:443 down", "v6 [scrubbed] down"},
		{"fe80::1%eth0", "[scrubbed]%eth0"},
		{"at 12:30:45 today", "at 12:30:45 today"},
		{"version 1.2.3", "version 1.2.3"},
		{"Location: /block?u=x%26ip%3D203.0.113.7", "Location: /block?u=x%26ip%3D[scrubbed]"},
		{"host_203.0.113.7_x", "host_[scrubbed]_x"},
		{"ip203.0.113.7:8080", "ip[scrubbed]"},
		{"203.0.113.70000::1", "[scrubbed][scrubbed]"},
		{"full 2001:0db8:85a3:0000:0000:8a2e:0370:7334 end", "full [scrubbed] end"},
		{"ip:2001:db8::1: refused", "ip:[scrubbed]: refused"},
		{"mapped ::ffff:192.0.2.1 and 64:ff9b::198.51.100.4:53", "mapped [scrubbed] and [scrubbed]:53"},
		{"[fe80::1%eth0]:443", "[scrubbed]"},
		{"host%3D2001%3Adb8%3A%3A1%26x", "host%3D[scrubbed]%26x"},
		{"host%3d2001%3adb8%3a%3a1", "host%3d[scrubbed]"},
		{"u=%5B2001%3ADB8%3A%3A1%5D%3A443&v", "u=[scrubbed]&v"},
		{"u=%5bfe80%3a%3a1%25eth0%5d%3a443", "u=[scrubbed]"},
		{"ip%3D%3A%3Affff%3A203.0.113.7", "ip%3D[scrubbed]"},
		{"mac 00:1a:2b:3c:4d:5e up", "mac [scrubbed] up"},
		{"client-mac=00-1A-2B-3C-4D-5E&x", "client-mac=[scrubbed]&x"},
		{"mac%3D00%3a1a%3A2b%3a3c%3a4d%3a5e", "mac%3D[scrubbed]"},
		{"mac%253D00%253A1a%253A2b%253A3c%253A4d%253A5e%2526x", "mac%253D[scrubbed]%2526x"},
		{`{"mac":"00\u003a1a\u003a2b\u003A3c\u003a4d\u003a5e"}`, `{"mac":"[scrubbed]"}`},
		{"<td>00&#58;1a&#x3a;2b&colon;3c&#0058;4d&#58;5e</td>", "<td>[scrubbed]</td>"},
		{"fp 00%3A1a%3A2b%3A3c%3A4d%3A5e%3A6f", "fp 00%3A1a%3A2b%3A3c%3A4d%3A5e%3A6f"},
		{"fp 00&#58;1a&#58;2b&#58;3c&#58;4d&#58;5e&#58;6f", "fp 00&#58;1a&#58;2b&#58;3c&#58;4d&#58;5e&#58;6f"},
		{"x%3D00-1a-2b-3c-4d-5e", "x%3D[scrubbed]"},
		{"mac%3Dab00:1a:2b:3c:4d:5e", "mac%3Dab00:1a:2b:3c:4d:5e"},
		{"id=ab00:1a:2b:3c:4d:5e", "id=ab00:1a:2b:3c:4d:5e"},
		{"mac%253Dab00%253A1a%253A2b%253A3c%253A4d%253A5e", "mac%253Dab00%253A1a%253A2b%253A3c%253A4d%253A5e"},
		{"fp AB-CD-EF-01-23-45-67-89-AB-CD-EF-01", "fp AB-CD-EF-01-23-45-67-89-AB-CD-EF-01"},
		{"id 0a1b2c3d4e5f6a7b8c9d", "id 0a1b2c3d4e5f6a7b8c9d"},
		{"a00:1a:2b:3c:4d:5e", "a00:1a:2b:3c:4d:5e"},
		{"at 12:34:56.789 and 23:59", "at 12:34:56.789 and 23:59"},
		{"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{"std::vector<int>", "std::vector<int>"},
		{"net 2001:db8:1234:5678::/64 blocked", "net [scrubbed]/64 blocked"},
		{"http%3A%2F%2F%5B2001%3Adb8%3A%3A1%5D%2Fpath", "http%3A%2F%2F[scrubbed]%2Fpath"},
		{"q=%20%3A%3A1", "q=%20[scrubbed]"},
		{"0:0::::0", "[scrubbed][scrubbed]"},
		{"u=ip%253D2001%253Adb8%253A%253A1%2526x", "u=ip%253D[scrubbed]%2526x"},
		{"u=%255B2001%253Adb8%253A%253A1%255D%253A443", "u=[scrubbed]"},
		{`{"ip":"2001\u003adb8\u003a\u003a1"}`, `{"ip":"[scrubbed]"}`},
		{`"\u005b2001\u003Adb8\u003a\u003a1\u005d\u003a443"`, `"[scrubbed]"`},
		{"<b>2001&#58;db8&#58;&#58;1</b>", "<b>[scrubbed]</b>"},
		{"<b>2001&#x3A;db8&#x3a;&#x003a;1</b>", "<b>[scrubbed]</b>"},
		{"&lsqb;2001&colon;db8&colon;&colon;1&rsqb;&colon;443", "[scrubbed]"},
		{"at 12&#58;30 &amp; &#1234567890; &#; &#x;", "at 12&#58;30 &amp; &#1234567890; &#; &#x;"},
		{"path\\u003a and %25eth0", "path\\u003a and %25eth0"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := ooni.Scrub(tt.in); got != tt.want {
				t.Errorf("Scrub(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestBlockingJSON(t *testing.T) {
	tests := []struct {
		b    ooni.Blocking
		json string
	}{
		{ooni.BlockingUnknown, "null"},
		{ooni.BlockingNone, "false"},
		{ooni.BlockingDNS, `"dns"`},
		{ooni.BlockingHTTPDiff, `"http-diff"`},
		{ooni.BlockingThrottling, `"throttling"`},
	}
	for _, tt := range tests {
		t.Run(tt.json, func(t *testing.T) {
			b, err := json.Marshal(tt.b)
			if err != nil || string(b) != tt.json {
				t.Fatalf("Marshal(%q) = %s, %v; want %s", tt.b, b, err, tt.json)
			}
			var got ooni.Blocking
			if err := json.Unmarshal(b, &got); err != nil || got != tt.b {
				t.Fatalf("Unmarshal(%s) = %q, %v; want %q", b, got, err, tt.b)
			}
		})
	}
	var b ooni.Blocking
	for _, bad := range []string{`true`, `""`, `"false"`, `3`} {
		if err := json.Unmarshal([]byte(bad), &b); err == nil {
			t.Errorf("Unmarshal(%s) succeeded", bad)
		}
	}
}

func TestMaybeBinary(t *testing.T) {
	tests := []struct {
		name, in, json string
	}{
		{"utf8", "<b>blocked</b>", `"<b>blocked</b>"`},
		{"binary", "\xff\xfe\x00", `{"data":"//4A","format":"base64"}`},
		{"scrubbed", "from 198.51.100.4", `"from [scrubbed]"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			err := enc.Encode(ooni.MaybeBinary(tt.in))
			b := bytes.TrimSpace(buf.Bytes())
			if err != nil || string(b) != tt.json {
				t.Fatalf("Marshal = %s, %v; want %s", b, err, tt.json)
			}
			var back ooni.MaybeBinary
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if tt.name != "scrubbed" && string(back) != tt.in {
				t.Errorf("round trip = %q, want %q", back, tt.in)
			}
		})
	}
}

// fakeClock advances by step on every reading.
type fakeClock struct {
	t    time.Time
	step time.Duration
}

func (c *fakeClock) now() time.Time {
	c.t = c.t.Add(c.step)
	return c.t
}

var start = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// sample builds a measurement that uses every array, with a fake clock.
func sample() *ooni.Measurement {
	clk := &fakeClock{t: start, step: 10 * time.Millisecond}
	tr := ooni.NewTrace(start, clk.now)
	tx := tr.NewTransaction()
	ttl := uint32(300)
	tr.AddQuery(tx, ooni.Query{Engine: "udp", Hostname: "blocked.test", QueryType: "A", ResolverAddress: "127.0.0.1:53",
		Answers: []ooni.Answer{{AnswerType: "A", IPv4: "10.10.34.35", TTL: &ttl}}, Tags: []string{"system"}}, clk.now())
	tx = tr.NewTransaction()
	tr.TCPConnect(tx, "192.0.2.1:443", clk.now(), nil, "target")
	tr.TLSHandshake(tx, ooni.Handshake{Address: "192.0.2.1:443", ServerName: "blocked.test", Start: clk.now(),
		Err: &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, Tags: []string{"target"}})
	tx = tr.NewTransaction()
	tr.QUICHandshake(tx, ooni.Handshake{Address: "192.0.2.1:443", ServerName: "blocked.test", Start: clk.now(), Err: &quicgo.HandshakeTimeoutError{}})
	u, _ := url.Parse("http://blocked.test/")
	req := &http.Request{Method: "GET", URL: u, Header: http.Header{"User-Agent": {"x"}}}
	resp := &http.Response{StatusCode: 403, Header: http.Header{"Server": {"censor"}, "X-Block": {"1"}}}
	tr.AddRequest(tx, ooni.RoundTrip{Network: "tcp", Address: "blocked.test:80", Request: req, Response: resp,
		Body: []byte("<title>Access denied</title> your IP 203.0.113.50"), BodyLength: 50, Start: clk.now()})
	tr.Event(tx, ooni.OpRead, "tcp", "192.0.2.1:80", 16384, clk.now(), io.EOF)
	keys := tr.Keys()
	keys.Fail(ooni.FailureConnectionReset, ooni.OpTLSHandshake)
	keys.Blocking, keys.Accessible = ooni.BlockingTLS, ooni.Bool(false)
	end := clk.now()
	return &ooni.Measurement{
		DataFormatVersion:    ooni.DataFormatVersion,
		Extensions:           ooni.Extensions(),
		Input:                "blocked.test:443",
		MeasurementStartTime: ooni.FormatTime(start),
		ProbeASN:             ooni.DefaultProbeASN,
		ProbeCC:              ooni.DefaultProbeCC,
		ProbeIP:              ooni.DefaultProbeIP,
		ReportID:             "20250301T120000Z_xcommucatsniblocking_ZZ_0_n1_AAAAAAAAAAAAAAAA",
		ResolverASN:          ooni.DefaultResolverASN,
		ResolverIP:           ooni.DefaultResolverIP,
		SoftwareName:         "commucat",
		SoftwareVersion:      "test",
		TestKeys:             &keys,
		TestName:             "x_commucat_sni_blocking",
		TestRuntime:          ooni.Seconds(end.Sub(start)),
		TestStartTime:        ooni.FormatTime(start),
		TestVersion:          "0.1.0",
	}
}

func TestWriterGolden(t *testing.T) {
	var buf bytes.Buffer
	w := ooni.NewWriter(&buf)
	m := sample()
	if err := w.Write(m); err != nil {
		t.Fatal(err)
	}
	empty := *m
	empty.Input = ""
	k := ooni.NewTrace(start, nil).Keys()
	empty.TestKeys = &k
	if err := w.Write(&empty); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(buf.String(), "\n"); n != 2 {
		t.Fatalf("%d lines, want 2", n)
	}
	golden(t, "measurements.jsonl", buf.Bytes())

	// Every line is one JSON object with OONI's envelope keys.
	for i, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var obj map[string]any
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		for _, key := range []string{"data_format_version", "input", "measurement_start_time", "probe_asn", "probe_cc",
			"report_id", "software_name", "software_version", "test_keys", "test_name", "test_runtime", "test_start_time"} {
			if _, ok := obj[key]; !ok {
				t.Errorf("line %d lacks %q", i, key)
			}
		}
		tk := obj["test_keys"].(map[string]any)
		for _, key := range []string{"queries", "tcp_connect", "tls_handshakes", "requests", "network_events", "failure", "blocking"} {
			if _, ok := tk[key]; !ok {
				t.Errorf("line %d: test_keys lack %q", i, key)
			}
		}
	}
	if strings.Contains(buf.String(), "203.0.113.50") {
		t.Error("the report leaks an address from a response body")
	}
}

func TestFormatTime(t *testing.T) {
	loc := time.FixedZone("X", 3*3600)
	got := ooni.FormatTime(time.Date(2025, 1, 2, 6, 4, 5, 999, loc))
	if got != "2025-01-02 03:04:05" {
		t.Errorf("FormatTime = %q", got)
	}
}

func BenchmarkMarshal(b *testing.B) {
	m := sample()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ooni.Marshal(m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkClassify(b *testing.B) {
	err := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	b.ReportAllocs()
	for b.Loop() {
		ooni.Classify(err)
	}
}
