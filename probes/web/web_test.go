package web_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/commucat/commucat/probes"
	"github.com/commucat/commucat/probes/ooni"
	"github.com/commucat/commucat/probes/probestest"
	"github.com/commucat/commucat/probes/web"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const page = `<html><head><title>Welcome to the Example Library</title></head><body>` +
	`<p>The library holds many books about many things, and this page describes them at some length.</p></body></html>`

func site(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("X-Library", "1")
	w.Write([]byte(page))
}

func server(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s.URL
}

func TestProbe(t *testing.T) {
	real := server(t, site)
	blockPage := server(t, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		w.Write([]byte("<title>Access denied</title>This site is blocked by order of the authority."))
	})
	samePageWithNotice := server(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Library", "1")
		w.Write([]byte(strings.Replace(page, "</body>", "<p>blocked by order of the authority</p></body>", 1)))
	})
	different := server(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Other", "1")
		w.Write([]byte("<title>Parked domain</title>"))
	})
	cert, pool := probestest.Cert(t, "localhost")
	filtering := probestest.SNIServer(t, cert, "localhost")
	_, filteringPort, _ := net.SplitHostPort(filtering)
	reset := "http://" + probestest.ResetServer(t, 16) + "/"
	refused := "http://" + probestest.RefusedAddr(t) + "/"
	full := "http://" + probestest.FullServer(t) + "/"
	patterns := []string{"blocked by order"}
	tests := []struct {
		name         string
		cfg          web.Config
		wantFailure  string
		wantOp       string
		wantBlocking ooni.Blocking
		wantState    probes.State
	}{
		{"same page", web.Config{URL: real, ControlURL: real}, "", "", ooni.BlockingNone, probes.StateOK},
		{"block page", web.Config{URL: blockPage, ControlURL: real}, "", "", ooni.BlockingHTTPDiff, probes.StateBlocked},
		{"block pattern", web.Config{URL: samePageWithNotice, ControlURL: real, BlockPatterns: patterns}, "", "", ooni.BlockingHTTPDiff, probes.StateBlocked},
		{"block pattern, no control", web.Config{URL: blockPage, BlockPatterns: patterns}, "", "", ooni.BlockingHTTPDiff, probes.StateBlocked},
		{"different page", web.Config{URL: different, ControlURL: real}, "", "", ooni.BlockingHTTPDiff, probes.StateBlocked},
		{"control page given", web.Config{URL: real, ControlPage: &web.Page{Status: 200, Header: http.Header{"X-Library": {"1"}}, Body: []byte(page), Length: int64(len(page))}}, "", "", ooni.BlockingNone, probes.StateOK},
		{"no control", web.Config{URL: different}, "", "", ooni.BlockingUnknown, probes.StateOK},
		{"reset", web.Config{URL: reset, ControlURL: real}, ooni.FailureConnectionReset, ooni.OpHTTPRoundTrip, ooni.BlockingHTTPFailure, probes.StateBlocked},
		{"tls reset", web.Config{URL: "https://localhost:" + filteringPort + "/", ControlURL: real, RootCAs: pool}, ooni.FailureConnectionReset, ooni.OpTLSHandshake, ooni.BlockingHTTPFailure, probes.StateBlocked},
		{"refused, control works", web.Config{URL: refused, ControlURL: real}, ooni.FailureConnectionRefused, ooni.OpConnect, ooni.BlockingTCPIP, probes.StateBlocked},
		{"refused, no control", web.Config{URL: refused}, ooni.FailureConnectionRefused, ooni.OpConnect, ooni.BlockingUnknown, probes.StateUnknown},
		{"connect timeout", web.Config{URL: full, ControlURL: real, Timeout: 500 * time.Millisecond}, ooni.FailureGenericTimeoutError, ooni.OpConnect, ooni.BlockingTCPIP, probes.StateBlocked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := web.New(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			res := p.Run(ctx, probes.NewEnv(time.Now(), nil, nil))
			k := res.Keys.(*web.Keys)
			if got := k.FailureString(); got != tt.wantFailure || ooni.Deref(k.FailedOperation) != tt.wantOp {
				t.Errorf("failure %q at %q, want %q at %q", got, ooni.Deref(k.FailedOperation), tt.wantFailure, tt.wantOp)
			}
			if k.Blocking != tt.wantBlocking || res.State != tt.wantState {
				t.Errorf("blocking %v state %v, want %v %v (%s)", k.Blocking, res.State, tt.wantBlocking, tt.wantState, res.Details)
			}
			if len(k.Requests) == 0 {
				t.Error("no request recorded")
			}
		})
	}
}

func TestCompare(t *testing.T) {
	a := web.Page{Status: 200, Header: http.Header{"X-A": {"1"}, "Date": {"x"}}, Body: []byte("<title>Hello world wide</title>" + strings.Repeat("x", 1000)), Length: 1031}
	tests := []struct {
		name       string
		b          web.Page
		consistent bool
	}{
		{"same", a, true},
		{"status differs", web.Page{Status: 302, Header: a.Header, Body: a.Body, Length: a.Length}, false},
		{"only title matches", web.Page{Status: 200, Header: http.Header{"X-B": {"1"}}, Body: []byte("<TITLE> Hello  there</TITLE>"), Length: 28}, true},
		{"nothing matches", web.Page{Status: 200, Header: http.Header{"X-B": {"1"}}, Body: []byte("<title>Blocked</title>"), Length: 22}, false},
		{"length matches", web.Page{Status: 200, Header: http.Header{"X-B": {"1"}}, Body: []byte(strings.Repeat("y", 900)), Length: 900}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := web.Compare(a, tt.b).Consistent(); got != tt.consistent {
				t.Errorf("Consistent() = %v, want %v (%+v)", got, tt.consistent, web.Compare(a, tt.b))
			}
		})
	}
}

func TestTitle(t *testing.T) {
	for in, want := range map[string]string{
		"<title>A  b\n c</title>":          "A b c",
		"<TITLE lang=en>x</TITLE><title>y": "x",
		"no title":                         "",
		"<title>\xff</title>":              "",
	} {
		if got := web.Title([]byte(in)); got != want {
			t.Errorf("Title(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestHTTPSControl fetches an https URL and its control, recording both
// TLS handshakes.
func TestHTTPSControl(t *testing.T) {
	s := httptest.NewTLSServer(http.HandlerFunc(site))
	defer s.Close()
	pool := s.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	p, err := web.New(web.Config{URL: s.URL, ControlURL: s.URL, RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	res := p.Run(context.Background(), probes.NewEnv(time.Now(), nil, nil))
	k := res.Keys.(*web.Keys)
	if res.State != probes.StateOK || len(k.TLSHandshakes) != 2 || k.TLSHandshakes[0].TLSVersion == "" {
		t.Errorf("state %v, handshakes %+v (%s)", res.State, k.TLSHandshakes, res.Details)
	}
}
