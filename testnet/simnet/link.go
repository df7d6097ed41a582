package simnet

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// Link describes one direction of a pipe. The zero value is a perfect link:
// no delay, no loss, no rate limit, with the default MTU and buffers.
type Link struct {
	// Delay is the one-way propagation delay.
	Delay time.Duration
	// Jitter adds a uniform random delay in [0, Jitter) to every segment
	// and datagram. Stream segments still arrive in order (a late segment
	// holds back the ones behind it); datagrams may be reordered.
	Jitter time.Duration
	// Rate limits the direction to this many bytes per second; segments
	// and datagrams queue behind each other. If zero, unlimited.
	Rate int64
	// Loss is the probability that a segment or datagram is lost, drawn
	// independently per segment (Bernoulli). Ignored when Burst is set.
	Loss float64
	// DatagramLoss, if set, is the probability that a datagram is lost,
	// drawn independently per datagram, instead of Loss or Burst: a link
	// that drops datagrams but not stream segments (a censor or a
	// policer aimed at UDP).
	DatagramLoss float64
	// Burst, if set, draws losses from a Gilbert-Elliott two-state chain
	// instead of Loss.
	Burst *GilbertElliott
	// Stall is how late a lost stream segment arrives (TCP retransmits
	// it). If zero, 200ms + 2*Delay: a retransmission timeout.
	Stall time.Duration
	// MTU is the largest stream segment. Loss and jitter are drawn per
	// segment. If zero, 1400.
	MTU int
	// Buffer is how many bytes may be in flight (written, not yet read by
	// the peer) before Write blocks: the socket buffers of both ends. If
	// zero, 256 KiB.
	Buffer int
	// Datagrams is how many datagrams may be in flight before further
	// ones are dropped. If zero, 256.
	Datagrams int
}

// GilbertElliott is a two-state loss model: the link moves between a good
// and a bad state before each segment, and loses it with the state's loss
// probability. With LossGood 0 and LossBad 1 it is the Gilbert model, whose
// mean burst length is 1/PBadGood.
type GilbertElliott struct {
	// PGoodBad is the probability of moving from good to bad.
	PGoodBad float64
	// PBadGood is the probability of moving from bad to good.
	PBadGood float64
	// LossGood and LossBad are the loss probabilities in each state.
	LossGood, LossBad float64
}

// Validate reports a field out of range: a negative duration, rate or size,
// or a probability outside [0, 1].
func (l Link) Validate() error {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"Delay", l.Delay}, {"Jitter", l.Jitter}, {"Stall", l.Stall}} {
		if d.v < 0 {
			return fmt.Errorf("simnet: link: %s is negative (%s)", d.name, d.v)
		}
	}
	for _, n := range []struct {
		name string
		v    int64
	}{{"Rate", l.Rate}, {"MTU", int64(l.MTU)}, {"Buffer", int64(l.Buffer)}, {"Datagrams", int64(l.Datagrams)}} {
		if n.v < 0 {
			return fmt.Errorf("simnet: link: %s is negative (%d)", n.name, n.v)
		}
	}
	probs := []struct {
		name string
		v    float64
	}{{"Loss", l.Loss}, {"DatagramLoss", l.DatagramLoss}}
	if g := l.Burst; g != nil {
		probs = append(probs, []struct {
			name string
			v    float64
		}{{"Burst.PGoodBad", g.PGoodBad}, {"Burst.PBadGood", g.PBadGood}, {"Burst.LossGood", g.LossGood}, {"Burst.LossBad", g.LossBad}}...)
	}
	for _, p := range probs {
		if !(p.v >= 0 && p.v <= 1) {
			return fmt.Errorf("simnet: link: %s is not a probability (%v)", p.name, p.v)
		}
	}
	return nil
}

func (l Link) mtu() int {
	if l.MTU == 0 {
		return 1400
	}
	return l.MTU
}

func (l Link) buffer() int {
	if l.Buffer == 0 {
		return 256 << 10
	}
	return l.Buffer
}

func (l Link) datagrams() int {
	if l.Datagrams == 0 {
		return 256
	}
	return l.Datagrams
}

func (l Link) stall() time.Duration {
	if l.Stall == 0 {
		return 200*time.Millisecond + 2*l.Delay
	}
	return l.Stall
}

// Stats count what one direction of a pipe carried.
type Stats struct {
	// Bytes and Segments count stream bytes and segments written.
	Bytes, Segments uint64
	// Stalled counts stream segments that were lost and arrived late.
	Stalled uint64
	// Datagrams counts datagrams sent; DatagramsLost those dropped by
	// loss, a blackhole or a full queue.
	Datagrams, DatagramsLost uint64
}

// segment is a piece of the stream in flight.
type segment struct {
	data []byte
	at   time.Time // when it can be read
	fin  bool      // end of stream, no data
	held bool      // blackholed: not deliverable until the hole closes
}

// dgram is a datagram in flight.
type dgram struct {
	data []byte
	at   time.Time
}

// half is one direction of a pipe: what the writing end sent and the
// reading end has not yet read. Every field is guarded by mu; wake is
// closed and replaced whenever anything a waiter might wait for changes.
type half struct {
	mu   sync.Mutex
	wake chan struct{}
	link Link
	rng  *rand.Rand
	bad  bool // Gilbert-Elliott state

	segs   []segment
	queued int       // bytes in segs
	txFree time.Time // when the rate limiter is free
	last   time.Time // delivery time of the last segment: streams stay in order

	dgrams []dgram // sorted by at

	blackhole bool
	fin       bool  // the writer closed its side
	rclosed   bool  // the reader closed its side
	reset     error // the pipe was killed
	rdl, wdl  time.Time
	stats     Stats
}

func newHalf(l Link, seed, stream uint64) *half {
	return &half{
		wake: make(chan struct{}),
		link: l,
		rng:  rand.New(rand.NewPCG(seed, stream)),
	}
}

// signal wakes every waiter. Called with mu held.
func (h *half) signal() {
	close(h.wake)
	h.wake = make(chan struct{})
}

// wait releases mu until h changes, until the time at (if not zero) or
// until done (if not nil) is closed, and takes mu again.
func (h *half) wait(at time.Time, done <-chan struct{}) {
	ch := h.wake
	h.mu.Unlock()
	defer h.mu.Lock()
	var tc <-chan time.Time
	if !at.IsZero() {
		d := time.Until(at)
		if d <= 0 {
			return
		}
		t := time.NewTimer(d)
		defer t.Stop()
		tc = t.C
	}
	select {
	case <-ch:
	case <-tc:
	case <-done:
	}
}

// lost draws whether the next segment or datagram is lost.
func (h *half) lost() bool {
	p := h.link.Loss
	if g := h.link.Burst; g != nil {
		if h.bad {
			h.bad = h.rng.Float64() >= g.PBadGood
		} else {
			h.bad = h.rng.Float64() < g.PGoodBad
		}
		p = g.LossGood
		if h.bad {
			p = g.LossBad
		}
	}
	return p > 0 && h.rng.Float64() < p
}

// dgramLost draws whether the next datagram is lost.
func (h *half) dgramLost() bool {
	if p := h.link.DatagramLoss; p > 0 {
		return h.rng.Float64() < p
	}
	return h.lost()
}

// depart returns when n bytes sent now leave the rate limiter, plus the
// propagation delay and jitter. Called with mu held.
func (h *half) depart(now time.Time, n int) time.Time {
	start := now
	if h.txFree.After(start) {
		start = h.txFree
	}
	if h.link.Rate > 0 {
		start = start.Add(time.Duration(int64(n) * int64(time.Second) / h.link.Rate))
	}
	h.txFree = start
	at := start.Add(h.link.Delay)
	if j := h.link.Jitter; j > 0 {
		at = at.Add(time.Duration(h.rng.Int64N(int64(j))))
	}
	return at
}

// push queues one stream segment (data or fin). Called with mu held.
func (h *half) push(now time.Time, data []byte, fin bool) {
	at := h.depart(now, len(data))
	if !fin {
		if h.lost() {
			at = at.Add(h.link.stall())
			h.stats.Stalled++
		}
		h.stats.Segments++
		h.stats.Bytes += uint64(len(data))
	}
	if at.Before(h.last) {
		at = h.last
	}
	h.last = at
	h.segs = append(h.segs, segment{data: data, at: at, fin: fin, held: h.blackhole})
	h.queued += len(data)
	h.signal()
}

// setBlackhole holds every segment not yet arrived (on) or releases the
// held ones to arrive one delay from now, in order (off). Called with mu
// held.
func (h *half) setBlackhole(now time.Time, on bool) {
	if h.blackhole == on {
		return
	}
	h.blackhole = on
	if on {
		for i := range h.segs {
			if h.segs[i].at.After(now) {
				h.segs[i].held = true
			}
		}
		// Datagrams in flight are lost.
		kept := h.dgrams[:0]
		for _, d := range h.dgrams {
			if d.at.After(now) {
				h.stats.DatagramsLost++
				continue
			}
			kept = append(kept, d)
		}
		h.dgrams = kept
	} else {
		t := now.Add(h.link.Delay)
		for i := range h.segs {
			s := &h.segs[i]
			if !s.held {
				continue
			}
			s.held = false
			if s.at.Before(t) {
				s.at = t
			}
			t = s.at
		}
		if t.After(h.last) {
			h.last = t
		}
	}
	h.signal()
}

// kill resets the direction: pending and later I/O fails with err.
func (h *half) kill(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.reset == nil {
		h.reset = err
	}
	h.segs, h.dgrams, h.queued = nil, nil, 0
	h.signal()
}

func (h *half) setLink(l Link) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.link = l
	h.signal()
}

func (h *half) snapshot() Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stats
}
