// Package fet is the fully-encrypted-traffic probe. The GFW blocks TCP
// connections whose first data packet looks fully encrypted (random
// bytes, like obfs4's) with some probability, and then drops every
// connection to the same (client IP, server IP, server port) for about
// 180 seconds (Wu et al., "How the Great Firewall of China Detects and
// Blocks Fully Encrypted Traffic", USENIX Security 2023).
//
// The probe first exchanges an exempt baseline request with the target
// (by default an HTTP GET, exempt by its first bytes) and remembers what
// came back. Then, up to Repeats times, it opens a connection, sends a
// fresh random packet that no exemption covers, and checks the address
// by repeating the baseline exchange. When a check no longer gets what the
// baseline got (the connect times out or is reset, or the reply changes),
// the random packet triggered a block: x_fet_blocked is true and the
// probe polls with the baseline every Poll until the address answers as
// before, reporting x_residual_block_seconds from the triggering packet.
// If the block outlasts MaxResidual, the probe stops with
// x_residual_block_ongoing and marks the address as blocked, so that the
// Runner's later probes wait or go elsewhere.
package fet

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"time"

	"github.com/commucat/commucat/probes"
	"github.com/commucat/commucat/probes/ooni"
)

// TestName is the probe's test_name.
const TestName = probes.TestNamePrefix + "fet"

// Defaults for the zero fields of Config.
const (
	DefaultRepeats     = 10
	DefaultSize        = 512
	DefaultReadTimeout = 3 * time.Second
	DefaultPoll        = 10 * time.Second
	DefaultMaxResidual = 240 * time.Second
	DefaultResidual    = 180 * time.Second
)

// Config says what to probe.
type Config struct {
	// Addr is the "host:port" of a TCP server; required.
	Addr string
	// Baseline is the exempt request of the baseline and of the checks.
	// If empty, "GET / HTTP/1.1" with the host and a Connection: close.
	Baseline []byte
	// Repeats bounds the random packets sent. If zero, DefaultRepeats.
	Repeats int
	// Size is the random packet's length, 64-1400 bytes. If zero,
	// DefaultSize.
	Size int
	// ReadTimeout bounds each wait for the server's reply. If zero,
	// DefaultReadTimeout.
	ReadTimeout time.Duration
	// Poll is the interval of residual checks; MaxResidual bounds their
	// total. If zero, DefaultPoll and DefaultMaxResidual.
	Poll, MaxResidual time.Duration
	// Residual is how long the address is marked as blocked when the
	// block outlasts MaxResidual, counted from the triggering packet. If
	// zero, DefaultResidual.
	Residual time.Duration
	// Rand is the source of the random packets. If nil, crypto/rand.
	Rand io.Reader
}

// Probe is a fully-encrypted-traffic probe. It is safe for concurrent use
// if its Rand is.
type Probe struct {
	cfg Config
}

var (
	_ probes.Probe    = (*Probe)(nil)
	_ probes.Poisoner = (*Probe)(nil)
)

// New returns a probe, or the first problem with cfg.
func New(cfg Config) (*Probe, error) {
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("fet: probe address %q: %w", cfg.Addr, err)
	}
	if cfg.Repeats < 0 || cfg.ReadTimeout < 0 || cfg.Poll < 0 || cfg.MaxResidual < 0 || cfg.Residual < 0 {
		return nil, errors.New("fet: negative value in config")
	}
	if cfg.Size != 0 && (cfg.Size < 64 || cfg.Size > 1400) {
		return nil, fmt.Errorf("fet: packet size %d outside 64-1400", cfg.Size)
	}
	if len(cfg.Baseline) == 0 {
		cfg.Baseline = []byte("GET / HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n")
	}
	if !Exempt(cfg.Baseline) {
		return nil, errors.New("fet: the baseline request itself looks fully encrypted")
	}
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&cfg.ReadTimeout, DefaultReadTimeout)
	def(&cfg.Poll, DefaultPoll)
	def(&cfg.MaxResidual, DefaultMaxResidual)
	def(&cfg.Residual, DefaultResidual)
	if cfg.Repeats == 0 {
		cfg.Repeats = DefaultRepeats
	}
	if cfg.Size == 0 {
		cfg.Size = DefaultSize
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	return &Probe{cfg: cfg}, nil
}

// Name returns TestName.
func (*Probe) Name() string { return TestName }

// Input returns the address.
func (p *Probe) Input() string { return p.cfg.Addr }

// Poisons reports true: the probe exists to trigger a residual block.
func (*Probe) Poisons() bool { return true }

// Keys are the probe's test keys.
type Keys struct {
	ooni.TestKeys
	// XFETBlocked is whether a random first packet triggered a block;
	// null when the baseline failed.
	XFETBlocked *bool `json:"x_fet_blocked"`
	// XFETPackets is how many random packets were sent.
	XFETPackets int `json:"x_fet_packets"`
	// XResidualBlockSeconds is how long the address stayed blocked after
	// the triggering packet (a lower bound if XResidualBlockOngoing).
	XResidualBlockSeconds *float64 `json:"x_residual_block_seconds"`
	// XResidualBlockOngoing is set when the block outlasted MaxResidual.
	XResidualBlockOngoing *bool `json:"x_residual_block_ongoing,omitempty"`
}

// outcome is what one exchange got: a failure at connect, or the first
// read's result ("data" or its failure).
type outcome struct {
	connect, read string
}

func (o outcome) String() string {
	if o.connect != "" {
		return "connect " + o.connect
	}
	return "read " + o.read
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
	base := p.exchange(ctx, env, addr, c.Baseline, "baseline")
	if base.connect != "" {
		k.TestKeys = tr.Keys()
		k.Fail(base.connect, ooni.OpConnect)
		if ooni.IsInterference(base.connect) {
			k.Blocking = ooni.BlockingTCPIP
		}
		return probes.Result{Keys: k, State: probes.StateOf(&k.TestKeys), Details: "baseline " + base.String()}
	}
	var (
		trigger time.Time
		check   outcome
	)
	for i := 0; i < c.Repeats && ctx.Err() == nil; i++ {
		pkt, err := p.packet()
		if err != nil {
			break
		}
		k.XFETPackets++
		t := env.Now()
		p.exchange(ctx, env, addr, pkt, "random")
		check = p.exchange(ctx, env, addr, c.Baseline, "check")
		if check != base {
			trigger = t
			break
		}
	}
	if trigger.IsZero() {
		k.TestKeys = tr.Keys()
		k.XFETBlocked, k.Blocking, k.Accessible = ooni.Bool(false), ooni.BlockingNone, ooni.Bool(true)
		return probes.Result{Keys: k, State: probes.StateOK, Details: fmt.Sprintf("%d random first packets, no block", k.XFETPackets)}
	}
	ended := p.waitResidual(ctx, env, addr, base, trigger)
	k.TestKeys = tr.Keys()
	if check.connect != "" {
		k.Fail(check.connect, ooni.OpConnect)
	} else {
		k.Fail(check.read, ooni.OpRead)
	}
	k.XFETBlocked, k.Blocking, k.Accessible = ooni.Bool(true), ooni.BlockingTCPIP, ooni.Bool(false)
	v := probes.Verdict{Network: "tcp", Addr: addr, State: probes.StateBlocked, Blocking: k.Blocking, Failure: k.FailureString()}
	var secs float64
	if ended.IsZero() {
		secs = ooni.Seconds(env.Now().Sub(trigger))
		k.XResidualBlockOngoing = ooni.Bool(true)
		until := trigger.Add(c.Residual)
		if now := env.Now(); until.Before(now.Add(c.Poll)) {
			until = now.Add(c.Poll)
		}
		env.Poison("tcp", addr, until)
		v.RetryAfter = until.Sub(env.Now())
	} else {
		secs = ooni.Seconds(ended.Sub(trigger))
	}
	k.XResidualBlockSeconds = &secs
	res := probes.Result{Keys: k, State: probes.StateBlocked,
		Details: fmt.Sprintf("random first packet %d blocked the address (%s); residual block %.1fs", k.XFETPackets, check, secs)}
	if k.XResidualBlockOngoing != nil {
		res.Details += " and ongoing"
	}
	res.Verdicts = []probes.Verdict{v}
	return res
}

// waitResidual polls the address with the baseline until it answers as
// the baseline did, and returns when it did, or the zero time if it did
// not within MaxResidual of trigger.
func (p *Probe) waitResidual(ctx context.Context, env *probes.Env, addr string, base outcome, trigger time.Time) time.Time {
	c := p.cfg
	t := time.NewTimer(c.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return time.Time{}
		case <-t.C:
		}
		at := env.Now()
		if p.exchange(ctx, env, addr, c.Baseline, "residual") == base {
			return at
		}
		if env.Now().Sub(trigger)+c.Poll > c.MaxResidual {
			return time.Time{}
		}
		t.Reset(c.Poll)
	}
}

// exchange connects, writes payload and reads once.
func (p *Probe) exchange(ctx context.Context, env *probes.Env, addr string, payload []byte, tag string) outcome {
	tr := env.Trace()
	tx := tr.NewTransaction()
	cctx, cancel := context.WithTimeout(ctx, p.cfg.ReadTimeout)
	defer cancel()
	t0 := env.Now()
	conn, err := env.Dial(cctx, "tcp", addr)
	if f := tr.TCPConnect(tx, addr, t0, err, tag); f != "" {
		return outcome{connect: f}
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(p.cfg.ReadTimeout))
	t1 := env.Now()
	n, err := conn.Write(payload)
	if f := tr.Event(tx, ooni.OpWrite, "tcp", addr, n, t1, err, tag); f != "" {
		return outcome{read: f}
	}
	buf := make([]byte, 4096)
	t2 := env.Now()
	n, err = conn.Read(buf)
	if n > 0 {
		err = nil
	}
	if f := tr.Event(tx, ooni.OpRead, "tcp", addr, n, t2, err, tag); f != "" {
		return outcome{read: f}
	}
	return outcome{read: "data"}
}

// packet returns a random packet that no exemption covers.
func (p *Probe) packet() ([]byte, error) {
	b := make([]byte, p.cfg.Size)
	for range 64 {
		if _, err := io.ReadFull(p.cfg.Rand, b); err != nil {
			return nil, fmt.Errorf("fet: random packet: %w", err)
		}
		if !Exempt(b) {
			return b, nil
		}
	}
	return nil, errors.New("fet: the random source keeps producing exempt packets")
}

// Exempt reports whether the GFW's rule for fully encrypted traffic (Wu et
// al. 2023, Algorithm 1) exempts a first data packet: an average of at
// most 3.4 or at least 4.6 set bits per byte (Ex1), six printable leading
// bytes (Ex2), more than half printable (Ex3), a printable run of more
// than 20 bytes (Ex4), or a TLS or HTTP start (Ex5). Printable is
// 0x20-0x7e. An empty packet is exempt.
func Exempt(b []byte) bool {
	if len(b) == 0 {
		return true
	}
	set, printable, run, longest, prefix := 0, 0, 0, 0, 0
	inPrefix := true
	for _, c := range b {
		set += bits.OnesCount8(c)
		if c >= 0x20 && c <= 0x7e {
			printable++
			run++
			longest = max(longest, run)
			if inPrefix {
				prefix++
			}
		} else {
			run, inPrefix = 0, false
		}
	}
	n := len(b)
	switch {
	case set*10 <= 34*n || set*10 >= 46*n:
		return true
	case prefix >= 6, printable*2 > n, longest > 20:
		return true
	}
	if n >= 3 && (b[0] == 0x16 || b[0] == 0x17) && b[1] == 0x03 && b[2] <= 0x09 {
		return true
	}
	for _, m := range []string{"GET ", "PUT ", "POST ", "HEAD "} {
		if len(b) >= len(m) && string(b[:len(m)]) == m {
			return true
		}
	}
	return false
}
