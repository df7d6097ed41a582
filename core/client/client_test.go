package client_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/commucat/commucat/core/client"
	"github.com/commucat/commucat/core/frame"
	"github.com/commucat/commucat/core/gateway"
	"github.com/commucat/commucat/core/handshake"
	"github.com/commucat/commucat/core/invite"
	"github.com/commucat/commucat/core/router"
	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/testnet/simnet"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echo answers every frame with itself.
type echo struct{}

func (echo) ServeSession(ctx context.Context, _ [32]byte, s *router.Session) error {
	for {
		f, err := s.Recv(ctx)
		if err != nil {
			return err
		}
		if err := s.Send(ctx, f); err != nil {
			return err
		}
	}
}

const delay = 10 * time.Millisecond // one way

// world is a gateway on three simnet endpoints, "a", "b" and "c".
type world struct {
	nw  *simnet.Network
	gw  *handshake.StaticKey
	eps []invite.Endpoint
	reg *transport.Registry

	built, closed atomic.Int32 // client transports built by reg, and closed
}

// counted is a client transport of the world that counts its Close.
type counted struct {
	*simnet.Transport
	closed *atomic.Int32
}

func (c counted) Close() error {
	c.closed.Add(1)
	return nil
}

func newWorld(t *testing.T, listen ...string) *world {
	t.Helper()
	nw := simnet.New(1)
	gw, err := handshake.GenerateStatic()
	if err != nil {
		t.Fatal(err)
	}
	w := &world{nw: nw, gw: gw, reg: new(transport.Registry)}
	tr := nw.Transport("sim")
	w.reg.Register("sim", func(transport.Params) (transport.Transport, error) {
		w.built.Add(1)
		return counted{tr, &w.closed}, nil
	})
	var geps []gateway.Endpoint
	for _, a := range []string{"a:1", "b:1", "c:1"} {
		nw.SetLinks(a, simnet.Link{Delay: delay}, simnet.Link{Delay: delay})
		w.eps = append(w.eps, invite.Endpoint{Transport: "sim", Addr: a})
		for _, l := range listen {
			if l == a {
				geps = append(geps, gateway.Endpoint{Transport: tr, Addr: a})
			}
		}
	}
	if len(geps) == 0 {
		t.Cleanup(gw.Wipe)
		return w
	}
	srv, err := gateway.New(gateway.Config{Static: gw, Endpoints: geps, Rate: 100, Burst: 100}, echo{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		gw.Wipe()
	})
	synctest.Wait() // listening
	return w
}

func (w *world) dial(t *testing.T) (*router.Session, invite.Endpoint, time.Duration, error) {
	t.Helper()
	dev, err := handshake.GenerateStatic()
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Wipe()
	start := time.Now()
	s, ep, err := client.Dial(t.Context(), client.Config{Static: dev, Gateway: w.gw.Public(), Endpoints: w.eps, Transports: w.reg})
	return s, ep, time.Since(start), err
}

// use runs s, checks one echo and closes it.
func use(t *testing.T, s *router.Session) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	run := make(chan error, 1)
	go func() { run <- s.Run(ctx) }()
	if err := s.Send(ctx, frame.Frame{Type: frame.Message, Payload: []byte("hi")}); err != nil {
		t.Fatal(err)
	}
	if f, err := s.Recv(ctx); err != nil || string(f.Payload) != "hi" {
		t.Fatalf("echo = %q, %v", f.Payload, err)
	}
	s.Close()
	cancel()
	<-run
}

func TestRace(t *testing.T) {
	// A dial takes one round trip, the handshake's first two messages
	// another: 4 one-way delays.
	const connect = 4 * delay
	tests := []struct {
		name   string
		listen []string // where the gateway listens
		hole   []string // blackholed: dials hang
		want   string
		took   time.Duration
	}{
		{"first wins", []string{"a:1", "b:1", "c:1"}, nil, "a:1", connect},
		{"refused starts the next at once", []string{"b:1", "c:1"}, nil, "b:1", connect},
		{"blackhole waits for the stagger", []string{"a:1", "b:1", "c:1"}, []string{"a:1"}, "b:1", 250*time.Millisecond + connect},
		{"two blackholes", []string{"a:1", "b:1", "c:1"}, []string{"a:1", "b:1"}, "c:1", 500*time.Millisecond + connect},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				w := newWorld(t, tt.listen...)
				for _, h := range tt.hole {
					w.nw.Blackhole(h, true)
				}
				s, ep, took, err := w.dial(t)
				if err != nil {
					t.Fatal(err)
				}
				if ep.Addr != tt.want || took != tt.took {
					t.Errorf("connected to %s after %s, want %s after %s", ep.Addr, took, tt.want, tt.took)
				}
				for _, h := range tt.hole {
					w.nw.Blackhole(h, false)
				}
				use(t, s)
			})
		})
	}
}

func TestNoEndpoint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t) // listens nowhere
		_, _, _, err := w.dial(t)
		var ae *client.AttemptError
		if !errors.Is(err, client.ErrNoEndpoint) || !errors.As(err, &ae) || !errors.Is(err, transport.ErrRefused) {
			t.Fatalf("Dial = %v, want ErrNoEndpoint with refused attempts", err)
		}
	})
}

func TestJoinsOtherEndpoints(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t, "a:1", "b:1", "c:1")
		s, _, _, err := w.dial(t)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		run := make(chan error, 1)
		go func() { run <- s.Run(ctx) }()
		time.Sleep(time.Second)
		st := s.Stats()
		active := 0
		for _, p := range st.Paths {
			if p.State == router.PathActive {
				active++
			}
		}
		if active != 3 || st.Joins != 2 {
			t.Errorf("%d active paths, %d joins; want 3 and 2", active, st.Joins)
		}
		s.Close()
		cancel()
		<-run
	})
}

// Dial closes the transports it built once the session stops (after Run,
// or at Close if Run never ran), and at once if it fails.
func TestClosesTransports(t *testing.T) {
	tests := []struct {
		name   string
		listen []string
		run    bool
	}{
		{"after Run", []string{"a:1", "b:1", "c:1"}, true},
		{"Close without Run", []string{"a:1"}, false},
		{"failed Dial", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				w := newWorld(t, tt.listen...)
				s, _, _, err := w.dial(t)
				switch {
				case tt.listen == nil && err == nil:
					t.Fatal("Dial succeeded with no gateway")
				case tt.listen != nil && err != nil:
					t.Fatal(err)
				case tt.listen != nil:
					if n := w.closed.Load(); n != 0 {
						t.Fatalf("%d transports closed before the session stopped", n)
					}
					if tt.run {
						use(t, s)
					} else {
						s.Close()
					}
				}
				if b, c := w.built.Load(), w.closed.Load(); b != 3 || c != 3 {
					t.Errorf("%d transports built, %d closed; want 3 and 3", b, c)
				}
			})
		})
	}
}
