// Package tcp is the TCP connect probe: can a TCP connection to the
// target be opened at all? A reset or a timeout is written as blocking
// "tcp_ip"; a refusal (nothing listens, or a RST in answer to the SYN) is
// left inconclusive, since without a control the probe cannot tell a
// censor from a closed port.
package tcp

import (
	"context"
	"fmt"
	"net"

	"github.com/commucat/commucat/probes"
	"github.com/commucat/commucat/probes/ooni"
)

// TestName is the probe's test_name.
const TestName = probes.TestNamePrefix + "tcp_connect"

// Probe connects to one address. It is safe for concurrent use.
type Probe struct {
	addr string
}

var _ probes.Probe = (*Probe)(nil)

// New returns a probe of addr ("host:port").
func New(addr string) (*Probe, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("tcp: probe target %q: %w", addr, err)
	}
	return &Probe{addr: addr}, nil
}

// Name returns TestName.
func (*Probe) Name() string { return TestName }

// Input returns the target address.
func (p *Probe) Input() string { return p.addr }

// Keys are the probe's test keys.
type Keys struct {
	ooni.TestKeys
	// XConnectSeconds is how long the successful connect took.
	XConnectSeconds *float64 `json:"x_connect_seconds,omitempty"`
}

// Run connects once and classifies the outcome.
func (p *Probe) Run(ctx context.Context, env *probes.Env) probes.Result {
	k := &Keys{}
	host, port, _ := net.SplitHostPort(p.addr)
	tr := env.Trace()
	ip, err := env.Resolve(ctx, host)
	if err != nil {
		k.TestKeys = tr.Keys()
		k.Fail(ooni.Classify(err), ooni.OpResolve)
		return probes.Result{Keys: k, State: probes.StateUnknown, Details: "cannot resolve " + host}
	}
	addr := net.JoinHostPort(ip, port)
	tx := tr.NewTransaction()
	t0 := env.Now()
	c, err := env.Dial(ctx, "tcp", addr)
	failure := tr.TCPConnect(tx, addr, t0, err)
	if err == nil {
		secs := ooni.Seconds(env.Now().Sub(t0))
		k.XConnectSeconds = &secs
		c.Close()
	}
	k.TestKeys = tr.Keys()
	res := Classify(k, failure)
	res.Verdicts = []probes.Verdict{{Network: "tcp", Addr: addr, State: res.State, Blocking: k.Blocking, Failure: failure}}
	return res
}

// Classify fills the blocking keys of k from the connect's failure and
// returns the result.
func Classify(k *Keys, failure string) probes.Result {
	k.Fail(failure, ooni.OpConnect)
	switch {
	case failure == "":
		k.Blocking, k.Accessible = ooni.BlockingNone, ooni.Bool(true)
		return probes.Result{Keys: k, State: probes.StateOK, Details: "connected"}
	case failure == ooni.FailureResidualAvoided:
		return probes.Result{Keys: k, State: probes.StateUnknown, Details: "not tried: residual block"}
	case ooni.IsInterference(failure):
		k.Blocking, k.Accessible = ooni.BlockingTCPIP, ooni.Bool(false)
		return probes.Result{Keys: k, State: probes.StateBlocked, Details: "connect " + failure}
	}
	k.Accessible = ooni.Bool(false)
	return probes.Result{Keys: k, State: probes.StateUnknown, Details: "connect " + failure + " (no control: maybe nothing listens)"}
}
