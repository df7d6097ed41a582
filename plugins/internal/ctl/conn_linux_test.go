package ctl

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// recorder is a Handler that records what it gets.
type recorder struct {
	mu   sync.Mutex
	msgs []Msg
	fds  []int
}

func (r *recorder) handle(m Msg, fds []int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, m)
	r.fds = append(r.fds, fds...)
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

// pair returns two Conns over a new control socket; b's Run runs until
// the test ends.
func pair(t *testing.T, ha, hb Handler) (a, b *Conn, runErr <-chan error) {
	t.Helper()
	fa, fb, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	defer fb.Close()
	if a, err = New(fa, ha); err != nil {
		t.Fatal(err)
	}
	if b, err = New(fb, hb); err != nil {
		t.Fatal(err)
	}
	ch := make(chan error, 1)
	go func() { ch <- b.Run() }()
	t.Cleanup(func() {
		a.Close()
		b.Close()
	})
	return a, b, ch
}

func TestFlowHandOver(t *testing.T) {
	var rec recorder
	a, b, runErr := pair(t, nil, rec.handle)
	local, peer, err := FlowPair()
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	if err := a.Send(Msg{TypeFlow, 9}, time.Time{}, peer); err != nil {
		t.Fatal(err)
	}
	peer.Close()
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	if len(rec.msgs) != 1 || rec.msgs[0] != (Msg{TypeFlow, 9}) || len(rec.fds) != 1 {
		t.Fatalf("received %v with %d descriptors", rec.msgs, len(rec.fds))
	}
	fd := rec.fds[0]
	rec.mu.Unlock()
	remote, err := FlowConn(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer remote.Close()
	if _, err := local.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(remote, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read %q, %v", buf, err)
	}
	a.Close()
	if err := <-runErr; !errors.Is(err, io.EOF) {
		t.Errorf("Run after the peer closed = %v, want io.EOF", err)
	}
}

// TestFlowWithDatagrams checks a FLOW that carries a stream and a datagram
// socket, in that order, and that the datagram socket keeps each record
// apart, empty ones included.
func TestFlowWithDatagrams(t *testing.T) {
	var rec recorder
	a, b, _ := pair(t, nil, rec.handle)
	local, peer, err := FlowPair()
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	dlocal, dpeer, err := DatagramPair()
	if err != nil {
		t.Fatal(err)
	}
	defer dlocal.Close()
	if err := a.Send(Msg{TypeFlow, 3}, time.Time{}, peer, dpeer); err != nil {
		t.Fatal(err)
	}
	peer.Close()
	dpeer.Close()
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	fds := append([]int(nil), rec.fds...)
	rec.mu.Unlock()
	if len(fds) != 2 {
		t.Fatalf("received %d descriptors, want 2", len(fds))
	}
	if _, err := DatagramConn(fds[0]); err == nil {
		t.Error("DatagramConn accepted the stream socket")
	}
	if _, err := FlowConn(fds[1]); err == nil {
		t.Error("FlowConn accepted the datagram socket")
	}
}

func TestDatagramPair(t *testing.T) {
	local, peer, err := DatagramPair()
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	remote, err := DatagramConn(int(dupFD(t, peer)))
	peer.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer remote.Close()
	sizes := []int{0, 1, 1150, MaxDatagram}
	for _, n := range sizes {
		if _, err := local.Write(AppendDatagram(nil, bytes.Repeat([]byte{byte(n)}, n))); err != nil {
			t.Fatalf("write %d bytes: %v", n, err)
		}
	}
	buf := make([]byte, MaxRecord+1)
	for _, n := range sizes {
		got, err := remote.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		p, err := ParseDatagram(buf[:got])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, bytes.Repeat([]byte{byte(n)}, n)) {
			t.Errorf("datagram of %d bytes came as %d bytes", n, len(p))
		}
	}
	local.Close()
	if n, err := remote.Read(buf); err != io.EOF {
		t.Errorf("read after close = %d, %v; want io.EOF", n, err)
	}
}

// TestSyncOrder checks the guarantee the protocol rests on: a message sent
// before a flow's end of stream has been handled once Sync returns after
// that end of stream is seen.
func TestSyncOrder(t *testing.T) {
	var rec recorder
	a, b, _ := pair(t, nil, rec.handle)
	for i := uint64(1); i <= 100; i++ {
		local, peer, err := FlowPair()
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Send(Msg{TypeEOF, i}, time.Time{}); err != nil {
			t.Fatal(err)
		}
		local.Close()
		remote, err := FlowConn(int(dupFD(t, peer)))
		peer.Close()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := remote.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("read = %v, want io.EOF", err)
		}
		remote.Close()
		if err := b.Sync(); err != nil {
			t.Fatal(err)
		}
		if n := rec.count(); n != int(i) {
			t.Fatalf("after Sync %d messages handled, want %d", n, i)
		}
	}
}

func dupFD(t *testing.T, f *os.File) uintptr {
	t.Helper()
	fd, err := syscall.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	return uintptr(fd)
}

func TestViolations(t *testing.T) {
	tests := []struct {
		name string
		send func(t *testing.T, fd int)
	}{
		{"garbage", func(t *testing.T, fd int) {
			syscall.Write(fd, []byte("not a message")) //nolint:errcheck // checked by the reader
		}},
		{"short", func(t *testing.T, fd int) {
			syscall.Write(fd, Msg{TypeEOF, 1}.Append(nil)[:5]) //nolint:errcheck // checked by the reader
		}},
		{"too many descriptors", func(t *testing.T, fd int) {
			fds := []int{0, 0, 0, 0, 0, 0, 0, 0}
			if err := syscall.Sendmsg(fd, Msg{TypeFlow, 1}.Append(nil), syscall.UnixRights(fds...), nil, 0); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fa, fb, err := Pair()
			if err != nil {
				t.Fatal(err)
			}
			defer fa.Close()
			defer fb.Close()
			var rec recorder
			b, err := New(fb, rec.handle)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			tt.send(t, int(fa.Fd()))
			var v *ViolationError
			if err := b.Run(); !errors.As(err, &v) {
				t.Errorf("Run = %v, want a *ViolationError", err)
			}
			if err := b.Sync(); err == nil {
				t.Error("Sync after a violation = nil")
			}
			if rec.count() != 0 {
				t.Errorf("handled %d messages", rec.count())
			}
		})
	}
}

func TestNewChecksSocketType(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if _, err := New(r, nil); err == nil {
		t.Error("New on a pipe succeeded")
	}
	_, peer, err := FlowPair()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if _, err := New(peer, nil); err == nil {
		t.Error("New on a stream socket succeeded")
	}
}

// TestPairBuffers checks that both ends of the socket pairs get the send
// buffers the package asks for, as far as the kernel lets this process.
func TestPairBuffers(t *testing.T) {
	limit := 1 << 30 // with CAP_NET_ADMIN, none
	if b, err := os.ReadFile("/proc/sys/net/core/wmem_max"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			limit = n
		}
	}
	for _, tt := range []struct {
		name string
		pair func() (*net.UnixConn, *os.File, error)
		want int
	}{
		{"flow", FlowPair, FlowBuffer},
		{"datagrams", DatagramPair, DatagramBuffer},
	} {
		t.Run(tt.name, func(t *testing.T) {
			local, peer, err := tt.pair()
			if err != nil {
				t.Fatal(err)
			}
			defer local.Close()
			defer peer.Close()
			raw, err := local.SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			var got [2]int
			raw.Control(func(fd uintptr) { got[0], _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF) })
			got[1], _ = syscall.GetsockoptInt(int(peer.Fd()), syscall.SOL_SOCKET, syscall.SO_SNDBUF)
			// The kernel doubles what it is given, for its bookkeeping.
			want := 2 * min(tt.want, limit)
			for i, g := range got {
				if g < want {
					t.Errorf("end %d: SO_SNDBUF %d, want at least %d", i, g, want)
				}
			}
		})
	}
}

// TestFlowSpliceable checks what Go's net package needs to move bytes
// between a TCP connection and a flow socket with splice(2), without
// copying them through the plugin: TCPConn.ReadFrom and TCPConn.WriteTo
// splice only to and from a *net.UnixConn of network "unix" (a stream
// socket), which both ends of a flow must be.
func TestFlowSpliceable(t *testing.T) {
	local, peer, err := FlowPair()
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	remote, err := FlowConn(int(dupFD(t, peer)))
	peer.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer remote.Close()
	for i, c := range []*net.UnixConn{local, remote} {
		if a := c.LocalAddr(); a == nil || a.Network() != "unix" {
			t.Errorf("end %d: local address %v; want network unix", i, a)
		}
	}
}
