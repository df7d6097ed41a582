package throttle_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/commucat/commucat/probes"
	"github.com/commucat/commucat/probes/ooni"
	"github.com/commucat/commucat/probes/probestest"
	"github.com/commucat/commucat/probes/throttle"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serve starts an HTTP server whose handler gets a channel closed at
// cleanup, before the server closes.
func serve(t *testing.T, h func(done <-chan struct{}) http.Handler) string {
	t.Helper()
	done := make(chan struct{})
	s := httptest.NewServer(h(done))
	t.Cleanup(s.Close)
	t.Cleanup(func() { close(done) })
	return s.URL
}

// closeAfter announces a large file but closes the connection after n
// bytes of it.
func closeAfter(t *testing.T, n int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Read(make([]byte, 4096))
		c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n"))
		c.Write(make([]byte, n))
		c.Close()
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return "http://" + ln.Addr().String() + "/"
}

func fast(size int) func(<-chan struct{}) http.Handler {
	return func(<-chan struct{}) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(size))
			w.Write(make([]byte, size))
		})
	}
}

func TestDownload(t *testing.T) {
	const cutoff = 16 << 10
	cut := serve(t, func(done <-chan struct{}) http.Handler { return probestest.CutoffHandler(1<<20, cutoff, done) })
	slow := serve(t, func(done <-chan struct{}) http.Handler {
		return probestest.SlowHandler(32<<10, 1<<10, 20*time.Millisecond, done)
	})
	quick := serve(t, fast(256<<10))
	tests := []struct {
		name          string
		cfg           throttle.DownloadConfig
		wantFailure   string
		wantBlocking  ooni.Blocking
		wantState     probes.State
		wantCutoff    [2]int64 // bounds, inclusive; zero: no cut-off
		wantThrottled bool
	}{
		{"cut off", throttle.DownloadConfig{URL: cut}, ooni.FailureGenericTimeoutError, ooni.BlockingThrottling, probes.StateBlocked, [2]int64{cutoff, cutoff + 4096}, false},
		{"closed mid-way", throttle.DownloadConfig{URL: closeAfter(t, 8<<10)}, ooni.FailureEOFError, ooni.BlockingThrottling, probes.StateBlocked, [2]int64{8 << 10, 8<<10 + 4096}, false},
		{"throttled by rate", throttle.DownloadConfig{URL: slow, MinRate: 1 << 20}, "", ooni.BlockingThrottling, probes.StateThrottled, [2]int64{}, true},
		{"throttled against the control", throttle.DownloadConfig{URL: slow, ControlURL: quick}, "", ooni.BlockingThrottling, probes.StateThrottled, [2]int64{}, true},
		{"fast", throttle.DownloadConfig{URL: quick, MinRate: 1 << 10}, "", ooni.BlockingNone, probes.StateOK, [2]int64{}, false},
		{"refused", throttle.DownloadConfig{URL: "http://" + probestest.RefusedAddr(t) + "/"}, ooni.FailureConnectionRefused, ooni.BlockingUnknown, probes.StateUnknown, [2]int64{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A stall is the cut-off's outcome, but the servers' pauses
			// before it must not read as one on a loaded machine.
			tt.cfg.Stall = 2 * time.Second
			tt.cfg.MaxTime = 10 * time.Second
			tt.cfg.SamplePeriod = 50 * time.Millisecond
			p, err := throttle.NewDownload(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			res := p.Run(context.Background(), probes.NewEnv(time.Now(), nil, nil))
			k := res.Keys.(*throttle.DownloadKeys)
			if got := k.FailureString(); got != tt.wantFailure {
				t.Errorf("failure %q, want %q (%s)", got, tt.wantFailure, res.Details)
			}
			if k.Blocking != tt.wantBlocking || res.State != tt.wantState {
				t.Errorf("blocking %v state %v, want %v %v (%s)", k.Blocking, res.State, tt.wantBlocking, tt.wantState, res.Details)
			}
			if tt.wantCutoff != [2]int64{} {
				if k.XCutoffBytes == nil || *k.XCutoffBytes < tt.wantCutoff[0] || *k.XCutoffBytes > tt.wantCutoff[1] {
					t.Errorf("x_cutoff_bytes %v, want within %v", k.XCutoffBytes, tt.wantCutoff)
				}
			} else if k.XCutoffBytes != nil {
				t.Errorf("x_cutoff_bytes %d, want none", *k.XCutoffBytes)
			}
			if got := k.XThrottled != nil && *k.XThrottled; got != tt.wantThrottled {
				t.Errorf("x_throttled %v, want %v", got, tt.wantThrottled)
			}
		})
	}
}

func TestAge(t *testing.T) {
	tests := []struct {
		name        string
		cfg         throttle.AgeConfig
		wantKilled  bool
		wantFailure string
	}{
		{"closed", throttle.AgeConfig{Addr: probestest.CloseAfterServer(t, 300*time.Millisecond, 50*time.Millisecond, false)}, true, ooni.FailureEOFError},
		{"reset", throttle.AgeConfig{Addr: probestest.CloseAfterServer(t, 300*time.Millisecond, 50*time.Millisecond, true)}, true, ooni.FailureConnectionReset},
		{"alive", throttle.AgeConfig{Addr: probestest.CloseAfterServer(t, time.Hour, 50*time.Millisecond, false)}, false, ""},
		{"silenced", throttle.AgeConfig{Addr: probestest.SilentServer(t), Ping: []byte("ping"), Interval: 100 * time.Millisecond}, true, ooni.FailureGenericTimeoutError},
		// The probe counts a connection killed when no echo comes back
		// for two intervals: 1 s leaves a loaded machine's stalls room.
		{"echo stays up", throttle.AgeConfig{Addr: probestest.EchoServer(t), Ping: []byte("ping"), Interval: time.Second, MaxAge: 3 * time.Second}, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.cfg.MaxAge == 0 {
				tt.cfg.MaxAge = time.Second
			}
			p, err := throttle.NewAge(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			res := p.Run(context.Background(), probes.NewEnv(time.Now(), nil, nil))
			k := res.Keys.(*throttle.AgeKeys)
			if k.XKilled == nil || *k.XKilled != tt.wantKilled || k.FailureString() != tt.wantFailure {
				t.Fatalf("x_killed %v failure %q, want %v %q (%s)", k.XKilled, k.FailureString(), tt.wantKilled, tt.wantFailure, res.Details)
			}
			if k.XConnectionAgeSeconds <= 0 {
				t.Errorf("x_connection_age_seconds %v", k.XConnectionAgeSeconds)
			}
			if tt.wantKilled && res.State != probes.StateThrottled || !tt.wantKilled && res.State != probes.StateOK {
				t.Errorf("state %v", res.State)
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	if _, err := throttle.NewDownload(throttle.DownloadConfig{URL: "ftp://x/"}); err == nil {
		t.Error("NewDownload accepted an ftp URL")
	}
	if _, err := throttle.NewDownload(throttle.DownloadConfig{URL: "http://x/", Stall: -1}); err == nil {
		t.Error("NewDownload accepted a negative stall")
	}
	if _, err := throttle.NewAge(throttle.AgeConfig{Addr: "x"}); err == nil {
		t.Error("NewAge accepted an address without a port")
	}
}

// stuckServer starts a TCP server that accepts and neither reads nor
// writes until the test ends, as a peer whose window a middlebox keeps
// shut.
func stuckServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		<-done
		c.Close()
	}()
	t.Cleanup(func() {
		close(done)
		ln.Close()
		<-stopped
	})
	return ln.Addr().String()
}

// TestAgeWritesEndAtMaxAge checks that a Hello or a Ping the peer never
// takes does not hold the probe past MaxAge: it ends on its own, well
// before its context, with the connection alive.
func TestAgeWritesEndAtMaxAge(t *testing.T) {
	big := make([]byte, 64<<20) // more than loopback's socket buffers hold
	tests := []struct {
		name string
		cfg  throttle.AgeConfig
	}{
		{"hello", throttle.AgeConfig{Hello: big}},
		{"ping", throttle.AgeConfig{Ping: big, Interval: 50 * time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Addr, tt.cfg.MaxAge = stuckServer(t), 300*time.Millisecond
			p, err := throttle.NewAge(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			res := p.Run(ctx, probes.NewEnv(time.Now(), nil, nil))
			if ctx.Err() != nil {
				t.Fatalf("the probe ran until its context ended, past MaxAge (%s)", res.Details)
			}
			k := res.Keys.(*throttle.AgeKeys)
			if k.XKilled == nil || *k.XKilled || res.State != probes.StateOK {
				t.Fatalf("x_killed %v state %v (%s), want alive", k.XKilled, res.State, res.Details)
			}
		})
	}
}
