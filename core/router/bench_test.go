package router

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/commucat/commucat/core/frame"
	"github.com/commucat/commucat/testnet/simnet"
)

var sweep = flag.Bool("sweep", false, "run the loss sweep and the failover measurement in simulated time and print their tables")

// sweepEnv is three paths of 50ms RTT, each limited to rate bytes per
// second and losing loss of its segments (stalls, on these stream paths).
func sweepEnv(t testing.TB, seed uint64, loss float64, rate int64, cfg Config) (*env, *simnet.Network) {
	t.Helper()
	nw := simnet.New(seed)
	var addrs []string
	for i := range 3 {
		a := fmt.Sprintf("gw%d:443", i)
		l := simnet.Link{Delay: 25 * time.Millisecond, Loss: loss, Rate: rate}
		nw.SetLinks(a, l, l)
		addrs = append(addrs, a)
	}
	e := newEnv(t, nw.Transport("sim"), addrs, cfg, cfg)
	waitFor(t, "three paths", 30*time.Second, func() bool { return usable(e.client) == 3 })
	return e, nw
}

// stamped is message i carrying its send time, size bytes in all.
func stamped(i, size int) frame.Frame {
	f := msg(i, max(size, 16))
	binary.BigEndian.PutUint64(f.Payload[8:], uint64(time.Now().UnixNano()))
	return f
}

// latencies sends n stamped messages, one every gap, and returns each one's
// delivery latency, in order.
func latencies(t testing.TB, e *env, n, size int, gap time.Duration) []time.Duration {
	t.Helper()
	ctx := context.Background()
	errc := make(chan error, 1)
	go func() {
		for i := range n {
			if err := e.client.Send(ctx, stamped(i, size)); err != nil {
				errc <- err
				return
			}
			time.Sleep(gap)
		}
		errc <- nil
	}()
	out := make([]time.Duration, 0, n)
	for i := range n {
		f, err := e.gateway.Recv(ctx)
		if err != nil {
			t.Fatalf("recv %d: %v", i, err)
		}
		if got := binary.BigEndian.Uint64(f.Payload); got != uint64(i) {
			t.Fatalf("recv %d: got %d", i, got)
		}
		out = append(out, time.Since(time.Unix(0, int64(binary.BigEndian.Uint64(f.Payload[8:])))))
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return out
}

// goodput sends total bytes of StreamData and returns bytes per second
// from the first send to the last delivery.
func goodput(t testing.TB, e *env, total int) float64 {
	t.Helper()
	ctx := context.Background()
	const chunk = 16 << 10
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		for sent := 0; sent < total; sent += chunk {
			if err := e.client.Send(ctx, frame.Frame{Type: frame.StreamData, Stream: 1, Payload: make([]byte, chunk)}); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	got := 0
	for got < total {
		f, err := e.gateway.Recv(ctx)
		if err != nil {
			t.Fatalf("recv after %d bytes: %v", got, err)
		}
		got += len(f.Payload)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return float64(total) / time.Since(start).Seconds()
}

func pct(l []time.Duration, p int) time.Duration {
	s := slices.Clone(l)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

// TestSweep measures, in simulated time, message latency and goodput over
// three lossy 50ms-RTT paths for the best scheduler without FEC and the
// spread scheduler with FEC (and redundant, for messages). It runs only
// with -sweep; docs/BENCHMARKS.md records its table.
func TestSweep(t *testing.T) {
	if !*sweep {
		t.Skip("run with -sweep")
	}
	modes := []struct {
		name string
		cfg  Config
	}{
		{"best, no FEC", Config{Scheduler: Best, FEC: FECOff}},
		{"spread + FEC", Config{Scheduler: Spread}},
		{"redundant", Config{Scheduler: Redundant, FEC: FECOff}},
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n| loss | scheduler | p50 | p99 | max | goodput | retransmits | parity | repaired |\n| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, loss := range []float64{0, 0.01, 0.05, 0.10, 0.20} {
		for _, m := range modes {
			var lat []time.Duration
			var gp float64
			var cs, gs Stats
			synctest.Test(t, func(t *testing.T) {
				e, _ := sweepEnv(t, 11, loss, 0, m.cfg)
				defer e.stop()
				// 1 KiB messages, 100 per second, for 20 s.
				lat = latencies(t, e, 2000, 1024, 10*time.Millisecond)
				cs, gs = e.client.Stats(), e.gateway.Stats()
			})
			if m.cfg.Scheduler != Redundant {
				synctest.Test(t, func(t *testing.T) {
					// 2 MB/s per path: one path's worth, or three.
					e, _ := sweepEnv(t, 12, loss, 2<<20, m.cfg)
					defer e.stop()
					gp = goodput(t, e, 8<<20)
				})
			}
			gps := "-"
			if gp > 0 {
				gps = fmt.Sprintf("%.2f MB/s", gp/(1<<20))
			}
			fmt.Fprintf(&b, "| %.0f%% | %s | %s | %s | %s | %s | %d | %d | %d |\n", loss*100, m.name,
				pct(lat, 50).Round(time.Millisecond), pct(lat, 99).Round(time.Millisecond), slices.Max(lat).Round(time.Millisecond),
				gps, cs.Retransmits, cs.ParitySent, gs.Repaired)
		}
	}
	t.Log(b.String())
}

// failover blackholes the best path while a message goes out every 10ms
// (best scheduler) and returns the latency of the first message sent
// after the blackhole and the largest latency of any message.
func failover(t testing.TB, seed uint64) (first, worst time.Duration) {
	t.Helper()
	e, nw := sweepEnv(t, seed, 0, 0, Config{Scheduler: Best})
	defer e.stop()
	ctx := context.Background()
	var at time.Time
	errc := make(chan error, 1)
	const n, hole = 300, 100
	go func() {
		for i := range n {
			if i == hole {
				at = time.Now()
				nw.Blackhole(e.client.bestAddr(), true)
			}
			if err := e.client.Send(ctx, stamped(i, 64)); err != nil {
				errc <- err
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		errc <- nil
	}()
	for i := range n {
		f, err := e.gateway.Recv(ctx)
		if err != nil {
			t.Fatalf("recv %d: %v", i, err)
		}
		l := time.Since(time.Unix(0, int64(binary.BigEndian.Uint64(f.Payload[8:]))))
		worst = max(worst, l)
		if i == hole {
			first = l
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	_ = at
	return first, worst
}

// TestFailoverTime reports, in simulated time, how long traffic stops
// when the best of three 50ms-RTT paths is silently blackholed.
func TestFailoverTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		first, worst := failover(t, 13)
		t.Logf("blackhole at 50ms RTT: the first message after it arrived after %s; worst latency %s", first, worst)
		// Not a timing threshold: a sanity bound, far above the goal, that
		// catches a failover that does not happen at all.
		if worst > 5*time.Second {
			t.Errorf("traffic stopped for %s", worst)
		}
	})
}

// BenchmarkFailover measures the same in real time.
func BenchmarkFailover(b *testing.B) {
	var firsts, worsts time.Duration
	for b.Loop() {
		first, worst := failover(b, 14)
		firsts += first
		worsts += worst
	}
	b.ReportMetric(float64(firsts.Milliseconds())/float64(b.N), "first-ms")
	b.ReportMetric(float64(worsts.Milliseconds())/float64(b.N), "worst-ms")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSpread sends 1 MiB of StreamData per op over three perfect
// paths with the spread scheduler, without and with FEC (one parity shard
// per 10 records), and reports the CPU time per MB of both ends: the
// difference is what FEC costs.
func BenchmarkSpread(b *testing.B) {
	for _, m := range []struct {
		name string
		fec  FECMode
	}{{"no-fec", FECOff}, {"fec", FECAlways}} {
		b.Run(m.name, func(b *testing.B) {
			nw := simnet.New(1)
			addrs := []string{"a:1", "b:1", "c:1"}
			e := newEnv(b, nw.Transport("sim"), addrs, Config{Scheduler: Spread, FEC: m.fec}, Config{})
			defer e.stop()
			waitFor(b, "three paths", 30*time.Second, func() bool { return usable(e.client) == 3 })
			b.SetBytes(1 << 20)
			b.ResetTimer()
			cpu := cpuTime()
			for b.Loop() {
				goodput(b, e, 1<<20)
			}
			cpu = cpuTime() - cpu
			b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/MB")
			b.ReportMetric(float64(e.client.Stats().ParitySent)/float64(b.N), "parity/MB")
		})
	}
}

// BenchmarkMessages measures the CPU of the send and receive paths for
// small messages over one perfect path.
func BenchmarkMessages(b *testing.B) {
	nw := simnet.New(1)
	e := newEnv(b, nw.Transport("sim"), []string{"a:1"}, Config{}, Config{})
	defer e.stop()
	ctx := context.Background()
	b.SetBytes(256)
	b.ReportAllocs()
	done := make(chan error, 1)
	go func() {
		for i := 0; i < b.N; i++ {
			if _, err := e.gateway.Recv(ctx); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for i := 0; i < b.N; i++ {
		if err := e.client.Send(ctx, msg(i, 256)); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}
