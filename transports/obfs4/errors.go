package obfs4

import (
	"context"
	"errors"
	"fmt"
	"io"

	obfs4lib "gitlab.com/yawning/obfs4.git/transports/obfs4"

	"github.com/commucat/commucat/core/transport"
)

// ErrHandshake is wrapped by Dial's error when the server answered with a
// handshake that does not authenticate: it is not the server the cert
// names, or the bytes were changed on the way.
var ErrHandshake = errors.New("obfs4: handshake failed")

// wrapErr wraps err from operation op with the matching core/transport
// sentinel.
func wrapErr(op string, err error) error { return transport.WrapError(Name, op, err) }

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
		return &transport.OpError{Transport: Name, Op: op, Kind: transport.ErrRefused, Err: err}
	case errors.Is(err, obfs4lib.ErrInvalidHandshake), errors.Is(err, obfs4lib.ErrNtorFailed),
		errors.As(err, &mac), errors.As(err, &auth):
		return &transport.OpError{Transport: Name, Op: op, Kind: ErrHandshake, Err: err}
	}
	return wrapErr(op, err)
}

// ctxErr reports why ctx ended: a deadline also wraps transport.ErrTimeout.
func ctxErr(op string, ctx context.Context) error {
	err := ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		return &transport.OpError{Transport: Name, Op: op, Kind: transport.ErrTimeout, Err: err}
	}
	return fmt.Errorf("obfs4: %s: %w", op, err)
}
