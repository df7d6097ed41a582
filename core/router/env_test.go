package router

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/commucat/commucat/core/frame"
	"github.com/commucat/commucat/core/handshake"
	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/testnet/simnet"
)

// results returns a matching pair of handshake results with random keys.
func results(t testing.TB) (client, gateway *handshake.Result) {
	t.Helper()
	var a, b [32]byte
	h := make([]byte, 32)
	rand.Read(a[:])
	rand.Read(b[:])
	rand.Read(h)
	return &handshake.Result{SendKey: a, RecvKey: b, Hash: h},
		&handshake.Result{SendKey: b, RecvKey: a, Hash: append([]byte(nil), h...)}
}

// env is a client and a gateway session over paths of one network: the
// gateway listens on every address and joins connections through a Table,
// as core/gateway does.
type env struct {
	t       testing.TB
	addrs   []string
	lns     []transport.Listener
	table   Table
	client  *Session
	gateway *Session

	wg                    sync.WaitGroup
	cancel                context.CancelFunc
	clientErr, gatewayErr error
	refused               int // connections the acceptor did not join
	mu                    sync.Mutex
}

// dialer is a path endpoint over transport tr.
func dialer(tr transport.Transport, addr string) Endpoint {
	return Endpoint{Transport: tr.Name(), Addr: addr, Dial: func(ctx context.Context) (net.Conn, error) {
		return tr.Dial(ctx, addr)
	}}
}

// newEnv listens on addrs over tr, opens the first path to addrs[0] and
// runs both sessions until the test ends. ccfg gets the endpoints.
func newEnv(t testing.TB, tr transport.Transport, addrs []string, ccfg, gcfg Config) *env {
	t.Helper()
	e := &env{t: t, addrs: addrs}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	for i, a := range addrs {
		ln, err := tr.Listen(ctx, a)
		if err != nil {
			t.Fatalf("listen %s: %v", a, err)
		}
		e.lns = append(e.lns, ln)
		addrs[i] = ln.Addr().String()
		ccfg.Endpoints = append(ccfg.Endpoints, dialer(tr, addrs[i]))
	}
	cconn, err := tr.Dial(ctx, addrs[0])
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	gconn, err := e.lns[0].Accept(ctx)
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	cres, gres := results(t)
	e.client = New(Client, cres, cconn, ccfg.Endpoints[0], ccfg)
	e.gateway = New(Gateway, gres, gconn, Endpoint{Transport: tr.Name(), Addr: addrs[0]}, gcfg)
	e.table.Add(e.gateway)
	for _, ln := range e.lns {
		e.wg.Go(func() { e.accept(ctx, tr.Name(), ln) })
	}
	e.wg.Go(func() { e.clientErr = e.client.Run(ctx) })
	e.wg.Go(func() { e.gatewayErr = e.gateway.Run(ctx) })
	return e
}

// accept joins every connection to ln through the table.
func (e *env) accept(ctx context.Context, name string, ln transport.Listener) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept(ctx)
		if err != nil {
			return
		}
		wg.Go(func() {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			msg, err := handshake.ReadMessage(c)
			c.SetReadDeadline(time.Time{})
			if err == nil && e.table.Join(c, Endpoint{Transport: name, Addr: ln.Addr().String()}, msg) {
				return
			}
			e.mu.Lock()
			e.refused++
			e.mu.Unlock()
			c.Close()
		})
	}
}

// stop closes both sessions and waits for every goroutine.
func (e *env) stop() {
	e.client.Close()
	e.gateway.Close()
	e.cancel()
	for _, ln := range e.lns {
		ln.Close()
	}
	e.wg.Wait()
}

// msg is the i-th test message: its index in the payload.
func msg(i int, size int) frame.Frame {
	p := make([]byte, max(size, 8))
	binary.BigEndian.PutUint64(p, uint64(i))
	return frame.Frame{Type: frame.Message, Payload: p}
}

// sendAll sends n messages of size bytes from s, every gap.
func sendAll(ctx context.Context, s *Session, n, size int, gap time.Duration) error {
	for i := range n {
		if err := s.Send(ctx, msg(i, size)); err != nil {
			return fmt.Errorf("send %d: %w", i, err)
		}
		if gap > 0 {
			time.Sleep(gap)
		}
	}
	return nil
}

// recvAll receives n messages on s and checks that they come exactly once
// and in order; it returns each one's arrival time.
func recvAll(ctx context.Context, s *Session, n int) ([]time.Time, error) {
	var at []time.Time
	for i := range n {
		f, err := s.Recv(ctx)
		if err != nil {
			return at, fmt.Errorf("recv %d: %w", i, err)
		}
		if f.Type != frame.Message || len(f.Payload) < 8 {
			return at, fmt.Errorf("recv %d: got %s of %d bytes", i, f.Type, len(f.Payload))
		}
		if got := binary.BigEndian.Uint64(f.Payload); got != uint64(i) {
			return at, fmt.Errorf("recv %d: got message %d (out of order or duplicated)", i, got)
		}
		at = append(at, time.Now())
	}
	return at, nil
}

// transfer sends n messages each way... from client to gateway and checks
// them; it fails the test on error.
func transfer(t testing.TB, ctx context.Context, from, to *Session, n, size int, gap time.Duration, during func(i int)) {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- sendAll(ctx, from, n, size, gap) }()
	if during != nil {
		go during(0)
	}
	if _, err := recvAll(ctx, to, n); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond every 10ms of (simulated) time until it holds, or
// fails after limit.
func waitFor(t testing.TB, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// usable counts the usable paths of s.
func usable(s *Session) int {
	n := 0
	for _, p := range s.Stats().Paths {
		if p.State == PathActive {
			n++
		}
	}
	return n
}

var _ = errors.Is
var _ = simnet.New

// bestAddr is the address of s's best path.
func (s *Session) bestAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.best.ep.Addr
}
