package fec

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestChoose(t *testing.T) {
	losses := []float64{0, 1e-5, 2e-4, 1e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1}
	tests := []struct {
		k    int
		want []int // m for each of losses
	}{
		{1, []int{0, 0, 1, 1, 1, 2, 3, 4, 5, 7, 13, 32}},
		{4, []int{0, 0, 1, 1, 2, 2, 4, 5, 8, 11, 21, 32}},
		{10, []int{0, 0, 1, 1, 2, 3, 5, 7, 12, 17, 32, 32}},
		{32, []int{0, 0, 1, 1, 3, 5, 8, 12, 22, 32, 32, 32}},
	}
	for _, tt := range tests {
		t.Run("k="+itoa(tt.k), func(t *testing.T) {
			var got []int
			for _, p := range losses {
				m := Choose(p, tt.k)
				got = append(got, m)
				// The choice is the least m that meets the target.
				if m < MaxM && Residual(p, tt.k, m) > DefaultTarget {
					t.Errorf("loss %v: m = %d misses the target (%g)", p, m, Residual(p, tt.k, m))
				}
				if m > 0 && Residual(p, tt.k, m-1) <= DefaultTarget {
					t.Errorf("loss %v: m = %d is not the least (m-1 gives %g)", p, m, Residual(p, tt.k, m-1))
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("m by loss %v (-want +got):\n%s", losses, diff)
			}
		})
	}
	for _, p := range []float64{math.NaN(), -1, math.Inf(-1)} {
		if m := Choose(p, 10); m != 0 {
			t.Errorf("Choose(%v, 10) = %d, want 0", p, m)
		}
	}
	if m := Choose(math.Inf(1), 10); m != MaxM {
		t.Errorf("Choose(+Inf, 10) = %d", m)
	}
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

// TestResidual checks Residual against values computed by hand from the
// binomial distribution.
func TestResidual(t *testing.T) {
	tests := []struct {
		loss float64
		k, m int
		want float64
	}{
		{0.1, 10, 0, 0.1},
		{0.1, 10, 1, 0.1 * (1 - math.Pow(0.9, 10))},
		{0.1, 10, 2, 0.1 * (1 - math.Pow(0.9, 11) - 11*0.1*math.Pow(0.9, 10))},
		{0.5, 1, 1, 0.25},
		{0, 10, 3, 0},
		{1, 10, 3, 1},
		{0.2, 1, 3, 0.2 * math.Pow(0.2, 3)}, // k+m-1 = 3 others, all must be lost
	}
	for _, tt := range tests {
		if got := Residual(tt.loss, tt.k, tt.m); math.Abs(got-tt.want) > 1e-12*max(tt.want, 1e-300) && math.Abs(got-tt.want) > 1e-15 {
			t.Errorf("Residual(%v, %d, %d) = %g, want %g", tt.loss, tt.k, tt.m, got, tt.want)
		}
	}
}

func TestController(t *testing.T) {
	type sample struct{ total, lost uint64 }
	tests := []struct {
		name    string
		cfg     ControllerConfig
		samples []sample
		wantK   int
		wantM   int
	}{
		{"no samples: min m", ControllerConfig{}, nil, 10, 1},
		{"no loss", ControllerConfig{}, []sample{{1000, 0}}, 10, 1},
		{"min m zero means 1", ControllerConfig{MinM: 0, MaxM: 4}, []sample{{1000, 0}}, 10, 1},
		{"1% loss", ControllerConfig{}, []sample{{1000, 10}}, 10, 2},
		{"5% loss", ControllerConfig{}, []sample{{1000, 50}}, 10, 5},
		{"10% loss", ControllerConfig{}, []sample{{1000, 100}}, 10, 7},
		{"20% loss: shorter blocks", ControllerConfig{}, []sample{{1000, 200}}, 4, 8},
		{"50% loss: the bounds", ControllerConfig{}, []sample{{1000, 500}}, 4, 8},
		{"20% loss, wider bounds", ControllerConfig{MaxM: 16}, []sample{{1000, 200}}, 10, 12},
		{"empty sample ignored", ControllerConfig{}, []sample{{1000, 10}, {0, 0}}, 10, 2},
		{"lost over total clamps", ControllerConfig{}, []sample{{10, 20}}, 4, 8},
		// 10% then 0% with alpha 1/8: 0.0875.
		{"average", ControllerConfig{}, []sample{{100, 10}, {100, 0}}, 10, 6},
		{"alpha 1 follows the last sample", ControllerConfig{Alpha: 1}, []sample{{100, 10}, {100, 1}}, 10, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewController(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tt.samples {
				c.Observe(s.total, s.lost)
			}
			if k, m := c.Params(); k != tt.wantK || m != tt.wantM {
				t.Errorf("Params = (%d, %d) at loss %v, want (%d, %d)", k, m, c.Loss(), tt.wantK, tt.wantM)
			}
		})
	}
}

func TestControllerConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  ControllerConfig
		ok   bool
	}{
		{"zero", ControllerConfig{}, true},
		{"target 1", ControllerConfig{Target: 1}, false},
		{"target NaN", ControllerConfig{Target: math.NaN()}, false},
		{"k too big", ControllerConfig{K: MaxK + 1}, false},
		{"min k above k", ControllerConfig{K: 4, MinK: 5}, false},
		{"max m below min m", ControllerConfig{MinM: 4, MaxM: 3}, false},
		{"max m too big", ControllerConfig{MaxM: MaxM + 1}, false},
		{"alpha above 1", ControllerConfig{Alpha: 1.5}, false},
		{"full", ControllerConfig{Target: 1e-6, K: 20, MinK: 2, MinM: 2, MaxM: 32, Alpha: 0.5}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

// TestSimulatedLoss sends 10,000 records through an Encoder and a Decoder
// over a seeded link that loses each shard (data or parity) with
// probability 0.1, for several m, and checks that the records still lost
// after repair match Residual: within five standard deviations of the
// expected count (the seed is fixed, so the outcome is too).
func TestSimulatedLoss(t *testing.T) {
	const (
		n    = 10_000
		k    = 10
		loss = 0.1
	)
	for _, m := range []int{0, 1, 2, 3, 4, Choose(loss, k)} {
		t.Run("m="+itoa(m), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(2026, uint64(m)))
			e, err := NewEncoder(EncoderConfig{K: k, M: max(m, 1), MaxDelay: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			if err := e.SetParams(k, m); err != nil {
				t.Fatal(err)
			}
			d := newDecoder(t, DecoderConfig{})
			delivered := make(map[uint64]bool)
			var parity [][]byte
			seq := uint64(0)
			for range n {
				r := fakeRecord(rng, seq, 28+rng.IntN(200))
				seq++
				if parity, err = e.Add(parity[:0], r); err != nil {
					t.Fatal(err)
				}
				if rng.Float64() >= loss {
					delivered[recSeq(r)] = true
					for _, x := range d.AddRecord(nil, r) {
						delivered[recSeq(x)] = true
					}
				}
				for _, p := range parity {
					seq++ // the parity record's own seq
					if rng.Float64() < loss {
						continue
					}
					out, err := d.AddParity(nil, p)
					if err != nil {
						t.Fatal(err)
					}
					for _, x := range out {
						delivered[recSeq(x)] = true
					}
				}
			}
			lost := n - len(delivered)
			want := Residual(loss, k, m) * n
			t.Logf("m=%d: %d of %d records lost after repair, predicted %.1f; decoder %+v", m, lost, n, want, d.Stats())
			if math.Abs(float64(lost)-want) > 5*math.Sqrt(want)+2 {
				t.Errorf("residual loss %d records, predicted %.1f", lost, want)
			}
		})
	}
}

func recSeq(r []byte) uint64 {
	s, _ := recordSeq(r)
	return s
}
