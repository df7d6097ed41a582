package obfs4

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"

	obfs4lib "gitlab.com/yawning/obfs4.git/transports/obfs4"

	"github.com/commucat/commucat/core/transport"
)

// ErrHandshake is wrapped by Dial's error when the server answered with a
// handshake that does not authenticate: it is not the server the cert
// names, or the bytes were changed on the way.
var ErrHandshake = errors.New("obfs4: handshake failed")

// opError is an error of this transport: it matches both its kind (a
// core/transport sentinel or ErrHandshake, if any) and the error it wraps.
type opError struct {
	op   string
	kind error
	err  error
}

func (e *opError) Error() string { return "obfs4: " + e.op + ": " + e.err.Error() }

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
	case errors.Is(err, net.ErrClosed), errors.Is(err, io.ErrClosedPipe):
		kind = transport.ErrClosed
	}
	return &opError{op: op, kind: kind, err: err}
}

// handshakeErr wraps the failure of a client handshake, preferring ctx's
// reason: the handshake fails with a closed connection when ctx ends.
func handshakeErr(op string, ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctxErr(op, ctx)
	}
	var mac *obfs4lib.InvalidMacError
	var auth *obfs4lib.InvalidAuthError
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		// The server closed before answering: it refused us.
		return &opError{op: op, kind: transport.ErrRefused, err: err}
	case errors.Is(err, obfs4lib.ErrInvalidHandshake), errors.Is(err, obfs4lib.ErrNtorFailed),
		errors.As(err, &mac), errors.As(err, &auth):
		return &opError{op: op, kind: ErrHandshake, err: err}
	}
	return wrapErr(op, err)
}

// ctxErr reports why ctx ended: a deadline also wraps transport.ErrTimeout.
func ctxErr(op string, ctx context.Context) error {
	err := ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		return &opError{op: op, kind: transport.ErrTimeout, err: err}
	}
	return fmt.Errorf("obfs4: %s: %w", op, err)
}
