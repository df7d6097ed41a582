// Package client opens a session from a client device to its gateway: it
// tries the gateway's endpoints in the invite's order, runs the hybrid
// handshake on the first connection that opens, and returns the session.
package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"syscall"
	"time"

	"github.com/commucat/commucat/core/handshake"
	"github.com/commucat/commucat/core/invite"
	"github.com/commucat/commucat/core/session"
	"github.com/commucat/commucat/core/transport"
)

// ErrNoEndpoint is returned when no endpoint could be used.
var ErrNoEndpoint = errors.New("client: no usable endpoint")

// Config says how to reach the gateway.
type Config struct {
	Static     *handshake.StaticKey // the device's key; required
	Gateway    [32]byte             // the gateway's Noise static public key
	Endpoints  []invite.Endpoint    // in the order to try
	Transports *transport.Registry  // builds transports by name
	// Only restricts dialing to one transport name; empty tries all.
	Only string
	// AttemptTimeout bounds each endpoint's dial and handshake; zero: 10s.
	AttemptTimeout time.Duration
	Pad            func(msg, n int) int
	Session        session.Config
	Logger         *slog.Logger // nil: discard
}

// Dial connects to the first endpoint that completes a handshake and
// returns the (not yet running) session and the endpoint used. The caller
// runs the session with Run and closes it.
func Dial(ctx context.Context, cfg Config) (*session.Session, invite.Endpoint, error) {
	if cfg.Static == nil {
		return nil, invite.Endpoint{}, errors.New("client: no device key")
	}
	if cfg.AttemptTimeout == 0 {
		cfg.AttemptTimeout = 10 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "client")
	var errs []error
	tried := 0
	for _, ep := range cfg.Endpoints {
		if cfg.Only != "" && ep.Transport != cfg.Only {
			continue
		}
		tried++
		s, err := attempt(ctx, cfg, ep)
		if err == nil {
			log.Debug("connected", "transport", ep.Transport)
			return s, ep, nil
		}
		log.Debug("endpoint failed", "transport", ep.Transport, "err", err)
		errs = append(errs, &AttemptError{Endpoint: ep, Err: err})
		if ctx.Err() != nil {
			break
		}
	}
	if tried == 0 {
		if cfg.Only != "" {
			return nil, invite.Endpoint{}, fmt.Errorf("%w: the invite has no %q endpoint", ErrNoEndpoint, cfg.Only)
		}
		return nil, invite.Endpoint{}, fmt.Errorf("%w: the invite lists none", ErrNoEndpoint)
	}
	return nil, invite.Endpoint{}, fmt.Errorf("%w: %w", ErrNoEndpoint, errors.Join(errs...))
}

// AttemptError is why one endpoint could not be used.
type AttemptError struct {
	Endpoint invite.Endpoint
	Err      error
}

// Error says in plain words what went wrong with the endpoint; Unwrap gives
// the full chain.
func (e *AttemptError) Error() string {
	where := e.Endpoint.Transport + " " + e.Endpoint.Addr
	var he *handshakeError
	switch {
	case errors.As(e.Err, &he) && (errors.Is(he.err, io.EOF) || errors.Is(he.err, io.ErrUnexpectedEOF) || errors.Is(he.err, syscall.ECONNRESET)):
		return where + ": the gateway closed the connection during the handshake (the invite's gateway key is wrong, the gateway refused us, or the connection is being interfered with)"
	case errors.Is(e.Err, transport.ErrRefused):
		return where + ": connection refused (is the gateway running?)"
	case errors.Is(e.Err, transport.ErrTimeout), errors.Is(e.Err, context.DeadlineExceeded):
		return where + ": timed out"
	}
	return where + ": " + e.Err.Error()
}

func (e *AttemptError) Unwrap() error { return e.Err }

type handshakeError struct{ err error }

func (e *handshakeError) Error() string { return "handshake: " + e.err.Error() }
func (e *handshakeError) Unwrap() error { return e.err }

func attempt(ctx context.Context, cfg Config, ep invite.Endpoint) (*session.Session, error) {
	t, err := cfg.Transports.New(ep.Transport, transport.Params(ep.Params))
	if err != nil {
		return nil, err
	}
	actx, cancel := context.WithTimeout(ctx, cfg.AttemptTimeout)
	defer cancel()
	conn, err := t.Dial(actx, ep.Addr)
	if err != nil {
		return nil, err
	}
	res, err := handshake.Client(actx, conn, handshake.ClientConfig{
		Static:       cfg.Static,
		ServerPublic: cfg.Gateway,
		Pad:          cfg.Pad,
	})
	if err != nil {
		conn.Close()
		return nil, &handshakeError{err}
	}
	keys := session.Keys{Send: res.SendKey, Recv: res.RecvKey}
	res.Wipe()
	s := session.New(conn, keys, cfg.Session)
	keys.Wipe()
	return s, nil
}
