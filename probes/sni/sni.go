// Package sni is the SNI-blocking probe: it opens a TLS handshake to an
// address with a control server name first and then with the target
// server name, each on its own TCP connection. When the control handshake
// works and the target's is reset, times out, ends early or meets a
// certificate the target name does not verify, the address's TLS is
// filtered by server name: blocking "tls", x_sni_blocked true.
//
// The control runs first because a blocked name can put the address
// under a residual block that would fail the control too. After a blocked
// target the control is tried once more; if it now fails, the probe
// reports x_residual_block and marks the address as blocked for
// Config.Residual, so that the Runner's later probes wait or go elsewhere.
package sni

import (
	"context"
	stdtls "crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/commucat/commucat/probes"
	"github.com/commucat/commucat/probes/ooni"
)

// TestName is the probe's test_name.
const TestName = probes.TestNamePrefix + "sni_blocking"

// Defaults for the zero fields of Config.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultResidual         = 90 * time.Second
)

// Config says what to probe.
type Config struct {
	// Addr is the "host:port" to connect to; required.
	Addr string
	// SNI is the target server name; required.
	SNI string
	// ControlSNI is a server name the censor is not expected to block;
	// if empty, the probe has no control and a timeout stays
	// inconclusive.
	ControlSNI string
	// RootCAs verifies the target's certificate; if nil, the system's
	// roots. The control's certificate is never verified.
	RootCAs *x509.CertPool
	// NoVerify skips the verification of the target's certificate.
	NoVerify bool
	// ALPN is offered in both handshakes; if empty, h2 and http/1.1.
	ALPN []string
	// HandshakeTimeout bounds each connect and handshake. If zero,
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// Residual is how long the address is marked as blocked when a
	// residual block is seen. If zero, DefaultResidual.
	Residual time.Duration
}

// Probe is an SNI-blocking probe. It is safe for concurrent use.
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
		return nil, fmt.Errorf("sni: probe address %q: %w", cfg.Addr, err)
	}
	if cfg.SNI == "" {
		return nil, errors.New("sni: probe needs a target server name")
	}
	if cfg.HandshakeTimeout < 0 || cfg.Residual < 0 {
		return nil, errors.New("sni: negative duration in config")
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.Residual == 0 {
		cfg.Residual = DefaultResidual
	}
	if len(cfg.ALPN) == 0 {
		cfg.ALPN = []string{"h2", "http/1.1"}
	}
	return &Probe{cfg: cfg}, nil
}

// Name returns TestName.
func (*Probe) Name() string { return TestName }

// Input returns the address and the target name as "sni@host:port".
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
	// XControlFailure is the control handshake's failure (null if it
	// worked); absent without a control.
	XControlFailure *string `json:"x_control_failure,omitempty"`
	// XResidualBlock is set when the control failed right after the
	// target was blocked.
	XResidualBlock *bool `json:"x_residual_block,omitempty"`
}

// attempt is one connect and handshake.
type attempt struct {
	connect, handshake string // failure strings
}

func (a attempt) failure() (string, string) {
	if a.connect != "" {
		return a.connect, ooni.OpConnect
	}
	return a.handshake, ooni.OpTLSHandshake
}

func (a attempt) ok() bool { return a.connect == "" && a.handshake == "" }

// Run probes the control and then the target.
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
	var control *attempt
	if c.ControlSNI != "" {
		a := p.try(ctx, env, addr, c.ControlSNI, true, "control")
		control = &a
	}
	target := p.try(ctx, env, addr, c.SNI, c.NoVerify, "target")
	recheck := attempt{}
	if control != nil && control.ok() && !target.ok() && target.connect == "" {
		recheck = p.try(ctx, env, addr, c.ControlSNI, true, "control_recheck")
	}
	k.TestKeys = tr.Keys()
	res := classify(k, control, target, recheck)
	v := probes.Verdict{Network: "tcp", Addr: addr, ServerName: c.SNI, State: res.State, Blocking: k.Blocking, Failure: k.FailureString()}
	if k.XResidualBlock != nil && *k.XResidualBlock {
		env.Poison("tcp", addr, env.Now().Add(c.Residual))
		v.RetryAfter = c.Residual
	}
	res.Verdicts = []probes.Verdict{v}
	return res
}

// classify fills k's verdict keys from the attempts (control is nil
// without a control; recheck is the zero attempt if it did not run) and
// returns the result.
func classify(k *Keys, control *attempt, target, recheck attempt) probes.Result {
	f, op := target.failure()
	k.Fail(f, op)
	if control != nil {
		cf, _ := control.failure()
		k.XControlFailure = ooni.Str(cf)
	}
	switch {
	case target.ok():
		k.Blocking, k.Accessible, k.XSNIBlocked = ooni.BlockingNone, ooni.Bool(true), ooni.Bool(false)
		return probes.Result{Keys: k, State: probes.StateOK, Details: "handshake completed"}
	case f == ooni.FailureResidualAvoided:
		return probes.Result{Keys: k, Details: "not tried: residual block"}
	case target.connect != "":
		k.Accessible = ooni.Bool(false)
		if ooni.IsInterference(f) {
			k.Blocking = ooni.BlockingTCPIP
			return probes.Result{Keys: k, State: probes.StateBlocked, Details: "connect " + f}
		}
		return probes.Result{Keys: k, Details: "connect " + f}
	}
	k.Accessible = ooni.Bool(false)
	suspicious := ooni.IsInterference(f) || isCertFailure(f)
	switch {
	case control != nil && control.ok() && suspicious:
		k.Blocking, k.XSNIBlocked = ooni.BlockingTLS, ooni.Bool(true)
		d := "target name " + f + ", control name works"
		if !recheck.ok() {
			k.XResidualBlock = ooni.Bool(true)
			rf, _ := recheck.failure()
			d += "; control then " + rf + " (residual block)"
		}
		return probes.Result{Keys: k, State: probes.StateBlocked, Details: d}
	case control == nil && (f == ooni.FailureConnectionReset || f == ooni.FailureEOFError || isCertFailure(f)):
		k.Blocking, k.XSNIBlocked = ooni.BlockingTLS, ooni.Bool(true)
		return probes.Result{Keys: k, State: probes.StateBlocked, Details: "target name " + f + " (no control)"}
	case control != nil && !control.ok():
		cf, _ := control.failure()
		return probes.Result{Keys: k, Details: "target name " + f + ", control name " + cf + " too"}
	}
	return probes.Result{Keys: k, Details: "target name " + f}
}

func isCertFailure(f string) bool {
	return f == ooni.FailureSSLInvalidHostname || f == ooni.FailureSSLUnknownAuthority || f == ooni.FailureSSLInvalidCertificate
}

// try connects to addr and runs a TLS handshake naming sni.
func (p *Probe) try(ctx context.Context, env *probes.Env, addr, sni string, noVerify bool, tag string) attempt {
	tr := env.Trace()
	ctx, cancel := context.WithTimeout(ctx, p.cfg.HandshakeTimeout)
	defer cancel()
	tx := tr.NewTransaction()
	t0 := env.Now()
	conn, err := env.Dial(ctx, "tcp", addr)
	if f := tr.TCPConnect(tx, addr, t0, err, tag); f != "" {
		return attempt{connect: f}
	}
	defer conn.Close()
	cfg := &stdtls.Config{
		ServerName:         sni,
		RootCAs:            p.cfg.RootCAs,
		InsecureSkipVerify: noVerify,
		NextProtos:         p.cfg.ALPN,
		MinVersion:         stdtls.VersionTLS12,
	}
	tc := stdtls.Client(conn, cfg)
	t1 := env.Now()
	err = tc.HandshakeContext(ctx)
	h := ooni.Handshake{Address: addr, ServerName: sni, ALPN: p.cfg.ALPN, NoVerify: noVerify, Start: t1, Err: err, Tags: []string{tag}}
	if err == nil {
		st := tc.ConnectionState()
		h.State = &st
	}
	return attempt{handshake: tr.TLSHandshake(tx, h)}
}
