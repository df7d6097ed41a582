package probes_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/commucat/commucat/probes"
	"github.com/commucat/commucat/probes/ooni"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs (-want +got):\n%s", name, diff)
	}
}

// fakeProbe records a connect in the trace and returns a fixed result.
type fakeProbe struct {
	name, input string
	failure     string
	blocking    ooni.Blocking
	poisons     bool
	run         func(ctx context.Context, env *probes.Env) // optional extra work
	order       *[]string
	mu          *sync.Mutex
}

func (p *fakeProbe) Name() string  { return p.name }
func (p *fakeProbe) Input() string { return p.input }
func (p *fakeProbe) Poisons() bool { return p.poisons }

func (p *fakeProbe) Run(ctx context.Context, env *probes.Env) probes.Result {
	if p.order != nil {
		p.mu.Lock()
		*p.order = append(*p.order, p.input)
		p.mu.Unlock()
	}
	if p.run != nil {
		p.run(ctx, env)
	}
	tr := env.Trace()
	tx := tr.NewTransaction()
	var err error
	if p.failure != "" {
		err = errors.New(p.failure)
	}
	tr.TCPConnect(tx, "192.0.2.7:443", env.Now(), err)
	k := tr.Keys()
	k.Fail(p.failure, ooni.OpConnect)
	k.Blocking = p.blocking
	res := probes.Result{Keys: &k, State: probes.StateOf(&k), Details: "fake " + p.input}
	res.Verdicts = []probes.Verdict{{Transport: "tcp", Network: "tcp", Addr: "192.0.2.7:443", State: res.State, Blocking: p.blocking}}
	return res
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(5 * time.Millisecond)
	return c.t
}

func TestRunnerGolden(t *testing.T) {
	clk := &fakeClock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
	var report bytes.Buffer
	var verdicts []probes.Verdict
	r, err := probes.New(probes.Config{
		Interval:        time.Nanosecond,
		Report:          &report,
		Now:             clk.now,
		SoftwareVersion: "test",
		ReportID: func(name string, start time.Time) string {
			return start.Format("20060102T150405Z") + "_" + strings.ReplaceAll(name, "_", "") + "_ZZ_0_n1_test"
		},
		Sink: probes.VerdictFunc(func(v probes.Verdict) { verdicts = append(verdicts, v) }),
	})
	if err != nil {
		t.Fatal(err)
	}
	ps := []probes.Probe{
		&fakeProbe{name: "x_commucat_tcp_connect", input: "ok.test:443", blocking: ooni.BlockingNone},
		&fakeProbe{name: "x_commucat_sni_blocking", input: "blocked.test@192.0.2.7:443", failure: "connection_reset", blocking: ooni.BlockingTLS, poisons: true},
		&fakeProbe{name: "x_commucat_tcp_connect", input: "down.test:443", failure: "connection_refused"},
	}
	outs, err := r.Run(context.Background(), ps)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "report.jsonl", report.Bytes())
	var table bytes.Buffer
	if err := probes.WriteTable(&table, outs); err != nil {
		t.Fatal(err)
	}
	golden(t, "table.txt", table.Bytes())
	if len(verdicts) != 3 {
		t.Fatalf("%d verdicts, want 3", len(verdicts))
	}
	for _, v := range verdicts {
		if v.At.IsZero() {
			t.Errorf("verdict %+v has no time", v)
		}
	}
	wantStates := []probes.State{probes.StateOK, probes.StateBlocked, probes.StateUnknown}
	for i, o := range outs {
		if o.Result.State != wantStates[i] {
			t.Errorf("outcome %d state %v, want %v", i, o.Result.State, wantStates[i])
		}
	}
}

func TestRunnerOrderAndBounds(t *testing.T) {
	t.Run("poisoners last", func(t *testing.T) {
		var order []string
		var mu sync.Mutex
		mk := func(in string, poisons bool) probes.Probe {
			return &fakeProbe{name: "x_commucat_fake", input: in, poisons: poisons, order: &order, mu: &mu}
		}
		r, _ := probes.New(probes.Config{Interval: time.Nanosecond})
		outs, err := r.Run(context.Background(), []probes.Probe{mk("a", true), mk("b", false), mk("c", true), mk("d", false)})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"b", "d", "a", "c"}, order); diff != "" {
			t.Errorf("run order (-want +got):\n%s", diff)
		}
		for i, want := range []string{"a", "b", "c", "d"} {
			if outs[i].Input != want {
				t.Errorf("outcome %d is %q, want %q (outcomes keep the input order)", i, outs[i].Input, want)
			}
		}
	})
	t.Run("too many", func(t *testing.T) {
		r, _ := probes.New(probes.Config{MaxProbes: 1})
		_, err := r.Run(context.Background(), []probes.Probe{&fakeProbe{}, &fakeProbe{}})
		if !errors.Is(err, probes.ErrTooManyProbes) {
			t.Errorf("err = %v, want ErrTooManyProbes", err)
		}
	})
	t.Run("rate and budget", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var starts []time.Time
			var mu sync.Mutex
			p := func(i int) probes.Probe {
				return &fakeProbe{name: "x_commucat_fake", input: fmt.Sprint(i), run: func(context.Context, *probes.Env) {
					mu.Lock()
					starts = append(starts, time.Now())
					mu.Unlock()
				}}
			}
			r, _ := probes.New(probes.Config{Interval: time.Second, Budget: 2500 * time.Millisecond})
			t0 := time.Now()
			outs, err := r.Run(context.Background(), []probes.Probe{p(0), p(1), p(2), p(3), p(4)})
			if err != nil {
				t.Fatal(err)
			}
			var got []time.Duration
			for _, s := range starts {
				got = append(got, s.Sub(t0))
			}
			if diff := cmp.Diff([]time.Duration{0, time.Second, 2 * time.Second}, got); diff != "" {
				t.Errorf("start times (-want +got):\n%s", diff)
			}
			for i, o := range outs {
				skipped := o.Skipped != ""
				if skipped != (i >= 3) {
					t.Errorf("probe %d skipped=%v (%q)", i, skipped, o.Skipped)
				}
			}
		})
	})
	t.Run("timeout per probe", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var ended error
			slow := &fakeProbe{name: "x_commucat_fake", input: "slow", run: func(ctx context.Context, _ *probes.Env) {
				<-ctx.Done()
				ended = ctx.Err()
			}}
			r, _ := probes.New(probes.Config{Timeout: 3 * time.Second})
			if _, err := r.Run(context.Background(), []probes.Probe{slow}); err != nil {
				t.Fatal(err)
			}
			if !errors.Is(ended, context.DeadlineExceeded) {
				t.Errorf("probe context ended with %v", ended)
			}
		})
	})
	t.Run("parallel", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var running, peak int
			var mu sync.Mutex
			p := &fakeProbe{name: "x_commucat_fake", run: func(context.Context, *probes.Env) {
				mu.Lock()
				running++
				peak = max(peak, running)
				mu.Unlock()
				time.Sleep(time.Second)
				mu.Lock()
				running--
				mu.Unlock()
			}}
			r, _ := probes.New(probes.Config{Parallel: 2, Interval: time.Nanosecond})
			if _, err := r.Run(context.Background(), []probes.Probe{p, p, p, p}); err != nil {
				t.Fatal(err)
			}
			if peak != 2 {
				t.Errorf("peak concurrency %d, want 2", peak)
			}
		})
	})
}

func TestResidual(t *testing.T) {
	const addr = "192.0.2.9:443"
	tests := []struct {
		name    string
		block   time.Duration
		maxWait time.Duration
		alt     map[string][]string
		wantTo  string
		wantErr bool
		waits   bool // until the block ends, else not at all
	}{
		{"waits", 5 * time.Second, 10 * time.Second, nil, addr, false, true},
		{"too long", 50 * time.Second, 10 * time.Second, nil, "", true, false},
		{"never waits", time.Second, -1, nil, "", true, false},
		{"alternate", 50 * time.Second, 10 * time.Second, map[string][]string{addr: {"192.0.2.9:8443"}}, "192.0.2.9:8443", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var to string
				var awaitErr error
				var blockEnd, called, resumed time.Time
				poison := &fakeProbe{name: "x_commucat_fake", input: "poison", poisons: true, run: func(_ context.Context, env *probes.Env) {
					blockEnd = time.Now().Add(tt.block)
					env.Poison("tcp", addr, blockEnd)
				}}
				later := &fakeProbe{name: "x_commucat_fake", input: "later", poisons: true, run: func(ctx context.Context, env *probes.Env) {
					called = time.Now()
					to, awaitErr = env.Await(ctx, "tcp", addr)
					resumed = time.Now()
				}}
				r, _ := probes.New(probes.Config{Interval: time.Nanosecond, MaxResidualWait: tt.maxWait, Alternates: tt.alt})
				if _, err := r.Run(context.Background(), []probes.Probe{poison, later}); err != nil {
					t.Fatal(err)
				}
				if (awaitErr != nil) != tt.wantErr || to != tt.wantTo {
					t.Fatalf("Await = %q, %v; want %q, error %v", to, awaitErr, tt.wantTo, tt.wantErr)
				}
				if awaitErr != nil && ooni.Classify(awaitErr) != ooni.FailureResidualAvoided {
					t.Errorf("Await error %v is not classified as residual", awaitErr)
				}
				want := called
				if tt.waits {
					want = blockEnd
				}
				if !resumed.Equal(want) {
					t.Errorf("Await returned at %v, want %v (block ends %v)", resumed.Sub(called), want.Sub(called), blockEnd.Sub(called))
				}
			})
		})
	}
}

func TestLocation(t *testing.T) {
	tests := []struct {
		name             string
		loc              probes.Location
		wantASN, wantCC  string
		wantConfigErrors bool
	}{
		{"withheld", probes.Location{ASN: "AS3320", CC: "DE"}, "AS0", "ZZ", false},
		{"shared", probes.Location{Share: true, ASN: "AS3320", CC: "DE"}, "AS3320", "DE", false},
		{"shared but unknown", probes.Location{Share: true}, "AS0", "ZZ", false},
		{"bad asn", probes.Location{Share: true, ASN: "3320"}, "", "", true},
		{"bad cc", probes.Location{Share: true, CC: "Germany"}, "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := probes.New(probes.Config{Location: tt.loc})
			if (err != nil) != tt.wantConfigErrors {
				t.Fatalf("New: %v", err)
			}
			if err != nil {
				return
			}
			outs, err := r.Run(context.Background(), []probes.Probe{&fakeProbe{name: "x_commucat_fake"}})
			if err != nil {
				t.Fatal(err)
			}
			m := outs[0].Measurement
			if m.ProbeASN != tt.wantASN || m.ProbeCC != tt.wantCC {
				t.Errorf("probe_asn %q probe_cc %q, want %q %q", m.ProbeASN, m.ProbeCC, tt.wantASN, tt.wantCC)
			}
			if !strings.Contains(m.ReportID, "_"+tt.wantCC+"_"+strings.TrimPrefix(tt.wantASN, "AS")+"_n1_") {
				t.Errorf("report_id %q does not carry the location", m.ReportID)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  probes.Config
		ok   bool
	}{
		{"zero", probes.Config{}, true},
		{"negative parallel", probes.Config{Parallel: -1}, false},
		{"negative max", probes.Config{MaxProbes: -1}, false},
		{"negative interval", probes.Config{Interval: -time.Second}, false},
		{"negative budget", probes.Config{Budget: -time.Second}, false},
		{"negative residual wait means never", probes.Config{MaxResidualWait: -1}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestStateText(t *testing.T) {
	for _, s := range []probes.State{probes.StateUnknown, probes.StateOK, probes.StateThrottled, probes.StateBlocked} {
		b, _ := s.MarshalText()
		var back probes.State
		if err := back.UnmarshalText(b); err != nil || back != s {
			t.Errorf("round trip of %v: %v, %v", s, back, err)
		}
	}
	var s probes.State
	if err := s.UnmarshalText([]byte("fine")); err == nil {
		t.Error("UnmarshalText accepted an unknown name")
	}
}
