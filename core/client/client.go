// Package client opens a multipath session from a client device to its
// gateway: it races the gateway's endpoints (the invite's transports) with
// staggered starts, as Happy Eyeballs does, runs the hybrid handshake on
// the first connection that opens, and returns a core/router session that
// then joins the other endpoints as extra paths in the background.
package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"syscall"
	"time"

	"github.com/commucat/commucat/core/handshake"
	"github.com/commucat/commucat/core/invite"
	"github.com/commucat/commucat/core/router"
	"github.com/commucat/commucat/core/transport"
)

// ErrNoEndpoint is returned when no endpoint could be used.
var ErrNoEndpoint = errors.New("client: no usable endpoint")

// Config says how to reach the gateway.
type Config struct {
	Static     *handshake.StaticKey // the device's key; required
	Gateway    [32]byte             // the gateway's Noise static public key
	Endpoints  []invite.Endpoint    // in order of preference
	Transports *transport.Registry  // builds transports by name; required
	// Only restricts dialing to one transport name; empty tries all.
	Only string
	// AttemptTimeout bounds each endpoint's dial and handshake; zero: 10s.
	AttemptTimeout time.Duration
	// Stagger is how long the race waits before starting the next
	// endpoint while earlier ones are still trying; zero: 250ms. An
	// attempt that fails starts the next one at once.
	Stagger time.Duration
	Pad     func(msg, n int) int
	// Router configures the session. Its Endpoints are set from
	// Endpoints (filtered by Only); its PadHandshake defaults to Pad and
	// its Logger to Logger.
	Router router.Config
	Logger *slog.Logger // nil: discard
}

// endpoint is one invite endpoint with its transport built.
type endpoint struct {
	inv invite.Endpoint
	ep  router.Endpoint
}

// Dial races the endpoints and returns the (not yet running) session of
// the first one that completes a handshake, with that endpoint. Endpoints
// start Stagger apart, in order, or at once when the one before failed;
// when one wins, the others are cancelled and the session joins them as
// extra paths once it runs. The caller runs the session with Run and
// closes it. The session ends with router.ErrResumeRefused if the gateway
// later forgets it; Dial again then for a full handshake.
//
// Dial builds a transport for each endpoint from Transports. The session
// closes those that are io.Closers when it stops (see
// router.Config.OnStop, which runs after them); a Dial that fails closes
// them before it returns.
func Dial(ctx context.Context, cfg Config) (*router.Session, invite.Endpoint, error) {
	if cfg.Static == nil {
		return nil, invite.Endpoint{}, errors.New("client: no device key")
	}
	if cfg.Transports == nil {
		return nil, invite.Endpoint{}, errors.New("client: no transport registry")
	}
	if cfg.AttemptTimeout < 0 || cfg.Stagger < 0 {
		return nil, invite.Endpoint{}, fmt.Errorf("client: negative AttemptTimeout (%v) or Stagger (%v)", cfg.AttemptTimeout, cfg.Stagger)
	}
	cfg.AttemptTimeout = cmpOr(cfg.AttemptTimeout, 10*time.Second)
	cfg.Stagger = cmpOr(cfg.Stagger, 250*time.Millisecond)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "client")
	var eps []endpoint
	var errs []error
	var built []transport.Transport
	closeAll := func() {
		for _, t := range built {
			transport.Close(t) //nolint:errcheck // nothing to do about it
		}
	}
	for _, ie := range cfg.Endpoints {
		if cfg.Only != "" && ie.Transport != cfg.Only {
			continue
		}
		t, err := cfg.Transports.New(ie.Transport, transport.Params(ie.Params))
		if err != nil {
			errs = append(errs, &AttemptError{Endpoint: ie, Err: err})
			continue
		}
		built = append(built, t)
		addr := ie.Addr
		eps = append(eps, endpoint{inv: ie, ep: router.Endpoint{
			Transport: ie.Transport,
			Addr:      addr,
			Dial:      func(ctx context.Context) (net.Conn, error) { return t.Dial(ctx, addr) },
		}})
	}
	if len(eps) == 0 {
		switch {
		case len(errs) > 0:
			return nil, invite.Endpoint{}, fmt.Errorf("%w: %w", ErrNoEndpoint, errors.Join(errs...))
		case cfg.Only != "":
			return nil, invite.Endpoint{}, fmt.Errorf("%w: the invite has no %q endpoint", ErrNoEndpoint, cfg.Only)
		}
		return nil, invite.Endpoint{}, fmt.Errorf("%w: the invite lists none", ErrNoEndpoint)
	}
	rcfg := cfg.Router
	rcfg.Endpoints = nil
	for _, e := range eps {
		rcfg.Endpoints = append(rcfg.Endpoints, e.ep)
	}
	if rcfg.PadHandshake == nil {
		rcfg.PadHandshake = cfg.Pad
	}
	if rcfg.Logger == nil {
		rcfg.Logger = cfg.Logger
	}
	// The session redials its endpoints as long as it runs: it closes the
	// transports when it stops.
	rcfg.OnStop = func() {
		closeAll()
		if cfg.Router.OnStop != nil {
			cfg.Router.OnStop()
		}
	}
	if err := rcfg.Validate(); err != nil {
		closeAll()
		return nil, invite.Endpoint{}, fmt.Errorf("client: %w", err)
	}
	w, err := race(ctx, cfg, log, eps)
	if err != nil {
		closeAll()
		return nil, invite.Endpoint{}, fmt.Errorf("%w: %w", ErrNoEndpoint, errors.Join(append(errs, err)...))
	}
	log.Debug("connected", "transport", w.ep.inv.Transport)
	s := router.New(router.Client, w.res, w.conn, w.ep.ep, rcfg)
	w.res.Wipe()
	return s, w.ep.inv, nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// win is a completed handshake.
type win struct {
	ep   endpoint
	conn net.Conn
	res  *handshake.Result
}

// race runs the attempts and returns the first handshake that completes;
// every other attempt is cancelled and waited for, and a handshake that
// completed too late is closed (the gateway drops a session whose client
// never sends a record).
func race(ctx context.Context, cfg Config, log *slog.Logger, eps []endpoint) (*win, error) {
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		w   *win
		err error
	}
	results := make(chan result, len(eps))
	stagger := time.NewTimer(cfg.Stagger)
	defer stagger.Stop()
	var (
		winner  *win
		errs    []error
		next    int
		pending int
	)
	startNext := func() {
		if winner != nil || next >= len(eps) || actx.Err() != nil {
			return
		}
		e := eps[next]
		next++
		pending++
		stagger.Reset(cfg.Stagger)
		go func() {
			w, err := attempt(actx, cfg, e)
			if err != nil {
				log.Debug("endpoint failed", "transport", e.inv.Transport, "err", err)
				err = &AttemptError{Endpoint: e.inv, Err: err}
			}
			results <- result{w, err}
		}()
	}
	startNext()
	for pending > 0 {
		select {
		case <-stagger.C:
			startNext()
		case r := <-results:
			pending--
			switch {
			case r.err != nil:
				errs = append(errs, r.err)
				startNext() // a failure starts the next endpoint at once
			case winner == nil:
				winner = r.w
				cancel()
			default:
				r.w.conn.Close()
				r.w.res.Wipe()
			}
		}
	}
	if winner != nil {
		return winner, nil
	}
	if err := ctx.Err(); err != nil {
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
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

// attempt dials one endpoint and runs the handshake on it.
func attempt(ctx context.Context, cfg Config, e endpoint) (*win, error) {
	actx, cancel := context.WithTimeout(ctx, cfg.AttemptTimeout)
	defer cancel()
	conn, err := e.ep.Dial(actx)
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
	return &win{ep: e, conn: conn, res: res}, nil
}
