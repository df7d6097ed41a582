package fec

import (
	"fmt"
	"math"
)

// DefaultTarget is the residual record loss Choose and a Controller aim
// for: one record in ten thousand lost after repair.
const DefaultTarget = 1e-4

// Residual is the probability that a data record is lost and cannot be
// rebuilt, in a block of k data and m parity shards whose shards are each
// lost independently with probability loss: the record is lost and at
// least m of the other k+m-1 shards are lost too,
//
//	loss * P[Binomial(k+m-1, loss) >= m].
func Residual(loss float64, k, m int) float64 {
	p := clampLoss(loss)
	if k < 1 || m < 0 {
		return p
	}
	return p * binomTail(k+m-1, m, p)
}

// binomTail is P[Binomial(n, p) >= m], summed from m up so that small
// tails keep their precision.
func binomTail(n, m int, p float64) float64 {
	switch {
	case m <= 0:
		return 1
	case m > n || p == 0:
		return 0
	case p == 1:
		return 1
	}
	// log C(n, m) + m log p + (n-m) log(1-p), then the ratio of terms.
	lc := lgamma(n+1) - lgamma(m+1) - lgamma(n-m+1)
	term := math.Exp(lc + float64(m)*math.Log(p) + float64(n-m)*math.Log1p(-p))
	sum := 0.0
	for i := m; i <= n; i++ {
		sum += term
		term *= float64(n-i) / float64(i+1) * p / (1 - p)
	}
	return min(sum, 1)
}

func lgamma(n int) float64 {
	v, _ := math.Lgamma(float64(n))
	return v
}

// clampLoss maps a measured loss to [0, 1]; NaN counts as 0.
func clampLoss(loss float64) float64 {
	switch {
	case loss > 1:
		return 1
	case loss > 0:
		return loss
	}
	return 0
}

// Choose returns the smallest m in 0..MaxM whose Residual for loss and k
// is at most DefaultTarget, or MaxM if none is. It returns 0 when loss
// itself is within the target: FEC would buy nothing.
func Choose(loss float64, k int) (m int) {
	m, _ = choose(loss, k, DefaultTarget, MaxM)
	return m
}

// choose returns the smallest m in 0..maxM meeting target, and whether one
// does (else maxM).
func choose(loss float64, k int, target float64, maxM int) (int, bool) {
	k = min(max(k, 1), MaxK)
	for m := 0; m <= maxM; m++ {
		if Residual(loss, k, m) <= target {
			return m, true
		}
	}
	return maxM, false
}

// Controller defaults; a zero ControllerConfig field means these.
const (
	// DefaultMinK is the smallest k a Controller falls back to under
	// heavy loss.
	DefaultMinK = 4
	// DefaultMaxM is the most parity shards per block a Controller asks
	// for.
	DefaultMaxM = 8
	// DefaultAlpha is the weight of a new loss sample in a Controller's
	// moving average.
	DefaultAlpha = 0.125
)

// ControllerConfig configures a Controller. The zero value is the default.
type ControllerConfig struct {
	// Target is the residual loss to stay under, in (0, 1). If zero,
	// DefaultTarget.
	Target float64
	// K is the preferred data records per block. If zero, DefaultK.
	K int
	// MinK is the smallest k to fall back to when MaxM parity shards
	// cannot meet Target with K. If zero, DefaultMinK (or K if smaller).
	MinK int
	// MinM is the fewest parity shards per block, 0..MaxM. If zero, 1.
	MinM int
	// MaxM is the most parity shards per block, MinM..MaxM. If zero,
	// DefaultMaxM.
	MaxM int
	// Alpha is the weight of each new loss sample, in (0, 1]. If zero,
	// DefaultAlpha.
	Alpha float64
}

// Validate reports whether c is usable.
func (c ControllerConfig) Validate() error {
	switch {
	case !(c.Target >= 0 && c.Target < 1):
		return fmt.Errorf("fec: controller target %v (want 0..1)", c.Target)
	case c.K < 0 || c.K > MaxK:
		return fmt.Errorf("fec: controller k = %d (want 1..%d)", c.K, MaxK)
	case c.MinK < 0 || c.MinK > MaxK || (c.MinK > 0 && c.K > 0 && c.MinK > c.K):
		return fmt.Errorf("fec: controller min k = %d (want 1..k)", c.MinK)
	case c.MinM < 0 || c.MinM > MaxM:
		return fmt.Errorf("fec: controller min m = %d (want 0..%d)", c.MinM, MaxM)
	case c.MaxM < 0 || c.MaxM > MaxM || (c.MaxM > 0 && c.MaxM < max(c.MinM, 1)):
		return fmt.Errorf("fec: controller max m = %d (want min m..%d)", c.MaxM, MaxM)
	case !(c.Alpha >= 0 && c.Alpha <= 1):
		return fmt.Errorf("fec: controller alpha %v (want 0..1)", c.Alpha)
	}
	return nil
}

// Controller picks k and m from measured loss: an exponentially weighted
// moving average of loss samples, then the rule of Params. It is not safe
// for concurrent use.
type Controller struct {
	target     float64
	k, minK    int
	minM, maxM int
	alpha      float64
	loss       float64
	seeded     bool
}

// NewController returns a Controller for cfg that assumes no loss until
// the first sample.
func NewController(cfg ControllerConfig) (*Controller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	k := cmpOr(cfg.K, DefaultK)
	minM := cmpOr(cfg.MinM, 1)
	return &Controller{
		target: cmpOr(cfg.Target, DefaultTarget),
		k:      k,
		minK:   min(cmpOr(cfg.MinK, DefaultMinK), k),
		minM:   minM,
		maxM:   cmpOr(cfg.MaxM, max(DefaultMaxM, minM)),
		alpha:  cmpOr(cfg.Alpha, DefaultAlpha),
	}, nil
}

// Observe adds one loss sample: of total shards sent (or expected) in a
// measurement interval, lost did not arrive. A sample with total = 0 is
// ignored; the first sample replaces the initial estimate.
func (c *Controller) Observe(total, lost uint64) {
	if total == 0 {
		return
	}
	s := float64(min(lost, total)) / float64(total)
	if !c.seeded {
		c.loss, c.seeded = s, true
		return
	}
	c.loss += c.alpha * (s - c.loss)
}

// SetLoss replaces the loss estimate, for a caller that measures loss
// itself.
func (c *Controller) SetLoss(loss float64) {
	c.loss, c.seeded = clampLoss(loss), true
}

// Loss is the current loss estimate.
func (c *Controller) Loss() float64 { return c.loss }

// Params returns k and m for the current loss estimate p:
//
//  1. with k = K, the smallest m in MinM..MaxM with Residual(p, k, m) <=
//     Target;
//  2. if even MaxM does not meet Target, the largest k in MinK..K-1 for
//     which some m <= MaxM does, with its smallest such m (a shorter block
//     has the same parity shards for fewer records);
//  3. if none does, MinK and MaxM.
func (c *Controller) Params() (k, m int) {
	for k := c.k; k >= c.minK; k-- {
		if m, ok := choose(c.loss, k, c.target, c.maxM); ok {
			return k, max(m, c.minM)
		}
	}
	return c.minK, c.maxM
}
