package kcp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/commucat/commucat/core/transport"
)

// opError is an error of this transport: it matches both its
// core/transport sentinel (if any) and the error it wraps.
type opError struct {
	op   string
	kind error // a core/transport sentinel, or nil
	err  error
}

func (e *opError) Error() string { return "kcp: " + e.op + ": " + e.err.Error() }

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
// sentinel. kcp-go reports deadlines as a net.Error whose Timeout is true
// and a closed session as io.ErrClosedPipe.
func wrapErr(op string, err error) error {
	var ne net.Error
	var kind error
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		kind = transport.ErrTimeout
	case errors.Is(err, net.ErrClosed), errors.Is(err, io.ErrClosedPipe):
		kind = transport.ErrClosed
	case errors.Is(err, errProtocol):
		kind = transport.ErrRefused
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
		return fmt.Errorf("kcp: %s: %w: %w", op, transport.ErrTimeout, err)
	}
	return fmt.Errorf("kcp: %s: %w", op, err)
}
