// Package tcp is CommuCat's plain TCP transport: no obfuscation, no
// encryption of its own (sessions seal every record above it). It is the
// reference implementation of core/transport and the baseline the other
// transports are measured against, and it serves networks that do not
// block plain TCP.
//
// Connections have TCP_NODELAY set, since CommuCat writes whole records and
// wants them sent at once. Their I/O errors wrap the core/transport
// sentinels: a read or write past its deadline matches transport.ErrTimeout
// as well as os.ErrDeadlineExceeded, I/O on a closed connection matches
// transport.ErrClosed as well as net.ErrClosed, and a reset matches
// transport.ErrRefused. io.EOF is returned as is.
package tcp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/commucat/commucat/core/transport"
)

// Name is the transport's registered name.
const Name = "tcp"

// Transport dials and listens on plain TCP. The zero value is ready to use
// and a Transport is safe for concurrent use.
type Transport struct{}

var _ transport.Transport = (*Transport)(nil)

// New returns a TCP transport.
func New() *Transport { return &Transport{} }

// Factory builds a TCP transport for the transport registry. TCP takes no
// parameters: any key is rejected with transport.ErrBadParams.
func Factory(p transport.Params) (transport.Transport, error) {
	if len(p) > 0 {
		keys := make([]string, 0, len(p))
		for k := range p {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		return nil, fmt.Errorf("tcp: unknown parameters %s: %w", strings.Join(keys, ", "), transport.ErrBadParams)
	}
	return New(), nil
}

// Name returns "tcp".
func (*Transport) Name() string { return Name }

// Dial connects to addr ("host:port"). ctx bounds the whole connection
// set-up, including name resolution. A refused connection wraps
// transport.ErrRefused; a ctx deadline or a connect timeout wraps
// transport.ErrTimeout.
func (*Transport) Dial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, wrapErr("dial "+addr, err)
	}
	tc, ok := c.(*net.TCPConn)
	if !ok { // not reached: DialContext("tcp") returns a *net.TCPConn
		c.Close()
		return nil, fmt.Errorf("tcp: dial %s: got %T", addr, c)
	}
	if err := tc.SetNoDelay(true); err != nil {
		tc.Close()
		return nil, wrapErr("dial "+addr, err)
	}
	return &conn{TCPConn: tc}, nil
}

// Listen binds addr ("host:port"; port 0 picks a free one) and returns a
// listener. ctx bounds only the bind, not the listener's life.
func (*Transport) Listen(ctx context.Context, addr string) (transport.Listener, error) {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, wrapErr("listen "+addr, err)
	}
	return &listener{
		ln:   l.(*net.TCPListener),
		sem:  make(chan struct{}, 1),
		done: make(chan struct{}),
	}, nil
}

// listener is a transport.Listener over a *net.TCPListener. Accept is
// made ctx-aware without a goroutine of its own: one Accept at a time
// waits in the kernel, and a ctx that ends moves the listener's deadline
// into the past to wake it. Connections not yet accepted stay in the
// kernel's backlog.
type listener struct {
	ln   *net.TCPListener
	sem  chan struct{} // holds a token while an Accept waits in ln.Accept
	done chan struct{} // closed by Close

	closeOnce sync.Once
}

// pastDeadline wakes a blocked Accept.
var pastDeadline = time.Unix(1, 0)

// Accept waits for the next connection, until ctx ends or the listener is
// closed. After Close it returns an error wrapping transport.ErrClosed; when
// ctx ends, one wrapping ctx.Err() (and transport.ErrTimeout for a
// deadline). Concurrent calls are served one at a time. A failed accept of
// one connection (the peer reset it while it waited in the backlog) is
// skipped, not returned; other accept errors, such as running out of file
// descriptors, are returned wrapped and leave the listener usable.
func (l *listener) Accept(ctx context.Context) (net.Conn, error) {
	select {
	case <-l.done:
		return nil, l.closedErr()
	case <-ctx.Done():
		return nil, ctxErr(ctx)
	case l.sem <- struct{}{}:
	}
	defer func() { <-l.sem }()
	for {
		if isDone(l.done) {
			return nil, l.closedErr()
		}
		if ctx.Err() != nil {
			return nil, ctxErr(ctx)
		}
		c, err := l.acceptOnce(ctx)
		if err == nil {
			if err := c.SetNoDelay(true); err != nil {
				c.Close()
				continue
			}
			return &conn{TCPConn: c}, nil
		}
		switch {
		case isDone(l.done) || errors.Is(err, net.ErrClosed):
			return nil, l.closedErr()
		case ctx.Err() != nil:
			return nil, ctxErr(ctx)
		case errors.Is(err, os.ErrDeadlineExceeded):
			// Only acceptOnce sets a deadline and it clears it again, so
			// this is not expected; clear it and wait on.
			l.ln.SetDeadline(time.Time{}) //nolint:errcheck // a closed listener is caught above
			continue
		case errors.Is(err, syscall.ECONNABORTED), errors.Is(err, syscall.ECONNRESET):
			continue // the peer gave up while in the backlog
		default:
			return nil, wrapErr("accept", err)
		}
	}
}

// acceptOnce calls ln.Accept once, with ctx able to interrupt it. It
// returns only after the interrupting callback, if it started, has
// finished, and it leaves the listener without a deadline.
func (l *listener) acceptOnce(ctx context.Context) (*net.TCPConn, error) {
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		l.ln.SetDeadline(pastDeadline) //nolint:errcheck // a closed listener is fine
	})
	c, err := l.ln.AcceptTCP()
	if !stop() {
		<-fired
		l.ln.SetDeadline(time.Time{}) //nolint:errcheck // a closed listener is fine
	}
	return c, err
}

// Close stops the listener: a pending Accept returns transport.ErrClosed.
// Connections already accepted stay open. Close is idempotent; only the
// first call can return an error.
func (l *listener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.done)
		if cerr := l.ln.Close(); cerr != nil {
			err = fmt.Errorf("tcp: close listener: %w", cerr)
		}
	})
	return err
}

// Addr is the address the listener is bound to.
func (l *listener) Addr() net.Addr { return l.ln.Addr() }

func (l *listener) closedErr() error {
	return fmt.Errorf("tcp: accept on %s: %w", l.ln.Addr(), transport.ErrClosed)
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// ctxErr reports why ctx ended: a deadline also wraps transport.ErrTimeout.
func ctxErr(ctx context.Context) error {
	err := ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("tcp: accept: %w: %w", transport.ErrTimeout, err)
	}
	return fmt.Errorf("tcp: accept: %w", err)
}

// conn is a TCP connection whose errors wrap the core/transport sentinels.
// CloseWrite, SetNoDelay and the rest of *net.TCPConn's methods are
// promoted unchanged.
type conn struct {
	*net.TCPConn
}

// Read reads from the connection; see the package doc for its errors.
func (c *conn) Read(b []byte) (int, error) {
	n, err := c.TCPConn.Read(b)
	if err != nil && err != io.EOF {
		err = wrapErr("read", err)
	}
	return n, err
}

// Write writes to the connection; see the package doc for its errors.
func (c *conn) Write(b []byte) (int, error) {
	n, err := c.TCPConn.Write(b)
	if err != nil {
		err = wrapErr("write", err)
	}
	return n, err
}

// ReadFrom copies r into the connection, using splice or sendfile where the
// kernel can.
func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	n, err := c.TCPConn.ReadFrom(r)
	if err != nil {
		err = wrapErr("write", err)
	}
	return n, err
}

// WriteTo copies the connection into w until EOF.
func (c *conn) WriteTo(w io.Writer) (int64, error) {
	n, err := c.TCPConn.WriteTo(w)
	if err != nil {
		err = wrapErr("read", err)
	}
	return n, err
}

// wrapErr wraps err from operation op with the matching core/transport
// sentinel.
func wrapErr(op string, err error) error { return transport.WrapError(Name, op, err) }

// ServerFactory builds the gateway side of the plain TCP transport. It takes
// no parameters and keeps no state, and clients need no parameters.
func ServerFactory(p transport.Params, _ string) (transport.Transport, transport.Params, error) {
	t, err := Factory(p)
	return t, nil, err
}
