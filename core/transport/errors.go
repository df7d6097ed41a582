package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// OpError is the error of one operation of a transport. It matches, with
// errors.Is and errors.As, both its Kind (a sentinel such as ErrTimeout, if
// any) and the error it wraps, and it is a net.Error whose Timeout reports
// whether Kind is ErrTimeout.
type OpError struct {
	// Transport is the transport's name, the first word of the message.
	Transport string
	// Op is the failed operation, such as "read" or "dial 127.0.0.1:443".
	Op string
	// Kind is the sentinel callers branch on, or nil.
	Kind error
	// Err is the underlying error.
	Err error
}

// Error returns "transport: op: err".
func (e *OpError) Error() string { return e.Transport + ": " + e.Op + ": " + e.Err.Error() }

// Unwrap returns Kind (if any) and Err.
func (e *OpError) Unwrap() []error {
	if e.Kind == nil {
		return []error{e.Err}
	}
	return []error{e.Kind, e.Err}
}

// Timeout reports whether the error is a timeout, as net.Error does.
func (e *OpError) Timeout() bool { return e.Kind == ErrTimeout }

// Temporary is false: it is part of net.Error only for compatibility.
func (e *OpError) Temporary() bool { return false }

var _ net.Error = (*OpError)(nil)

// Classify returns the sentinel that err matches, or nil:
//   - ErrRefused for a refused, reset or broken connection
//     (ECONNREFUSED, ECONNRESET, EPIPE);
//   - ErrTimeout for an expired deadline (os.ErrDeadlineExceeded,
//     context.DeadlineExceeded, or a net.Error whose Timeout is true);
//   - ErrClosed for use of a closed connection (net.ErrClosed,
//     io.ErrClosedPipe).
//
// The cases are tried in that order.
func Classify(err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return ErrRefused
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return ErrTimeout
	case errors.Is(err, net.ErrClosed), errors.Is(err, io.ErrClosedPipe):
		return ErrClosed
	}
	return nil
}

// WrapError wraps err from operation op of the named transport in an
// *OpError whose Kind is Classify(err). Transports with errors of their own
// to classify check those first and build the *OpError themselves.
func WrapError(transport, op string, err error) error {
	return &OpError{Transport: transport, Op: op, Kind: Classify(err), Err: err}
}
