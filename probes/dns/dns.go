// Package dns is the DNS consistency probe: it resolves a name with the
// network's resolver (the system's, or a given address) and with a
// control resolver reached another way (a DNS-over-HTTPS URL, or an
// address reached over a working path), and compares them as OONI's
// web_connectivity does.
//
// The answers are consistent when they share an address or both fail the
// same way. Blocking "dns" is written when the network's resolver says
// NXDOMAIN, times out or fails while the control answers; when it returns
// a bogon address (private, loopback, reserved) the control does not; or
// when its addresses and the control's are disjoint (x_dns_consistency
// "inconsistent"; CDNs that answer differently per resolver can cause this
// without censorship, since the probe has no ASN data to compare). Over
// UDP, the probe can keep listening after the first answer
// (Config.DuplicateWindow): a second, different answer to the same query
// is the mark of an on-path injector racing the real resolver.
package dns

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/commucat/commucat/probes"
	"github.com/commucat/commucat/probes/ooni"
)

// TestName is the probe's test_name.
const TestName = probes.TestNamePrefix + "dns_consistency"

// DefaultTimeout is the default of Config.Timeout.
const DefaultTimeout = 5 * time.Second

// Config says what to probe.
type Config struct {
	// Domain is the name to resolve; required.
	Domain string
	// System is the network's resolver: "" for the system's resolver,
	// or an "ip:port" queried over UDP.
	System string
	// Control is the control resolver: an "ip:port" queried over UDP,
	// an https:// DNS-over-HTTPS URL, or "" for no control.
	Control string
	// Timeout bounds each lookup. If zero, DefaultTimeout.
	Timeout time.Duration
	// DuplicateWindow is how long a UDP lookup keeps listening after
	// its first answer, counting further answers. If zero, it does not.
	DuplicateWindow time.Duration
	// HTTPClient sends DNS-over-HTTPS queries. If nil, a client without
	// cookies, redirects, proxies or kept-alive connections: each lookup
	// closes its connection, so that none outlives the probe's run.
	HTTPClient *http.Client
	// Public lists address ranges taken as public although they are
	// bogons (IsBogon): a test network's own addresses, such as the
	// testnet's 198.18.0.0/15.
	Public []netip.Prefix
}

// Probe is a DNS consistency probe. It is safe for concurrent use.
type Probe struct {
	cfg Config
}

var _ probes.Probe = (*Probe)(nil)

// New returns a probe, or the first problem with cfg.
func New(cfg Config) (*Probe, error) {
	if _, err := dnsmessage.NewName(canonical(cfg.Domain)); err != nil || cfg.Domain == "" || net.ParseIP(cfg.Domain) != nil {
		return nil, fmt.Errorf("dns: probe domain %q is not a name", cfg.Domain)
	}
	if cfg.System != "" {
		if _, err := netip.ParseAddrPort(cfg.System); err != nil {
			return nil, fmt.Errorf("dns: system resolver %q: want ip:port", cfg.System)
		}
	}
	if cfg.Control != "" {
		if strings.HasPrefix(cfg.Control, "https://") {
			if _, err := url.Parse(cfg.Control); err != nil {
				return nil, fmt.Errorf("dns: control resolver: %w", err)
			}
		} else if _, err := netip.ParseAddrPort(cfg.Control); err != nil {
			return nil, fmt.Errorf("dns: control resolver %q: want ip:port or an https:// URL", cfg.Control)
		}
	}
	if cfg.Timeout < 0 || cfg.DuplicateWindow < 0 {
		return nil, errors.New("dns: negative duration in config")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{
			Transport:     &http.Transport{Proxy: nil, ForceAttemptHTTP2: true, DisableKeepAlives: true},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return &Probe{cfg: cfg}, nil
}

// Name returns TestName.
func (*Probe) Name() string { return TestName }

// Input returns the domain.
func (p *Probe) Input() string { return p.cfg.Domain }

// Keys are the probe's test keys.
type Keys struct {
	ooni.TestKeys
	// XDNSConsistency is "consistent" or "inconsistent", or null
	// without a usable control.
	XDNSConsistency *string `json:"x_dns_consistency"`
	// XDNSBogon is whether the network's resolver returned a bogon.
	XDNSBogon bool `json:"x_dns_bogon"`
	// XControlFailure is the control lookup's failure; absent without a
	// control.
	XControlFailure *string `json:"x_control_failure,omitempty"`
	// XDNSDuplicateResponses counts further answers to the network
	// resolver's query within the duplicate window.
	XDNSDuplicateResponses int `json:"x_dns_duplicate_responses,omitempty"`
}

// lookup is one resolver's result.
type lookup struct {
	addrs   []netip.Addr
	failure string
	dups    int
}

// Run resolves with both resolvers and compares.
func (p *Probe) Run(ctx context.Context, env *probes.Env) probes.Result {
	c := p.cfg
	k := &Keys{}
	var sys lookup
	if c.System == "" {
		sys = p.system(ctx, env)
	} else {
		sys = p.udp(ctx, env, c.System, "system")
	}
	var ctl *lookup
	if c.Control != "" {
		var l lookup
		if strings.HasPrefix(c.Control, "https://") {
			l = p.doh(ctx, env, c.Control)
		} else {
			l = p.udp(ctx, env, c.Control, "control")
		}
		ctl = &l
	}
	k.TestKeys = env.Trace().Keys()
	k.XDNSDuplicateResponses = sys.dups
	res := classify(k, sys, ctl, c.Public)
	res.Verdicts = []probes.Verdict{{Network: "dns", Addr: c.Domain, State: res.State, Blocking: k.Blocking, Failure: k.FailureString()}}
	return res
}

// classify fills k from the network's lookup and the control's (nil
// without a control); addresses in public are not bogons.
func classify(k *Keys, sys lookup, ctl *lookup, public []netip.Prefix) probes.Result {
	k.Fail(sys.failure, ooni.OpResolve)
	bogon := ""
	for _, a := range sys.addrs {
		if IsBogon(a) && !slices.ContainsFunc(public, func(p netip.Prefix) bool { return p.Contains(a.Unmap()) }) {
			k.XDNSBogon, bogon = true, a.String()
			break
		}
	}
	if ctl != nil {
		k.XControlFailure = ooni.Str(ctl.failure)
	}
	blocked := func(d string) probes.Result {
		k.Blocking, k.Accessible = ooni.BlockingDNS, ooni.Bool(false)
		return probes.Result{Keys: k, State: probes.StateBlocked, Details: d}
	}
	consistent := func(v string) { k.XDNSConsistency = &v }
	if sys.dups > 0 && ctl == nil {
		// Two answers to one query over UDP: an injector raced the
		// resolver, whatever the control says.
		consistent("inconsistent")
		return blocked(fmt.Sprintf("%d extra answers to one query (injection)", sys.dups))
	}
	switch {
	case ctl == nil && bogon != "":
		k.Fail(ooni.FailureDNSBogonError, ooni.OpResolve)
		return blocked("bogon answer " + bogon)
	case ctl == nil:
		if sys.failure == "" {
			k.Accessible = ooni.Bool(true)
			return probes.Result{Keys: k, State: probes.StateOK, Details: "resolved (no control)"}
		}
		return probes.Result{Keys: k, Details: "lookup " + sys.failure + " (no control)"}
	case ctl.failure != "" && sys.failure == "":
		if bogon != "" {
			k.Fail(ooni.FailureDNSBogonError, ooni.OpResolve)
			return blocked("bogon answer " + bogon + "; control " + ctl.failure)
		}
		k.Accessible = ooni.Bool(true)
		return probes.Result{Keys: k, State: probes.StateOK, Details: "resolved; control " + ctl.failure}
	case ctl.failure != "":
		if ctl.failure == sys.failure {
			consistent("consistent")
			k.Blocking = ooni.BlockingNone
			return probes.Result{Keys: k, State: probes.StateOK, Details: "both resolvers " + sys.failure}
		}
		return probes.Result{Keys: k, Details: "lookup " + sys.failure + ", control " + ctl.failure}
	case sys.failure != "":
		consistent("inconsistent")
		return blocked("lookup " + sys.failure + ", control resolves")
	}
	for _, a := range sys.addrs {
		for _, b := range ctl.addrs {
			if a == b {
				consistent("consistent")
				k.Blocking, k.Accessible = ooni.BlockingNone, ooni.Bool(true)
				d := "answers overlap the control's"
				if sys.dups > 0 {
					d += fmt.Sprintf("; %d extra answers to one query", sys.dups)
				}
				return probes.Result{Keys: k, State: probes.StateOK, Details: d}
			}
		}
	}
	consistent("inconsistent")
	if bogon != "" {
		k.Fail(ooni.FailureDNSBogonError, ooni.OpResolve)
		return blocked("bogon answer " + bogon + ", control differs")
	}
	return blocked("answers disjoint from the control's")
}

// system resolves with the system's resolver.
func (p *Probe) system(ctx context.Context, env *probes.Env) lookup {
	tr := env.Trace()
	tx := tr.NewTransaction()
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	t0 := env.Now()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip4", p.cfg.Domain)
	q := ooni.Query{Engine: "system", Hostname: p.cfg.Domain, QueryType: "A", Tags: []string{"system"}}
	var l lookup
	for _, ip := range ips {
		ip = ip.Unmap()
		l.addrs = append(l.addrs, ip)
		q.Answers = append(q.Answers, ooni.Answer{AnswerType: "A", IPv4: ip.String()})
	}
	if err == nil && len(l.addrs) == 0 {
		err = ooni.ErrDNSNoAnswer
	}
	l.failure = ooni.Classify(err)
	q.Failure = ooni.Str(l.failure)
	tr.AddQuery(tx, q, t0)
	return l
}

// udp resolves over UDP with server ("ip:port").
func (p *Probe) udp(ctx context.Context, env *probes.Env, server, tag string) lookup {
	tr := env.Trace()
	tx := tr.NewTransaction()
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	t0 := env.Now()
	host, port, _ := net.SplitHostPort(server)
	q := ooni.Query{Engine: "udp", Hostname: p.cfg.Domain, QueryType: "A", ResolverAddress: server,
		ResolverHostname: &host, ResolverPort: &port, Tags: []string{tag}}
	resp, raw, dups, err := p.exchangeUDP(ctx, env, server)
	if err == nil {
		err = resp.Err()
	}
	l := lookup{addrs: resp.Addrs, failure: ooni.Classify(err), dups: dups}
	q.Answers, q.RawResponse, q.Rcode, q.Failure = resp.Answers, raw, int64(resp.RCode), ooni.Str(l.failure)
	tr.AddQuery(tx, q, t0)
	return l
}

func (p *Probe) exchangeUDP(ctx context.Context, env *probes.Env, server string) (Response, []byte, int, error) {
	id := randomID()
	query, err := NewQuery(id, p.cfg.Domain, dnsmessage.TypeA)
	if err != nil {
		return Response{}, nil, 0, err
	}
	pc, raddr, err := env.ListenUDP(ctx, server)
	if err != nil {
		return Response{}, nil, 0, err
	}
	defer pc.Close()
	if dl, ok := ctx.Deadline(); ok {
		pc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { pc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := pc.WriteTo(query, raddr); err != nil {
		return Response{}, nil, 0, fmt.Errorf("dns: send query: %w", err)
	}
	var (
		first Response
		raw   []byte
		got   bool
		dups  int
	)
	buf := make([]byte, 4096)
	for {
		n, from, err := pc.ReadFromUDP(buf)
		if err != nil {
			if got {
				return first, raw, dups, nil
			}
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return Response{}, nil, 0, fmt.Errorf("dns: read response: %w", err)
		}
		if !from.IP.Equal(raddr.IP) || from.Port != raddr.Port {
			continue
		}
		r, err := ParseResponse(buf[:n], id, p.cfg.Domain, dnsmessage.TypeA)
		if errors.Is(err, ErrMismatch) {
			continue
		}
		if got {
			if !bytes.Equal(buf[:n], raw) {
				dups++
			}
			continue
		}
		if err != nil {
			return Response{}, bytes.Clone(buf[:n]), 0, err
		}
		first, raw, got = r, bytes.Clone(buf[:n]), true
		if p.cfg.DuplicateWindow <= 0 {
			return first, raw, 0, nil
		}
		pc.SetDeadline(time.Now().Add(p.cfg.DuplicateWindow))
	}
}

// doh resolves over DNS-over-HTTPS (RFC 8484, POST).
func (p *Probe) doh(ctx context.Context, env *probes.Env, u string) lookup {
	tr := env.Trace()
	tx := tr.NewTransaction()
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	t0 := env.Now()
	q := ooni.Query{Engine: "doh", Hostname: p.cfg.Domain, QueryType: "A", ResolverAddress: u, Tags: []string{"control"}}
	resp, raw, err := p.exchangeDoH(ctx, u)
	if err == nil {
		err = resp.Err()
	}
	l := lookup{addrs: resp.Addrs, failure: ooni.Classify(err)}
	q.Answers, q.RawResponse, q.Rcode, q.Failure = resp.Answers, raw, int64(resp.RCode), ooni.Str(l.failure)
	tr.AddQuery(tx, q, t0)
	return l
}

func (p *Probe) exchangeDoH(ctx context.Context, u string) (Response, []byte, error) {
	query, err := NewQuery(0, p.cfg.Domain, dnsmessage.TypeA)
	if err != nil {
		return Response{}, nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(query))
	if err != nil {
		return Response{}, nil, fmt.Errorf("dns: doh request: %w", err)
	}
	req.Header.Set("Content-Type", "application/dns-message")
	req.Header.Set("Accept", "application/dns-message")
	hr, err := p.cfg.HTTPClient.Do(req)
	if err != nil {
		return Response{}, nil, fmt.Errorf("dns: doh: %w", err)
	}
	defer hr.Body.Close()
	if hr.StatusCode != http.StatusOK {
		return Response{}, nil, fmt.Errorf("dns: doh status %d: %w", hr.StatusCode, ooni.ErrDNSMisbehaving)
	}
	raw, err := io.ReadAll(io.LimitReader(hr.Body, MaxResponse+1))
	if err != nil {
		return Response{}, nil, fmt.Errorf("dns: doh body: %w", err)
	}
	r, err := ParseResponse(raw, 0, p.cfg.Domain, dnsmessage.TypeA)
	if errors.Is(err, ErrMismatch) {
		err = fmt.Errorf("%w: %w", err, ooni.ErrDNSMisbehaving)
	}
	return r, raw, err
}

func randomID() uint16 {
	var b [2]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint16(b[:])
}
