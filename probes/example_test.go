package probes_test

import (
	"context"
	"fmt"
	"time"

	"github.com/commucat/commucat/probes"
	"github.com/commucat/commucat/probes/ooni"
)

// policy stands for the interface a router defines for transport states;
// core/router cannot import probes, so the wiring in cmd/commucat adapts.
type policy interface {
	Skip(transport, addr string, until time.Time)
	Prefer(transport, addr string, rtt time.Duration)
}

type printPolicy struct{}

func (printPolicy) Skip(tr, addr string, until time.Time) {
	fmt.Printf("skip %s at %s until %s\n", tr, addr, until.Format(time.TimeOnly))
}

func (printPolicy) Prefer(tr, addr string, rtt time.Duration) {
	fmt.Printf("prefer %s at %s (rtt %v)\n", tr, addr, rtt)
}

// verdictProbe reports one fixed verdict.
type verdictProbe struct{ v probes.Verdict }

func (verdictProbe) Name() string  { return "x_commucat_example" }
func (verdictProbe) Input() string { return "example" }
func (p verdictProbe) Run(context.Context, *probes.Env) probes.Result {
	k := &ooni.TestKeys{Blocking: p.v.Blocking}
	return probes.Result{Keys: k, State: p.v.State, Verdicts: []probes.Verdict{p.v}}
}

// ExampleVerdictFunc feeds a Runner's verdicts to a router's policy.
func ExampleVerdictFunc() {
	var pol policy = printPolicy{}
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	sink := probes.VerdictFunc(func(v probes.Verdict) {
		switch v.State {
		case probes.StateBlocked:
			pol.Skip(v.Transport, v.Addr, v.At.Add(max(v.RetryAfter, time.Minute)))
		case probes.StateOK:
			pol.Prefer(v.Transport, v.Addr, v.RTT)
		}
	})
	r, _ := probes.New(probes.Config{Sink: sink, Interval: time.Nanosecond, Now: func() time.Time { return at }})
	r.Run(context.Background(), []probes.Probe{
		verdictProbe{probes.Verdict{Transport: "obfs4", Network: "tcp", Addr: "192.0.2.1:443", State: probes.StateBlocked,
			Blocking: ooni.BlockingTCPIP, RetryAfter: 3 * time.Minute}},
		verdictProbe{probes.Verdict{Transport: "reality", Network: "tcp", Addr: "192.0.2.1:8443", State: probes.StateOK,
			Blocking: ooni.BlockingNone, RTT: 80 * time.Millisecond}},
	})
	// Output:
	// skip obfs4 at 192.0.2.1:443 until 12:03:00
	// prefer reality at 192.0.2.1:8443 (rtt 80ms)
}
