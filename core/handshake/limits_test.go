package handshake

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func key(i int) [32]byte { return [32]byte{byte(i), byte(i >> 8), 0xaa} }

func TestReplayCache(t *testing.T) {
	ttl := 4 * time.Minute
	t0 := fixedNow
	type step struct {
		key  int
		at   time.Duration
		want error
	}
	tests := []struct {
		name  string
		max   int
		steps []step
	}{
		{"new keys pass", 3, []step{{1, 0, nil}, {2, 0, nil}, {3, 0, nil}}},
		{"repeat is a replay", 3, []step{{1, 0, nil}, {1, time.Second, ErrReplay}, {1, ttl - 1, ErrReplay}}},
		// Kept through ttl inclusive: the skew check includes its bounds.
		{"held at exactly ttl", 3, []step{{1, 0, nil}, {1, ttl, ErrReplay}}},
		{"expired entry may come again", 3, []step{{1, 0, nil}, {1, ttl + 1, nil}, {1, ttl + 2, ErrReplay}}},
		{"full refuses without evicting", 2, []step{
			{1, 0, nil}, {2, time.Second, nil},
			{3, 2 * time.Second, ErrRateLimited},
			{1, 3 * time.Second, ErrReplay}, // still remembered
			{3, ttl, ErrRateLimited},        // key 1 held through ttl
			{3, ttl + 1, nil},               // key 1 expired, room again
			{2, ttl + time.Second + 1, nil}, // key 2 expired too
			{4, ttl + time.Second + 1, ErrRateLimited},
		}},
		{"clock going backwards keeps entries", 2, []step{{1, time.Hour, nil}, {1, 0, ErrReplay}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewReplayCache(tt.max)
			for i, s := range tt.steps {
				err := c.check(key(s.key), t0.Add(s.at), ttl)
				if !errors.Is(err, s.want) || (s.want == nil && err != nil) {
					t.Fatalf("step %d (key %d at %v): %v, want %v", i, s.key, s.at, err, s.want)
				}
				if c.Len() > tt.max {
					t.Fatalf("step %d: %d entries over max %d", i, c.Len(), tt.max)
				}
			}
		})
	}
}

func TestReplayCacheDefaultSize(t *testing.T) {
	if got := NewReplayCache(0).max; got != DefaultReplayCacheSize {
		t.Errorf("NewReplayCache(0) max = %d", got)
	}
	if got := NewReplayCache(-3).max; got != DefaultReplayCacheSize {
		t.Errorf("NewReplayCache(-3) max = %d", got)
	}
}

func TestReplayCacheConcurrent(t *testing.T) {
	c := NewReplayCache(1000)
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := 0
	for g := range 8 {
		wg.Go(func() {
			for i := range 100 {
				// Every goroutine offers the same 100 keys: each is accepted once.
				if c.check(key(i), fixedNow.Add(time.Duration(g)), time.Minute) == nil {
					mu.Lock()
					accepted++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if accepted != 100 {
		t.Errorf("accepted %d, want 100", accepted)
	}
}

func TestRateLimiter(t *testing.T) {
	type step struct {
		src  string
		at   time.Duration
		want bool
	}
	tests := []struct {
		name       string
		rate       float64
		burst, max int
		steps      []step
	}{
		{"burst then refuse", 1, 3, 10, []step{
			{"a", 0, true}, {"a", 0, true}, {"a", 0, true}, {"a", 0, false}, {"a", 999 * time.Millisecond, false},
		}},
		{"refills at the rate", 2, 1, 10, []step{
			{"a", 0, true}, {"a", 0, false},
			{"a", 499 * time.Millisecond, false}, {"a", 500 * time.Millisecond, true},
			{"a", 10 * time.Second, true}, {"a", 10 * time.Second, false}, // capped at burst 1
		}},
		{"sources are independent", 1, 1, 10, []step{
			{"a", 0, true}, {"a", 0, false}, {"b", 0, true}, {"b", 0, false}, {"c", 0, true},
		}},
		{"least recently used source is forgotten", 1, 1, 2, []step{
			{"a", 0, true}, {"b", 0, true}, {"a", 0, false}, // a used last, b is LRU
			{"c", 0, true},  // evicts b
			{"a", 0, false}, // a still remembered and empty
			{"b", 0, true},  // b forgotten: fresh bucket (evicts c)
		}},
		{"zero rate never refills", 0, 2, 10, []step{
			{"a", 0, true}, {"a", 0, true}, {"a", time.Hour, false},
		}},
		{"clock going backwards adds nothing", 1, 1, 10, []step{
			{"a", time.Hour, true}, {"a", 0, false}, {"a", time.Hour, false}, {"a", time.Hour + time.Second, true},
		}},
		{"burst below one counts as one", 1, 0, 10, []step{{"a", 0, true}, {"a", 0, false}}},
		{"an IPv6 /64 is one source", 0, 1, 10, []step{
			{"2001:db8:1:2::1", 0, true}, {"2001:db8:1:2::2", 0, false},
			{"2001:db8:1:2:ffff:ffff:ffff:ffff", 0, false}, {"2001:db8:1:2::1%eth0", 0, false},
			{"2001:db8:1:3::1", 0, true},
		}},
		{"IPv4 addresses are their own sources", 0, 1, 10, []step{
			{"192.0.2.1", 0, true}, {"192.0.2.2", 0, true}, {"::ffff:192.0.2.1", 0, false},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewRateLimiter(tt.rate, tt.burst, tt.max)
			var got, want []bool
			for _, s := range tt.steps {
				got = append(got, l.Allow(s.src, fixedNow.Add(s.at)))
				want = append(want, s.want)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Allow results (-want +got):\n%s", diff)
			}
			if l.Len() > tt.max {
				t.Errorf("tracking %d sources, max %d", l.Len(), tt.max)
			}
		})
	}
}

// TestRateLimiterIPv6Host sends handshakes from many addresses of one
// IPv6 /64, as one host can: they share one bucket.
func TestRateLimiterIPv6Host(t *testing.T) {
	l := NewRateLimiter(0, 3, 1<<16)
	allowed := 0
	for i := range 1000 {
		if l.Allow(fmt.Sprintf("2001:db8::%x:%x", i>>16, i&0xffff), fixedNow) {
			allowed++
		}
	}
	if allowed != 3 || l.Len() != 1 {
		t.Errorf("allowed %d handshakes from one /64, tracking %d sources; want 3 and 1", allowed, l.Len())
	}
}

func TestSource(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7":            "192.0.2.7",
		"::ffff:192.0.2.7":     "192.0.2.7",
		"2001:db8:a:b:c:d:e:f": "2001:db8:a:b::/64",
		"fe80::1%eth0":         "fe80::/64",
		"::1":                  "::/64",
		"not an address":       "not an address",
		"":                     "",
	} {
		if got := Source(in); got != want {
			t.Errorf("Source(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRateLimiterBounded(t *testing.T) {
	l := NewRateLimiter(1, 1, 100)
	for i := range 10000 {
		l.Allow(fmt.Sprintf("10.0.%d.%d", i/256, i%256), fixedNow)
	}
	if l.Len() != 100 {
		t.Errorf("tracking %d sources, want 100", l.Len())
	}
}

func TestRateLimiterConcurrent(t *testing.T) {
	l := NewRateLimiter(0, 50, 10)
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := map[string]int{}
	for g := range 8 {
		wg.Go(func() {
			for range 100 {
				src := fmt.Sprintf("src%d", g%4)
				if l.Allow(src, fixedNow) {
					mu.Lock()
					allowed[src]++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	// Four sources, two goroutines each, no refill: exactly the burst each.
	want := map[string]int{"src0": 50, "src1": 50, "src2": 50, "src3": 50}
	if diff := cmp.Diff(want, allowed); diff != "" {
		t.Errorf("allowed per source (-want +got):\n%s", diff)
	}
}
