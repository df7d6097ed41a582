// Package web is the HTTP fetch probe: it fetches a URL over the network
// under test and compares the page with a control (a fetch of a control
// URL, or a page the caller got over a working path) as OONI's
// web_connectivity does.
//
// A fetch that fails is blocking "dns" (the name did not resolve while
// the control fetch worked), "tcp_ip" (the connect failed) or
// "http-failure" (the TLS handshake, the request or the body failed); a
// page that differs from the control (see Diff), or that carries one of
// the caller's block-page patterns, is "http-diff". Without a control,
// only failures that look like interference (resets, timeouts, early
// ends) and block-page patterns are written as blocking.
//
// Redirects are not followed: the first response is the page.
package web

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/commucat/commucat/probes"
	"github.com/commucat/commucat/probes/ooni"
)

// TestName is the probe's test_name.
const TestName = probes.TestNamePrefix + "http_fetch"

// Defaults for the zero fields of Config.
const (
	DefaultTimeout  = 30 * time.Second
	DefaultMaxBody  = 1 << 20
	DefaultSnapshot = 4096
	// UserAgent is sent with every request, a common browser's.
	UserAgent = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)

// Config says what to fetch.
type Config struct {
	// URL is the http or https URL to fetch; required.
	URL string
	// ControlURL is fetched as the control (by ControlClient, or the
	// probe's own dialer if that is nil); ControlPage is a control page
	// the caller already has. At most one of them.
	ControlURL  string
	ControlPage *Page
	// ControlClient fetches ControlURL, for example through the
	// gateway. If nil, the control is fetched like the target.
	ControlClient *http.Client
	// RootCAs verifies the target's certificates; if nil, the system's.
	RootCAs *x509.CertPool
	// BlockPatterns are substrings that mark a known block page.
	BlockPatterns []string
	// Timeout bounds each fetch. If zero, DefaultTimeout.
	Timeout time.Duration
	// MaxBody bounds the body read for the comparison; Snapshot how much
	// of it is written to the report. If zero, DefaultMaxBody and
	// DefaultSnapshot.
	MaxBody  int64
	Snapshot int
}

// Probe is an HTTP fetch probe. It is safe for concurrent use.
type Probe struct {
	cfg Config
	u   *url.URL
}

var _ probes.Probe = (*Probe)(nil)

// New returns a probe, or the first problem with cfg.
func New(cfg Config) (*Probe, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return nil, fmt.Errorf("web: probe URL %q is not an http or https URL", cfg.URL)
	}
	if cfg.ControlURL != "" && cfg.ControlPage != nil {
		return nil, errors.New("web: both a control URL and a control page")
	}
	if cfg.ControlURL != "" {
		if cu, err := url.Parse(cfg.ControlURL); err != nil || (cu.Scheme != "http" && cu.Scheme != "https") {
			return nil, fmt.Errorf("web: control URL %q is not an http or https URL", cfg.ControlURL)
		}
	}
	if cfg.Timeout < 0 || cfg.MaxBody < 0 || cfg.Snapshot < 0 {
		return nil, errors.New("web: negative value in config")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxBody == 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.Snapshot == 0 {
		cfg.Snapshot = DefaultSnapshot
	}
	return &Probe{cfg: cfg, u: u}, nil
}

// Name returns TestName.
func (*Probe) Name() string { return TestName }

// Input returns the URL.
func (p *Probe) Input() string { return p.cfg.URL }

// Keys are the probe's test keys.
type Keys struct {
	ooni.TestKeys
	XControlFailure   *string  `json:"x_control_failure,omitempty"`
	XStatusCodeMatch  *bool    `json:"x_status_code_match"`
	XBodyLengthMatch  *bool    `json:"x_body_length_match"`
	XBodyProportion   *float64 `json:"x_body_proportion"`
	XHeadersMatch     *bool    `json:"x_headers_match"`
	XTitleMatch       *bool    `json:"x_title_match"`
	XBlockPage        *bool    `json:"x_blockpage"`
	XBlockPagePattern string   `json:"x_blockpage_pattern,omitempty"`
}

// fetchResult is one fetch's outcome.
type fetchResult struct {
	page    *Page
	failure string
	op      string
}

// Run fetches the control and the target and compares them.
func (p *Probe) Run(ctx context.Context, env *probes.Env) probes.Result {
	c := p.cfg
	k := &Keys{}
	var ctl *fetchResult
	switch {
	case c.ControlPage != nil:
		ctl = &fetchResult{page: c.ControlPage}
	case c.ControlURL != "":
		f := p.fetch(ctx, env, c.ControlClient, c.ControlURL, "control")
		ctl = &f
	}
	target := p.fetch(ctx, env, nil, c.URL, "target")
	k.TestKeys = env.Trace().Keys()
	res := classify(k, target, ctl, c.BlockPatterns)
	host, port := p.u.Hostname(), p.u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[p.u.Scheme]
	}
	res.Verdicts = []probes.Verdict{{Network: "tcp", Addr: net.JoinHostPort(host, port), State: res.State, Blocking: k.Blocking, Failure: k.FailureString()}}
	return res
}

func classify(k *Keys, target fetchResult, ctl *fetchResult, patterns []string) probes.Result {
	k.Fail(target.failure, target.op)
	if ctl != nil {
		k.XControlFailure = ooni.Str(ctl.failure)
	}
	controlOK := ctl != nil && ctl.failure == ""
	if target.failure != "" {
		k.Accessible = ooni.Bool(false)
		d := target.op + " " + target.failure
		if target.failure == ooni.FailureResidualAvoided {
			return probes.Result{Keys: k, Details: "not tried: residual block"}
		}
		if !controlOK && !ooni.IsInterference(target.failure) {
			if ctl != nil {
				d += ", control " + ctl.failure
			}
			return probes.Result{Keys: k, Details: d}
		}
		switch target.op {
		case ooni.OpResolve:
			k.Blocking = ooni.BlockingDNS
		case ooni.OpConnect:
			k.Blocking = ooni.BlockingTCPIP
		default:
			k.Blocking = ooni.BlockingHTTPFailure
		}
		if controlOK {
			d += ", control works"
		}
		return probes.Result{Keys: k, State: probes.StateBlocked, Details: d}
	}
	if m := MatchBlockPage(target.page.Body, patterns); m != "" && (ctl == nil || ctl.page == nil || MatchBlockPage(ctl.page.Body, []string{m}) == "") {
		k.XBlockPage, k.XBlockPagePattern = ooni.Bool(true), m
		k.Blocking, k.Accessible = ooni.BlockingHTTPDiff, ooni.Bool(false)
		return probes.Result{Keys: k, State: probes.StateBlocked, Details: "block page (" + m + ")"}
	}
	k.XBlockPage = ooni.Bool(false)
	if !controlOK {
		k.Accessible = ooni.Bool(true)
		d := "fetched " + strconv.Itoa(target.page.Status) + " (no control to compare)"
		if ctl != nil {
			d = "fetched " + strconv.Itoa(target.page.Status) + ", control " + ctl.failure
		}
		return probes.Result{Keys: k, State: probes.StateOK, Details: d}
	}
	d := Compare(*target.page, *ctl.page)
	k.XStatusCodeMatch, k.XBodyLengthMatch, k.XHeadersMatch, k.XTitleMatch = &d.StatusMatch, &d.BodyLengthMatch, &d.HeadersMatch, &d.TitleMatch
	prop := float64(int(d.BodyProportion*1000)) / 1000
	k.XBodyProportion = &prop
	if d.Consistent() {
		k.Blocking, k.Accessible = ooni.BlockingNone, ooni.Bool(true)
		return probes.Result{Keys: k, State: probes.StateOK, Details: "page matches the control"}
	}
	k.Blocking, k.Accessible = ooni.BlockingHTTPDiff, ooni.Bool(false)
	return probes.Result{Keys: k, State: probes.StateBlocked,
		Details: fmt.Sprintf("page differs from the control (status %d vs %d, body proportion %.2f)", target.page.Status, ctl.page.Status, d.BodyProportion)}
}

// fetch GETs u, with client if not nil and else with a transport whose
// connects and handshakes are recorded in the trace.
func (p *Probe) fetch(ctx context.Context, env *probes.Env, client *http.Client, u, tag string) fetchResult {
	tr := env.Trace()
	tx := tr.NewTransaction()
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	var st probes.Stage
	if client == nil {
		t := probes.TracedHTTPTransport(env, tx, tag, p.cfg.RootCAs, &st, nil)
		defer t.CloseIdleConnections()
		client = &http.Client{Transport: t}
	}
	client = noRedirects(client)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fetchResult{failure: ooni.Classify(err), op: ooni.OpHTTPRoundTrip}
	}
	req.Header.Set("User-Agent", UserAgent)
	req.Header.Set("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
	req.Header.Set("Accept-Language", "en-US,en;q=0.9")
	rt := ooni.RoundTrip{Network: "tcp", Address: req.URL.Host, Request: req, Start: env.Now(), Tags: []string{tag}}
	resp, err := client.Do(req)
	if err != nil {
		op, f := st.Get()
		if f == "" {
			f = ooni.Classify(err)
		}
		rt.Failure = f
		tr.AddRequest(tx, rt)
		return fetchResult{failure: f, op: op}
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	t1 := env.Now()
	n, err := io.Copy(&body, io.LimitReader(resp.Body, p.cfg.MaxBody))
	rt.Response, rt.BodyLength = resp, n
	snap := body.Bytes()
	if len(snap) > p.cfg.Snapshot {
		snap, rt.Truncated = snap[:p.cfg.Snapshot], true
	}
	if n == p.cfg.MaxBody {
		rt.Truncated = true
	}
	rt.Body = snap
	page := &Page{Status: resp.StatusCode, Header: resp.Header, Body: body.Bytes(), Length: n}
	if err != nil {
		rt.Failure = ooni.Classify(err)
		tr.EventFailure(tx, ooni.OpRead, "tcp", req.URL.Host, int(n), t1, rt.Failure, tag)
		tr.AddRequest(tx, rt)
		return fetchResult{failure: rt.Failure, op: ooni.OpRead}
	}
	tr.AddRequest(tx, rt)
	return fetchResult{page: page}
}

// noRedirects returns a copy of c that does not follow redirects.
func noRedirects(c *http.Client) *http.Client {
	cc := *c
	cc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &cc
}
