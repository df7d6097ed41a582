// Package throttle has the probes of slow-downs and cut-offs: Download
// measures how many bytes a long download gets before it stalls, and how
// fast; Age measures how long a connection lives before something ends
// it.
//
// A download that stalls, is reset or ends early before its end is a
// cut-off: x_cutoff_bytes is how many bytes the connection received
// (what a censor that stops forwarding after N bytes counts: headers and
// TLS records included), blocking "throttling". A download slower than
// MinRate, or than a quarter of the control's rate, is throttled:
// x_throttled, blocking "throttling".
package throttle

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/commucat/commucat/probes"
	"github.com/commucat/commucat/probes/ooni"
)

// Test names.
const (
	DownloadTestName = probes.TestNamePrefix + "throttling"
	AgeTestName      = probes.TestNamePrefix + "connection_age"
)

// Defaults for the zero fields of DownloadConfig.
const (
	DefaultMaxBytes     = 4 << 20
	DefaultMaxTime      = 30 * time.Second
	DefaultStall        = 5 * time.Second
	DefaultSamplePeriod = time.Second
	// ControlRatio is the share of the control's rate below which the
	// target's download counts as throttled.
	ControlRatio = 0.25
	// maxSamples bounds x_progress.
	maxSamples = 300
)

// DownloadConfig says what to download.
type DownloadConfig struct {
	// URL is the http or https URL of a large file; required.
	URL string
	// ControlURL, if set, is downloaded the same way to compare rates.
	ControlURL string
	// RootCAs verifies certificates; if nil, the system's.
	RootCAs *x509.CertPool
	// MaxBytes and MaxTime end the download early (not a failure). If
	// zero, DefaultMaxBytes and DefaultMaxTime.
	MaxBytes int64
	MaxTime  time.Duration
	// Stall is how long without a byte ends the download as a stall. If
	// zero, DefaultStall.
	Stall time.Duration
	// MinRate, if not zero, is the rate in bytes per second below which
	// the download counts as throttled.
	MinRate float64
	// SamplePeriod is the interval of x_progress. If zero,
	// DefaultSamplePeriod.
	SamplePeriod time.Duration
}

// Download is the download probe. It is safe for concurrent use.
type Download struct {
	cfg DownloadConfig
	u   *url.URL
}

var _ probes.Probe = (*Download)(nil)

// NewDownload returns a probe, or the first problem with cfg.
func NewDownload(cfg DownloadConfig) (*Download, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return nil, fmt.Errorf("throttle: download URL %q is not an http or https URL", cfg.URL)
	}
	if cfg.ControlURL != "" {
		if cu, err := url.Parse(cfg.ControlURL); err != nil || (cu.Scheme != "http" && cu.Scheme != "https") {
			return nil, fmt.Errorf("throttle: control URL %q is not an http or https URL", cfg.ControlURL)
		}
	}
	if cfg.MaxBytes < 0 || cfg.MaxTime < 0 || cfg.Stall < 0 || cfg.MinRate < 0 || cfg.SamplePeriod < 0 {
		return nil, errors.New("throttle: negative value in config")
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.MaxTime == 0 {
		cfg.MaxTime = DefaultMaxTime
	}
	if cfg.Stall == 0 {
		cfg.Stall = DefaultStall
	}
	if cfg.SamplePeriod == 0 {
		cfg.SamplePeriod = DefaultSamplePeriod
	}
	return &Download{cfg: cfg, u: u}, nil
}

// Name returns DownloadTestName.
func (*Download) Name() string { return DownloadTestName }

// Input returns the URL.
func (d *Download) Input() string { return d.cfg.URL }

// DownloadKeys are the download probe's test keys.
type DownloadKeys struct {
	ooni.TestKeys
	// XBytesReceived counts the bytes the connection received, XBodyBytes
	// those of the body.
	XBytesReceived int64 `json:"x_bytes_received"`
	XBodyBytes     int64 `json:"x_body_bytes"`
	// XCutoffBytes is XBytesReceived when the download was cut off.
	XCutoffBytes *int64 `json:"x_cutoff_bytes"`
	// XRate is the body's rate in bytes per second over the time bytes
	// were flowing.
	XRate float64 `json:"x_rate_bytes_per_second"`
	// XDownloadSeconds is the time from the request to the end.
	XDownloadSeconds float64 `json:"x_download_seconds"`
	XThrottled       *bool   `json:"x_throttled"`
	// XControlRate is the control's rate, when there is a control.
	XControlRate *float64 `json:"x_control_rate_bytes_per_second,omitempty"`
	// XProgress are [seconds since the request, connection bytes] pairs.
	XProgress [][2]float64 `json:"x_progress"`
}

// transfer is one download's outcome.
type transfer struct {
	wire, body int64
	rate       float64
	seconds    float64
	complete   bool // reached the end, MaxBytes or MaxTime
	failure    string
	op         string
	progress   [][2]float64
}

// Run downloads the control (if any) and the target.
func (d *Download) Run(ctx context.Context, env *probes.Env) probes.Result {
	k := &DownloadKeys{}
	var ctl *transfer
	if d.cfg.ControlURL != "" {
		t := d.download(ctx, env, d.cfg.ControlURL, "control")
		ctl = &t
	}
	t := d.download(ctx, env, d.cfg.URL, "target")
	k.TestKeys = env.Trace().Keys()
	k.XBytesReceived, k.XBodyBytes, k.XRate, k.XDownloadSeconds = t.wire, t.body, round(t.rate), t.seconds
	k.XProgress = t.progress
	if k.XProgress == nil {
		k.XProgress = [][2]float64{}
	}
	res := d.classify(k, t, ctl)
	host, port := d.u.Hostname(), d.u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[d.u.Scheme]
	}
	res.Verdicts = []probes.Verdict{{Network: "tcp", Addr: net.JoinHostPort(host, port), State: res.State, Blocking: k.Blocking, Failure: k.FailureString(), Throughput: t.rate}}
	return res
}

func round(v float64) float64 { return float64(int64(v*10+0.5)) / 10 }

func (d *Download) classify(k *DownloadKeys, t transfer, ctl *transfer) probes.Result {
	k.Fail(t.failure, t.op)
	if ctl != nil && ctl.failure == "" {
		r := round(ctl.rate)
		k.XControlRate = &r
	}
	switch {
	case t.failure == ooni.FailureResidualAvoided:
		return probes.Result{Keys: k, Details: "not tried: residual block"}
	case t.wire == 0 || t.op != ooni.OpRead:
		k.Accessible = ooni.Bool(false)
		return probes.Result{Keys: k, Details: t.op + " " + t.failure}
	case !t.complete:
		n := t.wire
		k.XCutoffBytes, k.XThrottled = &n, ooni.Bool(false)
		k.Blocking, k.Accessible = ooni.BlockingThrottling, ooni.Bool(false)
		return probes.Result{Keys: k, State: probes.StateBlocked, Details: fmt.Sprintf("cut off after %d bytes (%s)", n, t.failure)}
	}
	k.Accessible = ooni.Bool(true)
	throttled := d.cfg.MinRate > 0 && t.rate < d.cfg.MinRate
	why := fmt.Sprintf("%.0f B/s", t.rate)
	if d.cfg.MinRate > 0 {
		why += fmt.Sprintf(" (minimum %.0f)", d.cfg.MinRate)
	}
	if ctl != nil && ctl.failure == "" && ctl.rate > 0 {
		why += fmt.Sprintf(", control %.0f B/s", ctl.rate)
		throttled = throttled || t.rate < ctl.rate*ControlRatio
	}
	k.XThrottled = ooni.Bool(throttled)
	if throttled {
		k.Blocking = ooni.BlockingThrottling
		return probes.Result{Keys: k, State: probes.StateThrottled, Details: "throttled: " + why}
	}
	if d.cfg.MinRate > 0 || ctl != nil && ctl.failure == "" {
		k.Blocking = ooni.BlockingNone
	}
	return probes.Result{Keys: k, State: probes.StateOK, Details: why}
}

// countingConn counts the bytes read and arms a stall deadline before
// each read.
type countingConn struct {
	net.Conn
	n     *atomic.Int64
	stall time.Duration
}

func (c *countingConn) Read(b []byte) (int, error) {
	c.Conn.SetReadDeadline(time.Now().Add(c.stall))
	n, err := c.Conn.Read(b)
	c.n.Add(int64(n))
	return n, err
}

func (d *Download) download(ctx context.Context, env *probes.Env, u, tag string) transfer {
	tr := env.Trace()
	tx := tr.NewTransaction()
	ctx, cancel := context.WithTimeout(ctx, d.cfg.MaxTime+d.cfg.Stall)
	defer cancel()
	var (
		wire atomic.Int64
		st   probes.Stage
	)
	ht := probes.TracedHTTPTransport(env, tx, tag, d.cfg.RootCAs, &st, func(c net.Conn) net.Conn {
		return &countingConn{Conn: c, n: &wire, stall: d.cfg.Stall}
	})
	defer ht.CloseIdleConnections()
	client := &http.Client{Transport: ht, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return transfer{failure: ooni.Classify(err), op: ooni.OpHTTPRoundTrip}
	}
	req.Header.Set("User-Agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36")
	rt := ooni.RoundTrip{Network: "tcp", Address: req.URL.Host, Request: req, Start: env.Now(), Tags: []string{tag}}
	start := env.Now()
	resp, err := client.Do(req)
	if err != nil {
		op, f := st.Get()
		if f == "" {
			f = ooni.Classify(err)
		}
		rt.Failure = f
		tr.AddRequest(tx, rt)
		return transfer{failure: f, op: op, wire: wire.Load()}
	}
	defer resp.Body.Close()
	t := transfer{op: ooni.OpRead}
	buf := make([]byte, 32<<10)
	var last time.Time
	nextSample := start.Add(d.cfg.SamplePeriod)
	deadline := start.Add(d.cfg.MaxTime)
	for {
		n, err := resp.Body.Read(buf)
		now := env.Now()
		if n > 0 {
			last = now
			t.body += int64(n)
		}
		if !now.Before(nextSample) && len(t.progress) < maxSamples {
			t.progress = append(t.progress, [2]float64{ooni.Seconds(now.Sub(start)), float64(wire.Load())})
			nextSample = now.Add(d.cfg.SamplePeriod)
		}
		if errors.Is(err, io.EOF) {
			if resp.ContentLength >= 0 && t.body < resp.ContentLength {
				err = io.ErrUnexpectedEOF
			} else {
				t.complete = true
				break
			}
		}
		if err != nil {
			t.failure = ooni.Classify(err)
			break
		}
		if t.body >= d.cfg.MaxBytes || !now.Before(deadline) {
			t.complete = true
			break
		}
	}
	t.wire = wire.Load()
	end := env.Now()
	t.seconds = ooni.Seconds(end.Sub(start))
	if el := last.Sub(start); t.body > 0 && el > 0 {
		t.rate = float64(t.body) / el.Seconds()
	}
	tr.EventFailure(tx, ooni.OpRead, "tcp", req.URL.Host, int(t.wire), start, t.failure, tag)
	rt.Response, rt.BodyLength, rt.Failure = resp, t.body, t.failure
	rt.Truncated = true
	tr.AddRequest(tx, rt)
	return t
}
