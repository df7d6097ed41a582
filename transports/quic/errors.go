package quic

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"

	quicgo "github.com/quic-go/quic-go"

	"github.com/commucat/commucat/core/transport"
)

// opError is an error of this transport: it matches both its
// core/transport sentinel (if any) and the error it wraps.
type opError struct {
	op   string
	kind error // a core/transport sentinel, or nil
	err  error
}

func (e *opError) Error() string { return "quic: " + e.op + ": " + e.err.Error() }

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
// sentinel. quic-go's connection errors all unwrap to net.ErrClosed, so the
// typed ones are told apart first: the peer's doing is ErrRefused, a
// deadline or an idle connection ErrTimeout, and only our own closing
// ErrClosed.
func wrapErr(op string, err error) error {
	var (
		appErr    *quicgo.ApplicationError
		streamErr *quicgo.StreamError
		tErr      *quicgo.TransportError
		idle      *quicgo.IdleTimeoutError
		hsTimeout *quicgo.HandshakeTimeoutError
		reset     *quicgo.StatelessResetError
		ne        net.Error
		kind      error
	)
	switch {
	case errors.Is(err, ErrPinMismatch):
		kind = nil
	case errors.As(err, &idle), errors.As(err, &hsTimeout),
		errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		kind = transport.ErrTimeout
	case errors.As(err, &appErr):
		kind = transport.ErrClosed
		if appErr.Remote {
			kind = transport.ErrRefused
		}
	case errors.As(err, &streamErr):
		kind = transport.ErrClosed
		if streamErr.Remote {
			kind = transport.ErrRefused
		}
	case errors.As(err, &tErr):
		if tErr.Remote {
			kind = transport.ErrRefused
		}
	case errors.As(err, &reset):
		kind = transport.ErrRefused
	case errors.As(err, &ne) && ne.Timeout():
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

// ctxErr reports why ctx ended: a deadline also wraps transport.ErrTimeout.
func ctxErr(op string, ctx context.Context) error {
	err := ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("quic: %s: %w: %w", op, transport.ErrTimeout, err)
	}
	return fmt.Errorf("quic: %s: %w", op, err)
}
