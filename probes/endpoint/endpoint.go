// Package endpoint is the transport probe: for one endpoint of an invite
// it measures the transport's dial time (its own handshake: TLS, obfs4,
// QUIC...), and, given a Handshake that completes the gateway's session
// handshake (core/client's hybrid Noise handshake needs the device's key,
// so the caller plugs it in), the session handshake time, the round-trip
// time and a short throughput sample.
//
// For transports over TCP the probe first times a bare TCP connect to the
// endpoint: it separates blocking of the address (blocking "tcp_ip") from
// blocking of the transport's traffic after the connect ("tls" for the
// TLS-camouflaged transports websocket and reality, "tcp_ip" for the
// others), and it stands in for the RTT when there is no session. For
// transports over UDP (quic, kcp) a dial timeout is blocking "udp".
//
// The report's input is "transport@host:port"; the endpoint's parameters
// (keys, certificates) are never written.
package endpoint

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/commucat/commucat/core/invite"
	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/probes"
	"github.com/commucat/commucat/probes/ooni"
)

// TestName is the probe's test_name.
const TestName = probes.TestNamePrefix + "transport"

// Defaults for the zero fields of Config.
const (
	DefaultDialTimeout = 10 * time.Second
	DefaultPings       = 3
	DefaultSampleBytes = 256 << 10
	DefaultSampleTime  = 5 * time.Second
)

// FailureBadEndpoint is the failure of an endpoint whose transport cannot
// be built (unknown name, bad parameters).
const FailureBadEndpoint = "x_bad_endpoint"

// Builder builds the client side of a transport by name;
// *transport.Registry is one.
type Builder interface {
	New(name string, p transport.Params) (transport.Transport, error)
}

// Handshake completes the gateway's session handshake over a freshly
// dialled conn and returns the session as a Link. It owns conn: on error
// it closes it.
type Handshake func(ctx context.Context, conn net.Conn) (Link, error)

// Link is an established session with the gateway.
type Link interface {
	// Ping measures one round trip through the session.
	Ping(ctx context.Context) (time.Duration, error)
	// Close ends the session and its connection.
	Close() error
}

// Sampler is implemented by links that can carry a throughput sample:
// Sample moves up to n bytes through the session and returns how many
// went through before ctx ended or an error.
type Sampler interface {
	Sample(ctx context.Context, n int) (int, error)
}

// Config says which endpoint to probe and how.
type Config struct {
	// Endpoint is the invite's endpoint; required.
	Endpoint invite.Endpoint
	// Transports builds the endpoint's transport; required.
	Transports Builder
	// Handshake, if set, completes the session handshake after the dial.
	Handshake Handshake
	// DialTimeout bounds the connect, the dial and the session handshake
	// each. If zero, DefaultDialTimeout.
	DialTimeout time.Duration
	// Pings is how many round trips are timed; the RTT is the least. If
	// zero, DefaultPings.
	Pings int
	// SampleBytes and SampleTime bound the throughput sample. If zero,
	// DefaultSampleBytes and DefaultSampleTime.
	SampleBytes int
	SampleTime  time.Duration
}

// udpTransports are the built-in transports that run over UDP;
// tlsTransports those that look like TLS on the wire.
var (
	udpTransports = []string{"quic", "kcp"}
	tlsTransports = []string{"websocket", "reality"}
)

// Network returns "udp" for the transports that run over UDP and "tcp"
// for the others.
func Network(transportName string) string {
	if slices.Contains(udpTransports, transportName) {
		return "udp"
	}
	return "tcp"
}

// Probe probes one endpoint. It is safe for concurrent use if its
// Builder and Handshake are.
type Probe struct {
	cfg Config
}

var _ probes.Probe = (*Probe)(nil)

// New returns a probe, or the first problem with cfg.
func New(cfg Config) (*Probe, error) {
	if cfg.Endpoint.Transport == "" {
		return nil, errors.New("endpoint: no transport name")
	}
	if _, _, err := net.SplitHostPort(cfg.Endpoint.Addr); err != nil {
		return nil, fmt.Errorf("endpoint: address %q: %w", cfg.Endpoint.Addr, err)
	}
	if cfg.Transports == nil {
		return nil, errors.New("endpoint: no transport builder")
	}
	if cfg.DialTimeout < 0 || cfg.Pings < 0 || cfg.SampleBytes < 0 || cfg.SampleTime < 0 {
		return nil, errors.New("endpoint: negative value in config")
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.Pings == 0 {
		cfg.Pings = DefaultPings
	}
	if cfg.SampleBytes == 0 {
		cfg.SampleBytes = DefaultSampleBytes
	}
	if cfg.SampleTime == 0 {
		cfg.SampleTime = DefaultSampleTime
	}
	return &Probe{cfg: cfg}, nil
}

// ForInvite returns a probe for every endpoint of eps, each configured as
// base with its Endpoint set.
func ForInvite(eps []invite.Endpoint, base Config) ([]probes.Probe, error) {
	var ps []probes.Probe
	for _, ep := range eps {
		c := base
		c.Endpoint = ep
		p, err := New(c)
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// Name returns TestName.
func (*Probe) Name() string { return TestName }

// Input returns "transport@host:port".
func (p *Probe) Input() string { return p.cfg.Endpoint.Transport + "@" + p.cfg.Endpoint.Addr }

// Keys are the probe's test keys.
type Keys struct {
	ooni.TestKeys
	XTransport string `json:"x_transport"`
	// XTCPConnectSeconds is the bare TCP connect's time (TCP transports).
	XTCPConnectSeconds *float64 `json:"x_tcp_connect_seconds"`
	// XHandshakeSeconds is the transport dial's time.
	XHandshakeSeconds *float64 `json:"x_handshake_seconds"`
	// XSessionHandshakeSeconds is the session handshake's time.
	XSessionHandshakeSeconds *float64 `json:"x_session_handshake_seconds"`
	// XRTTSeconds is the least session round trip, or the TCP connect's
	// time without a session; XRTTSource says which ("session" or
	// "tcp_connect").
	XRTTSeconds *float64 `json:"x_rtt_seconds"`
	XRTTSource  string   `json:"x_rtt_source,omitempty"`
	// XThroughput is the sample's rate in bytes per second.
	XThroughput *float64 `json:"x_throughput_bytes_per_second"`
}

func secs(d time.Duration) *float64 {
	v := ooni.Seconds(d)
	return &v
}

// Run probes the endpoint.
func (p *Probe) Run(ctx context.Context, env *probes.Env) probes.Result {
	c := p.cfg
	ep := c.Endpoint
	network := Network(ep.Transport)
	k := &Keys{XTransport: ep.Transport}
	tr := env.Trace()
	v := probes.Verdict{Transport: ep.Transport, Network: network, Addr: ep.Addr}
	done := func(res probes.Result) probes.Result {
		v.State, v.Blocking, v.Failure = res.State, k.Blocking, k.FailureString()
		res.Verdicts = []probes.Verdict{v}
		return res
	}
	t, err := c.Transports.New(ep.Transport, transport.Params(ep.Params))
	if err != nil {
		k.TestKeys = tr.Keys()
		k.Fail(FailureBadEndpoint, ooni.OpTransportDial)
		return done(probes.Result{Keys: k, Details: err.Error()})
	}
	defer transport.Close(t) //nolint:errcheck // the probe is over
	addr, err := env.Await(ctx, network, ep.Addr)
	if err != nil {
		k.TestKeys = tr.Keys()
		k.Fail(ooni.Classify(err), ooni.OpConnect)
		return done(probes.Result{Keys: k, Details: "not tried: residual block"})
	}
	tx := tr.NewTransaction()
	var tcpRTT time.Duration
	if network == "tcp" {
		cctx, cancel := context.WithTimeout(ctx, c.DialTimeout)
		t0 := env.Now()
		conn, err := env.Dial(cctx, "tcp", addr)
		cancel()
		f := tr.TCPConnect(tx, addr, t0, err, "bare")
		if f != "" {
			k.TestKeys = tr.Keys()
			k.Fail(f, ooni.OpConnect)
			return done(classifyFailure(k, f, "tcp_ip", "connect"))
		}
		tcpRTT = env.Now().Sub(t0)
		k.XTCPConnectSeconds = secs(tcpRTT)
		conn.Close()
	}
	dctx, cancel := context.WithTimeout(ctx, c.DialTimeout)
	defer cancel()
	t0 := env.Now()
	conn, err := t.Dial(dctx, addr)
	if err != nil && dctx.Err() != nil && !errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("%w (%w)", context.DeadlineExceeded, err)
	}
	f := tr.Event(tx, ooni.OpTransportDial, network, addr, 0, t0, err, ep.Transport)
	if f != "" {
		k.TestKeys = tr.Keys()
		k.Fail(f, ooni.OpTransportDial)
		blocking := ooni.BlockingTCPIP
		switch {
		case network == "udp":
			blocking = ooni.BlockingUDP
		case slices.Contains(tlsTransports, ep.Transport):
			blocking = ooni.BlockingTLS
		}
		return done(classifyFailure(k, f, blocking, ep.Transport+" dial"))
	}
	v.Handshake = env.Now().Sub(t0)
	k.XHandshakeSeconds = secs(v.Handshake)
	if c.Handshake == nil {
		conn.Close()
		if tcpRTT > 0 {
			k.XRTTSeconds, k.XRTTSource, v.RTT = secs(tcpRTT), "tcp_connect", tcpRTT
		}
		k.TestKeys = tr.Keys()
		k.Blocking, k.Accessible = ooni.BlockingNone, ooni.Bool(true)
		return done(probes.Result{Keys: k, State: probes.StateOK, Details: fmt.Sprintf("dial %.3fs", *k.XHandshakeSeconds)})
	}
	hctx, hcancel := context.WithTimeout(ctx, c.DialTimeout)
	defer hcancel()
	t1 := env.Now()
	link, err := c.Handshake(hctx, conn)
	f = tr.Event(tx, ooni.OpSessionHandshake, network, addr, 0, t1, err, ep.Transport)
	if f != "" {
		k.TestKeys = tr.Keys()
		k.Fail(f, ooni.OpSessionHandshake)
		return done(classifyFailure(k, f, ooni.BlockingTCPIP, "session handshake"))
	}
	defer link.Close()
	k.XSessionHandshakeSeconds = secs(env.Now().Sub(t1))
	var best time.Duration
	for i := 0; i < c.Pings; i++ {
		pctx, pcancel := context.WithTimeout(ctx, c.DialTimeout)
		t2 := env.Now()
		d, err := link.Ping(pctx)
		pcancel()
		tr.Event(tx, "x_ping", network, addr, 0, t2, err, ep.Transport)
		if err != nil {
			break
		}
		if best == 0 || d < best {
			best = d
		}
	}
	if best > 0 {
		k.XRTTSeconds, k.XRTTSource, v.RTT = secs(best), "session", best
	} else if tcpRTT > 0 {
		k.XRTTSeconds, k.XRTTSource, v.RTT = secs(tcpRTT), "tcp_connect", tcpRTT
	}
	if s, ok := link.(Sampler); ok {
		sctx, scancel := context.WithTimeout(ctx, c.SampleTime)
		t3 := env.Now()
		n, err := s.Sample(sctx, c.SampleBytes)
		scancel()
		el := env.Now().Sub(t3)
		tr.Event(tx, "x_sample", network, addr, n, t3, err, ep.Transport)
		if n > 0 && el > 0 {
			rate := float64(int64(float64(n)/el.Seconds()*10)) / 10
			k.XThroughput, v.Throughput = &rate, rate
		}
	}
	k.TestKeys = tr.Keys()
	k.Blocking, k.Accessible = ooni.BlockingNone, ooni.Bool(true)
	d := fmt.Sprintf("dial %.3fs, session %.3fs", *k.XHandshakeSeconds, *k.XSessionHandshakeSeconds)
	if k.XRTTSeconds != nil {
		d += fmt.Sprintf(", rtt %.3fs", *k.XRTTSeconds)
	}
	if k.XThroughput != nil {
		d += fmt.Sprintf(", %.0f B/s", *k.XThroughput)
	}
	return done(probes.Result{Keys: k, State: probes.StateOK, Details: d})
}

// classifyFailure writes blocking for failures that look like
// interference and leaves the others inconclusive.
func classifyFailure(k *Keys, f string, blocking ooni.Blocking, what string) probes.Result {
	k.Accessible = ooni.Bool(false)
	if ooni.IsInterference(f) {
		k.Blocking = blocking
		return probes.Result{Keys: k, State: probes.StateBlocked, Details: what + " " + f}
	}
	return probes.Result{Keys: k, Details: what + " " + f}
}
