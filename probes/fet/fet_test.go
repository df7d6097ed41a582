package fet_test

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/commucat/commucat/probes"
	"github.com/commucat/commucat/probes/fet"
	"github.com/commucat/commucat/probes/ooni"
	"github.com/commucat/commucat/probes/probestest"
	"github.com/commucat/commucat/testnet/censor"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fetServer is an HTTP-ish server behind a model of the GFW's rule: a
// connection whose first packet no exemption covers is reset, and every
// connection for residual after it too (the 3-tuple is the same on
// loopback). With block unset it never blocks.
func fetServer(t *testing.T, block bool, residual time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		until time.Time
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				mu.Lock()
				blocked := time.Now().Before(until)
				mu.Unlock()
				if blocked {
					probestest.Reset(c)
					return
				}
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				buf := make([]byte, 2048)
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				if block && !censor.FET(buf[:n]).Exempt() {
					mu.Lock()
					until = time.Now().Add(residual)
					mu.Unlock()
					probestest.Reset(c)
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

func TestProbe(t *testing.T) {
	tests := []struct {
		name        string
		addr        string
		maxResidual time.Duration
		wantBlocked *bool
		wantOngoing bool
		wantState   probes.State
	}{
		{"no block", fetServer(t, false, 0), time.Second, ooni.Bool(false), false, probes.StateOK},
		{"blocked with residual", fetServer(t, true, 300*time.Millisecond), 5 * time.Second, ooni.Bool(true), false, probes.StateBlocked},
		{"residual outlasts the probe", fetServer(t, true, time.Hour), 300 * time.Millisecond, ooni.Bool(true), true, probes.StateBlocked},
		{"baseline refused", probestest.RefusedAddr(t), time.Second, nil, false, probes.StateUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Every reply the servers owe comes at once or as a reset,
			// and no case expects a read to time out: ReadTimeout only
			// has to outlast a loaded machine's stalls.
			p, err := fet.New(fet.Config{Addr: tt.addr, Repeats: 3, ReadTimeout: 5 * time.Second,
				Poll: 50 * time.Millisecond, MaxResidual: tt.maxResidual, Residual: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			env := probes.NewEnv(time.Now(), nil, nil)
			res := p.Run(context.Background(), env)
			k := res.Keys.(*fet.Keys)
			if (k.XFETBlocked == nil) != (tt.wantBlocked == nil) || k.XFETBlocked != nil && *k.XFETBlocked != *tt.wantBlocked {
				t.Errorf("x_fet_blocked %v, want %v (%s)", k.XFETBlocked, tt.wantBlocked, res.Details)
			}
			if res.State != tt.wantState {
				t.Errorf("state %v, want %v (%s)", res.State, tt.wantState, res.Details)
			}
			if tt.wantBlocked != nil && *tt.wantBlocked {
				if k.XFETPackets != 1 {
					t.Errorf("%d random packets, want 1 (the model blocks the first)", k.XFETPackets)
				}
				if k.XResidualBlockSeconds == nil || *k.XResidualBlockSeconds <= 0 {
					t.Fatalf("x_residual_block_seconds %v", k.XResidualBlockSeconds)
				}
				if k.Blocking != ooni.BlockingTCPIP || k.FailureString() != ooni.FailureConnectionReset {
					t.Errorf("blocking %v failure %q", k.Blocking, k.FailureString())
				}
				ongoing := k.XResidualBlockOngoing != nil && *k.XResidualBlockOngoing
				if ongoing != tt.wantOngoing {
					t.Errorf("x_residual_block_ongoing %v, want %v", ongoing, tt.wantOngoing)
				}
				_, err := env.Await(context.Background(), "tcp", tt.addr)
				if (err != nil) != tt.wantOngoing {
					t.Errorf("address marked blocked: %v, want %v", err != nil, tt.wantOngoing)
				}
			}
			if tt.wantBlocked != nil && !*tt.wantBlocked && k.XFETPackets != 3 {
				t.Errorf("%d random packets, want 3", k.XFETPackets)
			}
		})
	}
}

// TestExemptMatchesCensor checks Exempt against the testnet censor's
// implementation of the same rule on random and crafted packets.
func TestExemptMatchesCensor(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var cases [][]byte
	for i := 0; i < 2000; i++ {
		b := make([]byte, 1+r.IntN(300))
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		// Skew some toward printable or sparse bytes.
		switch i % 4 {
		case 1:
			for j := range b {
				b[j] = 0x20 + b[j]%0x5f
			}
		case 2:
			for j := range b {
				b[j] &= 0x11
			}
		}
		cases = append(cases, b)
	}
	cases = append(cases, []byte("GET / HTTP/1.1\r\n"), []byte{0x16, 0x03, 0x01, 0xff, 0x00}, nil, bytes.Repeat([]byte{0xf0}, 40))
	for _, b := range cases {
		if got, want := fet.Exempt(b), censor.FET(b).Exempt(); got != want {
			t.Fatalf("Exempt(%x) = %v, censor says %v (%s)", b, got, want, censor.FET(b).Reason())
		}
	}
}

func TestNewRejects(t *testing.T) {
	for _, c := range []fet.Config{{}, {Addr: "127.0.0.1:80", Size: 10}, {Addr: "127.0.0.1:80", Baseline: bytes.Repeat([]byte{0x9a, 0x5c}, 40)}, {Addr: "127.0.0.1:80", Repeats: -1}} {
		if _, err := fet.New(c); err == nil {
			t.Errorf("New(%+v) succeeded", c)
		}
	}
}

func BenchmarkExempt(b *testing.B) {
	pkt := make([]byte, 512)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range pkt {
		pkt[i] = byte(r.Uint32())
	}
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		fet.Exempt(pkt)
	}
}
