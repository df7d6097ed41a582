package websocket

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

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

// wrapErr wraps err from operation op with the matching core/transport
// sentinel. A pin mismatch gets none; a rejected upgrade, or a WebSocket
// that ends without a close frame (an unexpected EOF), is a refusal.
func wrapErr(op string, err error) error {
	var kind error
	switch {
	case errors.Is(err, ErrPinMismatch):
	case errors.Is(err, ErrRejected), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		kind = transport.ErrRefused
	default:
		kind = transport.Classify(err)
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
		return fmt.Errorf("websocket: %s: %w: %w", op, transport.ErrTimeout, err)
	}
	return fmt.Errorf("websocket: %s: %w", op, err)
}
