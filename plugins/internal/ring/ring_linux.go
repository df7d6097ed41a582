package ring

import (
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/commucat/commucat/plugins/internal/ctl"
)

// errWriteShut is returned by a write after CloseWrite.
var errWriteShut = fmt.Errorf("ring: write after close write: %w", syscall.EPIPE)

// Side says which end of the flow a Conn is.
type Side int

// The two sides.
const (
	Host Side = iota
	Plugin
)

// ring is one direction's header and data area.
type ring struct {
	hdr  []byte
	data []byte
	size uint64
}

func (r ring) u64(off int) *atomic.Uint64 { return (*atomic.Uint64)(unsafe.Pointer(&r.hdr[off])) }
func (r ring) u32(off int) *atomic.Uint32 { return (*atomic.Uint32)(unsafe.Pointer(&r.hdr[off])) }

// bell is one doorbell socket: a side waits by reading it and is woken
// by the other side's byte, so that the kernel's poller wakes the waiting
// goroutine directly and the socket's own deadline bounds the wait.
type bell struct {
	sock *net.UnixConn
	raw  syscall.RawConn
	buf  [64]byte // guarded by the Conn's rmu (data) or wmu (room)
}

// ring writes one byte to the other side, without waiting: a full socket
// already holds a wake-up. It reports false if the other side is gone.
func (b *bell) ring() bool {
	one := []byte{1}
	var err error
	if b.raw.Write(func(fd uintptr) bool {
		_, err = syscall.Write(int(fd), one)
		return true
	}) != nil {
		return true // closed here: Close reports it
	}
	return !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET)
}

// Conn is one side of a flow whose bytes go through the rings in mem. It
// has the methods of a connection: Read, Write, CloseWrite, Close and
// deadlines, and WriteTo and ReadFrom, which hand the shared memory to
// another reader or writer without a copy of their own. Its methods may
// be called at once from several goroutines; reads are serialized, as are
// writes.
type Conn struct {
	data, room bell // data wakes this side's reads, room its writes
	in, out    ring
	rmu, wmu   sync.Mutex
	head       uint64 // the consumer's position in in; guarded by rmu
	ended      bool   // the inbound stream ended and was read to its end; guarded by rmu
	tail       uint64 // the producer's position in out; guarded by wmu
	eofSent    bool   // the end-of-stream flag is set; guarded by wmu

	rdl, wdl atomic.Pointer[time.Time] // deadlines, nil for none
	shut     atomic.Bool               // CloseWrite called
	gone     atomic.Bool               // a bell ended: the other side closed or died
	bad      atomic.Bool               // the other side broke the ring
	closed   atomic.Bool               // Close called: calls in progress end; set under mu

	mu   sync.Mutex // guards the fields below
	mem  []byte     // nil once unmapped
	refs int        // calls using mem
}

// Offer creates a flow's rings of size bytes each (a power of two from
// MinSize to MaxSize) for the host, over the flow socket sock. It returns
// the host's Conn and what to send the plugin after the other end of
// sock: the memfd and the other end of the room bell. The caller closes
// those files once sent. The Conn owns sock only if Offer succeeds.
func Offer(sock *net.UnixConn, size int) (*Conn, []*os.File, error) {
	mem, memfd, err := create(size)
	if err != nil {
		return nil, nil, err
	}
	room, peer, err := ctl.BellPair()
	if err != nil {
		memfd.Close()
		unix.Munmap(mem) //nolint:errcheck // a fresh mapping
		return nil, nil, err
	}
	c, err := newConn(sock, room, mem, Host)
	if err != nil {
		memfd.Close()
		peer.Close()
		room.Close()
		unix.Munmap(mem) //nolint:errcheck // a fresh mapping
		return nil, nil, err
	}
	return c, []*os.File{memfd, peer}, nil
}

// Accept returns the plugin's Conn over the flow socket sock, the memfd
// memfd and the room bell roomfd that the host sent. It takes ownership
// of all three, also when it fails.
func Accept(sock *net.UnixConn, memfd, roomfd int) (*Conn, error) {
	room, err := ctl.BellConn(roomfd)
	if err != nil {
		unix.Close(memfd)
		sock.Close()
		return nil, err
	}
	mem, err := mapFD(memfd)
	if err != nil {
		room.Close()
		sock.Close()
		return nil, err
	}
	c, err := newConn(sock, room, mem, Plugin)
	if err != nil {
		room.Close()
		sock.Close()
		unix.Munmap(mem) //nolint:errcheck // a fresh mapping
		return nil, err
	}
	return c, nil
}

// create returns a new sealed memfd holding two rings of size bytes each,
// and the host's mapping of it.
func create(size int) (mem []byte, f *os.File, err error) {
	if !validSize(size) {
		return nil, nil, fmt.Errorf("ring: bad size %d", size)
	}
	fd, err := unix.MemfdCreate("commucat-flow", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, nil, fmt.Errorf("ring: memfd_create: %w", err)
	}
	f = os.NewFile(uintptr(fd), "ring")
	total := 2 * (HeaderSize + size)
	if err := unix.Ftruncate(fd, int64(total)); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("ring: ftruncate: %w", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("ring: seal: %w", err)
	}
	mem, err = unix.Mmap(fd, 0, total, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("ring: mmap: %w", err)
	}
	return mem, f, nil
}

// mapFD maps the memfd fd, after checking that it is sealed against
// shrinking and has the size of two rings. It closes fd.
func mapFD(fd int) ([]byte, error) {
	defer unix.Close(fd)
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil {
		return nil, fmt.Errorf("ring: not a sealable memfd: %w", err)
	}
	if seals&unix.F_SEAL_SHRINK == 0 {
		return nil, errors.New("ring: memfd not sealed against shrinking")
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("ring: fstat: %w", err)
	}
	if st.Size%2 != 0 || st.Size > 2*(HeaderSize+MaxSize) || !validSize(int(st.Size/2)-HeaderSize) {
		return nil, fmt.Errorf("ring: memfd of %d bytes is not two rings", st.Size)
	}
	mem, err := unix.Mmap(fd, 0, int(st.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("ring: mmap: %w", err)
	}
	return mem, nil
}

func validSize(n int) bool {
	return n >= MinSize && n <= MaxSize && bits.OnesCount(uint(n)) == 1
}

// newConn returns side's Conn over the rings in mem, with data and room
// as its bells. It takes ownership of all three if it succeeds: Close
// unmaps mem once no call uses it any more.
func newConn(data, room *net.UnixConn, mem []byte, side Side) (*Conn, error) {
	if len(mem)%2 != 0 || !validSize(len(mem)/2-HeaderSize) {
		return nil, fmt.Errorf("ring: mapping of %d bytes is not two rings", len(mem))
	}
	draw, err := data.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("ring: %w", err)
	}
	rraw, err := room.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("ring: %w", err)
	}
	half := len(mem) / 2
	mk := func(b []byte) ring {
		return ring{hdr: b[:HeaderSize], data: b[HeaderSize:], size: uint64(len(b) - HeaderSize)}
	}
	up, down := mk(mem[:half:half]), mk(mem[half:])
	c := &Conn{data: bell{sock: data, raw: draw}, room: bell{sock: room, raw: rraw}, mem: mem}
	c.in, c.out = down, up
	if side == Plugin {
		c.in, c.out = up, down
	}
	return c, nil
}

// acquire keeps the mapping while a call uses it; it fails once the Conn
// is closed.
func (c *Conn) acquire() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		return false
	}
	c.refs++
	return true
}

// release ends a call's use of the mapping; the last one after Close
// unmaps it.
func (c *Conn) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refs--
	if c.closed.Load() && c.refs == 0 {
		c.unmapLocked()
	}
}

func (c *Conn) unmapLocked() {
	if c.mem != nil {
		unix.Munmap(c.mem) //nolint:errcheck // only fails for a bad mapping
		c.mem = nil
	}
}

// readable returns how many bytes wait in the inbound ring and whether
// its stream has ended (the producer's flag, or the other side gone).
// Once the stream was read to its end it stays ended, whatever the other
// side writes afterwards.
func (c *Conn) readable() (uint64, bool, error) {
	if c.ended {
		return 0, true, nil
	}
	// Both ends are loaded before the tail: the producer advances the
	// tail before it sets the end of stream or closes, so a tail loaded
	// after either holds every byte written before the end.
	gone := c.gone.Load()
	flags := c.in.u32(offPFlags).Load()
	avail := c.in.u64(offTail).Load() - c.head
	if avail > c.in.size {
		c.bad.Store(true)
		return 0, false, fmt.Errorf("%w: %d bytes readable in a ring of %d", ErrCorrupt, avail, c.in.size)
	}
	return avail, flags&flagEOF != 0 || gone, nil
}

// free returns how many bytes fit in the outbound ring.
func (c *Conn) free() (uint64, error) {
	used := c.tail - c.out.u64(offHead).Load()
	if used > c.out.size {
		c.bad.Store(true)
		return 0, fmt.Errorf("%w: %d bytes unread in a ring of %d", ErrCorrupt, used, c.out.size)
	}
	return c.out.size - used, nil
}

// wake rings b if the other side waits on field w.
func (c *Conn) wake(w *atomic.Uint32, b *bell) {
	if w.CompareAndSwap(1, 0) && !b.ring() {
		c.gone.Store(true)
	}
}

// consumed advances the inbound position by n and wakes a producer that
// waits for room.
func (c *Conn) consumed(n int) {
	c.head += uint64(n)
	c.in.u64(offHead).Store(c.head)
	c.wake(c.in.u32(offPWait), &c.room)
}

// produced advances the outbound position by n and wakes a consumer that
// waits for bytes.
func (c *Conn) produced(n int) {
	c.tail += uint64(n)
	c.out.u64(offTail).Store(c.tail)
	c.wake(c.out.u32(offCWait), &c.data)
}

// span returns the contiguous part of r's data area from position pos,
// at most n bytes.
func span(r ring, pos, n uint64) []byte {
	off := pos & (r.size - 1)
	return r.data[off : off+min(n, r.size-off)]
}

// wait announces in field w that this side waits, checks ready once more,
// and then reads bell b until a byte comes, b's deadline passes (an
// error wrapping os.ErrDeadlineExceeded), the Conn is closed
// (net.ErrClosed) or the other side is gone (nil: the caller sees it).
func (c *Conn) wait(w *atomic.Uint32, b *bell, ready func() bool) error {
	w.Store(1)
	defer w.Store(0)
	if ready() {
		return nil
	}
	_, err := b.sock.Read(b.buf[:])
	switch {
	case err == nil:
		return nil
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, net.ErrClosed):
		return err
	}
	c.gone.Store(true) // EOF, or a reset: the other side closed or died
	return nil
}

// check fails if the Conn is closed, the ring is broken or the
// deadline dl passed. Calls check it before each step, so that one in
// progress when Close is called (ReadFrom and WriteTo in their reader or
// writer) ends with net.ErrClosed, as on a closed socket.
func (c *Conn) check(dl *atomic.Pointer[time.Time]) error {
	if c.closed.Load() {
		return net.ErrClosed
	}
	if c.bad.Load() {
		return ErrCorrupt
	}
	if t := dl.Load(); t != nil && !time.Now().Before(*t) { // monotonic, as the socket's
		return os.ErrDeadlineExceeded
	}
	return nil
}

// waitData waits until bytes are readable or the stream ended.
func (c *Conn) waitData() error {
	return c.wait(c.in.u32(offCWait), &c.data, func() bool {
		avail, eof, err := c.readable()
		return avail > 0 || eof || err != nil
	})
}

// Read reads bytes from the inbound ring. Once the other side ended its
// stream (CloseWrite) or closed or died, and every byte is read, it
// returns io.EOF.
func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if !c.acquire() {
		return 0, net.ErrClosed
	}
	defer c.release()
	for {
		if err := c.check(&c.rdl); err != nil {
			return 0, err
		}
		avail, eof, err := c.readable()
		switch {
		case err != nil:
			return 0, err
		case len(p) == 0:
			return 0, nil
		case avail > 0:
			n := 0
			for n < len(p) && avail > 0 {
				m := copy(p[n:], span(c.in, c.head+uint64(n), avail))
				n += m
				avail -= uint64(m)
			}
			c.consumed(n)
			return n, nil
		case eof:
			c.ended = true
			return 0, io.EOF
		}
		if err := c.waitData(); err != nil {
			return 0, err
		}
	}
}

// WriteTo writes the inbound stream to w until it ends, handing w the
// shared memory itself. It returns nil at the end of the stream.
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if !c.acquire() {
		return 0, net.ErrClosed
	}
	defer c.release()
	var total int64
	for {
		if err := c.check(&c.rdl); err != nil {
			return total, err
		}
		avail, eof, err := c.readable()
		switch {
		case err != nil:
			return total, err
		case avail > 0:
			chunk := span(c.in, c.head, avail)
			n, err := w.Write(chunk)
			if n < 0 || n > len(chunk) {
				return total, fmt.Errorf("ring: writer took %d of %d bytes", n, len(chunk))
			}
			c.consumed(n)
			total += int64(n)
			if err == nil && n < len(chunk) {
				err = io.ErrShortWrite // as io.Copy: the writer broke its contract
			}
			if err != nil {
				return total, err
			}
			continue
		case eof:
			c.ended = true
			return total, nil
		}
		if err := c.waitData(); err != nil {
			return total, err
		}
	}
}

// writable waits until the outbound ring has room, and returns how much.
// It fails once the other side is gone, as writing to a closed socket
// does.
func (c *Conn) writable() (uint64, error) {
	for {
		if err := c.check(&c.wdl); err != nil {
			return 0, err
		}
		switch {
		case c.shut.Load():
			return 0, errWriteShut
		case c.gone.Load():
			return 0, fmt.Errorf("ring: the other side closed: %w", syscall.EPIPE)
		}
		free, err := c.free()
		if err != nil || free > 0 {
			return free, err
		}
		err = c.wait(c.out.u32(offPWait), &c.room, func() bool {
			free, err := c.free()
			return free > 0 || err != nil
		})
		if err != nil {
			return 0, err
		}
	}
}

// endWrite sets the end-of-stream flag once CloseWrite was called and
// no write is in progress; it is called with wmu held and the mapping
// acquired.
func (c *Conn) endWrite() {
	if c.eofSent || !c.shut.Load() {
		return
	}
	c.eofSent = true
	c.out.u32(offPFlags).Or(flagEOF)
	c.wake(c.out.u32(offCWait), &c.data)
}

// lockWrite locks wmu and acquires the mapping for a write; it fails
// once the Conn is closed. A write that succeeds ends with unlockWrite
// and then release.
func (c *Conn) lockWrite() bool {
	c.wmu.Lock()
	if !c.acquire() {
		c.wmu.Unlock()
		return false
	}
	return true
}

// unlockWrite ends a write: it sets the end of stream if CloseWrite was
// called, and unlocks wmu. A CloseWrite that comes after that check
// while wmu is still held cannot take wmu, and leaves the end of stream
// to the holder: so the check is made again once wmu is unlocked, and
// if wmu is taken again by then, the new holder makes it.
func (c *Conn) unlockWrite() {
	c.endWrite()
	c.wmu.Unlock()
	if c.shut.Load() && c.wmu.TryLock() {
		c.endWrite()
		c.wmu.Unlock()
	}
}

// Write writes p to the outbound ring, waiting for room as needed.
func (c *Conn) Write(p []byte) (int, error) {
	if !c.lockWrite() {
		return 0, net.ErrClosed
	}
	defer c.release()
	defer c.unlockWrite()
	total := 0
	for len(p) > 0 {
		free, err := c.writable()
		if err != nil {
			return total, err
		}
		n := 0
		for n < len(p) && uint64(n) < free {
			n += copy(span(c.out, c.tail+uint64(n), free-uint64(n)), p[n:])
		}
		c.produced(n)
		p = p[n:]
		total += n
	}
	return total, nil
}

// ReadFrom reads from r into the outbound ring until r ends, handing r
// the shared memory itself. It returns nil when r returns io.EOF.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	if !c.lockWrite() {
		return 0, net.ErrClosed
	}
	defer c.release()
	defer c.unlockWrite()
	var total int64
	for {
		free, err := c.writable()
		if err != nil {
			return total, err
		}
		buf := span(c.out, c.tail, free)
		n, err := r.Read(buf)
		if n < 0 || n > len(buf) {
			return total, fmt.Errorf("ring: reader returned %d of %d bytes", n, len(buf))
		}
		c.produced(n)
		total += int64(n)
		switch {
		case err == io.EOF:
			return total, nil
		case err != nil:
			return total, err
		}
	}
}

// CloseWrite ends the outbound stream: the other side reads what was
// written, then io.EOF. A write in progress ends the stream when it
// returns (see unlockWrite); it fails once it would wait for room.
func (c *Conn) CloseWrite() error {
	if !c.acquire() {
		return net.ErrClosed
	}
	defer c.release()
	c.shut.Store(true)
	if c.wmu.TryLock() {
		c.endWrite()
		c.wmu.Unlock()
	}
	return nil
}

// Close closes the Conn: calls in it fail with net.ErrClosed (those
// waiting at once, ReadFrom and WriteTo once their reader or writer
// returns), the bells close (the other side's reads end, its writes
// fail), and the mapping goes once the last call using it returns.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed.Swap(true) {
		c.mu.Unlock()
		return net.ErrClosed
	}
	if c.refs == 0 {
		c.unmapLocked()
	}
	c.mu.Unlock()
	err := c.data.sock.Close()
	if err2 := c.room.sock.Close(); err == nil {
		err = err2
	}
	if err != nil {
		return fmt.Errorf("ring: %w", err)
	}
	return nil
}

// LocalAddr and RemoteAddr are the flow socket's.
func (c *Conn) LocalAddr() net.Addr  { return c.data.sock.LocalAddr() }
func (c *Conn) RemoteAddr() net.Addr { return c.data.sock.RemoteAddr() }

// SetDeadline sets the read and write deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline sets the deadline of Read and WriteTo.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.rdl.Store(deadline(t))
	return c.data.sock.SetReadDeadline(t)
}

// SetWriteDeadline sets the deadline of Write and ReadFrom.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.wdl.Store(deadline(t))
	return c.room.sock.SetReadDeadline(t)
}

func deadline(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
