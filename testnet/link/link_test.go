package link

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func mustNew(t *testing.T, p Params, seed uint64) *Link {
	t.Helper()
	l, err := New(p, seed, 0)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// pattern offers n packets of size bytes, one per millisecond, and returns
// "." for a delivered packet, "x" for a dropped one and "2" for a
// duplicated one.
func pattern(l *Link, n, size int) string {
	var sb strings.Builder
	for i := range n {
		o := l.Offer(t0.Add(time.Duration(i)*time.Millisecond), size)
		switch {
		case o.Drop != ReasonNone:
			sb.WriteByte('x')
		case o.N == 2:
			sb.WriteByte('2')
		default:
			sb.WriteByte('.')
		}
	}
	return sb.String()
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    Params
		ok   bool
	}{
		{"zero", Params{}, true},
		{"full", Params{Delay: time.Second, Jitter: time.Millisecond, Loss: 0.5, Duplicate: 1, Rate: 1e6, Queue: 1e5, MTU: 1500, Burst: &GilbertElliott{PGoodBad: 0.1, PBadGood: 0.9, LossBad: 1}}, true},
		{"negative delay", Params{Delay: -1}, false},
		{"negative jitter", Params{Jitter: -1}, false},
		{"negative rate", Params{Rate: -1}, false},
		{"negative queue", Params{Queue: -1}, false},
		{"negative mtu", Params{MTU: -1}, false},
		{"loss above 1", Params{Loss: 1.5}, false},
		{"loss NaN", Params{Loss: nan()}, false},
		{"duplicate negative", Params{Duplicate: -0.1}, false},
		{"burst bad", Params{Burst: &GilbertElliott{PBadGood: 2}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok %v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrParams) {
				t.Errorf("error %v does not wrap ErrParams", err)
			}
			if _, nerr := New(tc.p, 1, 0); (nerr == nil) != tc.ok {
				t.Errorf("New error %v, want ok %v", nerr, tc.ok)
			}
		})
	}
}

func nan() float64 {
	var z float64
	return z / z
}

func TestPerfectLink(t *testing.T) {
	l := mustNew(t, Params{}, 1)
	for i := range 100 {
		now := t0.Add(time.Duration(i) * time.Microsecond)
		o := l.Offer(now, 1500)
		if diff := cmp.Diff(Outcome{N: 1, At: [2]time.Time{now}}, o); diff != "" {
			t.Fatalf("packet %d (-want +got):\n%s", i, diff)
		}
	}
	c := l.Counters()
	if c.Offered != 100 || c.Passed != 100 || c.PassedBytes != 150000 || c.Dropped() != 0 {
		t.Errorf("counters %+v", c)
	}
}

func TestMTU(t *testing.T) {
	l := mustNew(t, Params{MTU: 1280, Loss: 1}, 1)
	if o := l.Offer(t0, 1281); o.Drop != ReasonMTU {
		t.Errorf("1281 bytes over mtu 1280: %+v, want mtu drop", o)
	}
	if o := l.Offer(t0, 1280); o.Drop != ReasonLoss {
		t.Errorf("1280 bytes with loss 1: %+v, want loss drop", o)
	}
	if got := l.Counters().DropMap(); !cmp.Equal(got, map[string]uint64{"mtu": 1, "loss": 1}) {
		t.Errorf("drops %v", got)
	}
}

// TestBernoulliSequence pins the exact drop sequence of a seed, so a
// change to the order or number of draws shows up here.
func TestBernoulliSequence(t *testing.T) {
	const want = "x.xx.xx.x....x...x...xx....xx.x......."
	got := pattern(mustNew(t, Params{Loss: 0.3}, 42), len(want), 100)
	if got != want {
		t.Errorf("seed 42, loss 0.3:\n got %s\nwant %s", got, want)
	}
	if again := pattern(mustNew(t, Params{Loss: 0.3}, 42), len(want), 100); again != got {
		t.Errorf("same seed differs:\n%s\n%s", got, again)
	}
	if other := pattern(mustNew(t, Params{Loss: 0.3}, 43), len(want), 100); other == got {
		t.Errorf("seed 43 repeats seed 42's sequence %s", got)
	}
}

func TestBernoulliRate(t *testing.T) {
	l := mustNew(t, Params{Loss: 0.1}, 7)
	const n = 100000
	pattern(l, n, 100)
	rate := float64(l.Counters().Drops[ReasonLoss]) / n
	// Deterministic for the seed: the bound documents the expectation.
	if rate < 0.095 || rate > 0.105 {
		t.Errorf("loss rate %.4f, want about 0.1", rate)
	}
}

func TestGilbertElliott(t *testing.T) {
	t.Run("states", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			ge   GilbertElliott
			want string
		}{
			{"never bad", GilbertElliott{PGoodBad: 0, PBadGood: 1, LossBad: 1}, ".........."},
			{"bad at once and stays", GilbertElliott{PGoodBad: 1, PBadGood: 0, LossBad: 1}, "xxxxxxxxxx"},
			{"bad state without loss", GilbertElliott{PGoodBad: 1, PBadGood: 0, LossBad: 0}, ".........."},
			{"good state always loses", GilbertElliott{PGoodBad: 0, LossGood: 1}, "xxxxxxxxxx"},
			{"alternates", GilbertElliott{PGoodBad: 1, PBadGood: 1, LossBad: 1}, "x.x.x.x.x."},
		} {
			t.Run(tc.name, func(t *testing.T) {
				ge := tc.ge
				if got := pattern(mustNew(t, Params{Burst: &ge, Loss: 1}, 3), len(tc.want), 100); got != tc.want {
					t.Errorf("got %s, want %s", got, tc.want)
				}
			})
		}
	})
	t.Run("sequence", func(t *testing.T) {
		const want = "........xxxx.......................xx.................xx....."
		ge := GilbertElliott{PGoodBad: 0.05, PBadGood: 0.4, LossBad: 1}
		if got := pattern(mustNew(t, Params{Burst: &ge}, 42), len(want), 100); got != want {
			t.Errorf("seed 42:\n got %s\nwant %s", got, want)
		}
	})
	t.Run("bursts", func(t *testing.T) {
		// Gilbert model: loss rate p/(p+r), mean burst 1/r.
		ge := GilbertElliott{PGoodBad: 0.02, PBadGood: 0.25, LossBad: 1}
		s := pattern(mustNew(t, Params{Burst: &ge}, 11), 200000, 100)
		lost := strings.Count(s, "x")
		bursts := 0
		for _, f := range strings.Split(s, ".") {
			if f != "" {
				bursts++
			}
		}
		rate := float64(lost) / float64(len(s))
		mean := float64(lost) / float64(bursts)
		if want := 0.02 / 0.27; rate < want*0.9 || rate > want*1.1 {
			t.Errorf("loss rate %.4f, want about %.4f", rate, want)
		}
		if mean < 3.6 || mean > 4.4 {
			t.Errorf("mean burst %.2f, want about 4", mean)
		}
		// Bursty: far fewer bursts than Bernoulli loss at the same rate
		// would have (about rate*(1-rate)*n).
		if bern := rate * (1 - rate) * float64(len(s)); float64(bursts) > bern/2 {
			t.Errorf("%d bursts, Bernoulli would have about %.0f", bursts, bern)
		}
	})
}

func TestRateAndQueue(t *testing.T) {
	// 1000 B/s, queue of 3000 bytes, 1000-byte packets: each takes 1 s.
	l := mustNew(t, Params{Rate: 1000, Queue: 3000, Delay: 10 * time.Millisecond}, 1)
	var got []string
	for i := range 5 {
		o := l.Offer(t0, 1000)
		if o.Drop != ReasonNone {
			got = append(got, o.Drop.String())
			continue
		}
		got = append(got, o.At[0].Sub(t0).String())
		_ = i
	}
	// The first three fill the queue (3000 bytes of backlog after the
	// third); the fourth and fifth do not fit.
	want := []string{"1.01s", "2.01s", "3.01s", "queue", "queue"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("arrivals (-want +got):\n%s", diff)
	}
	// 1.5 s later 1500 bytes are sent: 1500 of backlog, room for one more.
	now := t0.Add(1500 * time.Millisecond)
	if o := l.Offer(now, 1000); o.Drop != ReasonNone || !o.At[0].Equal(t0.Add(4010*time.Millisecond)) {
		t.Errorf("after drain: %+v, want arrival at 4.01s", o)
	}
	if o := l.Offer(now, 1000); o.Drop != ReasonQueue {
		t.Errorf("queue full again: %+v", o)
	}
	// A packet larger than the queue never fits.
	if o := l.Offer(t0.Add(time.Hour), 3001); o.Drop != ReasonQueue {
		t.Errorf("3001 bytes into a 3000-byte queue: %+v", o)
	}
	c := l.Counters()
	if c.Drops[ReasonQueue] != 4 || c.Passed != 4 {
		t.Errorf("counters %+v", c)
	}
}

func TestDefaultQueue(t *testing.T) {
	for _, tc := range []struct {
		rate int64
		want int64
	}{{1000, 128 << 10}, {100e6, 10e6}} {
		if got := (Params{Rate: tc.rate}).queue(); got != tc.want {
			t.Errorf("rate %d: queue %d, want %d", tc.rate, got, tc.want)
		}
	}
}

func arrivals(l *Link, n int) []time.Duration {
	var out []time.Duration
	for i := range n {
		now := t0.Add(time.Duration(i) * time.Millisecond)
		o := l.Offer(now, 100)
		out = append(out, o.At[0].Sub(t0))
	}
	return out
}

func TestJitter(t *testing.T) {
	const delay, jitter = 50 * time.Millisecond, 20 * time.Millisecond
	t.Run("in order", func(t *testing.T) {
		at := arrivals(mustNew(t, Params{Delay: delay, Jitter: jitter}, 5), 200)
		for i, a := range at {
			sent := time.Duration(i) * time.Millisecond
			if a < sent+delay {
				t.Fatalf("packet %d arrives %s after sending, before the delay", i, a-sent)
			}
			if i > 0 && a < at[i-1] {
				t.Fatalf("packet %d at %s overtakes packet %d at %s", i, a, i-1, at[i-1])
			}
		}
	})
	t.Run("reorder", func(t *testing.T) {
		at := arrivals(mustNew(t, Params{Delay: delay, Jitter: jitter, Reorder: true}, 5), 200)
		reordered := 0
		for i, a := range at {
			sent := time.Duration(i) * time.Millisecond
			if d := a - sent; d < delay || d >= delay+jitter {
				t.Fatalf("packet %d delayed %s, want [%s, %s)", i, d, delay, delay+jitter)
			}
			if i > 0 && a < at[i-1] {
				reordered++
			}
		}
		if reordered == 0 {
			t.Error("jitter 20ms at 1 packet/ms reordered nothing")
		}
	})
	t.Run("sequence", func(t *testing.T) {
		got := arrivals(mustNew(t, Params{Jitter: 10 * time.Millisecond, Reorder: true}, 9), 4)
		want := []time.Duration{4644323, 6944127, 3936150, 9667956}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("seed 9 arrivals (-want +got):\n%s", diff)
		}
	})
}

func TestDuplicate(t *testing.T) {
	l := mustNew(t, Params{Duplicate: 1, Delay: time.Millisecond}, 1)
	o := l.Offer(t0, 100)
	want := Outcome{N: 2, At: [2]time.Time{t0.Add(time.Millisecond), t0.Add(time.Millisecond)}}
	if diff := cmp.Diff(want, o); diff != "" {
		t.Errorf("outcome (-want +got):\n%s", diff)
	}
	if got := pattern(mustNew(t, Params{Duplicate: 0.25}, 42), 30, 100); got != "..2..22.2....2...2...22.....2." {
		t.Errorf("seed 42 duplicate pattern %s", got)
	}
	// A duplicate that does not fit the queue is dropped alone.
	q := mustNew(t, Params{Duplicate: 1, Rate: 1000, Queue: 1000}, 1)
	if o := q.Offer(t0, 1000); o.N != 1 || o.Drop != ReasonNone {
		t.Errorf("duplicate into a one-packet queue: %+v", o)
	}
	c := q.Counters()
	if c.Passed != 1 || c.Drops[ReasonQueue] != 1 || c.Duplicated != 0 {
		t.Errorf("counters %+v", c)
	}
}

func TestSetKeepsState(t *testing.T) {
	// Changing parameters mid-run continues the generator: the sequence
	// equals one run with the change at the same packet.
	a := mustNew(t, Params{Loss: 0.5}, 77)
	first := pattern(a, 10, 100)
	if err := a.Set(Params{Loss: 0.2}); err != nil {
		t.Fatal(err)
	}
	second := pattern(a, 10, 100)
	b := mustNew(t, Params{Loss: 0.5}, 77)
	if got := pattern(b, 10, 100); got != first {
		t.Fatalf("replay differs: %s vs %s", got, first)
	}
	b.Set(Params{Loss: 0.2})
	if got := pattern(b, 10, 100); got != second {
		t.Errorf("after Set: %s vs %s", got, second)
	}
	if err := a.Set(Params{Loss: 2}); !errors.Is(err, ErrParams) {
		t.Errorf("Set invalid: %v", err)
	}
	if a.Params().Loss != 0.2 {
		t.Errorf("invalid Set changed params to %+v", a.Params())
	}
}

func TestCountUncount(t *testing.T) {
	l := mustNew(t, Params{}, 1)
	l.Count(ReasonBlackhole, 10)
	l.Offer(t0, 20)
	l.Uncount(ReasonOverflow, 20)
	c := l.Counters()
	want := Counters{Offered: 2, OfferedBytes: 30}
	want.Drops[ReasonBlackhole] = 1
	want.Drops[ReasonOverflow] = 1
	if diff := cmp.Diff(want, c); diff != "" {
		t.Errorf("counters (-want +got):\n%s", diff)
	}
	if s := Reason(200).String(); s != "reason(200)" {
		t.Errorf("unknown reason %q", s)
	}
}

func BenchmarkOffer(b *testing.B) {
	for _, bc := range []struct {
		name string
		p    Params
	}{
		{"perfect", Params{}},
		{"impaired", Params{Delay: time.Millisecond, Jitter: time.Millisecond, Loss: 0.01, Rate: 1e9, Duplicate: 0.01}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			l, _ := New(bc.p, 1, 0)
			now := t0
			b.ReportAllocs()
			for b.Loop() {
				now = now.Add(time.Microsecond)
				l.Offer(now, 1500)
			}
		})
	}
}
