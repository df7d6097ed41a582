package ctl

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// maxFDs bounds the descriptors one message may carry that are received
// (and closed) before the message is judged; more are discarded by the
// kernel and the message is a violation.
const maxFDs = 4

// Handler handles one message and the descriptors that came with it. It
// owns fds: it must keep or close each. A non-nil error ends the Conn.
// Handlers run one at a time.
type Handler func(m Msg, fds []int) error

// Conn is one end of a control socket. Reading happens in Run, which calls
// the Handler for each message; Sync processes whatever is already queued
// from any goroutine, so that a message sent before some other event
// (such as the end of a flow's stream) is known to have been handled once
// that event is seen. Send may be called from any goroutine.
type Conn struct {
	uc     *net.UnixConn
	raw    syscall.RawConn
	handle Handler

	mu  sync.Mutex // held while receiving and handling
	err error      // why reading ended; set under mu
	buf [Size + 1]byte
	oob []byte

	wmu sync.Mutex // serializes Send with its deadline
}

// Pair returns the two ends of a new control socket. Both are
// close-on-exec; exec.Cmd.ExtraFiles clears the flag in the child.
func Pair() (a, b *os.File, err error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("ctl: socketpair: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "control"), os.NewFile(uintptr(fds[1]), "control"), nil
}

// FlowBuffer is the send buffer (SO_SNDBUF) of both ends of a flow's
// socket pair. A unix stream socket has no receive buffer of its own: a
// writer waits once this much is queued. The default (net.core.wmem_default,
// usually 208 KiB) holds three 64 KiB writes, so that a bulk transfer
// through a plugin wakes the processes on either side every few writes,
// and each wake-up costs more than the copy it is for; with 2 MiB each side
// moves more per wake-up (benchmarks: about 1.5 times the goodput through a
// spliced plugin). It is a bound, not an allocation, like a TCP socket's
// (whose default bound, net.ipv4.tcp_wmem, is 4 MiB). A process without
// CAP_NET_ADMIN gets at most net.core.wmem_max (the kernel then doubles it
// for its bookkeeping, as it does every SO_SNDBUF).
const FlowBuffer = 2 << 20

// DatagramBuffer is the send buffer (SO_SNDBUF) of both ends of a flow's
// datagram socket pair, which bounds the datagrams queued in each
// direction: about 230 of 1150 bytes, or 8 of 64 KiB (the kernel counts
// its bookkeeping too).
const DatagramBuffer = 256 << 10

// FlowPair returns a new flow socket pair: the local end as a connection,
// the other end as a file to send with a FLOW message.
func FlowPair() (*net.UnixConn, *os.File, error) {
	return socketPair(syscall.SOCK_STREAM, "flow", FlowBuffer)
}

// DatagramPair returns a new datagram socket pair (SOCK_SEQPACKET): the
// local end as a connection, the other end as a file to send with a FLOW
// message.
func DatagramPair() (*net.UnixConn, *os.File, error) {
	return socketPair(syscall.SOCK_SEQPACKET, "datagrams", DatagramBuffer)
}

// socketPair returns a new AF_UNIX socket pair of type typ, whose send
// buffers are buf bytes (the default if 0).
func socketPair(typ int, name string, buf int) (*net.UnixConn, *os.File, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, typ|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("ctl: socketpair: %w", err)
	}
	for _, fd := range fds {
		if buf > 0 {
			setSendBuffer(fd, buf)
		}
	}
	peer := os.NewFile(uintptr(fds[1]), name)
	c, err := unixConn(fds[0], typ, name)
	if err != nil {
		peer.Close()
		return nil, nil, err
	}
	return c, peer, nil
}

// setSendBuffer sets fd's send buffer to n bytes, beyond net.core.wmem_max
// if the process may (CAP_NET_ADMIN), else as far as that limit allows.
// A smaller buffer works, only slower, so errors are ignored.
func setSendBuffer(fd, n int) {
	if syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_SNDBUFFORCE, n) != nil {
		syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_SNDBUF, n) //nolint:errcheck // see above
	}
}

// FlowConn turns a received flow descriptor into a connection. It takes
// ownership of fd and checks that it is an AF_UNIX stream socket.
func FlowConn(fd int) (*net.UnixConn, error) {
	return unixConn(fd, syscall.SOCK_STREAM, "flow")
}

// BellPair returns a new room bell for a flow's rings (package ring): an
// AF_UNIX stream socket pair with the default buffers, the local end as a
// connection, the other end as a file to send with a FLOW message.
func BellPair() (*net.UnixConn, *os.File, error) {
	return socketPair(syscall.SOCK_STREAM, "room bell", 0)
}

// BellConn turns a received room bell descriptor into a connection. It
// takes ownership of fd and checks that it is an AF_UNIX stream socket.
func BellConn(fd int) (*net.UnixConn, error) {
	return unixConn(fd, syscall.SOCK_STREAM, "room bell")
}

// DatagramConn turns a received datagram descriptor into a connection. It
// takes ownership of fd and checks that it is an AF_UNIX SOCK_SEQPACKET
// socket.
func DatagramConn(fd int) (*net.UnixConn, error) {
	return unixConn(fd, syscall.SOCK_SEQPACKET, "datagrams")
}

func unixConn(fd, typ int, name string) (*net.UnixConn, error) {
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	if err := checkSocket(fd, typ); err != nil {
		return nil, err
	}
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("ctl: %s socket: %w", name, err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("ctl: %s socket is a %T", name, c)
	}
	return uc, nil
}

// checkSocket checks that fd is an AF_UNIX socket of type typ.
func checkSocket(fd, typ int) error {
	dom, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_DOMAIN)
	if err != nil {
		return fmt.Errorf("ctl: descriptor %d is not a socket: %w", fd, err)
	}
	t, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TYPE)
	if err != nil {
		return fmt.Errorf("ctl: descriptor %d: %w", fd, err)
	}
	if dom != syscall.AF_UNIX || t != typ {
		return fmt.Errorf("ctl: descriptor %d is socket domain %d type %d, want %d type %d", fd, dom, t, syscall.AF_UNIX, typ)
	}
	return nil
}

// New makes a Conn of f, which must be a control socket; f is left open
// for the caller to close. handle is called for every message received.
func New(f *os.File, handle Handler) (*Conn, error) {
	if err := checkSocket(int(f.Fd()), syscall.SOCK_SEQPACKET); err != nil {
		return nil, err
	}
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("ctl: control socket: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("ctl: control socket is a %T", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		uc.Close()
		return nil, fmt.Errorf("ctl: control socket: %w", err)
	}
	return &Conn{uc: uc, raw: raw, handle: handle, oob: make([]byte, syscall.CmsgSpace(maxFDs*4))}, nil
}

// ViolationError is a protocol violation by the other side.
type ViolationError struct {
	Reason string
}

func (e *ViolationError) Error() string { return "ctl: protocol violation: " + e.Reason }

// Run receives and handles messages until the other side closes its end
// (io.EOF), a handler fails, a message is malformed (*ViolationError) or
// the Conn is closed. It returns why; after it returns, Sync does nothing.
func (c *Conn) Run() error {
	err := c.raw.Read(func(fd uintptr) bool { return c.drainLocked(int(fd)) })
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		if err == nil {
			err = io.EOF
		}
		c.err = err
	}
	return c.err
}

// Sync handles every message already queued on the socket before it
// returns. It returns the error that ended reading, if any.
func (c *Conn) Sync() error {
	var err error
	cerr := c.raw.Control(func(fd uintptr) {
		c.drainLocked(int(fd))
		c.mu.Lock()
		err = c.err
		c.mu.Unlock()
	})
	if err == nil && cerr != nil {
		err = cerr
	}
	return err
}

// drainLocked receives and handles queued messages until none is left
// (false) or reading has ended (true).
func (c *Conn) drainLocked(fd int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.err == nil {
		n, oobn, flags, _, err := syscall.Recvmsg(fd, c.buf[:], c.oob, syscall.MSG_DONTWAIT|syscall.MSG_CMSG_CLOEXEC)
		switch {
		case errors.Is(err, syscall.EAGAIN):
			return false
		case errors.Is(err, syscall.EINTR):
			continue
		case err != nil:
			c.err = fmt.Errorf("ctl: receive: %w", err)
			return true
		}
		fds, ferr := parseRights(c.oob[:oobn])
		switch {
		case ferr != nil:
			c.err = &ViolationError{Reason: ferr.Error()}
		case flags&syscall.MSG_CTRUNC != 0:
			c.err = &ViolationError{Reason: "too many descriptors"}
		case n == 0 && oobn == 0:
			c.err = io.EOF
		case flags&syscall.MSG_TRUNC != 0:
			c.err = &ViolationError{Reason: "message longer than 12 bytes"}
		}
		if c.err != nil {
			closeAll(fds)
			return true
		}
		m, err := Decode(c.buf[:n])
		if err != nil {
			closeAll(fds)
			c.err = &ViolationError{Reason: err.Error()}
			return true
		}
		if err := c.handle(m, fds); err != nil {
			c.err = err
			return true
		}
	}
	return true
}

// parseRights returns the descriptors in a control message buffer. It
// closes them and fails on anything but SCM_RIGHTS.
func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("control message: %w", err)
	}
	var fds []int
	var bad error
	for _, m := range msgs {
		if m.Header.Level != syscall.SOL_SOCKET || m.Header.Type != syscall.SCM_RIGHTS {
			bad = fmt.Errorf("control message level %d type %d", m.Header.Level, m.Header.Type)
			continue
		}
		got, err := syscall.ParseUnixRights(&m)
		if err != nil {
			bad = fmt.Errorf("rights: %w", err)
			continue
		}
		fds = append(fds, got...)
	}
	if bad != nil {
		closeAll(fds)
		return nil, bad
	}
	return fds, nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		syscall.Close(fd)
	}
}

// Send sends m with the descriptors of files attached, in order, waiting
// for room in the socket no later than deadline (none if zero).
func (c *Conn) Send(m Msg, deadline time.Time, files ...*os.File) error {
	var b [Size]byte
	msg := m.Append(b[:0])
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = syscall.UnixRights(fds...)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.uc.SetWriteDeadline(deadline); err != nil {
		return fmt.Errorf("ctl: send %s: %w", m.Type, err)
	}
	if _, _, err := c.uc.WriteMsgUnix(msg, oob, nil); err != nil {
		return fmt.Errorf("ctl: send %s %d: %w", m.Type, m.Flow, err)
	}
	return nil
}

// Close closes the socket; Run returns.
func (c *Conn) Close() error {
	return c.uc.Close()
}
