package kcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/commucat/commucat/core/transport"
)

// wrapErr wraps err from operation op with the matching core/transport
// sentinel. kcp-go reports deadlines as a net.Error whose Timeout is true
// and a closed session as io.ErrClosedPipe, which transport.Classify both
// knows; a protocol violation by the peer is a refusal.
func wrapErr(op string, err error) error {
	kind := transport.Classify(err)
	if kind == nil && errors.Is(err, errProtocol) {
		kind = transport.ErrRefused
	}
	return &transport.OpError{Transport: Name, Op: op, Kind: kind, Err: err}
}

// closedErr is the error of I/O on a connection after its Close.
func closedErr(op string) error {
	return &transport.OpError{Transport: Name, Op: op, Kind: transport.ErrClosed, Err: net.ErrClosed}
}

// timeoutErr is the error of I/O past its deadline.
func timeoutErr(op string) error {
	return &transport.OpError{Transport: Name, Op: op, Kind: transport.ErrTimeout, Err: os.ErrDeadlineExceeded}
}

// ctxErr reports why ctx ended: a deadline also wraps transport.ErrTimeout.
func ctxErr(op string, ctx context.Context) error {
	err := ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("kcp: %s: %w: %w", op, transport.ErrTimeout, err)
	}
	return fmt.Errorf("kcp: %s: %w", op, err)
}
