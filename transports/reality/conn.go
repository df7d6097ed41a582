package reality

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"

	"github.com/commucat/commucat/core/transport"
)

// tlsConn is what conn needs of *tls.Conn and *utls.UConn.
type tlsConn interface {
	net.Conn
	CloseWrite() error
}

// conn is an established reality connection: TLS 1.3 over TCP. Its errors
// wrap the core/transport sentinels (see the package doc); CloseWrite
// sends TLS close_notify, so the peer reads io.EOF while it can still
// write back.
type conn struct {
	tlsConn
}

// Read reads from the connection.
func (c *conn) Read(b []byte) (int, error) {
	n, err := c.tlsConn.Read(b)
	if err != nil && err != io.EOF {
		err = wrapErr("read", err)
	}
	return n, err
}

// Write writes to the connection.
func (c *conn) Write(b []byte) (int, error) {
	n, err := c.tlsConn.Write(b)
	if err != nil {
		err = wrapErr("write", err)
	}
	return n, err
}

// CloseWrite ends the write direction with a TLS close_notify alert.
func (c *conn) CloseWrite() error {
	if err := c.tlsConn.CloseWrite(); err != nil {
		return wrapErr("close write", err)
	}
	return nil
}

// Close closes the connection, sending close_notify first.
func (c *conn) Close() error {
	if err := c.tlsConn.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return wrapErr("close", err)
	}
	return nil
}

// opError is an error of this transport: it matches both its
// core/transport sentinel (if any) and the error it wraps.
type opError struct {
	op   string
	kind error // a core/transport sentinel, or nil
	err  error
}

func (e *opError) Error() string { return "reality: " + e.op + ": " + e.err.Error() }

func (e *opError) Unwrap() []error {
	if e.kind == nil {
		return []error{e.err}
	}
	return []error{e.kind, e.err}
}

// Timeout reports whether the error is a timeout, as net.Error does.
func (e *opError) Timeout() bool { return e.kind == transport.ErrTimeout }

// Temporary is false: it is part of net.Error only for compatibility.
func (e *opError) Temporary() bool { return false }

var _ net.Error = (*opError)(nil)

// wrapErr wraps err from operation op with the matching core/transport
// sentinel.
func wrapErr(op string, err error) error {
	var ne net.Error
	var kind error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		kind = transport.ErrRefused
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		kind = transport.ErrTimeout
	case errors.Is(err, net.ErrClosed):
		kind = transport.ErrClosed
	}
	return &opError{op: op, kind: kind, err: err}
}
