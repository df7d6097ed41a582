package censor

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// schemaExample is the schema of profile.go's comment, every key set.
const schemaExample = `
name: everything
description: every key of the schema
flows:
  idle: 2m
  max: 1000
  reassembly: 8192
  residuals: 500
link:
  up:   {delay: 40ms, jitter: 10ms, reorder: true, loss: 0.01, duplicate: 0.001, rate: 10mbit, queue: 65536, mtu: 1400,
         burst: {p_good_bad: 0.01, p_bad_good: 0.3, loss_good: 0, loss_bad: 0.5}}
  down: {delay: 40ms, rate: 125000}
prober:
  timeout: 2s
  delay: 1s
  lengths: [7, 221]
  block: 1h
  cooldown: 10m
rules:
  - name: sni
    match:
      initiator: any
      transport: tcp
      ports: [443, 8443]
      servers: [198.18.0.0/15, 198.18.1.2]
      reassemble: true
      sni: [blocked.example]
    action: reset
    residual: 180s
    residual-key: 4-tuple
    residual-action: reset
  - name: throttle
    match: {keyword: [falun], host: [blocked.example]}
    action: {throttle: {delay: 300ms, loss: 0.05, rate: 128kbit, queue: 1s, direction: s2c}}
  - name: dns
    match: {dns: {names: [blocked.example]}}
    action: {dns-inject: {ip: 198.18.255.1, ttl: 30}}
  - name: nx
    match: {dns: {names: [nx.example]}, ports: [5353]}
    action: {dns-inject: {nxdomain: true}}
  - name: tlsfp
    match: {tls-fingerprint: {mode: block, ja4: [t13d1312h2_f57a46bbacb6_ab7e3b40a677], ja3: [9b7dcdf3f997f1fb7b4409c94cb7ef36]}}
    action: drop
  - name: iran
    match: {protocol-allowlist: {protocols: [http, tls, dns], ports: [53, 80, 443]}}
    action: {drop: {}}
  - name: quic
    match: {quic-sni: [blocked.example], udp: {ports: [443]}}
    action: drop
  - name: fet
    match: {fet: {probability: 0.5}}
    action: probe
  - name: tspu
    match: {protocols: [tls, unknown], bytes-s2c: {threshold: 16384, max: 20480}}
    action: cut-off
  - name: age
    match: {flow-age: {seconds: 90.5}}
    action: freeze
  - name: watch
    match: {udp: {}}
    action: log
`

func TestParseProfileSchema(t *testing.T) {
	p, err := ParseProfile([]byte(schemaExample))
	if err != nil {
		t.Fatal(err)
	}
	want := &Profile{
		Name: "everything", Description: "every key of the schema",
		Flows: FlowConfig{Idle: 2 * time.Minute, Max: 1000, Reassembly: 8192, Residuals: 500},
		Link: &LinkProfile{
			Up: LinkParams{Delay: 40 * time.Millisecond, Jitter: 10 * time.Millisecond, Reorder: true, Loss: 0.01, Duplicate: 0.001,
				Rate: 1250000, Queue: 65536, MTU: 1400, Burst: &GilbertElliott{PGoodBad: 0.01, PBadGood: 0.3, LossBad: 0.5}},
			Down: LinkParams{Delay: 40 * time.Millisecond, Rate: 125000},
		},
		Prober: &ProberConfig{Timeout: 2 * time.Second, Delay: time.Second, Lengths: []int{7, 221}, Block: time.Hour, Cooldown: 10 * time.Minute},
		Rules: []Rule{
			{Name: "sni", Match: Match{Initiator: "any", Transport: "tcp", Ports: []uint16{443, 8443},
				Servers:    []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15"), netip.MustParsePrefix("198.18.1.2/32")},
				Reassemble: true, SNI: DomainList{"blocked.example"}},
				Action: Action{Kind: ActionReset}, Residual: 180 * time.Second, ResidualKey: Residual4Tuple, ResidualAction: ResidualReset},
			{Name: "throttle", Match: Match{Keyword: []string{"falun"}, Host: DomainList{"blocked.example"}},
				Action: Action{Kind: ActionThrottle, Throttle: &Throttle{Delay: 300 * time.Millisecond, Loss: 0.05, Rate: 16000, Queue: time.Second, Direction: "s2c"}}},
			{Name: "dns", Match: Match{DNS: &DNSMatch{Names: DomainList{"blocked.example"}}},
				Action: Action{Kind: ActionDNSInject, DNSInject: &DNSInject{IP: netip.MustParseAddr("198.18.255.1"), TTL: 30}}},
			{Name: "nx", Match: Match{DNS: &DNSMatch{Names: DomainList{"nx.example"}}, Ports: []uint16{5353}},
				Action: Action{Kind: ActionDNSInject, DNSInject: &DNSInject{NXDomain: true}}},
			{Name: "tlsfp", Match: Match{TLSFingerprint: &TLSFingerprint{Mode: "block", JA4: []string{"t13d1312h2_f57a46bbacb6_ab7e3b40a677"}, JA3: []string{"9b7dcdf3f997f1fb7b4409c94cb7ef36"}}},
				Action: Action{Kind: ActionDrop}},
			{Name: "iran", Match: Match{ProtocolAllowlist: &ProtocolAllowlist{Protocols: []string{"http", "tls", "dns"}, Ports: []uint16{53, 80, 443}}},
				Action: Action{Kind: ActionDrop}},
			{Name: "quic", Match: Match{QUICSNI: DomainList{"blocked.example"}, UDP: &UDPMatch{Ports: []uint16{443}}}, Action: Action{Kind: ActionDrop}},
			{Name: "fet", Match: Match{FET: &FETMatch{Probability: 0.5}}, Action: Action{Kind: ActionProbe}},
			{Name: "tspu", Match: Match{Protocols: []string{"tls", "unknown"}, BytesS2C: &BytesS2C{Threshold: 16384, Max: 20480}}, Action: Action{Kind: ActionCutOff}},
			{Name: "age", Match: Match{FlowAge: &FlowAge{Seconds: 90.5}}, Action: Action{Kind: ActionFreeze}},
			{Name: "watch", Match: Match{UDP: &UDPMatch{}}, Action: Action{Kind: ActionLog}},
		},
	}
	if diff := cmp.Diff(want, p, cmpAddr, cmpopts.IgnoreUnexported(Profile{})); diff != "" {
		t.Errorf("parsed profile (-want +got):\n%s", diff)
	}
	if _, err := New(Config{Profile: p}); err != nil {
		t.Errorf("New: %v", err)
	}
}

// TestParseProfileErrors checks that every kind of mistake is an error
// naming its key path and line.
func TestParseProfileErrors(t *testing.T) {
	rule := func(body string) string { return "name: x\nrules:\n  - name: r\n" + body }
	tests := []struct {
		name     string
		yml      string
		path     string
		line     int  // 0: not checked
		isConfig bool // wraps ErrConfig (a value out of range)
	}{
		{"unknown top-level key", "name: x\nrulez: []\n", "rulez", 2, false},
		{"unknown match key", rule("    match: {snii: [a]}\n    action: drop\n"), "rules[0].match.snii", 4, false},
		{"unknown action parameter", rule("    match: {udp: {}}\n    action: {throttle: {delay: 1s, speed: 3}}\n"), "rules[0].action.throttle.speed", 5, false},
		{"list expected", rule("    match: {udp: {ports: 443}}\n    action: drop\n"), "rules[0].match.udp.ports", 4, false},
		{"port out of range", rule("    match: {udp: {ports: [70000]}}\n    action: drop\n"), "rules[0].match.udp.ports[0]", 4, false},
		{"bad duration", rule("    match: {udp: {}}\n    action: drop\n    residual: 3 minutes\n"), "rules[0].residual", 6, false},
		{"bad address range", rule("    match: {udp: {}, servers: [10.0.0.0/99]}\n    action: drop\n"), "rules[0].match.servers[0]", 4, false},
		{"bad rate", rule("    match: {udp: {}}\n    action: {throttle: {rate: fast}}\n"), "rules[0].action.throttle.rate", 5, false},
		{"duplicate key", "name: x\nname: y\n", "name", 2, false},
		{"alias", "name: &n x\ndescription: *n\n", "name", 1, false},
		{"unknown action", rule("    match: {udp: {}}\n    action: rst\n"), "rules[0].action", 5, false},
		{"two actions", rule("    match: {udp: {}}\n    action: {drop: {}, reset: {}}\n"), "rules[0].action", 5, false},
		{"action needs parameters", rule("    match: {udp: {}}\n    action: throttle\n"), "rules[0].action", 5, false},
		{"two documents", "name: x\n---\nname: y\n", "", 0, false},
		{"empty", "", "", 0, false},
		{"not a mapping", "- a\n- b\n", "", 1, false},
		{"missing name", "rules: []\n", "name", 0, true},
		{"missing rule name", "name: x\nrules:\n  - match: {udp: {}}\n    action: drop\n", "rules[0].name", 0, true},
		{"duplicate rule names", rule("    match: {udp: {}}\n    action: drop\n  - name: r\n    match: {udp: {}}\n    action: drop\n"), "rules[1].name", 6, true},
		{"no trigger", rule("    match: {ports: [443]}\n    action: drop\n"), "rules[0].match", 4, true},
		{"tcp and udp triggers", rule("    match: {sni: [a], quic-sni: [a]}\n    action: drop\n"), "rules[0].match", 4, true},
		{"transport contradicts", rule("    match: {sni: [a], transport: udp}\n    action: drop\n"), "rules[0].match.transport", 4, true},
		{"probability above one", rule("    match: {fet: {probability: 1.5}}\n    action: drop\n"), "rules[0].match.fet.probability", 4, true},
		{"unknown protocol", rule("    match: {protocol-allowlist: {protocols: [ssh]}}\n    action: drop\n"), "rules[0].match.protocol-allowlist.protocols[0]", 4, true},
		{"empty fingerprint list", rule("    match: {tls-fingerprint: {mode: allow}}\n    action: drop\n"), "rules[0].match.tls-fingerprint", 4, true},
		{"max below threshold", rule("    match: {bytes-s2c: {threshold: 100, max: 50}}\n    action: freeze\n"), "rules[0].match.bytes-s2c.max", 4, true},
		{"dns-inject without dns", rule("    match: {udp: {}}\n    action: {dns-inject: {ip: 1.2.3.4}}\n"), "rules[0].action", 5, true},
		{"dns-inject ip and nxdomain", rule("    match: {dns: {names: [a]}}\n    action: {dns-inject: {ip: 1.2.3.4, nxdomain: true}}\n"), "rules[0].action.dns-inject", 5, true},
		{"empty throttle", rule("    match: {udp: {}}\n    action: {throttle: {}}\n"), "rules[0].action.throttle", 5, true},
		{"probe on udp", rule("    match: {udp: {}}\n    action: probe\n"), "rules[0].action", 5, true},
		{"residual key without residual", rule("    match: {udp: {}}\n    action: drop\n    residual-key: server\n"), "rules[0].residual", 0, true},
		{"unknown residual key", rule("    match: {udp: {}}\n    action: drop\n    residual: 1s\n    residual-key: 5-tuple\n"), "rules[0].residual-key", 7, true},
		{"link loss above one", "name: x\nlink: {up: {loss: 2}}\n", "link.up.loss", 0, true},
		{"link mtu too small", "name: x\nlink: {down: {mtu: 20}}\n", "link.down.mtu", 2, true},
		{"prober length zero", "name: x\nprober: {lengths: [7, 0]}\n", "prober.lengths[1]", 2, true},
		{"reassembly too large", "name: x\nflows: {reassembly: 99999999}\n", "flows.reassembly", 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseProfile([]byte(tt.yml))
			var pe *ProfileError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v, want a *ProfileError", err)
			}
			if pe.Path != tt.path || (tt.line != 0 && pe.Line != tt.line) {
				t.Errorf("error at %q line %d, want %q line %d: %v", pe.Path, pe.Line, tt.path, tt.line, err)
			}
			if errors.Is(err, ErrConfig) != tt.isConfig {
				t.Errorf("errors.Is(ErrConfig) = %v, want %v: %v", !tt.isConfig, tt.isConfig, err)
			}
			if !strings.HasPrefix(err.Error(), "censor: profile: ") {
				t.Errorf("message %q lacks the package prefix", err)
			}
		})
	}
}

func TestParseRate(t *testing.T) {
	tests := []struct {
		in   string
		want Rate
		str  string
		err  bool
	}{
		{"125000", 125000, "1mbit", false},
		{"1mbit", 125000, "1mbit", false},
		{"128kbit", 16000, "128kbit", false},
		{"1.5Mbit", 187500, "1500kbit", false},
		{"1gbit", 125000000, "1000mbit", false},
		{"800bit", 100, "100", false},
		{"7", 7, "7", false},
		{"", 0, "", true},
		{"-5", 0, "", true},
		{"fast", 0, "", true},
		{"1e30mbit", 0, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseRate(tt.in)
			if (err != nil) != tt.err {
				t.Fatalf("ParseRate(%q) error %v", tt.in, err)
			}
			if err == nil && (got != tt.want || got.String() != tt.str) {
				t.Errorf("ParseRate(%q) = %d (%s), want %d (%s)", tt.in, got, got, tt.want, tt.str)
			}
		})
	}
}

func TestLoadProfile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(path, []byte("name: file\nrules:\n  - name: u\n    match: {udp: {}}\n    action: drop\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := LoadProfile(path)
	if err != nil || p.Name != "file" || len(p.Rules) != 1 {
		t.Fatalf("LoadProfile = %+v, %v", p, err)
	}
	if _, err := LoadProfile(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("missing file loaded")
	}
}
