package probes

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/commucat/commucat/probes/ooni"
)

// Defaults for the zero fields of Config.
const (
	DefaultMaxProbes       = 256
	DefaultInterval        = 250 * time.Millisecond
	DefaultParallel        = 1
	DefaultTimeout         = 60 * time.Second
	DefaultBudget          = 10 * time.Minute
	DefaultMaxResidualWait = 30 * time.Second
	DefaultSoftwareName    = "commucat"
	DefaultSoftwareVersion = "dev"
	// TestVersion is the test_version of every CommuCat test.
	TestVersion = "0.1.0"
)

// ErrTooManyProbes is returned by Run for more probes than MaxProbes.
var ErrTooManyProbes = errors.New("probes: too many probes")

// Location is where the probe runs, written in reports only when Share is
// set: otherwise probe_asn is "AS0" and probe_cc "ZZ".
type Location struct {
	// Share is the user's opt-in.
	Share bool
	// ASN is "AS" and a number, CC a two-letter country code; empty
	// means unknown, written as the defaults even when Share is set.
	ASN, CC string
}

var (
	asnRe = regexp.MustCompile(`^AS[0-9]{1,10}$`)
	ccRe  = regexp.MustCompile(`^[A-Z]{2}$`)
)

// Config configures a Runner. The zero value of each field is its
// documented default.
type Config struct {
	// MaxProbes bounds how many probes one Run accepts. If zero,
	// DefaultMaxProbes.
	MaxProbes int
	// Interval is the least time between the starts of two probes. If
	// zero, DefaultInterval.
	Interval time.Duration
	// Parallel is how many probes run at once (probes that may poison
	// their destination always run alone, after the others). If zero,
	// DefaultParallel.
	Parallel int
	// Timeout bounds each probe. If zero, DefaultTimeout.
	Timeout time.Duration
	// Budget bounds a whole Run: probes not started by then are skipped.
	// If zero, DefaultBudget.
	Budget time.Duration
	// MaxResidualWait is the longest a probe waits for a residual block
	// on its destination to end before it gives up with
	// x_residual_block_avoided. If zero, DefaultMaxResidualWait; below
	// zero, probes never wait.
	MaxResidualWait time.Duration
	// Alternates maps a "host:port" to other addresses of the same
	// service (other ports of the gateway, say) that a probe may use
	// instead while the first is under a residual block: a different
	// 3-tuple.
	Alternates map[string][]string
	// SoftwareName and SoftwareVersion are written in every measurement.
	// If empty, DefaultSoftwareName and DefaultSoftwareVersion.
	SoftwareName, SoftwareVersion string
	// Location is written only if Location.Share is set.
	Location Location
	// Annotations are copied into every measurement.
	Annotations map[string]string
	// Report receives the measurements as JSON lines. If nil, none are
	// written.
	Report io.Writer
	// Sink receives the probes' verdicts. If nil, they are dropped.
	Sink VerdictSink
	// Now reads the clock. If nil, time.Now.
	Now func() time.Time
	// ReportID returns the report_id of the measurements of one test
	// name in one Run. If nil, an OONI-style ID with a random suffix.
	ReportID func(testName string, start time.Time) string
	// Logger receives debug records. If nil, nothing is logged.
	Logger *slog.Logger
}

// Validate reports the first field that cannot be used.
func (c Config) Validate() error {
	for _, f := range []struct {
		name string
		v    int
	}{{"MaxProbes", c.MaxProbes}, {"Parallel", c.Parallel}} {
		if f.v < 0 {
			return fmt.Errorf("probes: config: %s is negative (%d)", f.name, f.v)
		}
	}
	for _, f := range []struct {
		name string
		v    time.Duration
	}{{"Interval", c.Interval}, {"Timeout", c.Timeout}, {"Budget", c.Budget}} {
		if f.v < 0 {
			return fmt.Errorf("probes: config: %s is negative (%v)", f.name, f.v)
		}
	}
	if c.Location.ASN != "" && !asnRe.MatchString(c.Location.ASN) {
		return fmt.Errorf("probes: config: Location.ASN %q is not AS and a number", c.Location.ASN)
	}
	if c.Location.CC != "" && !ccRe.MatchString(c.Location.CC) {
		return fmt.Errorf("probes: config: Location.CC %q is not a two-letter country code", c.Location.CC)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.MaxProbes == 0 {
		c.MaxProbes = DefaultMaxProbes
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Parallel == 0 {
		c.Parallel = DefaultParallel
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Budget == 0 {
		c.Budget = DefaultBudget
	}
	if c.MaxResidualWait == 0 {
		c.MaxResidualWait = DefaultMaxResidualWait
	}
	if c.SoftwareName == "" {
		c.SoftwareName = DefaultSoftwareName
	}
	if c.SoftwareVersion == "" {
		c.SoftwareVersion = DefaultSoftwareVersion
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Runner runs probes. It is safe for concurrent use, though Runs in
// parallel share no residual-block table and no rate limit.
type Runner struct {
	cfg    Config
	report *ooni.Writer
}

// New returns a Runner, or the first problem with cfg.
func New(cfg Config) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Runner{cfg: cfg.withDefaults()}
	if cfg.Report != nil {
		r.report = ooni.NewWriter(cfg.Report)
	}
	return r, nil
}

// Outcome is what became of one probe in a Run.
type Outcome struct {
	// Probe is the short name of the technique ("sni_blocking"), Input
	// the target.
	Probe, Input string
	// Result is the probe's result; its Keys are nil if it was skipped.
	Result Result
	// Measurement is what was written to the report, or nil if the probe
	// was skipped.
	Measurement *ooni.Measurement
	// Skipped says why the probe did not run, or is empty.
	Skipped string
}

// ShortName returns a test name without TestNamePrefix.
func ShortName(testName string) string { return strings.TrimPrefix(testName, TestNamePrefix) }

// Run runs ps and returns their outcomes in the order of ps. Probes that
// implement Poisoner run last, one at a time. Run returns when every probe
// has finished or been skipped; its error is ErrTooManyProbes, a report
// write error, or ctx's error if ctx ended.
func (r *Runner) Run(ctx context.Context, ps []Probe) ([]Outcome, error) {
	c := r.cfg
	if len(ps) > c.MaxProbes {
		return nil, fmt.Errorf("%w: %d > %d", ErrTooManyProbes, len(ps), c.MaxProbes)
	}
	ctx, cancel := context.WithTimeout(ctx, c.Budget)
	defer cancel()
	run := &run{
		r:       r,
		res:     newResiduals(c.Now, c.MaxResidualWait, c.Alternates),
		outs:    make([]Outcome, len(ps)),
		reports: make(map[string]string),
		start:   c.Now(),
	}
	var safe, risky []int
	for i, p := range ps {
		if pp, ok := p.(Poisoner); ok && pp.Poisons() {
			risky = append(risky, i)
		} else {
			safe = append(safe, i)
		}
	}
	run.all(ctx, ps, safe, c.Parallel)
	run.all(ctx, ps, risky, 1)
	if err := ctx.Err(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return run.outs, fmt.Errorf("probes: run: %w", err)
	}
	return run.outs, run.writeErr
}

// run is the state of one Run.
type run struct {
	r     *Runner
	res   *residuals
	start time.Time

	gate     sync.Mutex // serialises starts for the rate limit
	next     time.Time  // earliest start of the next probe
	mu       sync.Mutex
	outs     []Outcome
	reports  map[string]string // test name -> report ID
	writeErr error
}

// all runs the probes ps[idx] with at most parallel at once.
func (u *run) all(ctx context.Context, ps []Probe, idx []int, parallel int) {
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for _, i := range idx {
		p := ps[i]
		u.outs[i] = Outcome{Probe: ShortName(p.Name()), Input: p.Input()}
		if !u.waitTurn(ctx) {
			u.outs[i].Skipped = "time budget used up"
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			u.outs[i].Skipped = "time budget used up"
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			u.one(ctx, i, p)
		})
	}
	wg.Wait()
}

// waitTurn waits for the rate limit; it reports false if ctx ended first.
func (u *run) waitTurn(ctx context.Context) bool {
	u.gate.Lock()
	defer u.gate.Unlock()
	if ctx.Err() != nil {
		return false
	}
	now := u.r.cfg.Now()
	if wait := u.next.Sub(now); wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		now = u.r.cfg.Now()
	}
	u.next = now.Add(u.r.cfg.Interval)
	return true
}

func (u *run) one(ctx context.Context, i int, p Probe) {
	c := u.r.cfg
	pctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	start := c.Now()
	tr := ooni.NewTrace(start, c.Now)
	log := c.Logger.With("component", "probes", "probe", ShortName(p.Name()))
	env := newEnv(tr, log, u.res)
	res := p.Run(pctx, env)
	end := c.Now()
	if res.Keys == nil {
		k := tr.Keys()
		res.Keys = &k
		res.State = StateOf(&k)
	}
	for j := range res.Verdicts {
		if res.Verdicts[j].At.IsZero() {
			res.Verdicts[j].At = end
		}
	}
	m := u.measurement(p, start, end, res.Keys)
	log.Debug("probe done", "state", res.State, "failure", res.Keys.Base().FailureString())

	u.mu.Lock()
	u.outs[i].Result = res
	u.outs[i].Measurement = m
	u.mu.Unlock()

	if u.r.report != nil {
		if err := u.r.report.Write(m); err != nil {
			u.mu.Lock()
			if u.writeErr == nil {
				u.writeErr = err
			}
			u.mu.Unlock()
		}
	}
	if c.Sink != nil {
		for _, v := range res.Verdicts {
			c.Sink.Verdict(v)
		}
	}
}

func (u *run) measurement(p Probe, start, end time.Time, keys ooni.Keyed) *ooni.Measurement {
	c := u.r.cfg
	asn, cc := ooni.DefaultProbeASN, ooni.DefaultProbeCC
	if c.Location.Share {
		if c.Location.ASN != "" {
			asn = c.Location.ASN
		}
		if c.Location.CC != "" {
			cc = c.Location.CC
		}
	}
	name := p.Name()
	u.mu.Lock()
	id, ok := u.reports[name]
	if !ok {
		if c.ReportID != nil {
			id = c.ReportID(name, u.start)
		} else {
			id = reportID(name, u.start, cc, asn)
		}
		u.reports[name] = id
	}
	u.mu.Unlock()
	var ann map[string]string
	if len(c.Annotations) > 0 {
		ann = make(map[string]string, len(c.Annotations))
		for k, v := range c.Annotations {
			ann[k] = v
		}
	}
	return &ooni.Measurement{
		Annotations:          ann,
		DataFormatVersion:    ooni.DataFormatVersion,
		Extensions:           ooni.Extensions(),
		Input:                ooni.Input(p.Input()),
		MeasurementStartTime: ooni.FormatTime(start),
		ProbeASN:             asn,
		ProbeCC:              cc,
		ProbeIP:              ooni.DefaultProbeIP,
		ReportID:             id,
		ResolverASN:          ooni.DefaultResolverASN,
		ResolverIP:           ooni.DefaultResolverIP,
		SoftwareName:         c.SoftwareName,
		SoftwareVersion:      c.SoftwareVersion,
		TestKeys:             keys,
		TestName:             name,
		TestRuntime:          ooni.Seconds(end.Sub(start)),
		TestStartTime:        ooni.FormatTime(u.start),
		TestVersion:          TestVersion,
	}
}

// reportID returns an ID in the shape of OONI's:
// 20060102T150405Z_<test name without _>_<cc>_<asn>_n1_<16 letters>.
func reportID(testName string, start time.Time, cc, asn string) string {
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	var b [16]byte
	rand.Read(b[:])
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return fmt.Sprintf("%s_%s_%s_%s_n1_%s", start.UTC().Format("20060102T150405Z"),
		strings.ReplaceAll(testName, "_", ""), cc, strings.TrimPrefix(asn, "AS"), b[:])
}
