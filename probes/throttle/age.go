package throttle

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/commucat/commucat/probes"
	"github.com/commucat/commucat/probes/ooni"
)

// Defaults for the zero fields of AgeConfig.
const (
	DefaultInterval = 5 * time.Second
	DefaultMaxAge   = 120 * time.Second
)

// AgeConfig says which connection to keep open.
type AgeConfig struct {
	// Addr is the "host:port" of a TCP server; required.
	Addr string
	// Hello is written once after connecting, if set.
	Hello []byte
	// Ping, if set, is written every Interval, and the connection counts
	// as killed when nothing comes back for two Intervals (a censor that
	// silently drops a connection's packets). Without Ping the server must
	// send on its own; silence then only ends the probe at MaxAge.
	Ping     []byte
	Interval time.Duration
	// MaxAge ends the probe with the connection alive. If zero,
	// DefaultMaxAge; Interval's zero is DefaultInterval.
	MaxAge time.Duration
}

// Age is the connection-age probe. It is safe for concurrent use.
type Age struct {
	cfg AgeConfig
}

var _ probes.Probe = (*Age)(nil)

// NewAge returns a probe, or the first problem with cfg.
func NewAge(cfg AgeConfig) (*Age, error) {
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("throttle: age probe address %q: %w", cfg.Addr, err)
	}
	if cfg.Interval < 0 || cfg.MaxAge < 0 {
		return nil, errors.New("throttle: negative duration in config")
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	return &Age{cfg: cfg}, nil
}

// Name returns AgeTestName.
func (*Age) Name() string { return AgeTestName }

// Input returns the address.
func (a *Age) Input() string { return a.cfg.Addr }

// AgeKeys are the connection-age probe's test keys.
type AgeKeys struct {
	ooni.TestKeys
	// XConnectionAgeSeconds is how long the connection lived (MaxAge if
	// it outlived the probe).
	XConnectionAgeSeconds float64 `json:"x_connection_age_seconds"`
	// XKilled is whether something ended the connection before MaxAge.
	XKilled        *bool `json:"x_killed"`
	XBytesReceived int64 `json:"x_bytes_received"`
}

// Run connects and waits for the connection to end.
func (a *Age) Run(ctx context.Context, env *probes.Env) probes.Result {
	c := a.cfg
	k := &AgeKeys{}
	tr := env.Trace()
	host, port, _ := net.SplitHostPort(c.Addr)
	ip, err := env.Resolve(ctx, host)
	if err != nil {
		k.TestKeys = tr.Keys()
		k.Fail(ooni.Classify(err), ooni.OpResolve)
		return probes.Result{Keys: k, Details: "cannot resolve " + host}
	}
	addr := net.JoinHostPort(ip, port)
	tx := tr.NewTransaction()
	t0 := env.Now()
	conn, err := env.Dial(ctx, "tcp", addr)
	if f := tr.TCPConnect(tx, addr, t0, err); f != "" {
		k.TestKeys = tr.Keys()
		k.Fail(f, ooni.OpConnect)
		return probes.Result{Keys: k, Details: "connect " + f}
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	born := env.Now()
	end := born.Add(c.MaxAge)
	// Writes end with the probe: a peer or a middlebox that stops taking
	// bytes cannot hold the Hello or a Ping past MaxAge.
	conn.SetWriteDeadline(time.Now().Add(c.MaxAge))
	if len(c.Hello) > 0 {
		conn.Write(c.Hello)
	}
	failure, op := "", ooni.OpRead
	buf := make([]byte, 4096)
	lastData := born
	nextPing := born.Add(c.Interval)
	for {
		now := env.Now()
		if !now.Before(end) || ctx.Err() != nil {
			break
		}
		if len(c.Ping) > 0 && !now.Before(nextPing) {
			if _, err := conn.Write(c.Ping); err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
					break // MaxAge came while the Ping waited
				}
				failure, op = ooni.Classify(err), ooni.OpWrite
				break
			}
			nextPing = now.Add(c.Interval)
		}
		wake := end
		if len(c.Ping) > 0 {
			wake = nextPing
			if silent := lastData.Add(2 * c.Interval); !now.Before(silent) {
				failure = ooni.FailureGenericTimeoutError
				break
			}
		}
		conn.SetReadDeadline(time.Now().Add(wake.Sub(now)))
		n, err := conn.Read(buf)
		if n > 0 {
			k.XBytesReceived += int64(n)
			lastData = env.Now()
		}
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil) {
			failure = ooni.Classify(err)
			break
		}
	}
	died := env.Now()
	tr.EventFailure(tx, op, "tcp", addr, int(k.XBytesReceived), born, failure)
	k.TestKeys = tr.Keys()
	k.XConnectionAgeSeconds = ooni.Seconds(died.Sub(born))
	if ctx.Err() != nil {
		k.Fail(ooni.Classify(ctx.Err()), op)
		return probes.Result{Keys: k, Details: fmt.Sprintf("probe ended early, after %.1fs", k.XConnectionAgeSeconds)}
	}
	var res probes.Result
	if failure == "" {
		k.XKilled, k.Blocking, k.Accessible = ooni.Bool(false), ooni.BlockingNone, ooni.Bool(true)
		res = probes.Result{Keys: k, State: probes.StateOK, Details: fmt.Sprintf("alive after %.1fs", k.XConnectionAgeSeconds)}
	} else {
		k.Fail(failure, op)
		k.XKilled, k.Blocking, k.Accessible = ooni.Bool(true), ooni.BlockingThrottling, ooni.Bool(true)
		res = probes.Result{Keys: k, State: probes.StateThrottled, Details: fmt.Sprintf("ended after %.1fs (%s)", k.XConnectionAgeSeconds, failure)}
	}
	res.Verdicts = []probes.Verdict{{Network: "tcp", Addr: addr, State: res.State, Blocking: k.Blocking, Failure: failure}}
	return res
}
