// Package gateway is the gateway's connection front: it listens on every
// configured transport, reads the first message of each connection, joins
// connections that carry a path-join token to their multipath session
// (core/router), and otherwise limits and times out handshakes per source,
// runs the hybrid Noise handshake, and hands each resulting session to a
// Handler (the messaging backend, in the commucat binary) once the client
// has confirmed it with its first record.
//
// A Server is started once with Run and stops when Run's context ends; Run
// returns only after every listener, connection and session goroutine has
// exited.
package gateway

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commucat/commucat/core/handshake"
	"github.com/commucat/commucat/core/router"
	"github.com/commucat/commucat/core/session"
	"github.com/commucat/commucat/core/transport"
)

// Handler serves sessions whose handshake succeeded. peer is the client's
// static public key, as proven by the handshake. s is a multipath session:
// paths the client joins later and resumptions after every path died stay
// within this one call. ServeSession returns when it is done with the
// session or ctx ends; the server then closes the session.
type Handler interface {
	ServeSession(ctx context.Context, peer [32]byte, s *router.Session) error
}

// Endpoint is one transport and the address to listen on.
type Endpoint struct {
	Transport transport.Transport
	Addr      string
}

// Config configures a Server. Zero durations and limits take the documented
// defaults.
type Config struct {
	Static    *handshake.StaticKey // the gateway's Noise static key; required
	Endpoints []Endpoint           // at least one

	HandshakeTimeout time.Duration // zero: 10s
	MaxSkew          time.Duration // zero: 2m
	Rate             float64       // handshakes per second per source; zero: 5
	Burst            int           // zero: 20
	MaxConns         int           // connections served at once; zero: 1024
	// MaxPerSource bounds the connections from one source (an IPv4
	// address or an IPv6 /64, see transport.SourcePrefix) that are
	// still before their session: reading the first message, in the
	// handshake, or waiting for the client's first record. It applies
	// only while more than half of MaxConns are taken, so that one host
	// holding silent connections open cannot take every slot; a
	// connection beyond it is then closed at once. Zero: MaxConns/16,
	// at least 1; negative: no bound (for an endpoint whose every
	// connection comes from one local proxy).
	MaxPerSource int
	Pad          func(msg, n int) int

	// Router configures every session. Its PadHandshake defaults to Pad,
	// and its Logger to Logger.
	Router router.Config
	Logger *slog.Logger // nil: discard
	// UnsafeLogging puts peer addresses into logs; off by default.
	UnsafeLogging bool
}

// Server accepts connections on every endpoint and serves sessions.
type Server struct {
	cfg     Config
	h       Handler
	log     *slog.Logger
	replay  *handshake.ReplayCache
	limiter *handshake.RateLimiter
	sem     chan struct{}
	perSrc  *transport.SourceLimit // connections before their session, per source
	table   router.Table
	count   counters

	mu        sync.Mutex
	listeners []transport.Listener
	ran       bool // Run was called
}

// New checks cfg and returns a Server that is not yet listening.
func New(cfg Config, h Handler) (*Server, error) {
	if cfg.Static == nil {
		return nil, errors.New("gateway: no static key")
	}
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("gateway: no endpoints")
	}
	for i, ep := range cfg.Endpoints {
		if ep.Transport == nil {
			return nil, fmt.Errorf("gateway: endpoint %d (%s) has no transport", i, ep.Addr)
		}
	}
	if h == nil {
		return nil, errors.New("gateway: no handler")
	}
	switch {
	case cfg.HandshakeTimeout < 0:
		return nil, fmt.Errorf("gateway: negative HandshakeTimeout %v", cfg.HandshakeTimeout)
	case cfg.Rate < 0:
		return nil, fmt.Errorf("gateway: negative Rate %v", cfg.Rate)
	case cfg.Burst < 0:
		return nil, fmt.Errorf("gateway: negative Burst %d", cfg.Burst)
	case cfg.MaxConns < 0:
		return nil, fmt.Errorf("gateway: negative MaxConns %d", cfg.MaxConns)
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.MaxSkew == 0 {
		cfg.MaxSkew = 2 * time.Minute
	}
	if cfg.Rate == 0 {
		cfg.Rate = 5
	}
	if cfg.Burst == 0 {
		cfg.Burst = 20
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = 1024
	}
	if cfg.MaxPerSource == 0 {
		cfg.MaxPerSource = max(1, cfg.MaxConns/16)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Router.Validate(); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	replay := handshake.NewReplayCache(1 << 16)
	hcfg := handshake.ServerConfig{Static: cfg.Static, Replay: replay, MaxSkew: cfg.MaxSkew}
	if err := hcfg.Validate(); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	if cfg.Router.PadHandshake == nil {
		cfg.Router.PadHandshake = cfg.Pad
	}
	if cfg.Router.Logger == nil {
		cfg.Router.Logger = cfg.Logger
	}
	cfg.Router.UnsafeLogging = cfg.Router.UnsafeLogging || cfg.UnsafeLogging
	return &Server{
		cfg:     cfg,
		h:       h,
		log:     log.With("component", "gateway"),
		replay:  replay,
		limiter: handshake.NewRateLimiter(cfg.Rate, cfg.Burst, 1<<16),
		sem:     make(chan struct{}, cfg.MaxConns),
		perSrc:  transport.NewSourceLimit(cfg.MaxPerSource),
	}, nil
}

// Listen binds every endpoint and returns the bound addresses in endpoint
// order. It fails, closing what it bound, if any endpoint fails.
func (s *Server) Listen(ctx context.Context) ([]net.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listeners != nil {
		return nil, errors.New("gateway: already listening")
	}
	var addrs []net.Addr
	for _, ep := range s.cfg.Endpoints {
		l, err := ep.Transport.Listen(ctx, ep.Addr)
		if err != nil {
			for _, l := range s.listeners {
				l.Close()
			}
			s.listeners = nil
			return nil, fmt.Errorf("gateway: listen %s on %s: %w", ep.Transport.Name(), ep.Addr, err)
		}
		s.listeners = append(s.listeners, l)
		addrs = append(addrs, l.Addr())
	}
	return addrs, nil
}

// Run serves connections on the listeners bound by Listen (binding them
// first if Listen was not called) until ctx ends. It returns after every
// goroutine it started has exited. A Server runs once: a second call
// returns an error at once (the first closed the listeners).
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.ran {
		s.mu.Unlock()
		return errors.New("gateway: Run called more than once")
	}
	s.ran = true
	bound := s.listeners != nil
	s.mu.Unlock()
	if !bound {
		if _, err := s.Listen(ctx); err != nil {
			return err
		}
	}
	s.mu.Lock()
	listeners := s.listeners
	s.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for i, l := range listeners {
		name := s.cfg.Endpoints[i].Transport.Name()
		wg.Go(func() { s.acceptLoop(ctx, name, l, &wg) })
	}
	<-ctx.Done()
	for _, l := range listeners {
		l.Close()
	}
	wg.Wait()
	return nil
}

func (s *Server) acceptLoop(ctx context.Context, name string, l transport.Listener, wg *sync.WaitGroup) {
	log := s.log.With("transport", name)
	backoff := 5 * time.Millisecond
	for {
		conn, err := l.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, transport.ErrClosed) {
				// Closed by someone else while the gateway runs: no
				// client reaches this transport any more.
				log.Error("listener closed; the transport is no longer served", "err", err)
				return
			}
			log.Warn("accept failed", "err", err)
			// Transient errors (out of descriptors) must not spin the CPU.
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		select {
		case s.sem <- struct{}{}:
		default:
			s.count.overloaded.Add(1)
			log.Warn("connection refused: too many connections", "max_conns", s.cfg.MaxConns)
			conn.Close()
			continue
		}
		release, ok := s.perSrc.Take(conn.RemoteAddr(), transport.Scarce(s.sem))
		if !ok {
			<-s.sem
			s.count.overloaded.Add(1)
			log.Debug("connection refused: too many connections from one source", "max_per_source", s.cfg.MaxPerSource, s.peerAttr(conn))
			conn.Close()
			continue
		}
		wg.Go(func() {
			defer func() { <-s.sem }()
			defer release()
			s.serveConn(ctx, log, name, conn, release)
		})
	}
}

func (s *Server) peerAttr(conn net.Conn) slog.Attr {
	if s.cfg.UnsafeLogging && conn.RemoteAddr() != nil {
		return slog.String("peer_addr", conn.RemoteAddr().String())
	}
	return slog.String("peer_addr", "[scrubbed]")
}

// errAttr is err for a log line about conn. Unless UnsafeLogging is set,
// conn's remote address is scrubbed from its text: the errors of a
// connection's I/O name both ends (net.OpError's "read tcp
// 10.0.0.1:443->198.51.100.7:50123: i/o timeout").
func (s *Server) errAttr(conn net.Conn, err error) slog.Attr {
	if err == nil || s.cfg.UnsafeLogging || conn.RemoteAddr() == nil {
		return slog.Any("err", err)
	}
	return slog.String("err", scrubAddr(err.Error(), conn.RemoteAddr().String()))
}

// scrubAddr replaces addr, an address as net.Addr.String writes it, and
// its host in msg with "[scrubbed]". An IP host is also replaced in its
// other spellings (IPv4-mapped, unmapped).
func scrubAddr(msg, addr string) string {
	const scrubbed = "[scrubbed]"
	if addr == "" {
		return msg
	}
	msg = strings.ReplaceAll(msg, addr, scrubbed)
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return msg
	}
	hosts := []string{host}
	if ip, err := netip.ParseAddr(host); err == nil {
		hosts = append(hosts, ip.WithZone("").String(), ip.Unmap().String(), netip.AddrFrom16(ip.As16()).String())
	}
	// The longest first, so that no part of a longer spelling is left.
	slices.SortFunc(hosts, func(a, b string) int { return len(b) - len(a) })
	for _, h := range hosts {
		if h != "" {
			msg = strings.ReplaceAll(msg, h, scrubbed)
		}
	}
	return msg
}

func sourceOf(conn net.Conn) string {
	if conn.RemoteAddr() == nil {
		return ""
	}
	a := conn.RemoteAddr().String()
	if host, _, err := net.SplitHostPort(a); err == nil {
		return host
	}
	return a
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += n
	return n, err
}

// prefixConn replays the first message, already read, before the rest of
// the connection, so that the handshake reads it again.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// serveConn serves conn from its first message to the end of its session.
// release uncounts conn from its source's connections before their
// session; serveConn calls it once the client has confirmed the session.
func (s *Server) serveConn(ctx context.Context, log *slog.Logger, name string, conn net.Conn, release func()) {
	// The first message is either a path join (router.Table) or handshake
	// message 1; both are framed with a 2-byte length.
	conn.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	cr := &countingReader{r: conn}
	msg, err := handshake.ReadMessage(cr)
	stopped := stop()
	conn.SetReadDeadline(time.Time{})
	if err != nil || !stopped {
		// A connection that ends before its first byte, however (closed,
		// reset, aborted as quic does when a client exits, or gone quiet
		// as kcp does, which has no close to send), is what a client's
		// race of transports leaves behind at every connect, and what a
		// port scan looks like: worth a debug line, not an info one.
		level := slog.LevelInfo
		if cr.n == 0 {
			level = slog.LevelDebug
		}
		log.Log(ctx, level, "first message failed", s.errAttr(conn, err), s.peerAttr(conn))
		conn.Close()
		return
	}
	ep := router.Endpoint{Transport: name}
	if conn.RemoteAddr() != nil {
		ep.Addr = conn.RemoteAddr().String()
	}
	if s.table.Join(conn, ep, msg) {
		s.count.joins.Add(1)
		log.Debug("path joined", s.peerAttr(conn))
		return
	}
	if !s.limiter.Allow(sourceOf(conn), time.Now()) {
		s.count.rateLimited.Add(1)
		log.Info("handshake refused: rate limit", s.peerAttr(conn))
		conn.Close()
		return
	}
	first := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(msg)), uint16(len(msg)))
	first = append(first, msg...)
	hctx, cancel := context.WithTimeout(ctx, s.cfg.HandshakeTimeout)
	res, err := handshake.Server(hctx, &prefixConn{Conn: conn, r: io.MultiReader(bytes.NewReader(first), conn)}, handshake.ServerConfig{
		Static:  s.cfg.Static,
		Replay:  s.replay,
		MaxSkew: s.cfg.MaxSkew,
		Pad:     s.cfg.Pad,
	})
	cancel()
	if err != nil {
		// A failed handshake gets no answer: the connection is just closed,
		// as a prober should learn nothing.
		s.count.handshakeFailed.Add(1)
		log.Info("handshake failed", s.errAttr(conn, err), s.peerAttr(conn))
		conn.Close()
		return
	}
	s.count.handshakes.Add(1)
	peer := res.PeerStatic
	sess := router.New(router.Gateway, res, conn, ep, s.cfg.Router)
	res.Wipe()
	s.table.Add(sess)

	sctx, stop2 := context.WithCancel(ctx)
	defer stop2()
	runErr := make(chan error, 1)
	go func() { runErr <- sess.Run(sctx) }()
	// Serve the session once the client confirmed it with a record: a
	// client racing handshakes on several transports closes the losers
	// without one, and they end here.
	confirm := time.NewTimer(s.cfg.HandshakeTimeout)
	var herr error
	select {
	case <-sess.Confirmed():
		confirm.Stop()
		release()
		herr = s.h.ServeSession(sctx, peer, sess)
	case <-sess.Done():
		confirm.Stop()
	case <-confirm.C:
		herr = errors.New("gateway: the client sent no record after the handshake")
	case <-sctx.Done():
		confirm.Stop()
	}
	sess.Close()
	stop2()
	rerr := <-runErr
	clean := func(err error) bool {
		return err == nil || errors.Is(err, session.ErrClosed) || errors.Is(err, session.ErrClosedByPeer) ||
			errors.Is(err, context.Canceled) || errors.Is(err, router.ErrResumeExpired)
	}
	switch {
	case ctx.Err() != nil:
	case !clean(herr):
		log.Info("session ended", "err", herr)
	case !clean(rerr):
		log.Info("session ended", "err", rerr)
	default:
		log.Debug("session closed", "err", rerr)
	}
}

// counters are the gateway's totals since start.
type counters struct {
	handshakes, handshakeFailed, rateLimited, overloaded, joins atomic.Uint64
}

// Stats are the gateway's totals since start and its live sessions.
type Stats struct {
	// Handshakes counts completed handshakes; HandshakeFailures failed
	// ones (bad or stale first messages, wrong keys, timeouts);
	// RateLimited handshakes refused by the per-source limit; Overloaded
	// connections refused at MaxConns or MaxPerSource; Joins paths joined
	// to a session.
	Handshakes, HandshakeFailures, RateLimited, Overloaded, Joins uint64
	// Sessions are the live sessions' counters and paths.
	Sessions []router.Stats
}

// Stats returns a snapshot of the gateway's counters and live sessions. It
// is safe to call at any time.
func (s *Server) Stats() Stats {
	st := Stats{
		Handshakes:        s.count.handshakes.Load(),
		HandshakeFailures: s.count.handshakeFailed.Load(),
		RateLimited:       s.count.rateLimited.Load(),
		Overloaded:        s.count.overloaded.Load(),
		Joins:             s.count.joins.Load(),
	}
	for _, sess := range s.table.Sessions() {
		st.Sessions = append(st.Sessions, sess.Stats())
	}
	return st
}
