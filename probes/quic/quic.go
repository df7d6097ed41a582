// Package quic is the QUIC handshake probe: it opens QUIC handshakes to an
// address naming a control server name, then the target server name
// after a dummy first datagram, then the target server name directly,
// each from a fresh UDP socket, and finally the control once more.
//
// The dummy datagram (random bytes sent from the same socket just before
// the handshake) defeats censors that judge a UDP flow by its first
// datagram only, as the GFW's QUIC SNI filter does: when the direct
// handshake fails and the one after the dummy works, x_dummy_bypass is
// true. The attempt after the dummy runs before the direct one because
// the direct one may trigger a residual block of the 3-tuple; the final
// control attempt detects it (x_residual_block).
//
// Verdicts: the target failing while the control works is blocking "tls"
// (filtering by server name); every attempt, control included, timing out
// is blocking "udp" (UDP to the address dropped, or nothing listens);
// QUIC Initials failing while the dummy-first flow works is "udp" with
// x_dummy_bypass (first-datagram protocol filtering).
package quic

import (
	"context"
	"crypto/rand"
	stdtls "crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/commucat/commucat/probes"
	"github.com/commucat/commucat/probes/ooni"
)

// TestName is the probe's test_name.
const TestName = probes.TestNamePrefix + "quic_handshake"

// Defaults for the zero fields of Config.
const (
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultDummySize        = 64
	DefaultResidual         = 180 * time.Second
	DefaultALPN             = "h3"
)

// Config says what to probe.
type Config struct {
	// Addr is the "host:port" to reach over UDP; required.
	Addr string
	// SNI is the target server name; required.
	SNI string
	// ControlSNI is a name the censor is not expected to block; if
	// empty, there is no control and no residual check.
	ControlSNI string
	// ALPN is offered in every handshake; if empty, h3.
	ALPN []string
	// RootCAs verifies the target's certificate; if nil, the system's
	// roots. The control's is never verified.
	RootCAs *x509.CertPool
	// NoVerify skips the verification of the target's certificate.
	NoVerify bool
	// HandshakeTimeout bounds each handshake. If zero,
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// DummySize is the dummy datagram's length. If zero,
	// DefaultDummySize.
	DummySize int
	// Residual is how long the address is marked as blocked when a
	// residual block is seen. If zero, DefaultResidual.
	Residual time.Duration
}

// Probe is a QUIC handshake probe. It is safe for concurrent use.
type Probe struct {
	cfg Config
}

var (
	_ probes.Probe    = (*Probe)(nil)
	_ probes.Poisoner = (*Probe)(nil)
)

// New returns a probe, or the first problem with cfg.
func New(cfg Config) (*Probe, error) {
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("quic: probe address %q: %w", cfg.Addr, err)
	}
	if cfg.SNI == "" {
		return nil, errors.New("quic: probe needs a target server name")
	}
	if cfg.HandshakeTimeout < 0 || cfg.Residual < 0 || cfg.DummySize < 0 || cfg.DummySize > 1400 {
		return nil, errors.New("quic: negative duration or dummy size out of 0-1400 in config")
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.DummySize == 0 {
		cfg.DummySize = DefaultDummySize
	}
	if cfg.Residual == 0 {
		cfg.Residual = DefaultResidual
	}
	if len(cfg.ALPN) == 0 {
		cfg.ALPN = []string{DefaultALPN}
	}
	return &Probe{cfg: cfg}, nil
}

// Name returns TestName.
func (*Probe) Name() string { return TestName }

// Input returns "sni@host:port".
func (p *Probe) Input() string { return p.cfg.SNI + "@" + p.cfg.Addr }

// Poisons reports true: a blocked name may put the address under a
// residual block.
func (*Probe) Poisons() bool { return true }

// Keys are the probe's test keys.
type Keys struct {
	ooni.TestKeys
	// XSNIBlocked is whether the target name is filtered; null when the
	// probe cannot tell.
	XSNIBlocked *bool `json:"x_sni_blocked"`
	// XDummyBypass is whether a dummy first datagram made the target's
	// handshake work when the direct one failed.
	XDummyBypass *bool `json:"x_dummy_bypass"`
	// XDummyFailure is the failure of the handshake after the dummy.
	XDummyFailure *string `json:"x_dummy_failure"`
	// XControlFailure is the control's failure; absent without a
	// control.
	XControlFailure *string `json:"x_control_failure,omitempty"`
	// XResidualBlock is set when the control failed after the target.
	XResidualBlock *bool `json:"x_residual_block,omitempty"`
}

// Run probes the address.
func (p *Probe) Run(ctx context.Context, env *probes.Env) probes.Result {
	c := p.cfg
	k := &Keys{}
	tr := env.Trace()
	host, port, _ := net.SplitHostPort(c.Addr)
	ip, err := env.Resolve(ctx, host)
	if err != nil {
		k.TestKeys = tr.Keys()
		k.Fail(ooni.Classify(err), ooni.OpResolve)
		return probes.Result{Keys: k, Details: "cannot resolve " + host}
	}
	addr := net.JoinHostPort(ip, port)
	control, recheck := "", ""
	hasControl := c.ControlSNI != ""
	if hasControl {
		control = p.try(ctx, env, addr, c.ControlSNI, true, false, "control")
	}
	dummy := p.try(ctx, env, addr, c.SNI, c.NoVerify, true, "target_after_dummy")
	target := p.try(ctx, env, addr, c.SNI, c.NoVerify, false, "target")
	if hasControl && control == "" && target != "" {
		recheck = p.try(ctx, env, addr, c.ControlSNI, true, false, "control_recheck")
	}
	k.TestKeys = tr.Keys()
	res := classify(k, hasControl, control, dummy, target, recheck)
	v := probes.Verdict{Transport: "", Network: "udp", Addr: addr, State: res.State, Blocking: k.Blocking, Failure: k.FailureString()}
	if k.Blocking == ooni.BlockingTLS {
		v.ServerName = c.SNI
	}
	if k.XResidualBlock != nil && *k.XResidualBlock {
		env.Poison("udp", addr, env.Now().Add(c.Residual))
		v.RetryAfter = c.Residual
	}
	res.Verdicts = []probes.Verdict{v}
	return res
}

// classify fills k from the failures of the attempts ("" for success;
// recheck is "" when it did not run).
func classify(k *Keys, hasControl bool, control, dummy, target, recheck string) probes.Result {
	k.Fail(target, ooni.OpQUICHandshake)
	k.XDummyFailure = ooni.Str(dummy)
	if hasControl {
		k.XControlFailure = ooni.Str(control)
	}
	switch {
	case target == "":
		k.Blocking, k.Accessible = ooni.BlockingNone, ooni.Bool(true)
		k.XSNIBlocked, k.XDummyBypass = ooni.Bool(false), ooni.Bool(false)
		return probes.Result{Keys: k, State: probes.StateOK, Details: "handshake completed"}
	case target == ooni.FailureResidualAvoided:
		return probes.Result{Keys: k, Details: "not tried: residual block"}
	}
	k.Accessible = ooni.Bool(false)
	k.XDummyBypass = ooni.Bool(dummy == "")
	suspicious := ooni.IsInterference(target) || isCertFailure(target)
	switch {
	case hasControl && control == "" && suspicious:
		k.Blocking, k.XSNIBlocked = ooni.BlockingTLS, ooni.Bool(true)
		d := "target name " + target + ", control name works"
		if dummy == "" {
			d += ", a dummy first datagram gets the target through"
		}
		if recheck != "" {
			k.XResidualBlock = ooni.Bool(true)
			d += "; control then " + recheck + " (residual block)"
		}
		return probes.Result{Keys: k, State: probes.StateBlocked, Details: d}
	case dummy == "" && ooni.IsTimeout(target) && (!hasControl || ooni.IsTimeout(control)):
		k.Blocking = ooni.BlockingUDP
		return probes.Result{Keys: k, State: probes.StateBlocked, Details: "QUIC Initials dropped; a dummy first datagram gets through"}
	case ooni.IsTimeout(target) && ooni.IsTimeout(dummy) && hasControl && ooni.IsTimeout(control):
		k.Blocking = ooni.BlockingUDP
		return probes.Result{Keys: k, State: probes.StateBlocked, Details: "no QUIC answer at all: UDP dropped, or nothing listens"}
	case !hasControl && suspicious && !ooni.IsTimeout(target):
		k.Blocking, k.XSNIBlocked = ooni.BlockingTLS, ooni.Bool(true)
		return probes.Result{Keys: k, State: probes.StateBlocked, Details: "target name " + target + " (no control)"}
	}
	return probes.Result{Keys: k, Details: "target name " + target}
}

func isCertFailure(f string) bool {
	return f == ooni.FailureSSLInvalidHostname || f == ooni.FailureSSLUnknownAuthority || f == ooni.FailureSSLInvalidCertificate
}

// try runs one QUIC handshake from a fresh socket and returns its
// failure string.
func (p *Probe) try(ctx context.Context, env *probes.Env, addr, sni string, noVerify, dummy bool, tag string) string {
	tr := env.Trace()
	tx := tr.NewTransaction()
	t0 := env.Now()
	h := ooni.Handshake{Address: addr, ServerName: sni, ALPN: p.cfg.ALPN, NoVerify: noVerify, Start: t0, Tags: []string{tag}}
	pc, raddr, err := env.ListenUDP(ctx, addr)
	if err != nil {
		h.Err = err
		return tr.QUICHandshake(tx, h)
	}
	defer pc.Close()
	if dummy {
		b := make([]byte, p.cfg.DummySize)
		rand.Read(b)
		t1 := env.Now()
		n, err := pc.WriteTo(b, raddr)
		tr.Event(tx, ooni.OpWrite, "udp", addr, n, t1, err, tag)
	}
	qt := &quicgo.Transport{Conn: pc}
	defer qt.Close()
	hctx, cancel := context.WithTimeout(ctx, p.cfg.HandshakeTimeout)
	defer cancel()
	h.Start = env.Now()
	qc, err := qt.Dial(hctx, raddr, &stdtls.Config{
		ServerName:         sni,
		RootCAs:            p.cfg.RootCAs,
		InsecureSkipVerify: noVerify,
		NextProtos:         p.cfg.ALPN,
		MinVersion:         stdtls.VersionTLS13,
	}, &quicgo.Config{HandshakeIdleTimeout: p.cfg.HandshakeTimeout})
	h.Err = err
	if err == nil {
		st := qc.ConnectionState().TLS
		h.State = &st
		qc.CloseWithError(0, "")
	}
	return tr.QUICHandshake(tx, h)
}
