package ring

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair returns the host's and the plugin's Conn of one flow with rings of
// size bytes, as the host and the SDK build them.
func pair(t testing.TB, size int) (host, plugin *Conn) {
	t.Helper()
	a, b := socketPair(t)
	host, files, err := Offer(a, size)
	if err != nil {
		t.Fatal(err)
	}
	fds := make([]int, len(files))
	for i, f := range files {
		if fds[i], err = unix.Dup(int(f.Fd())); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	if plugin, err = Accept(b, fds[0], fds[1]); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		host.Close()
		plugin.Close()
	})
	return host, plugin
}

func socketPair(t testing.TB) (a, b *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "flow")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

// stream sends n pseudo-random bytes from w in writes of random sizes and
// returns their hash.
func stream(w io.Writer, n int, seed uint64) ([32]byte, error) {
	r := rand.New(rand.NewPCG(seed, 1))
	h := sha256.New()
	buf := make([]byte, 70000)
	for n > 0 {
		m := min(n, 1+r.IntN(len(buf)))
		for i := range buf[:m] {
			buf[i] = byte(r.Uint32())
		}
		h.Write(buf[:m])
		if _, err := w.Write(buf[:m]); err != nil {
			return [32]byte{}, err
		}
		n -= m
	}
	return [32]byte(h.Sum(nil)), nil
}

// TestBothWays moves a stream through small rings in each direction at
// once, with every read and write size, across many wrap-arounds.
func TestBothWays(t *testing.T) {
	host, plugin := pair(t, MinSize)
	const n = 3 << 20
	type result struct {
		sum [32]byte
		err error
	}
	sent := make(chan result, 2)
	for i, c := range []*Conn{host, plugin} {
		go func() {
			sum, err := stream(c, n, uint64(i))
			if err == nil {
				err = c.CloseWrite()
			}
			sent <- result{sum, err}
		}()
	}
	got := make(chan result, 2)
	for _, c := range []*Conn{host, plugin} {
		go func() {
			h := sha256.New()
			r := rand.New(rand.NewPCG(7, 7))
			buf := make([]byte, 9000)
			var err error
			for {
				var m int
				m, err = c.Read(buf[:1+r.IntN(len(buf))])
				h.Write(buf[:m])
				if err != nil {
					break
				}
			}
			if err == io.EOF {
				err = nil
			}
			got <- result{[32]byte(h.Sum(nil)), err}
		}()
	}
	var sums, reads [][32]byte
	for range 2 {
		s := <-sent
		if s.err != nil {
			t.Fatal(s.err)
		}
		sums = append(sums, s.sum)
		g := <-got
		if g.err != nil {
			t.Fatal(g.err)
		}
		reads = append(reads, g.sum)
	}
	for _, s := range sums {
		if reads[0] != s && reads[1] != s {
			t.Fatalf("a stream arrived changed")
		}
	}
}

// TestZeroCopy moves a stream with ReadFrom on one side and WriteTo on
// the other, as the SDK's relays do.
func TestZeroCopy(t *testing.T) {
	host, plugin := pair(t, 8192)
	src := bytes.Repeat([]byte("0123456789abcdef"), 40000)
	done := make(chan error, 1)
	go func() {
		_, err := plugin.ReadFrom(io.LimitReader(bytes.NewReader(src), int64(len(src))))
		if err == nil {
			err = plugin.CloseWrite()
		}
		done <- err
	}()
	var got bytes.Buffer
	if _, err := io.Copy(&got, host); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), src) {
		t.Fatalf("got %d bytes, want the %d sent", got.Len(), len(src))
	}

	go func() {
		_, err := stream(host, 100000, 3)
		host.CloseWrite()
		done <- err
	}()
	var out bytes.Buffer
	n, err := plugin.WriteTo(&out)
	if err != nil || n != 100000 || out.Len() != 100000 {
		t.Fatalf("WriteTo: %d, %v; buffer %d", n, err, out.Len())
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestClose: once a side closes, the other reads what it wrote, then
// io.EOF, and its writes fail as on a closed socket; calls blocked in the
// closed side return net.ErrClosed.
func TestClose(t *testing.T) {
	host, plugin := pair(t, MinSize)
	if _, err := plugin.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	if err := plugin.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(host)
	if err != nil || string(got) != "last words" {
		t.Fatalf("read %q, %v", got, err)
	}
	if _, err := host.Write([]byte("x")); !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("write after the other side closed: %v, want EPIPE", err)
	}
	if err := plugin.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := plugin.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after Close: %v", err)
	}

	a, b := pair(t, MinSize)
	errs := make(chan error, 2)
	go func() {
		_, err := a.Read(make([]byte, 10))
		errs <- err
	}()
	go func() {
		_, err := a.Write(make([]byte, 2*MinSize)) // b never reads
		errs <- err
	}()
	time.Sleep(20 * time.Millisecond) // let both block; the test passes either way
	a.Close()
	for range 2 {
		if err := <-errs; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("blocked call after Close: %v", err)
		}
	}
	_ = b
}

// TestCloseWrite: the other side reads io.EOF after the bytes, and can
// still write back; a write after CloseWrite fails.
func TestCloseWrite(t *testing.T) {
	host, plugin := pair(t, MinSize)
	host.Write([]byte("request"))
	host.CloseWrite()
	if n, err := plugin.Read(nil); n != 0 || err != nil {
		t.Fatalf("Read(nil) with bytes waiting before the end: %d, %v; want 0, nil", n, err)
	}
	got, err := io.ReadAll(plugin)
	if err != nil || string(got) != "request" {
		t.Fatalf("read %q, %v", got, err)
	}
	if _, err := host.Write([]byte("more")); !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("write after CloseWrite: %v", err)
	}
	plugin.Write([]byte("answer"))
	plugin.CloseWrite()
	got, err = io.ReadAll(host)
	if err != nil || string(got) != "answer" {
		t.Fatalf("read %q, %v", got, err)
	}
}

// TestDeadlines: reads and writes that wait end at their deadline with
// os.ErrDeadlineExceeded, and work again once it is lifted.
func TestDeadlines(t *testing.T) {
	host, plugin := pair(t, MinSize)
	host.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	if _, err := host.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read: %v", err)
	}
	host.SetWriteDeadline(time.Now().Add(30 * time.Millisecond))
	n, err := host.Write(make([]byte, 3*MinSize))
	if !errors.Is(err, os.ErrDeadlineExceeded) || n != MinSize {
		t.Fatalf("Write into a full ring: %d, %v; want %d and a timeout", n, err, MinSize)
	}
	host.SetDeadline(time.Time{})
	go plugin.Write([]byte("hi"))
	buf := make([]byte, 2)
	if _, err := io.ReadFull(host, buf); err != nil || string(buf) != "hi" {
		t.Fatalf("Read after lifting the deadline: %q, %v", buf, err)
	}
	host.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := host.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the deadline: %v", err)
	}
}

// TestCorrupt: positions that no correct side writes make calls fail
// with ErrCorrupt, and keep failing.
func TestCorrupt(t *testing.T) {
	host, plugin := pair(t, MinSize)
	plugin.out.u64(offTail).Store(MinSize + 1) // more than the ring holds
	if _, err := host.Read(make([]byte, 10)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Read: %v", err)
	}
	if _, err := host.Write([]byte("x")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Write after the ring broke: %v", err)
	}

	host, plugin = pair(t, MinSize)
	plugin.in.u64(offHead).Store(5) // read bytes never written
	if _, err := host.Write([]byte("x")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Write: %v", err)
	}
}

// TestMap refuses memory that is not two sealed rings, and Offer and
// Accept refuse what they cannot use.
func TestMap(t *testing.T) {
	memfd := func(size int, seal bool) int {
		fd, err := unix.MemfdCreate("test", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
		if err != nil {
			t.Fatal(err)
		}
		unix.Ftruncate(fd, int64(size))
		if seal {
			unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW)
		}
		return fd
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	unix.Close(p[1])
	for name, fd := range map[string]int{
		"unsealed":   memfd(2*(HeaderSize+MinSize), false),
		"odd size":   memfd(2*(HeaderSize+MinSize)+1, true),
		"not pow2":   memfd(2*(HeaderSize+MinSize+100), true),
		"too small":  memfd(2*(HeaderSize+2048), true),
		"too large":  memfd(2*(HeaderSize+2*MaxSize), true),
		"not memfd":  p[0],
		"empty file": memfd(0, true),
	} {
		if mem, err := mapFD(fd); err == nil {
			unix.Munmap(mem)
			t.Errorf("%s: mapped", name)
		}
	}
	a, _ := socketPair(t)
	defer a.Close()
	if _, _, err := Offer(a, MinSize+1); err == nil {
		t.Error("Offer took a size that is not a power of two")
	}
	// Accept refuses a memfd that is not two rings, and closes what it
	// was given.
	x, y := socketPair(t)
	defer x.Close()
	if _, err := Accept(y, memfd(100, true), memfd(4096, true)); err == nil {
		t.Error("Accept took a memfd for its room bell")
	}
	x.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := x.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("the flow socket after a failed Accept: %v, want it closed", err)
	}
}

// FuzzPositions lets the other side write any header values while the
// host reads and writes: calls return bytes or an error, never panic or
// touch memory outside the rings.
func FuzzPositions(f *testing.F) {
	f.Add(uint64(0), uint64(0), uint32(0), uint32(0), uint32(0), uint32(0))
	f.Add(uint64(4096), uint64(0), uint32(1), uint32(1), uint32(1), uint32(0))
	f.Add(uint64(1<<63), uint64(1<<63+5), uint32(0), uint32(0), uint32(0), uint32(1))
	f.Add(^uint64(0), ^uint64(0), ^uint32(0), ^uint32(0), ^uint32(0), ^uint32(0))
	f.Fuzz(func(t *testing.T, tail, head uint64, flags, pwait, cwait, wake uint32) {
		host, plugin := pair(t, MinSize)
		plugin.out.u64(offTail).Store(tail)
		plugin.out.u32(offPFlags).Store(flags)
		plugin.out.u32(offCWait).Store(cwait)
		plugin.in.u64(offHead).Store(head)
		plugin.in.u32(offPWait).Store(pwait)
		if wake&1 != 0 {
			plugin.data.sock.Write([]byte{1})
		}
		host.SetDeadline(time.Now().Add(time.Millisecond))
		buf := make([]byte, 3*MinSize)
		n, err := host.Read(buf)
		if n < 0 || n > len(buf) || err == nil && n == 0 {
			t.Fatalf("Read: %d, %v", n, err)
		}
		n, err = host.Write(buf)
		if n < 0 || n > len(buf) || err == nil && n != len(buf) {
			t.Fatalf("Write: %d, %v", n, err)
		}
		host.CloseWrite()
	})
}

// TestEOFAfterBytes: a reader that finds the end of stream set has every
// byte written before it, even while the producer advances tail and sets
// the end right after. Many rounds, since the reader must look between
// the producer's two stores: the producer spins, so that it stores as
// soon as a round begins, while the reader looks; it wakes the reader
// as Write and CloseWrite do.
func TestEOFAfterBytes(t *testing.T) {
	host, plugin := pair(t, MinSize)
	tail, flags := plugin.out.u64(offTail), plugin.out.u32(offPFlags)
	const rounds = 20000
	var round, stored atomic.Int64 // the round begun, the last one stored
	var stop atomic.Bool
	exited := make(chan struct{})
	defer func() {
		stop.Store(true)
		<-exited
	}()
	go func() {
		defer close(exited)
		for i := int64(1); i <= rounds; i++ {
			for j := 0; round.Load() < i; j++ {
				if stop.Load() || j == 1e9 {
					return
				}
			}
			tail.Store(1)
			flags.Store(flagEOF)
			plugin.wake(plugin.out.u32(offCWait), &plugin.data)
			stored.Store(i)
		}
	}()
	buf := make([]byte, 1)
	for i := int64(1); i <= rounds; i++ {
		host.head = 0
		tail.Store(0)
		flags.Store(0)
		round.Store(i)
		n, err := host.Read(buf)
		if n != 1 || err != nil {
			t.Fatalf("round %d: Read = %d, %v; want the byte written before the end", i, n, err)
		}
		for j := 0; stored.Load() < i; j++ {
			if j == 1e9 {
				t.Fatalf("round %d: the producer is stuck", i)
			}
		}
	}
}

// TestCloseWriteDuringWrite: CloseWrite while a write ends still sets
// the end of stream, whichever of the two holds the writing side last.
func TestCloseWriteDuringWrite(t *testing.T) {
	for i := range 1000 {
		host, plugin := pair(t, MinSize)
		done := make(chan struct{})
		go func() {
			defer close(done)
			host.Write([]byte("x"))
		}()
		// CloseWrite once the byte is published, while the write may
		// still be returning.
		for j := 0; plugin.in.u64(offTail).Load() == 0 && j < 1e8; j++ {
		}
		if err := host.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		<-done
		if plugin.in.u32(offPFlags).Load()&flagEOF == 0 {
			t.Fatalf("round %d: no end of stream after CloseWrite and the write returned", i)
		}
		host.Close()
		plugin.Close()
	}
}

// lyingReader claims one byte more than it was given, once.
type lyingReader struct{ lied bool }

func (r *lyingReader) Read(p []byte) (int, error) {
	if r.lied {
		return 0, io.EOF
	}
	r.lied = true
	return len(p) + 1, nil
}

// TestReadFromBounds: ReadFrom refuses a reader that claims more bytes
// than the buffer it was given, also where the ring wraps and the buffer
// is shorter than the room.
func TestReadFromBounds(t *testing.T) {
	host, plugin := pair(t, MinSize)
	const pre = MinSize - 100 // the next buffer ReadFrom hands out is 100 bytes
	if _, err := plugin.Write(make([]byte, pre)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(host, make([]byte, pre)); err != nil {
		t.Fatal(err)
	}
	n, err := plugin.ReadFrom(&lyingReader{})
	if err == nil {
		t.Fatalf("ReadFrom took %d bytes from a reader that returned more than it was given", n)
	}
}

// stuckWriter takes nothing and says nothing, then fails.
type stuckWriter struct{ calls int }

func (w *stuckWriter) Write(p []byte) (int, error) {
	w.calls++
	if w.calls > 1 {
		return 0, errors.New("called again after taking nothing")
	}
	return 0, nil
}

// TestWriteToShortWrite: WriteTo ends with io.ErrShortWrite when the
// writer takes less than it was given without an error, as io.Copy does,
// instead of offering the same bytes forever.
func TestWriteToShortWrite(t *testing.T) {
	host, plugin := pair(t, MinSize)
	if _, err := host.Write([]byte("bytes")); err != nil {
		t.Fatal(err)
	}
	if _, err := plugin.WriteTo(&stuckWriter{}); !errors.Is(err, io.ErrShortWrite) {
		t.Fatalf("WriteTo to a writer that takes nothing: %v; want io.ErrShortWrite", err)
	}
}

// gate blocks the first call of a reader or writer until it is let
// through, and fails every later call.
type gate struct {
	open  chan struct{}
	calls atomic.Int32
}

func (g *gate) pass(what string) error {
	if g.calls.Add(1) > 1 {
		return fmt.Errorf("%s called again after Close", what)
	}
	<-g.open
	return nil
}

func (g *gate) Read(p []byte) (int, error) {
	if err := g.pass("Read"); err != nil {
		return 0, err
	}
	p[0] = 1
	return 1, nil
}

func (g *gate) Write(p []byte) (int, error) {
	if err := g.pass("Write"); err != nil {
		return 0, err
	}
	return len(p), nil
}

// TestCloseEndsCopies: ReadFrom and WriteTo that are in their reader or
// writer when the Conn is closed return net.ErrClosed once it returns,
// as on a closed socket, instead of going on through the rings.
func TestCloseEndsCopies(t *testing.T) {
	for _, name := range []string{"ReadFrom", "WriteTo"} {
		t.Run(name, func(t *testing.T) {
			host, plugin := pair(t, MinSize)
			g := &gate{open: make(chan struct{})}
			done := make(chan error, 1)
			if name == "ReadFrom" {
				go func() {
					_, err := plugin.ReadFrom(g)
					done <- err
				}()
			} else {
				host.Write([]byte("ab"))
				go func() {
					_, err := plugin.WriteTo(g)
					done <- err
				}()
			}
			for j := 0; g.calls.Load() == 0 && j < 1e9; j++ {
				runtime.Gosched()
			}
			host.Write([]byte("cd")) // more to copy, for WriteTo
			plugin.Close()
			close(g.open)
			if err := <-done; !errors.Is(err, net.ErrClosed) {
				t.Fatalf("%s after Close: %v; want net.ErrClosed", name, err)
			}
		})
	}
}

// TestEndSticks: once a stream was read to its end, what the other side
// writes into the ring afterwards does not start it again.
func TestEndSticks(t *testing.T) {
	host, plugin := pair(t, MinSize)
	plugin.Write([]byte("all"))
	plugin.CloseWrite()
	if got, err := io.ReadAll(host); err != nil || string(got) != "all" {
		t.Fatalf("read %q, %v", got, err)
	}
	plugin.out.u32(offPFlags).Store(0) // a plugin that takes its end back
	plugin.out.u64(offTail).Add(5)
	plugin.data.sock.Write([]byte{1})
	if n, err := host.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Fatalf("Read after the end: %d, %v; want 0, io.EOF", n, err)
	}
	var buf bytes.Buffer
	if n, err := host.WriteTo(&buf); n != 0 || err != nil {
		t.Fatalf("WriteTo after the end: %d, %v; want 0, nil", n, err)
	}
}
