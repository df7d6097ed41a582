package dns_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/commucat/commucat/probes"
	"github.com/commucat/commucat/probes/dns"
	"github.com/commucat/commucat/probes/ooni"
	"github.com/commucat/commucat/probes/probestest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	real     = netip.MustParseAddr("93.184.215.14")
	other    = netip.MustParseAddr("151.101.1.1")
	injected = netip.MustParseAddr("5.6.7.8")
	bogon    = netip.MustParseAddr("10.10.34.35")
)

// network is the resolver of the network under test: it lies.
func network(name string) probestest.DNSReply {
	switch name {
	case "nx.test.", "nx-everywhere.test.":
		return probestest.DNSReply{RCode: dnsmessage.RCodeNameError}
	case "bogon.test.":
		return probestest.DNSReply{Addrs: []netip.Addr{bogon}}
	case "drop.test.":
		return probestest.DNSReply{Drop: true}
	case "disjoint.test.":
		return probestest.DNSReply{Addrs: []netip.Addr{other}}
	case "inject.test.":
		return probestest.DNSReply{Addrs: []netip.Addr{injected}, Extra: []netip.Addr{real}}
	case "servfail.test.":
		return probestest.DNSReply{RCode: dnsmessage.RCodeServerFailure}
	}
	return probestest.DNSReply{Addrs: []netip.Addr{real}}
}

// control is the honest resolver.
func control(name string) probestest.DNSReply {
	switch name {
	case "nx-everywhere.test.":
		return probestest.DNSReply{RCode: dnsmessage.RCodeNameError}
	case "localhost.":
		return probestest.DNSReply{Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}
	}
	return probestest.DNSReply{Addrs: []netip.Addr{real}}
}

// dohServer serves DNS-over-HTTPS with answer.
func dohServer(t *testing.T, answer func(string) probestest.DNSReply) *httptest.Server {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(io.LimitReader(r.Body, 4096))
		var p dnsmessage.Parser
		h, err := p.Start(b)
		if err != nil {
			http.Error(w, "bad query", http.StatusBadRequest)
			return
		}
		q, err := p.Question()
		if err != nil {
			http.Error(w, "bad query", http.StatusBadRequest)
			return
		}
		a := answer(q.Name.String())
		resp, err := probestest.DNSResponse(h.ID, q, a.RCode, a.Addrs)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/dns-message")
		w.Write(resp)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestProbe(t *testing.T) {
	// A probe whose resolvers both answer gets a wait a loaded machine
	// cannot outlast. One with a resolver that drops the query waits that
	// one out, with the other's answer due within the same Timeout: long
	// enough for a stalled server, and the cases run in parallel.
	const answer, silence = 10 * time.Second, 2 * time.Second
	sys := probestest.DNSServer(t, network)
	ctl := probestest.DNSServer(t, control)
	doh := dohServer(t, control)
	tests := []struct {
		name         string
		cfg          dns.Config
		wantFailure  string
		wantBlocking ooni.Blocking
		wantState    probes.State
		wantConsist  string
	}{
		{"consistent", dns.Config{Domain: "ok.test", System: sys, Control: ctl}, "", ooni.BlockingNone, probes.StateOK, "consistent"},
		{"nxdomain", dns.Config{Domain: "nx.test", System: sys, Control: ctl}, ooni.FailureDNSNXDOMAINError, ooni.BlockingDNS, probes.StateBlocked, "inconsistent"},
		{"bogon", dns.Config{Domain: "bogon.test", System: sys, Control: ctl}, ooni.FailureDNSBogonError, ooni.BlockingDNS, probes.StateBlocked, "inconsistent"},
		{"timeout", dns.Config{Domain: "drop.test", System: sys, Control: ctl, Timeout: silence}, ooni.FailureGenericTimeoutError, ooni.BlockingDNS, probes.StateBlocked, "inconsistent"},
		{"servfail", dns.Config{Domain: "servfail.test", System: sys, Control: ctl}, ooni.FailureDNSServfailError, ooni.BlockingDNS, probes.StateBlocked, "inconsistent"},
		{"disjoint", dns.Config{Domain: "disjoint.test", System: sys, Control: ctl}, "", ooni.BlockingDNS, probes.StateBlocked, "inconsistent"},
		{"nxdomain everywhere", dns.Config{Domain: "nx-everywhere.test", System: sys, Control: ctl}, ooni.FailureDNSNXDOMAINError, ooni.BlockingNone, probes.StateOK, "consistent"},
		{"injection", dns.Config{Domain: "inject.test", System: sys, Control: ctl, DuplicateWindow: 200 * time.Millisecond}, "", ooni.BlockingDNS, probes.StateBlocked, "inconsistent"},
		{"injection without control", dns.Config{Domain: "inject.test", System: sys, DuplicateWindow: 200 * time.Millisecond}, "", ooni.BlockingDNS, probes.StateBlocked, "inconsistent"},
		{"doh control", dns.Config{Domain: "ok.test", System: sys, Control: doh.URL, HTTPClient: doh.Client()}, "", ooni.BlockingNone, probes.StateOK, "consistent"},
		{"doh control, nxdomain", dns.Config{Domain: "nx.test", System: sys, Control: doh.URL, HTTPClient: doh.Client()}, ooni.FailureDNSNXDOMAINError, ooni.BlockingDNS, probes.StateBlocked, "inconsistent"},
		{"bogon without control", dns.Config{Domain: "bogon.test", System: sys}, ooni.FailureDNSBogonError, ooni.BlockingDNS, probes.StateBlocked, ""},
		// A test network's own addresses, declared public, are answers.
		{"bogon range declared public", dns.Config{Domain: "bogon.test", System: sys, Public: []netip.Prefix{netip.MustParsePrefix("10.10.0.0/16")}}, "", ooni.BlockingUnknown, probes.StateOK, ""},
		{"control dropped", dns.Config{Domain: "ok.test", System: sys, Control: probestest.BlackholeUDP(t), Timeout: silence}, "", ooni.BlockingUnknown, probes.StateOK, ""},
		{"system resolver", dns.Config{Domain: "localhost", Control: ctl}, "", ooni.BlockingNone, probes.StateOK, "consistent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tt.cfg.Timeout == 0 {
				tt.cfg.Timeout = answer
			}
			p, err := dns.New(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			res := p.Run(context.Background(), probes.NewEnv(time.Now(), nil, nil))
			k := res.Keys.(*dns.Keys)
			if got := k.FailureString(); got != tt.wantFailure {
				t.Errorf("failure %q, want %q (%s)", got, tt.wantFailure, res.Details)
			}
			if tt.wantFailure != "" && ooni.Deref(k.FailedOperation) != ooni.OpResolve {
				t.Errorf("failed_operation %q", ooni.Deref(k.FailedOperation))
			}
			if k.Blocking != tt.wantBlocking || res.State != tt.wantState {
				t.Errorf("blocking %v state %v, want %v %v (%s)", k.Blocking, res.State, tt.wantBlocking, tt.wantState, res.Details)
			}
			if got := ooni.Deref(k.XDNSConsistency); got != tt.wantConsist {
				t.Errorf("x_dns_consistency %q, want %q", got, tt.wantConsist)
			}
			wantQueries := 1
			if tt.cfg.Control != "" {
				wantQueries = 2
			}
			if len(k.Queries) != wantQueries {
				t.Errorf("%d queries, want %d", len(k.Queries), wantQueries)
			}
			if tt.cfg.DuplicateWindow > 0 && k.XDNSDuplicateResponses != 1 {
				t.Errorf("x_dns_duplicate_responses %d, want 1", k.XDNSDuplicateResponses)
			}
		})
	}
}

func TestIsBogon(t *testing.T) {
	for _, tt := range []struct {
		ip   string
		want bool
	}{
		{"10.10.34.35", true}, {"127.0.0.1", true}, {"192.168.1.1", true}, {"198.18.0.5", true},
		{"::1", true}, {"fd00::1", true}, {"::ffff:10.0.0.1", true},
		{"93.184.215.14", false}, {"2606:4700::1", false}, {"8.8.8.8", false},
	} {
		if got := dns.IsBogon(netip.MustParseAddr(tt.ip)); got != tt.want {
			t.Errorf("IsBogon(%s) = %v, want %v", tt.ip, got, tt.want)
		}
	}
}

func TestNewRejects(t *testing.T) {
	for _, c := range []dns.Config{{}, {Domain: "1.2.3.4"}, {Domain: "ok.test", System: "resolver"}, {Domain: "ok.test", Control: "dns.google"}, {Domain: "ok.test", Timeout: -1}} {
		if _, err := dns.New(c); err == nil {
			t.Errorf("New(%+v) succeeded", c)
		}
	}
}
