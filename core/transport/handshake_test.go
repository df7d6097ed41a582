package transport_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/commucat/commucat/core/transport"
)

// greeter is the tests' handshake: the peer sends one byte, 'y' to pass
// (the server answers 'k'), 'w' to make the handshake wait for its ctx, or
// anything else to fail. A peer that sends nothing stalls the handshake in
// a read.
type greeter struct {
	started  chan struct{} // a token as each handshake begins
	failed   chan error    // ctx.Err() as each handshake fails
	inflight atomic.Int32
	peak     atomic.Int32 // the most handshakes seen in flight at once
}

func newGreeter() *greeter {
	return &greeter{started: make(chan struct{}, 64), failed: make(chan error, 64)}
}

func (g *greeter) handshake(ctx context.Context, raw net.Conn) (c net.Conn, err error) {
	n := g.inflight.Add(1)
	defer g.inflight.Add(-1)
	for p := g.peak.Load(); n > p && !g.peak.CompareAndSwap(p, n); p = g.peak.Load() {
	}
	g.started <- struct{}{}
	defer func() {
		if err != nil {
			g.failed <- ctx.Err()
		}
	}()
	var b [1]byte
	if _, err := io.ReadFull(raw, b[:]); err != nil {
		return nil, fmt.Errorf("read greeting: %w", err)
	}
	switch b[0] {
	case 'y':
		if _, err := raw.Write([]byte{'k'}); err != nil {
			return nil, err
		}
		return raw, nil
	case 'w':
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return nil, errors.New("bad greeting")
}

// listenHS starts a HandshakeListener with g's handshake on a loopback
// port; it is closed when t ends.
func listenHS(t *testing.T, g *greeter, cfg transport.HandshakeConfig) *transport.HandshakeListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Transport, cfg.Handshake = "test", g.handshake
	l := transport.NewHandshakeListener(ln, cfg)
	t.Cleanup(func() { l.Close() })
	return l
}

// dialHS connects to l; the connection is closed when t ends.
func dialHS(t *testing.T, l *transport.HandshakeListener) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// greet sends the passing greeting on c and reads the answer.
func greet(t *testing.T, c net.Conn) {
	t.Helper()
	if _, err := c.Write([]byte{'y'}); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != 'k' {
		t.Fatalf("answer %q, %v; want \"k\"", b, err)
	}
}

// wantClosed checks that the server closed c without sending anything.
func wantClosed(t *testing.T, name string, c net.Conn) {
	t.Helper()
	got, err := io.ReadAll(c)
	if len(got) > 0 {
		t.Errorf("%s: received %q", name, got)
	}
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("%s: %v, want EOF or a reset", name, err)
	}
}

// waitStarted waits for n handshakes to begin.
func waitStarted(t *testing.T, g *greeter, n int) {
	t.Helper()
	for range n {
		select {
		case <-g.started:
		case <-t.Context().Done():
			t.Fatal("handshakes did not start")
		}
	}
}

func acceptCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestHandshakeListenerAccept(t *testing.T) {
	l := listenHS(t, newGreeter(), transport.HandshakeConfig{})
	c := dialHS(t, l)
	greet(t, c)
	s, err := l.Accept(acceptCtx(t))
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	defer s.Close()
	if s.RemoteAddr().String() != c.LocalAddr().String() {
		t.Errorf("accepted %v, want the connection from %v", s.RemoteAddr(), c.LocalAddr())
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	if _, err := io.ReadFull(s, b); err != nil || string(b) != "ping" {
		t.Fatalf("read %q, %v", b, err)
	}
}

// TestHandshakeListenerBound checks that no more than MaxHandshakes run at
// once, that connections beyond wait, and that a failed handshake frees
// its slot.
func TestHandshakeListenerBound(t *testing.T) {
	g := newGreeter()
	l := listenHS(t, g, transport.HandshakeConfig{MaxHandshakes: 2, MaxPerSource: -1})
	stalled := []net.Conn{dialHS(t, l), dialHS(t, l)}
	waitStarted(t, g, 2)
	c := dialHS(t, l)
	if _, err := c.Write([]byte{'y'}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if s, err := l.Accept(ctx); err == nil {
		s.Close()
		t.Fatal("Accept returned a connection while every slot was taken")
	} else if !errors.Is(err, transport.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Accept with every slot taken: %v, want a timeout", err)
	}
	stalled[0].Close()
	s, err := l.Accept(acceptCtx(t))
	if err != nil {
		t.Fatalf("Accept after a slot was freed: %v", err)
	}
	defer s.Close()
	if s.RemoteAddr().String() != c.LocalAddr().String() {
		t.Errorf("accepted %v, want %v", s.RemoteAddr(), c.LocalAddr())
	}
	if p := g.peak.Load(); p > 2 {
		t.Errorf("%d handshakes ran at once, want at most 2", p)
	}
}

// TestHandshakeListenerPerSource checks that a source may take slots
// while they are plenty, that once they are scarce a source holding its
// share gets further connections closed at once while another source
// goes on being served, and that a freed slot serves the first source
// again.
func TestHandshakeListenerPerSource(t *testing.T) {
	g := newGreeter()
	l := listenHS(t, g, transport.HandshakeConfig{MaxHandshakes: 4, MaxPerSource: 1})
	// Half the slots, beyond the source's share: nobody else needs them.
	stalled := []net.Conn{dialHS(t, l), dialHS(t, l)}
	waitStarted(t, g, 2)
	wantClosed(t, "a third connection from the source", dialHS(t, l))

	// Another loopback address is another source.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	other, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	greet(t, other)
	s, err := l.Accept(acceptCtx(t))
	if err != nil {
		t.Fatalf("Accept from another source: %v", err)
	}
	s.Close()

	// The slot is given back just after the handshake reports its
	// failure: until then a new connection may still be closed.
	stalled[0].Close()
	<-g.failed
	for i := 0; ; i++ {
		c := dialHS(t, l)
		var b [1]byte
		c.Write([]byte{'y'}) //nolint:errcheck // the read tells
		if _, err := io.ReadFull(c, b[:]); err == nil && b[0] == 'k' {
			break
		}
		if i == 500 {
			t.Fatal("the source's freed slot never served a connection")
		}
		time.Sleep(10 * time.Millisecond)
	}
	s, err = l.Accept(acceptCtx(t))
	if err != nil {
		t.Fatalf("Accept once the source freed a slot: %v", err)
	}
	s.Close()
}

// TestSourceLimit checks how addresses are grouped into sources.
func TestSourceLimit(t *testing.T) {
	tcp := func(s string) net.Addr { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s)) }
	l := transport.NewSourceLimit(1)
	var releases []func()
	take := func(a net.Addr) bool {
		r, ok := l.Take(a, true)
		if ok {
			releases = append(releases, r)
		}
		return ok
	}
	for _, c := range []struct {
		addr net.Addr
		ok   bool
	}{
		{tcp("192.0.2.1:1000"), true},
		{tcp("192.0.2.1:2000"), false},          // same address, other port
		{tcp("[::ffff:192.0.2.1]:3000"), false}, // the same address, mapped
		{tcp("192.0.2.2:1000"), true},
		{tcp("[2001:db8:0:1::1]:1000"), true},
		{tcp("[2001:db8:0:1::2]:1000"), false}, // the same /64
		{tcp("[2001:db8:0:2::1]:1000"), true},
		{&net.UnixAddr{Name: "@x", Net: "unix"}, true}, // not limited
		{&net.UnixAddr{Name: "@x", Net: "unix"}, true},
		{nil, true},
	} {
		if got := take(c.addr); got != c.ok {
			t.Errorf("Take(%v) = %v, want %v", c.addr, got, c.ok)
		}
	}
	if n := l.Sources(); n != 4 {
		t.Errorf("%d sources counted, want 4", n)
	}
	for _, r := range releases {
		r()
		r() // a second call does nothing
	}
	if n := l.Sources(); n != 0 {
		t.Errorf("%d sources counted after every release, want 0", n)
	}
	if !take(tcp("192.0.2.1:1000")) {
		t.Error("Take after the release failed")
	}
	if r, ok := l.Take(tcp("192.0.2.1:1000"), false); !ok {
		t.Error("Take beyond the share while slots are plenty failed")
	} else {
		r()
	}
	var none *transport.SourceLimit
	if r, ok := none.Take(tcp("192.0.2.1:1"), true); !ok {
		t.Error("a nil SourceLimit refused")
	} else {
		r()
	}
}

// TestHandshakeListenerFailure checks that a failed handshake's connection
// is closed, is never reported by Accept, and does not hold up others.
func TestHandshakeListenerFailure(t *testing.T) {
	g := newGreeter()
	l := listenHS(t, g, transport.HandshakeConfig{})
	bad := dialHS(t, l)
	if _, err := bad.Write([]byte{'n'}); err != nil {
		t.Fatal(err)
	}
	wantClosed(t, "failed handshake", bad)
	if err := <-g.failed; err != nil {
		t.Errorf("the failed handshake's ctx ended: %v", err)
	}
	good := dialHS(t, l)
	greet(t, good)
	s, err := l.Accept(acceptCtx(t))
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	defer s.Close()
	if s.RemoteAddr().String() != good.LocalAddr().String() {
		t.Errorf("accepted %v, want the good connection from %v", s.RemoteAddr(), good.LocalAddr())
	}
}

// TestHandshakeListenerTimeout checks that a handshake past Timeout sees
// its ctx end and its connection closed.
func TestHandshakeListenerTimeout(t *testing.T) {
	g := newGreeter()
	l := listenHS(t, g, transport.HandshakeConfig{Timeout: 50 * time.Millisecond})
	silent := dialHS(t, l)
	wantClosed(t, "silent peer", silent)
	if err := <-g.failed; !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("the timed-out handshake's ctx: %v, want a deadline", err)
	}
}

func TestHandshakeListenerAcceptContext(t *testing.T) {
	tests := []struct {
		name    string
		ctx     func(t *testing.T) context.Context
		want    error
		timeout bool
	}{
		{"canceled before", func(t *testing.T) context.Context {
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			return ctx
		}, context.Canceled, false},
		{"canceled while waiting", func(t *testing.T) context.Context {
			ctx, cancel := context.WithCancel(t.Context())
			time.AfterFunc(20*time.Millisecond, cancel)
			return ctx
		}, context.Canceled, false},
		{"deadline", func(t *testing.T) context.Context {
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
			t.Cleanup(cancel)
			return ctx
		}, context.DeadlineExceeded, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := listenHS(t, newGreeter(), transport.HandshakeConfig{})
			s, err := l.Accept(tt.ctx(t))
			if err == nil {
				s.Close()
				t.Fatal("Accept returned a connection")
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("Accept: %v, want %v", err, tt.want)
			}
			if got := errors.Is(err, transport.ErrTimeout); got != tt.timeout {
				t.Errorf("Accept: %v matches ErrTimeout: %v, want %v", err, got, tt.timeout)
			}
			if errors.Is(err, transport.ErrClosed) {
				t.Errorf("Accept: %v matches ErrClosed", err)
			}
		})
	}
}

// TestHandshakeListenerClose checks that Close interrupts handshakes
// blocked in a read and on their ctx, closes a handshaken connection no
// Accept took, wakes a pending Accept, and ends every goroutine (goleak
// checks that in TestMain).
func TestHandshakeListenerClose(t *testing.T) {
	g := newGreeter()
	l := listenHS(t, g, transport.HandshakeConfig{})
	reading := dialHS(t, l)
	waiting := dialHS(t, l)
	if _, err := waiting.Write([]byte{'w'}); err != nil {
		t.Fatal(err)
	}
	queued := dialHS(t, l)
	greet(t, queued)
	waitStarted(t, g, 3)

	// An Accept on another listener, waiting or about to wait as that
	// one closes.
	l2 := listenHS(t, newGreeter(), transport.HandshakeConfig{})
	var wg sync.WaitGroup
	defer wg.Wait()
	accepted := make(chan error, 1)
	wg.Go(func() {
		_, err := l2.Accept(t.Context())
		accepted <- err
	})
	if err := l2.Close(); err != nil {
		t.Errorf("Close with an Accept waiting: %v", err)
	}

	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	for name, c := range map[string]net.Conn{"reading": reading, "waiting": waiting, "queued": queued} {
		wantClosed(t, name, c)
	}
	for range 2 {
		if err := <-g.failed; !errors.Is(err, context.Canceled) {
			t.Errorf("an interrupted handshake's ctx: %v, want canceled", err)
		}
	}
	if _, err := l.Accept(t.Context()); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Accept after Close: %v, want ErrClosed", err)
	}
	if err := <-accepted; !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Accept during Close: %v, want ErrClosed", err)
	}
}

// TestHandshakeListenerClosedUnder checks that Accept stops waiting when
// the net.Listener is closed by someone else.
func TestHandshakeListenerClosedUnder(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := transport.NewHandshakeListener(ln, transport.HandshakeConfig{Transport: "test", Handshake: newGreeter().handshake})
	defer l.Close()
	ln.Close()
	if _, err := l.Accept(acceptCtx(t)); !errors.Is(err, transport.ErrClosed) || !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept: %v, want net.ErrClosed and ErrClosed", err)
	}
}
