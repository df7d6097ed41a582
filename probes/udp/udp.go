// Package udp is the UDP reachability probe: does anything come back from
// the gateway's UDP address? By default it sends a QUIC Initial (a QUIC
// handshake that does not verify the server) and counts any answer, even
// a refusal, as reachable; with a Transport (the invite's quic or kcp
// endpoint) it dials that transport instead. Only a timeout means
// unreachable, written as blocking "udp".
package udp

import (
	"context"
	stdtls "crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/probes"
	"github.com/commucat/commucat/probes/ooni"
)

// TestName is the probe's test_name.
const TestName = probes.TestNamePrefix + "udp_reachability"

// DefaultTimeout is the default of Config.Timeout.
const DefaultTimeout = 5 * time.Second

// Config says what to probe.
type Config struct {
	// Addr is the "host:port" to reach; required.
	Addr string
	// Transport, if set, is dialled instead of sending a bare QUIC
	// Initial; TransportName is then its name for the verdict.
	Transport     transport.Transport
	TransportName string
	// SNI and ALPN go in the QUIC Initial; if empty, no server name and
	// "h3".
	SNI  string
	ALPN string
	// Timeout bounds the attempt. If zero, DefaultTimeout.
	Timeout time.Duration
}

// Probe is a UDP reachability probe. It is safe for concurrent use.
type Probe struct {
	cfg Config
}

var _ probes.Probe = (*Probe)(nil)

// New returns a probe, or the first problem with cfg.
func New(cfg Config) (*Probe, error) {
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("udp: probe address %q: %w", cfg.Addr, err)
	}
	if cfg.Timeout < 0 {
		return nil, errors.New("udp: negative timeout")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.ALPN == "" {
		cfg.ALPN = "h3"
	}
	if cfg.Transport != nil && cfg.TransportName == "" {
		cfg.TransportName = cfg.Transport.Name()
	}
	return &Probe{cfg: cfg}, nil
}

// Name returns TestName.
func (*Probe) Name() string { return TestName }

// Input returns the address.
func (p *Probe) Input() string { return p.cfg.Addr }

// Keys are the probe's test keys.
type Keys struct {
	ooni.TestKeys
	// XUDPReachable is whether anything answered.
	XUDPReachable *bool `json:"x_udp_reachable"`
	// XTransport is the transport dialled, or "quic_initial".
	XTransport string `json:"x_transport"`
}

// Run makes one attempt.
func (p *Probe) Run(ctx context.Context, env *probes.Env) probes.Result {
	c := p.cfg
	k := &Keys{XTransport: "quic_initial"}
	tr := env.Trace()
	host, port, _ := net.SplitHostPort(c.Addr)
	ip, err := env.Resolve(ctx, host)
	if err != nil {
		k.TestKeys = tr.Keys()
		k.Fail(ooni.Classify(err), ooni.OpResolve)
		return probes.Result{Keys: k, Details: "cannot resolve " + host}
	}
	addr := net.JoinHostPort(ip, port)
	actx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	var failure, op string
	if c.Transport != nil {
		k.XTransport = c.TransportName
		failure, op = p.dialTransport(actx, env, addr), ooni.OpTransportDial
	} else {
		failure, op = p.initial(actx, env, addr), ooni.OpQUICHandshake
	}
	k.TestKeys = tr.Keys()
	k.Fail(failure, op)
	var res probes.Result
	switch {
	case failure == ooni.FailureResidualAvoided:
		res = probes.Result{Keys: k, Details: "not tried: residual block"}
	case ooni.IsTimeout(failure):
		k.XUDPReachable, k.Accessible, k.Blocking = ooni.Bool(false), ooni.Bool(false), ooni.BlockingUDP
		res = probes.Result{Keys: k, State: probes.StateBlocked, Details: "no answer over UDP"}
	case failure == "":
		k.XUDPReachable, k.Accessible, k.Blocking = ooni.Bool(true), ooni.Bool(true), ooni.BlockingNone
		res = probes.Result{Keys: k, State: probes.StateOK, Details: "handshake completed"}
	default:
		k.XUDPReachable, k.Accessible, k.Blocking = ooni.Bool(true), ooni.Bool(false), ooni.BlockingNone
		res = probes.Result{Keys: k, State: probes.StateOK, Details: "the server answered (" + failure + "): UDP gets through"}
	}
	v := probes.Verdict{Network: "udp", Addr: addr, State: res.State, Blocking: k.Blocking, Failure: failure}
	if c.Transport != nil {
		v.Transport = c.TransportName
	}
	res.Verdicts = []probes.Verdict{v}
	return res
}

func (p *Probe) initial(ctx context.Context, env *probes.Env, addr string) string {
	tr := env.Trace()
	tx := tr.NewTransaction()
	h := ooni.Handshake{Address: addr, ServerName: p.cfg.SNI, ALPN: []string{p.cfg.ALPN}, NoVerify: true, Start: env.Now(), Tags: []string{"reachability"}}
	pc, raddr, err := env.ListenUDP(ctx, addr)
	if err != nil {
		h.Err = err
		return tr.QUICHandshake(tx, h)
	}
	defer pc.Close()
	qt := &quicgo.Transport{Conn: pc}
	defer qt.Close()
	dl, _ := ctx.Deadline()
	qc, err := qt.Dial(ctx, raddr, &stdtls.Config{
		ServerName:         p.cfg.SNI,
		InsecureSkipVerify: true,
		NextProtos:         []string{p.cfg.ALPN},
		MinVersion:         stdtls.VersionTLS13,
	}, &quicgo.Config{HandshakeIdleTimeout: time.Until(dl)})
	h.Err = err
	if err == nil {
		st := qc.ConnectionState().TLS
		h.State = &st
		qc.CloseWithError(0, "")
	}
	return tr.QUICHandshake(tx, h)
}

func (p *Probe) dialTransport(ctx context.Context, env *probes.Env, addr string) string {
	tr := env.Trace()
	tx := tr.NewTransaction()
	t0 := env.Now()
	to, err := env.Await(ctx, "udp", addr)
	if err == nil {
		var c net.Conn
		c, err = p.cfg.Transport.Dial(ctx, to)
		if err == nil {
			c.Close()
		}
	}
	if err != nil && ctx.Err() != nil && !errors.Is(err, ooni.ErrResidual) {
		err = fmt.Errorf("udp: dial %s: %w", p.cfg.TransportName, context.DeadlineExceeded)
	}
	return tr.Event(tx, ooni.OpTransportDial, "udp", addr, 0, t0, err, p.cfg.TransportName)
}
