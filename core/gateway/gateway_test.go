package gateway_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/commucat/commucat/core/client"
	"github.com/commucat/commucat/core/frame"
	"github.com/commucat/commucat/core/gateway"
	"github.com/commucat/commucat/core/handshake"
	"github.com/commucat/commucat/core/invite"
	"github.com/commucat/commucat/core/router"
	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/transports/tcp"
)

// kcp-go starts package-level workers on first use (TestMixedTransports).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/xtaci/kcp-go/v5.(*TimedSched).run"),
		goleak.IgnoreAnyFunction("github.com/xtaci/kcp-go/v5.postProcessWorker"),
	)
}

// echo answers every Message frame with the same frame and records peers.
type echo struct {
	mu    sync.Mutex
	peers [][32]byte
}

func (e *echo) ServeSession(ctx context.Context, peer [32]byte, s *router.Session) error {
	e.mu.Lock()
	e.peers = append(e.peers, peer)
	e.mu.Unlock()
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

type fixture struct {
	gw   *handshake.StaticKey
	addr string
	h    *echo
}

func startServer(t *testing.T, rate float64, burst int) *fixture {
	t.Helper()
	gw, err := handshake.GenerateStatic()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Wipe)
	h := new(echo)
	addrs := serve(t, gateway.Config{
		Static:    gw,
		Endpoints: []gateway.Endpoint{{Transport: tcp.New(), Addr: "127.0.0.1:0"}},
		Rate:      rate,
		Burst:     burst,
	}, h)
	return &fixture{gw: gw, addr: addrs[0].String(), h: h}
}

// serve starts a gateway with cfg and h and runs it until the test ends,
// when Run must return nil; it returns the bound addresses.
func serve(t *testing.T, cfg gateway.Config, h gateway.Handler) []net.Addr {
	t.Helper()
	_, addrs := serveServer(t, cfg, h)
	return addrs
}

// serveServer is serve that also returns the server, for its Stats.
func serveServer(t *testing.T, cfg gateway.Config, h gateway.Handler) (*gateway.Server, []net.Addr) {
	t.Helper()
	srv, err := gateway.New(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrs, err := srv.Listen(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return srv, addrs
}

func dial(t *testing.T, f *fixture, gwKey [32]byte) (*router.Session, *handshake.StaticKey, error) {
	t.Helper()
	dev, err := handshake.GenerateStatic()
	if err != nil {
		t.Fatal(err)
	}
	reg := new(transport.Registry)
	reg.Register("tcp", tcp.Factory)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, _, err := client.Dial(ctx, client.Config{
		Static:     dev,
		Gateway:    gwKey,
		Endpoints:  []invite.Endpoint{{Transport: "tcp", Addr: f.addr}},
		Transports: reg,
	})
	return s, dev, err
}

func roundTrip(t *testing.T, s *router.Session) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- s.Run(ctx) }()
	want := frame.Frame{Type: frame.Message, Seq: 7, Payload: []byte("ping through the gateway")}
	if err := s.Send(ctx, want); err != nil {
		t.Fatal(err)
	}
	got, err := s.Recv(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.Type != want.Type || string(got.Payload) != string(want.Payload) {
		t.Fatalf("echo = %+v, want %+v", got, want)
	}
	s.Close()
	<-runDone
}

func TestSessionThroughGateway(t *testing.T) {
	f := startServer(t, 100, 100)
	s, dev, err := dial(t, f, f.gw.Public())
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, s)
	f.h.mu.Lock()
	defer f.h.mu.Unlock()
	if len(f.h.peers) != 1 || f.h.peers[0] != dev.Public() {
		t.Fatalf("handler saw peers %x, want the device key %x", f.h.peers, dev.Public())
	}
}

func TestWrongGatewayKey(t *testing.T) {
	f := startServer(t, 100, 100)
	other, _ := handshake.GenerateStatic()
	if _, _, err := dial(t, f, other.Public()); err == nil || !errors.Is(err, client.ErrNoEndpoint) {
		t.Fatalf("dial with the wrong gateway key: %v, want a failure", err)
	}
	// The gateway keeps serving others.
	s, _, err := dial(t, f, f.gw.Public())
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, s)
}

func TestRateLimitPerSource(t *testing.T) {
	// One handshake allowed from 127.0.0.1, then nothing for a long time.
	f := startServer(t, 0.001, 1)
	s, _, err := dial(t, f, f.gw.Public())
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, s)
	if _, _, err := dial(t, f, f.gw.Public()); err == nil {
		t.Fatal("second handshake from the same source was not refused")
	}
}

func TestGarbageIsClosedWithoutAnswer(t *testing.T) {
	f := startServer(t, 100, 100)
	c, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	junk := make([]byte, 300)
	for i := range junk {
		junk[i] = byte(i*7 + 3)
	}
	junk[0], junk[1] = 0x01, 0x00 // a plausible length prefix
	if _, err := c.Write(junk); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 64))
	if n != 0 || err == nil {
		t.Fatalf("gateway answered garbage: %d bytes, err %v", n, err)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("gateway kept the garbage connection open")
	}
	// Still serving.
	s, _, err := dial(t, f, f.gw.Public())
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, s)
}
