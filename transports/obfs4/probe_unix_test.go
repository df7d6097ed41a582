//go:build unix

package obfs4

import (
	cryptorand "crypto/rand"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// peek reports, without blocking, whether c's peer has closed and how many
// bytes wait to be read.
func peek(t *testing.T, c *net.TCPConn) (closed bool, n int) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	var perr error
	if err := rc.Read(func(fd uintptr) bool {
		n, _, perr = syscall.Recvfrom(int(fd), buf, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	switch {
	case errors.Is(perr, syscall.EAGAIN):
		return false, 0
	case perr != nil:
		t.Fatalf("peek: %v", perr)
	}
	return n == 0, n
}

// recordingProxy forwards one connection to target, keeping what the
// client sent. It stops when t ends.
func recordingProxy(t *testing.T, target string) (addr string, sent func() []byte) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		closer []io.Closer
		rec    = &recorder{}
	)
	closer = append(closer, ln)
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", target)
		if err != nil {
			c.Close()
			return
		}
		mu.Lock()
		closer = append(closer, c, up)
		mu.Unlock()
		rec.Conn = up
		wg.Go(func() { io.Copy(rec, c) }) // client to server, recorded
		io.Copy(c, up)
	})
	t.Cleanup(func() {
		mu.Lock()
		for _, c := range closer {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String(), rec.written
}

// TestProbeResistance checks on loopback TCP what an active prober sees:
// no byte in answer to random data, silence or a replayed handshake, a
// connection still open after a real client has been served meanwhile,
// and a close without a byte in the end. The server's close delay is 0,
// so that probes end after the library's 30 s handshake timeout; the test
// runs in parallel with the other parallel tests.
func TestProbeResistance(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeState(t, dir, 0)
	client, server := newServerIn(t, dir, nil)
	ln := listen(t, server)
	addr := ln.Addr().String()

	serveEcho(t, ln)

	// A real client's first flight, recorded by a proxy.
	proxy, sent := recordingProxy(t, addr)
	dialEcho(t, client, proxy, "through the proxy")
	flight := sent()
	if len(flight) == 0 {
		t.Fatal("the proxy recorded nothing")
	}

	random := func(n int) []byte {
		b := make([]byte, n)
		cryptorand.Read(b)
		return b
	}
	probes := []struct {
		name  string
		probe []byte

		conn    *net.TCPConn
		start   time.Time
		closed  bool // when a real client had been served
		pending int  // bytes received by then
	}{
		{name: "silent"},
		{name: "random 100 bytes", probe: random(100)},
		{name: "random 16 KiB", probe: random(16 << 10)},
		{name: "replayed handshake", probe: flight},
	}
	// All probes start at once, so that their delays run together: the
	// test's default parallelism is only GOMAXPROCS.
	for i := range probes {
		p := &probes[i]
		p.start = time.Now()
		p.conn = dialRaw(t, addr)
		if _, err := p.conn.Write(p.probe); err != nil {
			t.Fatalf("%s: writing the probe: %v", p.name, err)
		}
	}
	dialEcho(t, client, addr, "meanwhile")
	for i := range probes {
		p := &probes[i]
		p.closed, p.pending = peek(t, p.conn)
	}
	for _, p := range probes {
		t.Run(p.name, func(t *testing.T) {
			if p.closed || p.pending > 0 {
				t.Errorf("after a real client was served, the probe connection is closed=%v with %d bytes; want open and silent", p.closed, p.pending)
			}
			p.conn.SetReadDeadline(time.Now().Add(2 * time.Minute))
			got, err := io.ReadAll(p.conn)
			if len(got) > 0 {
				t.Errorf("the server answered %d bytes", len(got))
			}
			if err != nil && !isReset(err) {
				t.Errorf("read: %v, want EOF or a reset", err)
			}
			t.Logf("closed without a byte after %v", time.Since(p.start).Round(time.Second))
		})
	}
}
