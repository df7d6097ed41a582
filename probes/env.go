package probes

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/commucat/commucat/probes/ooni"
)

// Env is what the Runner lends a probe for one run: the measurement's
// trace and clock, a logger, and a dialer that respects residual blocks.
// It is safe for concurrent use.
type Env struct {
	trace *ooni.Trace
	log   *slog.Logger
	res   *residuals
}

// NewEnv returns an Env for running a probe without a Runner, as tests
// and single measurements do: a measurement starting at start, a clock
// (time.Now if nil), and a logger (discarding if nil). Its dialer never
// waits for residual blocks: it fails at once with ooni.ErrResidual.
func NewEnv(start time.Time, now func() time.Time, log *slog.Logger) *Env {
	if now == nil {
		now = time.Now
	}
	return newEnv(ooni.NewTrace(start, now), log, newResiduals(now, -1, nil))
}

func newEnv(tr *ooni.Trace, log *slog.Logger, res *residuals) *Env {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Env{trace: tr, log: log, res: res}
}

// Trace is the measurement's trace: probes record their operations in it.
func (e *Env) Trace() *ooni.Trace { return e.trace }

// Now reads the measurement's clock.
func (e *Env) Now() time.Time { return e.trace.Now() }

// Log is the probe's logger.
func (e *Env) Log() *slog.Logger { return e.log }

// Await returns the address to use for reaching addr over network ("tcp"
// or "udp"): addr itself when it is not under a residual block, else an
// alternate address the Runner was given for it that is not blocked, else
// addr after waiting for the block to end if that takes no longer than the
// Runner's MaxResidualWait. Otherwise it fails with an error wrapping
// ooni.ErrResidual.
func (e *Env) Await(ctx context.Context, network, addr string) (string, error) {
	return e.res.await(ctx, network, addr)
}

// Dial connects to addr over network after Await, with a fresh source
// port for every connection.
func (e *Env) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	to, err := e.Await(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	return d.DialContext(ctx, network, to)
}

// Poison records that addr is under a residual block over network until
// until, so that later probes wait for it or go elsewhere.
func (e *Env) Poison(network, addr string, until time.Time) {
	e.res.poison(network, addr, until)
}

// residuals is the table of residual blocks the probes of one Runner
// share.
type residuals struct {
	now     func() time.Time
	maxWait time.Duration // < 0: never wait
	alt     map[string][]string

	mu    sync.Mutex
	until map[string]time.Time
}

func newResiduals(now func() time.Time, maxWait time.Duration, alt map[string][]string) *residuals {
	return &residuals{now: now, maxWait: maxWait, alt: alt, until: make(map[string]time.Time)}
}

func residualKey(network, addr string) string { return network + "/" + addr }

func (r *residuals) poison(network, addr string, until time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := residualKey(network, addr)
	if until.After(r.until[k]) {
		r.until[k] = until
	}
}

// blockedUntil returns when the block on addr ends, or the zero time.
func (r *residuals) blockedUntil(network, addr string, now time.Time) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := residualKey(network, addr)
	u, ok := r.until[k]
	if !ok {
		return time.Time{}
	}
	if !now.Before(u) {
		delete(r.until, k)
		return time.Time{}
	}
	return u
}

func (r *residuals) await(ctx context.Context, network, addr string) (string, error) {
	for {
		now := r.now()
		until := r.blockedUntil(network, addr, now)
		if until.IsZero() {
			return addr, nil
		}
		for _, alt := range r.alt[addr] {
			if r.blockedUntil(network, alt, now).IsZero() {
				return alt, nil
			}
		}
		wait := until.Sub(now)
		if r.maxWait < 0 || wait > r.maxWait {
			return "", fmt.Errorf("probes: %s %s under a residual block for %v more: %w", network, addr, wait.Round(time.Second), ooni.ErrResidual)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", fmt.Errorf("probes: waiting for a residual block on %s %s: %w", network, addr, ctx.Err())
		case <-t.C:
		}
	}
}

// Resolve returns host itself if it is an IP address, else the first
// address the system resolver gives for it (IPv4 first), recording the
// lookup in the trace as a query with engine "system".
func (e *Env) Resolve(ctx context.Context, host string) (string, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.String(), nil
	}
	tx := e.trace.NewTransaction()
	t0 := e.Now()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	q := ooni.Query{Engine: "system", Hostname: host, QueryType: "ANY", Tags: []string{"system"}}
	if err == nil && len(ips) == 0 {
		err = ooni.ErrDNSNoAnswer
	}
	q.Failure = ooni.Str(ooni.Classify(err))
	slices.SortStableFunc(ips, func(a, b netip.Addr) int {
		switch {
		case a.Is4() && !b.Is4():
			return -1
		case !a.Is4() && b.Is4():
			return 1
		}
		return 0
	})
	for _, ip := range ips {
		ip = ip.Unmap()
		if ip.Is4() {
			q.Answers = append(q.Answers, ooni.Answer{AnswerType: "A", IPv4: ip.String()})
		} else {
			q.Answers = append(q.Answers, ooni.Answer{AnswerType: "AAAA", IPv6: ip.String()})
		}
	}
	e.trace.AddQuery(tx, q, t0)
	if err != nil {
		return "", fmt.Errorf("probes: resolve %s: %w", host, err)
	}
	return ips[0].Unmap().String(), nil
}

// ListenUDP prepares a fresh UDP socket for reaching addr ("ip:port",
// after Await): bound to the loopback address for a loopback target and
// to the unspecified address otherwise, on a new source port. It returns
// the socket and the resolved destination.
func (e *Env) ListenUDP(ctx context.Context, addr string) (*net.UDPConn, *net.UDPAddr, error) {
	to, err := e.Await(ctx, "udp", addr)
	if err != nil {
		return nil, nil, err
	}
	ap, err := netip.ParseAddrPort(to)
	if err != nil {
		return nil, nil, fmt.Errorf("probes: udp address %q: %w", to, err)
	}
	raddr := net.UDPAddrFromAddrPort(ap)
	laddr := &net.UDPAddr{}
	if ap.Addr().IsLoopback() {
		laddr.IP = raddr.IP
	}
	pc, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return nil, nil, fmt.Errorf("probes: udp socket: %w", err)
	}
	return pc, raddr, nil
}
