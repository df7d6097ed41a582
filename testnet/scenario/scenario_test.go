package scenario

import (
	"bytes"
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commucat/commucat/testnet/censor"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"golang.org/x/net/dns/dnsmessage"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// full is a scenario that sets every field.
const full = `
name: full
description: every field
seed: 9
duration: 2m
drain: 3s
mtu: 1400
hosts:
  - {name: alice, role: client, zone: inside, up: {delay: 20ms, jitter: 5ms, reorder: true, loss: 0.01, duplicate: 0.001, rate: 10mbit, queue: 65536, mtu: 1400,
      burst: {p_good_bad: 0.01, p_bad_good: 0.3, loss_good: 0.001, loss_bad: 0.5}}, down: {delay: 20ms}}
  - {name: bob}
  - {name: gw, role: gateway, zone: outside}
  - {name: cover, role: cover, names: [www.cover.test, cdn.cover.test]}
  - {name: dns, role: resolver, records: {www.cover.test: cover, x.test: 198.18.9.9}}
  - {name: prober, role: prober}
censor:
  inline:
    name: mine
    rules:
      - name: udp
        match: {udp: {ports: [4000]}}
        action: drop
  seed: 4
  off: true
timeline:
  - {at: 0s, censor: "on"}
  - {at: 2s, link: {host: alice, dir: up, params: {loss: 0.2}}}
  - {at: 3s, blackhole: {host: gw, transport: quic}}
  - {at: 4s, blackhole: {host: gw, port: 80, proto: tcp}}
  - {at: 5s, unblackhole: {host: gw, transport: quic}}
setup:
  - gateway: {host: gw, transports: [reality, quic, kcp], ports: {kcp: 4001}, params: {reality: {sni: www.cover.test}}}
  - register: {host: alice, user: alice, transport: reality}
  - register: {host: bob, user: bob}
  - listen: {user: bob, transport: quic, count: 3}
run:
  - listen: {user: alice, at: 1s}
  - send: {user: alice, to: bob, count: 2, size: 100, interval: 1s, transport: quic, fingerprint: chrome, timeout: 5s, retries: 1, at: 1s, background: true}
  - chat: {user: bob, to: alice, count: 10, size: 1000, parallel: 2, for: 20s, stats: 100ms}
  - probe: {user: alice, to: bob, transports: [kcp], attempts: 3, size: 24000, timeout: 4s, fingerprint: firefox, at: 2s}
  - exec: {host: alice, args: [probe, --target, "{addr:cover}"], exit: 0, timeout: 10s, at: 3s, background: true}
expect:
  delivered: 5
  all-delivered: true
  exactly-once: true
  sends-succeed: true
  recover: {after: 3s, within: 10s}
  fired: [{rule: udp, action: drop, transport: kcp}]
  not-fired: [{transport: reality}]
  blocked: [kcp]
  open: [reality]
`

func TestParseFull(t *testing.T) {
	s, err := Parse([]byte(full))
	if err != nil {
		t.Fatal(err)
	}
	if s.Hosts[0].Up.Rate != censor.Rate(10e6/8) || s.Hosts[0].Up.Burst.LossBad != 0.5 || s.Timeline[2].Blackhole.Transport != "quic" {
		t.Errorf("decoded %+v", s)
	}
	p, err := s.CensorProfile("")
	if err != nil || p.Name != "mine" || len(p.Rules) != 1 {
		t.Fatalf("inline profile: %+v, %v", p, err)
	}
	if k := s.Run[4].Kind(); k != "exec" {
		t.Errorf("Kind %q, want exec", k)
	}
}

func TestShipped(t *testing.T) {
	names := Names()
	if len(names) < 3 {
		t.Fatalf("shipped scenarios: %v", names)
	}
	for _, n := range names {
		t.Run(n, func(t *testing.T) {
			s, err := Shipped(n)
			if err != nil {
				t.Fatal(err)
			}
			if s.Name != n {
				t.Errorf("name %q in %s.yaml", s.Name, n)
			}
		})
	}
	if _, err := Shipped("nope"); err == nil {
		t.Error("unknown shipped scenario accepted")
	}
}

func TestParseErrors(t *testing.T) {
	const hosts = "hosts: [{name: a}, {name: g, role: gateway}]\n"
	const gw = "setup:\n  - gateway: {host: g}\n  - register: {host: a, user: alice}\n"
	tests := []struct {
		name     string
		in       string
		wantPath string
		wantLine int
		wantMsg  string
	}{
		{"empty", "", "", 0, "empty document"},
		{"two documents", "name: a\n---\nname: b\n", "", 0, "more than one"},
		{"no name", hosts, "name", 0, "required"},
		{"unknown top key", "name: x\nbogus: 1\n", "bogus", 2, "unknown field"},
		{"unknown nested key", "name: x\nhosts: [{name: a, up: {delya: 1s}}]\n", "hosts[0].up.delya", 2, "unknown field"},
		{"duplicate key", "name: x\nname: y\n", "name", 2, "duplicate key"},
		{"bad duration", "name: x\nduration: soon\n", "duration", 2, "duration"},
		{"bad rate", "name: x\nhosts: [{name: a, up: {rate: fast}}]\n", "hosts[0].up.rate", 2, "rate"},
		{"wrong kind", "name: x\nhosts: {name: a}\n", "hosts", 2, "want a list"},
		{"alias", "name: &n x\n", "name", 1, "aliases"},
		{"bad host name", "name: x\nhosts: [{name: 'a b'}]\n", "hosts[0].name", 0, "letters"},
		{"duplicate host", "name: x\nhosts: [{name: a}, {name: a}]\n", "hosts[1].name", 0, "twice"},
		{"bad role", "name: x\nhosts: [{name: a, role: king}]\n", "hosts[0].role", 0, "want client"},
		{"bad link", "name: x\nhosts: [{name: a, up: {loss: 2}}]\n", "hosts[0].up", 0, "loss"},
		{"record to nowhere", "name: x\nhosts: [{name: d, role: resolver, records: {a.test: nowhere}}]\n", "hosts[0].records.a.test", 0, "neither"},
		{"two censors", "name: x\n" + hosts + "censor: {profile: gfw-fet, file: x.yaml}\n", "censor", 0, "exactly one"},
		{"unknown profile", "name: x\n" + hosts + "censor: {profile: gfw-nope}\n", "censor.profile", 0, "not shipped"},
		{"bad inline profile", "name: x\n" + hosts + "censor: {inline: {name: x, rules: [{name: r, bogus: 1}]}}\n", "censor.inline", 0, "bogus"},
		{"register before gateway", "name: x\n" + hosts + "setup: [{register: {host: a, user: alice}}]\n", "setup[0].register", 0, "gateway"},
		{"unregistered user", "name: x\n" + hosts + gw + "run: [{send: {user: bob, to: alice}}]\n", "run[0].send.user", 0, "not registered"},
		{"send in setup", "name: x\n" + hosts + gw + "  - send: {user: alice, to: alice}\n", "setup[2].send", 0, "belongs in run"},
		{"two programs in one step", "name: x\n" + hosts + "setup: [{gateway: {host: g}, register: {host: a, user: u}}]\n", "setup[0]", 0, "exactly one"},
		{"unserved transport", "name: x\n" + hosts + "setup:\n  - gateway: {host: g, transports: [quic]}\n  - register: {host: a, user: alice, transport: kcp}\n", "setup[1].register.transport", 0, "not served"},
		{"port clash", "name: x\n" + hosts + "setup: [{gateway: {host: g, transports: [reality, tcp], ports: {tcp: 443}}}]\n", "setup[0].gateway.ports.tcp", 0, "also used"},
		{"small message", "name: x\n" + hosts + gw + "run: [{send: {user: alice, to: alice, size: 3}}]\n", "run[0].send.size", 0, "at least"},
		{"event with two changes", "name: x\n" + hosts + "timeline: [{at: 1s, censor: 'on', blackhole: {host: g}}]\n", "timeline[0]", 0, "exactly one"},
		{"censor event without censor", "name: x\n" + hosts + "timeline: [{at: 1s, censor: 'on'}]\n", "timeline[0].censor", 0, "no censor"},
		{"blackhole transport and port", "name: x\n" + hosts + gw + "timeline: [{at: 1s, blackhole: {host: g, port: 1, transport: quic}}]\n", "timeline[0].blackhole", 0, "replaces"},
		{"fired without censor", "name: x\n" + hosts + gw + "expect: {fired: [{rule: r}]}\n", "expect.fired", 0, "no censor"},
		{"bad mtu", "name: x\nmtu: 100\n" + hosts, "mtu", 0, "1280"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			var se *Error
			if !errors.As(err, &se) || !errors.Is(err, ErrScenario) {
				t.Fatalf("error %v, want a *Error", err)
			}
			if se.Path != tt.wantPath || (tt.wantLine != 0 && se.Line != tt.wantLine) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q (path %q, line %d), want path %q, line %d, message with %q", err, se.Path, se.Line, tt.wantPath, tt.wantLine, tt.wantMsg)
			}
		})
	}
}

// TestEncodeRoundTrip checks that Parse(Encode(s)) gives s back.
func TestEncodeRoundTrip(t *testing.T) {
	inputs := map[string]*Scenario{}
	s, err := Parse([]byte(full))
	if err != nil {
		t.Fatal(err)
	}
	inputs["full"] = s
	for _, n := range Names() {
		s, err := Shipped(n)
		if err != nil {
			t.Fatal(err)
		}
		inputs[n] = s
	}
	inputs["matrix"] = MatrixScenario("gfw-fet", "obfs4", 10, 1000, 2, 5*time.Second, 3)
	for name, s := range inputs {
		t.Run(name, func(t *testing.T) {
			b, err := Encode(s)
			if err != nil {
				t.Fatal(err)
			}
			back, err := Parse(b)
			if err != nil {
				t.Fatalf("parse of encoded: %v\n%s", err, b)
			}
			if diff := cmp.Diff(s, back); diff != "" {
				t.Errorf("round trip (-in +out):\n%s\nencoded:\n%s", diff, b)
			}
		})
	}
}

func TestMessageTag(t *testing.T) {
	tests := []struct {
		step string
		n    int
		size int
	}{
		{"run0", 0, 0},
		{"run12", 7, 64},
		{"setup3", 123456, 61440},
	}
	for _, tt := range tests {
		t.Run(tt.step, func(t *testing.T) {
			b := MessageBody(tt.step, tt.n, tt.size)
			if tt.size > 0 && len(b) != tt.size {
				t.Errorf("len %d, want %d", len(b), tt.size)
			}
			step, n, ok := ParseTag(string(b))
			if !ok || step != tt.step || n != tt.n {
				t.Errorf("ParseTag = %q, %d, %t; want %q, %d", step, n, ok, tt.step, tt.n)
			}
		})
	}
	for _, bad := range []string{"", "hello", "[cc/]", "[cc/x/-1] ", "[cc/x/y] ", "[cc/x] "} {
		if _, _, ok := ParseTag(bad); ok {
			t.Errorf("ParseTag(%q) accepted", bad)
		}
	}
}

func TestResolverAnswer(t *testing.T) {
	rec := map[string]netip.Addr{"www.cover.test": netip.MustParseAddr("198.18.0.4")}
	query := func(name string, typ dnsmessage.Type, response bool) []byte {
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 7, Response: response, RecursionDesired: true})
		b.StartQuestions()
		b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET})
		out, err := b.Finish()
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	tests := []struct {
		name    string
		q       []byte
		ok      bool
		rcode   dnsmessage.RCode
		answers []string
	}{
		{"known", query("WWW.cover.test.", dnsmessage.TypeA, false), true, dnsmessage.RCodeSuccess, []string{"198.18.0.4"}},
		{"known AAAA", query("www.cover.test.", dnsmessage.TypeAAAA, false), true, dnsmessage.RCodeSuccess, nil},
		{"unknown", query("nope.test.", dnsmessage.TypeA, false), true, dnsmessage.RCodeNameError, nil},
		{"a response", query("www.cover.test.", dnsmessage.TypeA, true), false, 0, nil},
		{"garbage", []byte{1, 2, 3}, false, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, ok := answer(tt.q, rec)
			if ok != tt.ok {
				t.Fatalf("ok %t, want %t", ok, tt.ok)
			}
			if !ok {
				return
			}
			var p dnsmessage.Parser
			h, err := p.Start(out)
			if err != nil {
				t.Fatal(err)
			}
			if h.ID != 7 || !h.Response || h.RCode != tt.rcode {
				t.Errorf("header %+v", h)
			}
			p.SkipAllQuestions()
			as, err := p.AllAnswers()
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, a := range as {
				if r, ok := a.Body.(*dnsmessage.AResource); ok {
					got = append(got, netip.AddrFrom4(r.A).String())
				}
			}
			if diff := cmp.Diff(tt.answers, got); diff != "" {
				t.Errorf("answers (-want +got):\n%s", diff)
			}
		})
	}
}

// sampleReport is a fixed report for the golden files.
func sampleReport() *Report {
	stored := 1.5
	return &Report{
		Scenario: "sample", Description: "a fixed report", Profile: "gfw-fet", Seed: 1, CensorSeed: 2, Prefix: "cc-1-s1-",
		Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), SetupSeconds: 1.25, RunSeconds: 10.5, Dir: "/tmp/x",
		Hosts:    []HostInfo{{Name: "alice", Role: "client", Zone: "inside", Addr: "198.18.0.1", Namespace: "cc-1-s1-alice"}},
		Gateway:  []Endpoint{{Transport: "obfs4", Proto: "tcp", Port: 80}, {Transport: "reality", Proto: "tcp", Port: 443}},
		Timeline: []AppliedEvent{{At: 4, What: "4s blackhole gateway:443/tcp"}},
		Messages: []Message{{Key: "run0/0", Step: "run[0]", From: "alice", To: "bob", Size: 100, Sent: 1, Stored: &stored, Attempts: 1, Delivered: []float64{1.75}}},
		Probes:   []ProbeAttempt{{Step: "run[1]", Transport: "obfs4", Attempt: 1, Failure: "listen", Seconds: 4}},
		Chats:    []ChatResult{{Step: "run[2]", User: "alice", To: "bob", Sent: 10, Stored: 10, Delivered: 10, Bytes: 10000, GoodputMbps: 0.5, Sessions: []string{"reality"}}},
		Censor: &CensorResult{Profile: "gfw-fet", Events: 2,
			Rules:      []RuleCount{{Rule: "fet", Action: "drop", Transport: "obfs4", Count: 1, First: 2.5}},
			Transports: []TransportVerdict{{Transport: "obfs4", Blocked: []string{"fet"}}, {Transport: "reality"}}},
		Checks: []Check{{Name: "no program panicked", OK: true}, {Name: "probe finds obfs4 blocked", OK: true, Detail: "1 attempts, 1 failed"}},
		Notes:  []string{"a note | with a bar"},
		OK:     true,
	}
}

func TestReportGolden(t *testing.T) {
	var md, js bytes.Buffer
	r := sampleReport()
	if err := r.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	golden(t, "report.golden.md", md.Bytes())
	golden(t, "report.golden.json", js.Bytes())
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s (-want +got):\n%s", name, diff)
	}
}

func TestMatrixOutputs(t *testing.T) {
	m := &Matrix{Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Seconds: 60, Seed: 1, Count: 4, Size: 1000, Parallel: 2,
		Profiles: []string{"wan-clean", "udp-block"}, Transports: []string{"quic", "reality"},
		Cells: []Cell{
			{Profile: "wan-clean", Transport: "quic", Sent: 4, Delivered: 4, Bytes: 4000, GoodputMbps: 12.5},
			{Profile: "wan-clean", Transport: "reality", Sent: 4, Delivered: 4, Bytes: 4000, GoodputMbps: 20},
			{Profile: "udp-block", Transport: "quic", Sent: 4, Censor: TransportVerdict{Transport: "quic", Blocked: []string{"udp"}}},
			{Profile: "udp-block", Transport: "reality", Sent: 4, Delivered: 3, Bytes: 3000, GoodputMbps: 7},
		},
		Paths: &Report{Scenario: "failover", Timeline: []AppliedEvent{{At: 1, What: "1s blackhole gateway:443/tcp"}},
			Chats: []ChatResult{{Samples: []PathSample{
				{T: 0.5, Paths: []PathInfo{{ID: 1, Transport: "reality", State: "active", Best: true}, {ID: 2, Transport: "quic", State: "active"}}},
				{T: 1.5, Paths: []PathInfo{{ID: 1, Transport: "reality", State: "dead"}, {ID: 2, Transport: "quic", State: "active", Best: true}}},
			}}}},
	}
	dir := t.TempDir()
	files, err := m.Draw(dir)
	if err != nil {
		t.Fatal(err)
	}
	m.Files = files
	for _, want := range []string{"goodput.svg", "goodput.png", "paths.svg", "paths.png"} {
		fi, err := os.Stat(filepath.Join(dir, want))
		if err != nil || fi.Size() < 1000 {
			t.Errorf("%s: %v, %v", want, fi, err)
		}
	}
	var md bytes.Buffer
	if err := m.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	golden(t, "matrix.golden.md", md.Bytes())
}

func TestCellStatus(t *testing.T) {
	tests := []struct {
		c    Cell
		want string
	}{
		{Cell{Sent: 4, Delivered: 4, GoodputMbps: 1.234}, "1.23 Mbit/s"},
		{Cell{Sent: 4, Delivered: 2, GoodputMbps: 1}, "1.00 Mbit/s, 2/4"},
		{Cell{Sent: 4, Censor: TransportVerdict{Blocked: []string{"udp"}}}, "blocked (udp)"},
		{Cell{Sent: 4, Delivered: 4, GoodputMbps: 1, Censor: TransportVerdict{Throttled: []string{"t"}}}, "1.00 Mbit/s (throttled: t)"},
		{Cell{Sent: 4}, "nothing delivered"},
		{Cell{Sent: 4, Err: "boom"}, "error"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.c.Status(); got != tt.want {
				t.Errorf("Status() = %q, want %q", got, tt.want)
			}
		})
	}
}
