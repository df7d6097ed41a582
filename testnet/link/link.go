package link

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// ErrParams is wrapped by the errors of Params.Validate.
var ErrParams = errors.New("link: bad parameters")

// Params describe one direction of a link. The zero value is a perfect
// link: no delay, no loss, no rate limit, no MTU limit. Fields are
// applied in the order the package doc gives.
type Params struct {
	// Delay is the one-way propagation delay.
	Delay time.Duration `json:"delay,omitempty" yaml:"delay,omitempty"`
	// Jitter adds a uniform random delay in [0, Jitter) to every packet.
	Jitter time.Duration `json:"jitter,omitempty" yaml:"jitter,omitempty"`
	// Reorder lets jitter reorder packets. If false, a packet never
	// arrives before one sent before it.
	Reorder bool `json:"reorder,omitempty" yaml:"reorder,omitempty"`
	// Loss is the probability that a packet is lost, drawn independently
	// per packet (Bernoulli). Ignored when Burst is set.
	Loss float64 `json:"loss,omitempty" yaml:"loss,omitempty"`
	// Burst, if set, draws losses from a Gilbert-Elliott chain instead of
	// Loss.
	Burst *GilbertElliott `json:"burst,omitempty" yaml:"burst,omitempty"`
	// Duplicate is the probability that a packet is sent twice.
	Duplicate float64 `json:"duplicate,omitempty" yaml:"duplicate,omitempty"`
	// Rate limits the direction to this many bytes per second. If zero,
	// unlimited.
	Rate int64 `json:"rate,omitempty" yaml:"rate,omitempty"`
	// Queue is the size in bytes of the drop-tail queue in front of the
	// rate limiter; a packet larger than Queue is always dropped. Only
	// used with Rate. If zero, what Rate sends in 100 ms, and at least
	// 128 KiB.
	Queue int `json:"queue,omitempty" yaml:"queue,omitempty"`
	// MTU is the largest IP packet the link carries; larger ones are
	// dropped. If zero, no limit.
	MTU int `json:"mtu,omitempty" yaml:"mtu,omitempty"`
}

// GilbertElliott is a two-state loss model: before each packet the link
// moves from good to bad with probability PGoodBad, or from bad to good
// with probability PBadGood, and then loses the packet with the state's
// loss probability. With LossGood 0 and LossBad 1 it is the Gilbert model,
// whose mean burst length is 1/PBadGood packets and whose mean loss rate
// is PGoodBad / (PGoodBad + PBadGood). A Link starts in the good state.
type GilbertElliott struct {
	// PGoodBad is the probability of moving from good to bad.
	PGoodBad float64 `json:"p_good_bad" yaml:"p_good_bad"`
	// PBadGood is the probability of moving from bad to good.
	PBadGood float64 `json:"p_bad_good" yaml:"p_bad_good"`
	// LossGood and LossBad are the loss probabilities in each state.
	LossGood float64 `json:"loss_good,omitempty" yaml:"loss_good,omitempty"`
	LossBad  float64 `json:"loss_bad" yaml:"loss_bad"`
}

// Validate reports a field out of range: a negative duration, rate or
// size, or a probability outside [0, 1]. Errors wrap ErrParams.
func (p Params) Validate() error {
	if p.Delay < 0 || p.Jitter < 0 {
		return fmt.Errorf("link: delay %s, jitter %s: negative duration: %w", p.Delay, p.Jitter, ErrParams)
	}
	if p.Rate < 0 || p.Queue < 0 || p.MTU < 0 {
		return fmt.Errorf("link: rate %d, queue %d, mtu %d: negative: %w", p.Rate, p.Queue, p.MTU, ErrParams)
	}
	type prob struct {
		name string
		v    float64
	}
	probs := []prob{{"loss", p.Loss}, {"duplicate", p.Duplicate}}
	if g := p.Burst; g != nil {
		probs = append(probs, prob{"burst.p_good_bad", g.PGoodBad}, prob{"burst.p_bad_good", g.PBadGood},
			prob{"burst.loss_good", g.LossGood}, prob{"burst.loss_bad", g.LossBad})
	}
	for _, pr := range probs {
		if !(pr.v >= 0 && pr.v <= 1) {
			return fmt.Errorf("link: %s %v is not a probability: %w", pr.name, pr.v, ErrParams)
		}
	}
	return nil
}

// queue returns the queue bound in bytes.
func (p Params) queue() int64 {
	if p.Queue > 0 {
		return int64(p.Queue)
	}
	q := p.Rate / 10
	if q < 128<<10 {
		q = 128 << 10
	}
	return q
}

// Reason says why a packet was dropped. The link model produces ReasonLoss,
// ReasonQueue and ReasonMTU; the router counts the others against the link
// where it dropped the packet.
type Reason uint8

// Drop reasons.
const (
	// ReasonNone means the packet was not dropped.
	ReasonNone Reason = iota
	// ReasonLoss is random loss (Bernoulli or Gilbert-Elliott).
	ReasonLoss
	// ReasonQueue is a full drop-tail queue in front of the rate limiter.
	ReasonQueue
	// ReasonMTU is a packet larger than the link's MTU.
	ReasonMTU
	// ReasonBlackhole is a scripted blackhole of a host or port.
	ReasonBlackhole
	// ReasonCensor is a censor's drop verdict.
	ReasonCensor
	// ReasonOverflow is the router's bound on delayed bytes in flight.
	ReasonOverflow
	// ReasonNoRoute is a destination address that no host has.
	ReasonNoRoute
	// ReasonMalformed is a packet that is not IPv4 or IPv6.
	ReasonMalformed
	// ReasonWrite is a failed write to the destination device.
	ReasonWrite
	// NumReasons is the number of reasons, for arrays indexed by Reason.
	NumReasons
)

var reasonNames = [NumReasons]string{"none", "loss", "queue", "mtu", "blackhole", "censor", "overflow", "noroute", "malformed", "write"}

// String returns the reason's lowercase name, e.g. "loss".
func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// Counters count what one direction of a link carried. Offered counts
// packets handed to the link, Passed the copies it let through (a
// duplicated packet counts twice), Drops the packets dropped by reason.
type Counters struct {
	Offered, OfferedBytes uint64
	Passed, PassedBytes   uint64
	Duplicated            uint64
	Drops                 [NumReasons]uint64
}

// Dropped returns the total of Drops.
func (c Counters) Dropped() uint64 {
	var n uint64
	for _, d := range c.Drops {
		n += d
	}
	return n
}

// DropMap returns the non-zero drop counts by reason name, for reports.
func (c Counters) DropMap() map[string]uint64 {
	m := make(map[string]uint64)
	for r, d := range c.Drops {
		if d != 0 {
			m[Reason(r).String()] = d
		}
	}
	return m
}

// Outcome is a Link's decision for one packet: dropped for Drop, or
// delivered as N copies (1 or 2) arriving at At[0] and At[1]. When a
// duplicate is dropped by the queue, N is 1 and Drop is ReasonNone.
type Outcome struct {
	Drop Reason
	N    int
	At   [2]time.Time
}

// Link is one direction of a link: Params, a seeded generator and the
// state of the loss chain, the rate limiter and the arrival order. It is
// safe for concurrent use.
type Link struct {
	mu        sync.Mutex
	p         Params
	rng       *rand.Rand
	bad       bool      // Gilbert-Elliott state
	busyUntil time.Time // when the rate limiter has sent its backlog
	last      time.Time // latest arrival handed out, for in-order delivery
	c         Counters
}

// New returns a Link with parameters p whose generator is PCG(seed,
// stream). It returns an error wrapping ErrParams for invalid parameters.
func New(p Params, seed, stream uint64) (*Link, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &Link{p: p, rng: rand.New(rand.NewPCG(seed, stream))}, nil
}

// Params returns the current parameters.
func (l *Link) Params() Params {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.p
}

// Set replaces the parameters, keeping the generator, the loss state, the
// queue backlog and the arrival order. It returns an error wrapping
// ErrParams, and changes nothing, for invalid parameters.
func (l *Link) Set(p Params) error {
	if err := p.Validate(); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.p = p
	return nil
}

// Counters returns a snapshot of the counters.
func (l *Link) Counters() Counters {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.c
}

// Count records that a packet of n bytes offered to the link was dropped
// outside the link model for reason r (a blackhole, the censor, the
// router's bounds). It is counted as offered and dropped.
func (l *Link) Count(r Reason, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.c.Offered++
	l.c.OfferedBytes += uint64(n)
	l.c.Drops[r]++
}

// Uncount records that a copy the link passed was dropped afterwards
// (for instance by the router's bound on delayed bytes) for reason r.
func (l *Link) Uncount(r Reason, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.c.Passed--
	l.c.PassedBytes -= uint64(n)
	l.c.Drops[r]++
}

// Offer decides the fate of a packet of n bytes offered at time now, and
// counts it. Times are virtual: the router passes the time the packet
// reaches the link, which for the second link of a path can be later than
// the wall clock. The queue assumes offers come in non-decreasing time;
// an offer earlier than a previous one sees the backlog that previous
// offer left, measured from its own, earlier time, so a little more.
func (l *Link) Offer(now time.Time, n int) Outcome {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.c.Offered++
	l.c.OfferedBytes += uint64(n)
	p := &l.p
	if p.MTU > 0 && n > p.MTU {
		l.c.Drops[ReasonMTU]++
		return Outcome{Drop: ReasonMTU}
	}
	if l.lost() {
		l.c.Drops[ReasonLoss]++
		return Outcome{Drop: ReasonLoss}
	}
	copies := 1
	if p.Duplicate > 0 && l.rng.Float64() < p.Duplicate {
		copies = 2
	}
	var o Outcome
	for range copies {
		at, ok := l.send(now, n)
		if !ok {
			continue
		}
		o.At[o.N] = at
		o.N++
	}
	switch {
	case o.N == 0:
		l.c.Drops[ReasonQueue]++
		return Outcome{Drop: ReasonQueue}
	case o.N == 2:
		l.c.Duplicated++
	case copies == 2:
		l.c.Drops[ReasonQueue]++
	}
	l.c.Passed += uint64(o.N)
	l.c.PassedBytes += uint64(o.N * n)
	return o
}

// lost draws the loss of one packet. Called with mu held.
func (l *Link) lost() bool {
	prob := l.p.Loss
	if g := l.p.Burst; g != nil {
		if l.bad {
			l.bad = l.rng.Float64() >= g.PBadGood
		} else {
			l.bad = l.rng.Float64() < g.PGoodBad
		}
		prob = g.LossGood
		if l.bad {
			prob = g.LossBad
		}
	}
	return prob > 0 && l.rng.Float64() < prob
}

// send puts one copy through the rate limiter, delay and jitter and
// returns its arrival, or false if the queue is full. Called with mu held.
func (l *Link) send(now time.Time, n int) (time.Time, bool) {
	p := &l.p
	depart := now
	if p.Rate > 0 {
		start := now
		if l.busyUntil.After(start) {
			backlog := int64(l.busyUntil.Sub(now)) * p.Rate / int64(time.Second)
			if backlog+int64(n) > p.queue() {
				return time.Time{}, false
			}
			start = l.busyUntil
		} else if int64(n) > p.queue() {
			return time.Time{}, false
		}
		depart = start.Add(time.Duration(int64(n) * int64(time.Second) / p.Rate))
		l.busyUntil = depart
	}
	at := depart.Add(p.Delay)
	if p.Jitter > 0 {
		at = at.Add(time.Duration(l.rng.Int64N(int64(p.Jitter))))
	}
	if !p.Reorder && at.Before(l.last) {
		at = l.last
	}
	if at.After(l.last) {
		l.last = at
	}
	return at, true
}
