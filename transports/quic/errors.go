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

// wrapErr wraps err from operation op in a *transport.OpError with the
// matching core/transport sentinel. quic-go's connection errors all unwrap to net.ErrClosed, so the
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
	return &transport.OpError{Transport: Name, Op: op, Kind: kind, Err: err}
}

// closedErr is the error of I/O on a connection after its Close.
func closedErr(op string) error {
	return &transport.OpError{Transport: Name, Op: op, Kind: transport.ErrClosed, Err: net.ErrClosed}
}

// ctxErr reports why ctx ended: a deadline also wraps transport.ErrTimeout.
func ctxErr(op string, ctx context.Context) error {
	err := ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("quic: %s: %w: %w", op, transport.ErrTimeout, err)
	}
	return fmt.Errorf("quic: %s: %w", op, err)
}
