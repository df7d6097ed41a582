package gateway_test

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commucat/commucat/core/client"
	"github.com/commucat/commucat/core/frame"
	"github.com/commucat/commucat/core/gateway"
	"github.com/commucat/commucat/core/handshake"
	"github.com/commucat/commucat/core/invite"
	"github.com/commucat/commucat/core/router"
	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/transports/kcp"
	"github.com/commucat/commucat/transports/quic"
	"github.com/commucat/commucat/transports/tcp"
)

// tracker is a client transport over TCP that remembers its connections,
// so a test can kill them, records what each one wrote first, and can
// refuse dials.
type tracker struct {
	transport.Transport
	mu      sync.Mutex
	conns   []*trackedConn
	refuse  atomic.Bool
	dialled atomic.Int64
	// dropEvery, if positive, makes every dropEvery-th datagram the
	// client sends on a connection get lost.
	dropEvery int64
}

type trackedConn struct {
	net.Conn
	mu    sync.Mutex
	first []byte // the first write
}

func (c *trackedConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	if c.first == nil {
		c.first = append([]byte{}, b...)
	}
	c.mu.Unlock()
	return c.Conn.Write(b)
}

func (tr *tracker) Dial(ctx context.Context, addr string) (net.Conn, error) {
	tr.dialled.Add(1)
	if tr.refuse.Load() {
		return nil, transport.ErrRefused
	}
	c, err := tr.Transport.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c}
	tr.mu.Lock()
	tr.conns = append(tr.conns, tc)
	tr.mu.Unlock()
	if dc, ok := c.(transport.DatagramConn); ok {
		return &trackedDatagramConn{trackedConn: tc, DatagramConn: dc, dropEvery: tr.dropEvery}, nil
	}
	return tc, nil
}

// trackedDatagramConn keeps the datagrams of a tracked connection; with
// dropEvery > 0 it drops every dropEvery-th datagram it is given.
type trackedDatagramConn struct {
	*trackedConn
	transport.DatagramConn
	dropEvery int64
	n         atomic.Int64
}

func (c *trackedDatagramConn) SendDatagram(b []byte) error {
	if c.dropEvery > 0 && c.n.Add(1)%c.dropEvery == 0 {
		return nil // lost on the way
	}
	return c.DatagramConn.SendDatagram(b)
}

func (tr *tracker) killAll() {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, c := range tr.conns {
		c.Close()
	}
	tr.conns = nil
}

func (tr *tracker) kill(i int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.conns[i].Close()
}

// counter is a handler that answers every frame with an echo and counts
// sessions, and the sessions it is done with: a session's ServeSession
// returns once the session has ended, after which the gateway refuses
// joins to it.
type counter struct {
	echo
	sessions, ended atomic.Int64
}

func (c *counter) ServeSession(ctx context.Context, peer [32]byte, s *router.Session) error {
	c.sessions.Add(1)
	defer c.ended.Add(1)
	return c.echo.ServeSession(ctx, peer, s)
}

// multiServer runs a gateway on n TCP endpoints on loopback.
func multiServer(t *testing.T, n int, rcfg router.Config) (*handshake.StaticKey, []invite.Endpoint, *counter) {
	t.Helper()
	gw, err := handshake.GenerateStatic()
	if err != nil {
		t.Fatal(err)
	}
	var eps []gateway.Endpoint
	for range n {
		eps = append(eps, gateway.Endpoint{Transport: tcp.New(), Addr: "127.0.0.1:0"})
	}
	t.Cleanup(gw.Wipe)
	h := new(counter)
	addrs := serve(t, gateway.Config{Static: gw, Endpoints: eps, Rate: 100, Burst: 100, Router: rcfg}, h)
	var ieps []invite.Endpoint
	for _, a := range addrs {
		ieps = append(ieps, invite.Endpoint{Transport: "tcp", Addr: a.String()})
	}
	return gw, ieps, h
}

// multiDial dials through tr and runs the session until the test ends.
func multiDial(t *testing.T, gw *handshake.StaticKey, eps []invite.Endpoint, tr *tracker, rcfg router.Config) (*router.Session, chan error) {
	t.Helper()
	dev, err := handshake.GenerateStatic()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dev.Wipe)
	reg := new(transport.Registry)
	reg.Register("tcp", func(transport.Params) (transport.Transport, error) { return tr, nil })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, _, err := client.Dial(ctx, client.Config{Static: dev, Gateway: gw.Public(), Endpoints: eps, Transports: reg, Router: rcfg})
	if err != nil {
		t.Fatal(err)
	}
	run := make(chan error, 1)
	rctx, rcancel := context.WithCancel(context.Background())
	go func() { run <- s.Run(rctx) }()
	t.Cleanup(func() {
		s.Close()
		rcancel()
		select {
		case <-run:
		case <-time.After(10 * time.Second):
			t.Error("client Run did not return")
		}
	})
	return s, run
}

// echoes sends n numbered messages and checks the echoes come back exactly
// once and in order, while during runs.
func echoes(t *testing.T, s *router.Session, n int, during func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		for i := range n {
			p := binary.BigEndian.AppendUint64(nil, uint64(i))
			if err := s.Send(ctx, frame.Frame{Type: frame.Message, Payload: p}); err != nil {
				errc <- err
				return
			}
			if i == n/3 && during != nil {
				during()
			}
			time.Sleep(200 * time.Microsecond)
		}
		errc <- nil
	}()
	for i := range n {
		f, err := s.Recv(ctx)
		if err != nil {
			t.Fatalf("echo %d: %v", i, err)
		}
		if got := binary.BigEndian.Uint64(f.Payload); got != uint64(i) {
			t.Fatalf("echo %d: got %d", i, got)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// waitUntil polls cond in real time; the limit only keeps a broken test
// from hanging.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: gave up waiting", what)
		}
	}
}

func active(s *router.Session) int {
	n := 0
	for _, p := range s.Stats().Paths {
		if p.State == router.PathActive {
			n++
		}
	}
	return n
}

func TestMultipathLoopback(t *testing.T) {
	gw, eps, h := multiServer(t, 3, router.Config{})
	tr := &tracker{Transport: tcp.New()}
	s, _ := multiDial(t, gw, eps, tr, router.Config{})
	waitUntil(t, "three paths", func() bool { return active(s) == 3 })
	echoes(t, s, 500, func() { tr.kill(0) })
	// The killed path's redial may still be on its way when the last
	// echo is back.
	waitUntil(t, "the killed path joined again", func() bool { return s.Stats().Joins >= 3 })
	st := s.Stats()
	if h.sessions.Load() != 1 {
		t.Errorf("the gateway served %d sessions, want 1", h.sessions.Load())
	}
	if st.Joins < 3 {
		t.Errorf("Joins = %d, want 2 at start and 1 after the kill", st.Joins)
	}
	if st.Redundant == 0 {
		t.Errorf("messages were not sent redundantly: %+v", st)
	}
}

func TestResumeLoopback(t *testing.T) {
	gw, eps, h := multiServer(t, 2, router.Config{})
	tr := &tracker{Transport: tcp.New()}
	s, _ := multiDial(t, gw, eps, tr, router.Config{})
	waitUntil(t, "two paths", func() bool { return active(s) == 2 })
	echoes(t, s, 300, tr.killAll)
	if st := s.Stats(); st.Resumes != 1 {
		t.Errorf("Resumes = %d, want 1", st.Resumes)
	}
	if h.sessions.Load() != 1 {
		t.Errorf("the gateway served %d sessions, want 1 resumed", h.sessions.Load())
	}
}

func TestFallbackAfterResumeWindow(t *testing.T) {
	gw, eps, h := multiServer(t, 1, router.Config{ResumeWindow: 200 * time.Millisecond})
	tr := &tracker{Transport: tcp.New()}
	s, run := multiDial(t, gw, eps, tr, router.Config{RedialMin: 10 * time.Millisecond})
	echoes(t, s, 10, nil)
	tr.refuse.Store(true)
	tr.killAll()
	// The gateway forgets the session 200ms after its path died; let the
	// client's dials through only after it did, and after some were
	// refused.
	waitUntil(t, "gateway forgets", func() bool { return h.ended.Load() == 1 && tr.dialled.Load() > 3 })
	tr.refuse.Store(false)
	select {
	case err := <-run:
		run <- err // for the cleanup
		if !errors.Is(err, router.ErrResumeRefused) {
			t.Fatalf("client Run = %v, want ErrResumeRefused", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the client never noticed the gateway forgot the session")
	}
	// A full handshake works again.
	s2, _ := multiDial(t, gw, eps, tr, router.Config{})
	echoes(t, s2, 10, nil)
	if n := h.sessions.Load(); n != 2 {
		t.Errorf("the gateway served %d sessions, want 2", n)
	}
}

func TestJoinReplayRefused(t *testing.T) {
	gw, eps, _ := multiServer(t, 2, router.Config{})
	tr := &tracker{Transport: tcp.New()}
	s, _ := multiDial(t, gw, eps, tr, router.Config{})
	waitUntil(t, "two paths", func() bool { return active(s) == 2 })
	tr.mu.Lock()
	join := tr.conns[len(tr.conns)-1].first // the second path's join message
	tr.mu.Unlock()
	if len(join) < 2+router.TokenSize || int(binary.BigEndian.Uint16(join))+2 != len(join) {
		t.Fatalf("recorded %d bytes, not a framed join message", len(join))
	}
	c, err := net.Dial("tcp", eps[1].Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(join); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 64))
	if n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("replayed join: read %d bytes, %v; want the gateway to close without a word", n, err)
	}
	echoes(t, s, 10, nil) // the session is unharmed
}

func TestUnconfirmedSessionNotServed(t *testing.T) {
	gw, eps, h := multiServer(t, 1, router.Config{})
	dev, _ := handshake.GenerateStatic()
	defer dev.Wipe()
	c, err := net.Dial("tcp", eps[0].Addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := handshake.Client(ctx, c, handshake.ClientConfig{Static: dev, ServerPublic: gw.Public()})
	if err != nil {
		t.Fatal(err)
	}
	res.Wipe()
	c.Close() // a handshake that lost the client's race
	// A real session afterwards is served; the lost one never was.
	tr := &tracker{Transport: tcp.New()}
	s, _ := multiDial(t, gw, eps, tr, router.Config{})
	echoes(t, s, 5, nil)
	if n := h.sessions.Load(); n != 1 {
		t.Errorf("the gateway served %d sessions, want only the confirmed one", n)
	}
}

// TestMixedTransports runs one session over TCP, QUIC and KCP at once and
// kills the first path mid-transfer.
// kind is a transport a test gateway serves.
type kind struct {
	name   string
	server transport.ServerFactory
	client transport.Factory
}

// mixedSession runs a gateway (echo handler) with one endpoint per kind on
// loopback and a client session over all of them, its transports wrapped
// in trackers; it runs the session until the test ends and returns the
// trackers by transport name and the endpoint the client connected over.
func mixedSession(t *testing.T, kinds []kind, rcfg router.Config, dropEvery int64) (*router.Session, map[string]*tracker, invite.Endpoint) {
	t.Helper()
	gw, err := handshake.GenerateStatic()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Wipe)
	var geps []gateway.Endpoint
	var pubs []transport.Params
	for _, k := range kinds {
		tr, pub, err := k.server(transport.Params{}, t.TempDir())
		if err != nil {
			t.Fatalf("%s server: %v", k.name, err)
		}
		geps = append(geps, gateway.Endpoint{Transport: tr, Addr: "127.0.0.1:0"})
		pubs = append(pubs, pub)
	}
	h := new(counter)
	srv, err := gateway.New(gateway.Config{Static: gw, Endpoints: geps, Rate: 100, Burst: 100, Router: rcfg}, h)
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
	t.Cleanup(func() { cancel(); <-done })

	reg := new(transport.Registry)
	trackers := map[string]*tracker{}
	var eps []invite.Endpoint
	for i, k := range kinds {
		reg.Register(k.name, func(p transport.Params) (transport.Transport, error) {
			tr, err := k.client(p)
			if err != nil {
				return nil, err
			}
			trackers[k.name] = &tracker{Transport: tr, dropEvery: dropEvery}
			return trackers[k.name], nil
		})
		eps = append(eps, invite.Endpoint{Transport: k.name, Addr: addrs[i].String(), Params: map[string]string(pubs[i])})
	}
	dev, err := handshake.GenerateStatic()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dev.Wipe)
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	s, ep, err := client.Dial(dctx, client.Config{Static: dev, Gateway: gw.Public(), Endpoints: eps, Transports: reg, Router: rcfg})
	dcancel()
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	run := make(chan error, 1)
	go func() { run <- s.Run(rctx) }()
	t.Cleanup(func() { s.Close(); rcancel(); <-run })
	return s, trackers, ep
}

func TestMixedTransports(t *testing.T) {
	s, trackers, ep := mixedSession(t, []kind{
		{"tcp", tcp.ServerFactory, tcp.Factory},
		{"quic", quic.ServerFactory, quic.Factory},
		{"kcp", kcp.ServerFactory, kcp.Factory},
	}, router.Config{}, 0)
	waitUntil(t, "three paths", func() bool { return active(s) == 3 })
	echoes(t, s, 300, func() { trackers[ep.Transport].kill(0) })
	// The killed path is redialled: wait until all three transports carry
	// an active path again.
	activeOver := func() map[string]bool {
		names := map[string]bool{}
		for _, p := range s.Stats().Paths {
			if p.State == router.PathActive {
				names[p.Transport] = true
			}
		}
		return names
	}
	waitUntil(t, "active paths over tcp, quic and kcp", func() bool { return len(activeOver()) == 3 })
}

// TestDatagramsOverQUICAndKCP carries media frames as datagrams over real
// QUIC and KCP connections on loopback, both ways (the gateway echoes
// them), beside reliable messages; then again with every tenth datagram
// the client sends lost: the loss is measured, parity repairs it, and the
// messages still arrive exactly once and in order.
func TestDatagramsOverQUICAndKCP(t *testing.T) {
	for _, tc := range []struct {
		name      string
		dropEvery int64
	}{{"clean", 0}, {"every tenth lost", 10}} {
		t.Run(tc.name, func(t *testing.T) {
			s, _, _ := mixedSession(t, []kind{
				{"quic", quic.ServerFactory, quic.Factory},
				{"kcp", kcp.ServerFactory, kcp.Factory},
			}, router.Config{}, tc.dropEvery)
			waitUntil(t, "two paths", func() bool { return active(s) == 2 })
			const n = 1000
			media := mediaCall(t, s, n)
			st := s.Stats()
			t.Logf("media echoed %d of %d; datagrams sent %d, received %d, parity %d", media, n, st.DatagramsSent, st.DatagramsReceived, st.ParitySent)
			if st.DatagramsSent < n*9/10 || st.DatagramsReceived == 0 {
				t.Errorf("datagrams sent %d, received %d; want the media to go as datagrams both ways", st.DatagramsSent, st.DatagramsReceived)
			}
			var loss float64
			for _, p := range st.Paths {
				if p.State == router.PathActive && !p.Datagrams {
					t.Errorf("%s path does not carry datagrams", p.Transport)
				}
				if p.DatagramsSent > 100 {
					loss = max(loss, p.DatagramLoss)
				}
			}
			if tc.dropEvery == 0 {
				if media < n*9/10 {
					t.Errorf("%d of %d media frames came back over loopback", media, n)
				}
				return
			}
			if loss < 0.05 || loss > 0.2 {
				t.Errorf("measured datagram loss %.3f with every tenth datagram lost", loss)
			}
			if st.ParitySent == 0 {
				t.Errorf("no parity sent for a lossy datagram path")
			}
			// Without repair about 90% would come back; the gateway's
			// repairs bring more.
			if media < n*93/100 {
				t.Errorf("%d of %d media frames came back with every tenth lost on the way out", media, n)
			}
		})
	}
}

// mediaCall sends n 160-byte media frames every 2 ms on s, with a reliable
// message every tenth, and reads the echoes: the messages must come back
// exactly once and in order. It returns how many distinct media frames came
// back by the time the last message did.
func mediaCall(t *testing.T, s *router.Session, n int) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		for i := range n {
			p := binary.BigEndian.AppendUint64(make([]byte, 0, 160), uint64(i))
			fs := []frame.Frame{{Type: frame.Media, Stream: 3, Payload: append(p, make([]byte, 152)...)}}
			if i%10 == 0 {
				fs = append(fs, frame.Frame{Type: frame.Message, Payload: binary.BigEndian.AppendUint64(nil, uint64(i/10))})
			}
			if err := s.Send(ctx, fs...); err != nil {
				errc <- err
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
		errc <- nil
	}()
	media, msgs := map[uint64]bool{}, 0
	for msgs < n/10 {
		f, err := s.Recv(ctx)
		if err != nil {
			t.Fatalf("recv after %d messages, %d media: %v", msgs, len(media), err)
		}
		switch f.Type {
		case frame.Media:
			media[binary.BigEndian.Uint64(f.Payload)] = true
		case frame.Message:
			if got := binary.BigEndian.Uint64(f.Payload); got != uint64(msgs) {
				t.Fatalf("message %d: got %d", msgs, got)
			}
			msgs++
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return len(media)
}
