package websocket

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"

	"github.com/commucat/commucat/core/transport"
)

// Sentinel errors of this transport, wrapped together with the matching
// core/transport sentinel.
var (
	// ErrPinMismatch is wrapped by Dial's error when the server's
	// certificate does not carry the pinned public key.
	ErrPinMismatch = errors.New("websocket: server certificate does not match the pin")
	// ErrRejected is wrapped by Dial's error when the server answered the
	// WebSocket handshake with something other than 101 Switching
	// Protocols: a wrong path, or a server that is not a gateway. It comes
	// with transport.ErrRefused.
	ErrRejected = errors.New("websocket: server did not upgrade the connection")
)

// opError is an error of this transport: it matches both its
// core/transport sentinel (if any) and the error it wraps.
type opError struct {
	op   string
	kind error // a core/transport sentinel, or nil
	err  error
}

func (e *opError) Error() string { return "websocket: " + e.op + ": " + e.err.Error() }

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
	case errors.Is(err, ErrPinMismatch):
	case errors.Is(err, ErrRejected),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		// The peer refused, reset or dropped the connection (a WebSocket
		// that ends without a close frame ends with an unexpected EOF).
		kind = transport.ErrRefused
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		kind = transport.ErrTimeout
	case errors.Is(err, net.ErrClosed):
		kind = transport.ErrClosed
	}
	return &opError{op: op, kind: kind, err: err}
}

// closedErr is the error of I/O on a connection after its Close.
func closedErr(op string) error {
	return &opError{op: op, kind: transport.ErrClosed, err: net.ErrClosed}
}

// timeoutErr is the error of I/O past its deadline.
func timeoutErr(op string) error {
	return &opError{op: op, kind: transport.ErrTimeout, err: os.ErrDeadlineExceeded}
}

// ctxErr reports why ctx ended: a deadline also wraps transport.ErrTimeout.
func ctxErr(op string, ctx context.Context) error {
	err := ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("websocket: %s: %w: %w", op, transport.ErrTimeout, err)
	}
	return fmt.Errorf("websocket: %s: %w", op, err)
}
