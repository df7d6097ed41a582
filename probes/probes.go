// Package probes finds out what a network blocks and how, so that the
// client can pick transports that work, and reports it in OONI's format.
//
// A Probe is one measurement technique against one target (the
// sub-packages: probes/dns, probes/tcp, probes/tls, probes/quic,
// probes/http, probes/fet, probes/udp, probes/throttle and, for the ways to
// reach the gateway, probes/endpoint). A Runner runs a list of probes
// bounded in count, rate and time, keeps them from poisoning each other
// through residual blocking, writes one OONI measurement per probe (see
// probes/ooni) and hands the Verdicts to a VerdictSink.
//
// # Verdicts and the router
//
// A Verdict says what a probe concluded about one way of reaching the
// gateway: a transport at an endpoint address (State OK, Throttled or
// Blocked), with the failure that led to it, the time before which the
// address should not be tried again (a residual block) and what was
// measured (handshake time, RTT, throughput). The layering keeps core/
// from importing probes/, so core/router cannot name this type: the router
// defines its own small interface for transport states and cmd/commucat
// adapts, by passing a VerdictSink (or VerdictFunc) to the Runner that
// forwards each Verdict to the router. A verdict with an empty Transport
// is about every transport that uses its Network at its Addr (for example
// "udp" blocked at the gateway's address blocks both quic and kcp
// endpoints there). Verdicts are advisory and never carry secrets.
package probes

import (
	"context"
	"fmt"
	"time"

	"github.com/commucat/commucat/probes/ooni"
)

// TestNamePrefix starts the test_name of every CommuCat test that has no
// OONI equivalent with the same semantics.
const TestNamePrefix = "x_commucat_"

// Probe is one measurement technique against one target. A Probe holds its
// configuration only and may be run more than once; implementations are
// safe for concurrent use.
type Probe interface {
	// Name is the measurement's test_name, such as
	// "x_commucat_sni_blocking".
	Name() string
	// Input is the measurement's input: the target, such as
	// "example.org:443", "https://example.org/" or "example.org".
	Input() string
	// Run measures. Network failures are results, not errors: they are
	// in the Result's keys. Run honours ctx and records its network
	// operations in env.Trace().
	Run(ctx context.Context, env *Env) Result
}

// Poisoner is implemented by probes that may themselves trigger a
// residual block of their destination (the fully-encrypted-traffic probe,
// a handshake with a blocked server name). The Runner runs them after all
// the others, one at a time.
type Poisoner interface {
	Poisons() bool
}

// State is the condition a probe found.
type State int

// States, from least to most severe.
const (
	// StateUnknown: the probe could not tell (a control failed too, or
	// the probe did not run).
	StateUnknown State = iota
	// StateOK: no interference seen.
	StateOK
	// StateThrottled: it works, slowly or for a while.
	StateThrottled
	// StateBlocked: it does not work, and the failure looks like
	// interference.
	StateBlocked
)

var stateNames = [...]string{"unknown", "ok", "throttled", "blocked"}

// String returns "unknown", "ok", "throttled" or "blocked".
func (s State) String() string {
	if s < 0 || int(s) >= len(stateNames) {
		return fmt.Sprintf("state(%d)", int(s))
	}
	return stateNames[s]
}

// MarshalText writes the state's name.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a state's name.
func (s *State) UnmarshalText(b []byte) error {
	for i, n := range stateNames {
		if n == string(b) {
			*s = State(i)
			return nil
		}
	}
	return fmt.Errorf("probes: unknown state %q", b)
}

// Result is what one run of a probe found.
type Result struct {
	// Keys are the measurement's test_keys. If nil, the Runner writes
	// the trace's arrays with a null failure.
	Keys ooni.Keyed
	// State summarises the keys for the table and the verdicts.
	State State
	// Details is one line for people, such as "control SNI works,
	// target SNI reset".
	Details string
	// Verdicts are what the probe concluded about ways of reaching the
	// gateway, if it measured any.
	Verdicts []Verdict
}

// Verdict is a probe's conclusion about one way of reaching the gateway,
// in the form the router's policy consumes (see the package doc).
type Verdict struct {
	// Transport is the transport's name ("quic"), or "" for a verdict
	// about every transport using Network at Addr.
	Transport string `json:"transport,omitempty"`
	// Network is "tcp" or "udp", or "dns" for a verdict about resolving
	// the name in Addr.
	Network string `json:"network"`
	// Addr is the endpoint's "host:port" (a name for Network "dns").
	Addr string `json:"addr"`
	// ServerName, if set, limits the verdict to TLS or QUIC handshakes
	// that name this server (SNI filtering): transports whose cover name
	// differs are not concerned.
	ServerName string `json:"server_name,omitempty"`
	// State is what the probe found.
	State State `json:"state"`
	// Blocking is where the interference was seen, as in the report.
	Blocking ooni.Blocking `json:"blocking"`
	// Failure is the OONI failure string, or "".
	Failure string `json:"failure,omitempty"`
	// At is when the probe concluded.
	At time.Time `json:"at"`
	// RetryAfter, if not zero, is how long the address is expected to
	// stay blocked (a residual block): do not try it before At+RetryAfter.
	RetryAfter time.Duration `json:"retry_after,omitempty"`
	// Handshake is the transport's dial time, RTT one round trip through
	// the session, Throughput bytes per second of a short sample; zero
	// when not measured.
	Handshake  time.Duration `json:"handshake,omitempty"`
	RTT        time.Duration `json:"rtt,omitempty"`
	Throughput float64       `json:"throughput,omitempty"`
}

// VerdictSink consumes verdicts. The Runner calls Verdict from its own
// goroutines, so implementations must be safe for concurrent use and
// should not block for long.
type VerdictSink interface {
	Verdict(v Verdict)
}

// VerdictFunc adapts a function to VerdictSink.
type VerdictFunc func(Verdict)

// Verdict calls f(v).
func (f VerdictFunc) Verdict(v Verdict) { f(v) }

// StateOf derives a State from the common keys: no failure is OK; a
// blocking value of throttling is Throttled; any other blocking value is
// Blocked; a failure with an unknown blocking value is Unknown.
func StateOf(tk *ooni.TestKeys) State {
	switch tk.Blocking {
	case ooni.BlockingNone:
		return StateOK
	case ooni.BlockingThrottling:
		return StateThrottled
	case ooni.BlockingUnknown:
		if tk.Failure == nil {
			return StateOK
		}
		return StateUnknown
	}
	return StateBlocked
}
