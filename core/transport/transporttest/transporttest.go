// Package transporttest holds the conformance suite that every CommuCat
// transport, built in or plugin, must pass: Run. The suite is generic: it
// uses only core/transport's interfaces and net.Conn, so it applies to any
// stream transport (TCP, QUIC, WebSocket, obfs4, ...).
//
// What Run asks of a transport, beyond the interfaces' own documentation:
//
//   - Listener.Addr().String() is an address the client transport can Dial.
//   - Connections carry an ordered, reliable byte stream in both directions
//     at once; bytes written before Close reach the peer before its io.EOF.
//   - Read and Write honour deadlines and fail with an error matching
//     os.ErrDeadlineExceeded or a net.Error whose Timeout() is true; a Read
//     timeout leaves the connection usable.
//   - I/O on a closed connection fails; Accept honours ctx (an error
//     matching context.Canceled, or context.DeadlineExceeded or
//     transport.ErrTimeout) and returns an error matching transport.ErrClosed
//     once the listener is closed; Listener.Close is idempotent and a
//     second call returns nil.
//   - Dialing a port nobody listens on fails with transport.ErrRefused or
//     transport.ErrTimeout, or with the dial context's error.
//   - A peer that connects and leaves at once does not stop the listener.
//   - Nothing leaks: Run checks with goleak that every goroutine the
//     transport started is gone once the subtests' cleanups have run.
//
// A connection that also implements interface{ CloseWrite() error } is
// tested for half-close.
package transporttest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/commucat/commucat/core/transport"
)

// guard bounds each subtest so that a transport that hangs fails the test
// instead of stalling it; it is not a performance limit.
const guard = 2 * time.Minute

// Run runs the conformance suite. mk is called once per subtest and returns
// the transport to dial with, the transport to listen with (they may be the
// same value) and the address to listen on, such as "127.0.0.1:0". mk
// registers with t.Cleanup whatever must be released after the subtest.
//
// Run must not be called from a parallel test: it checks for leaked
// goroutines against the set running when it started. ignore names
// goroutines that are not the transport's but may start after Run does
// (those of a process the transport runs in, owned and checked by the
// caller).
func Run(t *testing.T, mk func(t *testing.T) (client transport.Transport, server transport.Transport, listenAddr string), ignore ...goleak.Option) {
	t.Helper()
	baseline := append([]goleak.Option{goleak.IgnoreCurrent()}, ignore...)
	tests := []struct {
		name string
		fn   func(t *testing.T, e *env)
	}{
		{"Echo", testEcho},
		{"Transfer", testTransfer},
		{"Concurrent", testConcurrent},
		{"Close", testClose},
		{"HalfClose", testHalfClose},
		{"Deadline", testDeadline},
		{"Accept", testAccept},
		{"DialClosedPort", testDialClosedPort},
		{"Probe", testProbe},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, newEnv(t, mk))
		})
	}
	goleak.VerifyNone(t, baseline...)
}

// env is one subtest's transports, listener and connections.
type env struct {
	ctx            context.Context
	client, server transport.Transport
	listenAddr     string
	ln             transport.Listener
	addr           string // what the client dials

	mu     sync.Mutex
	closed bool
	conns  []net.Conn
}

func newEnv(t *testing.T, mk func(t *testing.T) (transport.Transport, transport.Transport, string)) *env {
	t.Helper()
	client, server, listenAddr := mk(t)
	ctx, cancel := context.WithTimeout(t.Context(), guard)
	t.Cleanup(cancel)
	e := &env{ctx: ctx, client: client, server: server, listenAddr: listenAddr}
	e.ln = e.listen(t)
	e.addr = e.ln.Addr().String()
	t.Cleanup(e.closeConns) // runs before the listener's cleanup
	return e
}

// listen opens a listener that is closed when t ends.
func (e *env) listen(t *testing.T) transport.Listener {
	t.Helper()
	ln, err := e.server.Listen(e.ctx, e.listenAddr)
	if err != nil {
		t.Fatalf("Listen(%q): %v", e.listenAddr, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// track closes c when the subtest ends; it may be called from any
// goroutine.
func (e *env) track(c net.Conn) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		c.Close()
		return
	}
	e.conns = append(e.conns, c)
}

func (e *env) closeConns() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	for _, c := range e.conns {
		c.Close()
	}
	e.conns = nil
}

// dial dials the listener.
func (e *env) dial() (net.Conn, error) {
	c, err := e.client.Dial(e.ctx, e.addr)
	if err != nil {
		return nil, err
	}
	e.track(c)
	return c, nil
}

// pair returns a connected client and server connection.
func (e *env) pair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	type result struct {
		c   net.Conn
		err error
	}
	accepted := make(chan result, 1)
	go func() {
		c, err := e.ln.Accept(e.ctx)
		if err == nil {
			e.track(c)
		}
		accepted <- result{c, err}
	}()
	client, err := e.dial()
	if err != nil {
		t.Fatalf("Dial(%q): %v", e.addr, err)
	}
	select {
	case r := <-accepted:
		if r.err != nil {
			t.Fatalf("Accept: %v", r.err)
		}
		return client, r.c
	case <-e.ctx.Done():
		t.Fatalf("Accept did not return: %v", e.ctx.Err())
		return nil, nil
	}
}

// spawn runs fn in a goroutine and returns a channel that receives its
// error. The goroutine never touches t, so it may outlive a failed test
// until the cleanups close its connections.
func spawn(fn func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- fn() }()
	return ch
}

// wait waits for a spawned goroutine and fails the test with what it
// returned.
func (e *env) wait(t *testing.T, what string, ch <-chan error) {
	t.Helper()
	select {
	case err := <-ch:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-e.ctx.Done():
		t.Fatalf("%s did not finish: %v", what, e.ctx.Err())
	}
}

// echo copies c back to itself until EOF, then closes c.
func echo(c net.Conn) error {
	defer c.Close()
	if _, err := io.Copy(c, c); err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	return nil
}

// roundTrip writes msg to c (from a goroutine, so that a transport with
// little buffering cannot deadlock) and reads it back.
func roundTrip(c net.Conn, msg []byte) error {
	wrote := spawn(func() error {
		_, err := c.Write(msg)
		return err
	})
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		// The writer may be blocked; it ends when c is closed.
		return fmt.Errorf("read: %w", err)
	}
	if err := <-wrote; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echoed %d bytes differ from the %d written", len(got), len(msg))
	}
	return nil
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

func testEcho(t *testing.T, e *env) {
	c, s := e.pair(t)
	srv := spawn(func() error {
		// A transport that pads after its data (obfs4) may still have
		// padding in flight to c when c closes; c's kernel answers it with
		// a reset, which the echo server may read instead of EOF. Every
		// byte was checked by then, so that is a clean end too; a reset
		// before then fails the round trip.
		if err := echo(s); !errors.Is(err, syscall.ECONNRESET) {
			return err
		}
		return nil
	})
	for _, n := range []int{1, 100, 16 << 10, 256 << 10} {
		if err := roundTrip(c, pattern(n, byte(n))); err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	e.wait(t, "echo server", srv)
}

// send writes n seeded pseudo-random bytes to c and returns their SHA-256.
func send(c net.Conn, seed uint64, n int64) ([]byte, error) {
	var key [32]byte
	key[0] = byte(seed)
	src := rand.NewChaCha8(key)
	h := sha256.New()
	buf := make([]byte, 64<<10)
	for n > 0 {
		chunk := buf[:min(int64(len(buf)), n)]
		src.Read(chunk) //nolint:errcheck // ChaCha8.Read never fails
		h.Write(chunk)
		if _, err := c.Write(chunk); err != nil {
			return nil, fmt.Errorf("write: %w", err)
		}
		n -= int64(len(chunk))
	}
	return h.Sum(nil), nil
}

// recv reads exactly n bytes from c and returns their SHA-256.
func recv(c net.Conn, n int64) ([]byte, error) {
	h := sha256.New()
	if _, err := io.CopyN(h, c, n); err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	return h.Sum(nil), nil
}

func testTransfer(t *testing.T, e *env) {
	size := int64(64 << 20)
	if testing.Short() {
		size = 4 << 20
	}
	c, s := e.pair(t)
	type sums struct{ sent, got []byte }
	var up, down sums
	var errs [4]<-chan error
	errs[0] = spawn(func() (err error) { up.sent, err = send(c, 1, size); return err })
	errs[1] = spawn(func() (err error) { up.got, err = recv(s, size); return err })
	errs[2] = spawn(func() (err error) { down.sent, err = send(s, 2, size); return err })
	errs[3] = spawn(func() (err error) { down.got, err = recv(c, size); return err })
	for i, name := range []string{"client send", "server receive", "server send", "client receive"} {
		e.wait(t, name, errs[i])
	}
	if !bytes.Equal(up.sent, up.got) {
		t.Errorf("client to server: SHA-256 sent %x, received %x", up.sent, up.got)
	}
	if !bytes.Equal(down.sent, down.got) {
		t.Errorf("server to client: SHA-256 sent %x, received %x", down.sent, down.got)
	}
	t.Logf("%d MiB each way", size>>20)
}

func testConcurrent(t *testing.T, e *env) {
	const n = 100
	server := spawn(func() error {
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for range n {
			s, err := e.ln.Accept(e.ctx)
			if err != nil {
				wg.Wait()
				return fmt.Errorf("accept: %w", err)
			}
			e.track(s)
			wg.Go(func() { errs <- echo(s) })
		}
		wg.Wait()
		close(errs)
		return errors.Join(collect(errs)...)
	})
	clients := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			c, err := e.dial()
			if err != nil {
				clients <- fmt.Errorf("client %d: dial: %w", i, err)
				return
			}
			defer c.Close()
			if err := roundTrip(c, pattern(4<<10, byte(i))); err != nil {
				clients <- fmt.Errorf("client %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	close(clients)
	if err := errors.Join(collect(clients)...); err != nil {
		t.Fatal(err)
	}
	e.wait(t, "echo servers", server)
}

func collect(ch <-chan error) []error {
	var errs []error
	for err := range ch {
		errs = append(errs, err)
	}
	return errs
}

func testClose(t *testing.T, e *env) {
	for _, closer := range []string{"client", "server"} {
		t.Run(closer+" closes", func(t *testing.T) {
			c, s := e.pair(t)
			if closer == "server" {
				c, s = s, c
			}
			// c closes; s is its peer.
			if _, err := c.Write([]byte("bye")); err != nil {
				t.Fatalf("Write: %v", err)
			}
			if err := c.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			got := spawn(func() error {
				b, err := io.ReadAll(s)
				if err != nil {
					return fmt.Errorf("peer read: %w (want io.EOF after the data)", err)
				}
				if string(b) != "bye" {
					return fmt.Errorf("peer read %q before io.EOF, want %q", b, "bye")
				}
				if n, err := s.Read(make([]byte, 1)); n != 0 || err != io.EOF {
					return fmt.Errorf("peer read after io.EOF = %d, %v; want 0, io.EOF", n, err)
				}
				return nil
			})
			e.wait(t, "peer", got)
			if _, err := c.Write([]byte("x")); err == nil {
				t.Error("Write after Close succeeded")
			}
			if _, err := c.Read(make([]byte, 1)); err == nil {
				t.Error("Read after Close succeeded")
			}
			c.Close() // a second Close may fail but must not panic or hang
		})
	}
}

func testHalfClose(t *testing.T, e *env) {
	c, s := e.pair(t)
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		t.Skipf("%T does not implement CloseWrite; half-close not tested", c)
	}
	req, resp := pattern(32<<10, 1), pattern(32<<10, 2)
	srv := spawn(func() error {
		got, err := io.ReadAll(s)
		if err != nil {
			return fmt.Errorf("server read: %w", err)
		}
		if !bytes.Equal(got, req) {
			return fmt.Errorf("server read %d bytes, not the %d-byte request", len(got), len(req))
		}
		if _, err := s.Write(resp); err != nil {
			return fmt.Errorf("server write after the client's CloseWrite: %w", err)
		}
		return s.Close()
	})
	if _, err := c.Write(req); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if err := cw.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Error("Write after CloseWrite succeeded")
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("client read after CloseWrite: %v", err)
	}
	if !bytes.Equal(got, resp) {
		t.Errorf("client read %d bytes, not the %d-byte response", len(got), len(resp))
	}
	e.wait(t, "server", srv)
}

// isTimeout reports whether err is a deadline error as net.Conn specifies.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

func testDeadline(t *testing.T, e *env) {
	t.Run("read", func(t *testing.T) {
		c, s := e.pair(t)
		if err := c.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
			t.Fatalf("SetReadDeadline: %v", err)
		}
		if n, err := c.Read(make([]byte, 16)); !isTimeout(err) {
			t.Fatalf("blocked Read = %d, %v; want a timeout error", n, err)
		}
		if err := c.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
			t.Fatalf("SetReadDeadline: %v", err)
		}
		if n, err := c.Read(make([]byte, 16)); !isTimeout(err) {
			t.Fatalf("Read past its deadline = %d, %v; want a timeout error", n, err)
		}
		// A read timeout leaves the connection usable.
		if err := c.SetReadDeadline(time.Time{}); err != nil {
			t.Fatalf("SetReadDeadline: %v", err)
		}
		wrote := spawn(func() error { _, err := s.Write([]byte("late")); return err })
		got := make([]byte, 4)
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "late" {
			t.Fatalf("Read after clearing the deadline = %q, %v; want %q", got, err, "late")
		}
		e.wait(t, "peer write", wrote)
	})
	t.Run("write", func(t *testing.T) {
		c, _ := e.pair(t) // the peer never reads
		if err := c.SetWriteDeadline(time.Now().Add(-time.Second)); err != nil {
			t.Fatalf("SetWriteDeadline: %v", err)
		}
		if n, err := c.Write([]byte("x")); !isTimeout(err) {
			t.Fatalf("Write past its deadline = %d, %v; want a timeout error", n, err)
		}
		if err := c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
			t.Fatalf("SetWriteDeadline: %v", err)
		}
		// Fill every buffer until Write blocks and its deadline passes.
		const limit = 256 << 20
		chunk := make([]byte, 1<<20)
		var total int
		for {
			n, err := c.Write(chunk)
			total += n
			if err != nil {
				if !isTimeout(err) {
					t.Fatalf("blocked Write after %d bytes: %v; want a timeout error", total, err)
				}
				break
			}
			if total >= limit {
				t.Fatalf("wrote %d bytes to a peer that never reads without blocking", total)
			}
		}
	})
}

func testAccept(t *testing.T, e *env) {
	isCanceled := func(err error) bool { return errors.Is(err, context.Canceled) }
	isDeadline := func(err error) bool {
		return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, transport.ErrTimeout)
	}
	t.Run("cancelled before", func(t *testing.T) {
		ctx, cancel := context.WithCancel(e.ctx)
		cancel()
		if c, err := e.ln.Accept(ctx); !isCanceled(err) {
			t.Fatalf("Accept(cancelled ctx) = %v, %v; want context.Canceled", c, err)
		}
	})
	t.Run("cancelled while waiting", func(t *testing.T) {
		ctx, cancel := context.WithCancel(e.ctx)
		defer cancel()
		done := spawn(func() error {
			if c, err := e.ln.Accept(ctx); !isCanceled(err) {
				return fmt.Errorf("accept = %v, %v; want context.Canceled", c, err)
			}
			return nil
		})
		cancel()
		e.wait(t, "Accept", done)
	})
	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(e.ctx, 20*time.Millisecond)
		defer cancel()
		if c, err := e.ln.Accept(ctx); !isDeadline(err) {
			t.Fatalf("Accept = %v, %v; want context.DeadlineExceeded or transport.ErrTimeout", c, err)
		}
	})
	t.Run("serves after cancel", func(t *testing.T) {
		c, s := e.pair(t)
		srv := spawn(func() error { return echo(s) })
		if err := roundTrip(c, []byte("still here")); err != nil {
			t.Fatal(err)
		}
		c.Close()
		e.wait(t, "echo", srv)
	})
	t.Run("closed while waiting", func(t *testing.T) {
		ln := e.listen(t)
		done := spawn(func() error {
			if c, err := ln.Accept(e.ctx); !errors.Is(err, transport.ErrClosed) {
				return fmt.Errorf("accept = %v, %v; want transport.ErrClosed", c, err)
			}
			return nil
		})
		if err := ln.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		e.wait(t, "Accept", done)
	})
	t.Run("after close", func(t *testing.T) {
		ln := e.listen(t)
		if err := ln.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if c, err := ln.Accept(e.ctx); !errors.Is(err, transport.ErrClosed) {
			t.Errorf("Accept after Close = %v, %v; want transport.ErrClosed", c, err)
		}
		if err := ln.Close(); err != nil {
			t.Errorf("second Close = %v, want nil", err)
		}
	})
}

func testDialClosedPort(t *testing.T, e *env) {
	ln := e.listen(t)
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	c, err := e.client.Dial(ctx, addr)
	if err == nil {
		c.Close()
		t.Fatalf("Dial(%q) to a closed port succeeded", addr)
	}
	if c != nil {
		t.Errorf("Dial returned a connection (%T) with its error", c)
	}
	if !errors.Is(err, transport.ErrRefused) && !errors.Is(err, transport.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Dial to a closed port: %v; want transport.ErrRefused or transport.ErrTimeout", err)
	}
	t.Logf("Dial to a closed port: %v", err)
}

func testProbe(t *testing.T, e *env) {
	const probes = 10
	server := spawn(func() error {
		var wg sync.WaitGroup
		defer wg.Wait()
		failed := 0
		for {
			s, err := e.ln.Accept(e.ctx)
			switch {
			case errors.Is(err, transport.ErrClosed):
				return nil
			case err != nil && e.ctx.Err() != nil:
				return err
			case err != nil:
				// A listener may report a failed probe; it must go on serving.
				if failed++; failed > probes {
					return fmt.Errorf("accept failed %d times: %w", failed, err)
				}
				continue
			}
			e.track(s)
			wg.Go(func() { echo(s) }) //nolint:errcheck // a probe's echo may fail
		}
	})
	for i := range probes {
		c, err := e.dial()
		if err != nil {
			t.Fatalf("probe %d: Dial: %v", i, err)
		}
		c.Close()
	}
	c, err := e.dial()
	if err != nil {
		t.Fatalf("Dial after %d probes: %v", probes, err)
	}
	if err := roundTrip(c, []byte("after the probes")); err != nil {
		t.Fatalf("echo after %d probes: %v", probes, err)
	}
	c.Close()
	if err := e.ln.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	e.wait(t, "server", server)
}
