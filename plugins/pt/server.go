package pt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/commucat/commucat/core/transport"
)

// Server is the server side of a PT method: each Listen launches the PT
// in server mode, and the listener's Accept hands out the de-obfuscated
// streams the PT forwards to a loopback ORPort listener of its own; the
// listener launches the PT again if it exits. Dial is unsupported. A
// Server is safe for concurrent use. Its options may hold secrets
// (obfs4proxy accepts its private key as one): it logs as "[redacted]".
type Server struct {
	cfg  Config
	opts string // TOR_PT_SERVER_TRANSPORT_OPTIONS, or ""

	// The first wait before a relaunch and its cap; if zero,
	// relaunchWait and relaunchWaitMax. Tests change them before Listen.
	wait, waitMax time.Duration

	mu         sync.Mutex
	pub        transport.Params // ARGS of the newest SMETHOD line
	cookie     []byte           // Extended ORPort cookie, made at the first Listen
	cookiePath string
}

var _ transport.Transport = (*Server)(nil)

// NewServer returns a Server for cfg, which must have a StateDir, with
// the PT's server options (TOR_PT_SERVER_TRANSPORT_OPTIONS), such as
// obfs4's "iat-mode". It does not start the PT. Errors about options wrap
// transport.ErrBadParams and name the option.
func NewServer(cfg Config, options transport.Params) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.StateDir == "" {
		return nil, fmt.Errorf("pt: %s server: StateDir is empty", cfg.Method)
	}
	opts, err := encodeServerOptions(cfg.Method, options)
	if err != nil {
		return nil, err
	}
	cfg.Args = append([]string(nil), cfg.Args...)
	cfg.Env = append([]string(nil), cfg.Env...)
	return &Server{cfg: cfg, opts: opts}, nil
}

// LogValue hides the options from logs.
func (s *Server) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// Name is the PT method, such as "obfs4".
func (s *Server) Name() string { return s.cfg.Method }

// Dial is not supported on the server side: it returns an error wrapping
// transport.ErrUnsupported.
func (s *Server) Dial(context.Context, string) (net.Conn, error) {
	return nil, fmt.Errorf("pt: %s server cannot dial: %w", s.cfg.Method, transport.ErrUnsupported)
}

// Params returns the parameters clients need, the ARGS of the newest
// SMETHOD line the PT wrote (a copy; nil before the first launch or if the
// PT published none).
func (s *Server) Params() transport.Params {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.pub)
}

// Prepare launches the PT once, bound to 127.0.0.1:0, to learn the
// parameters clients need, and stops it again. ctx bounds the launch, as
// does Config.StartTimeout. ServerFactory calls it.
func (s *Server) Prepare(ctx context.Context) (transport.Params, error) {
	ln, err := s.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ln.Close()
	return s.Params(), nil
}

// setParams records the ARGS of a launch. ARGS other than the ones
// recorded before are an error of the deployment: the gateway published
// those in its invites. The values are not logged: they may be secret
// (obfs4's cert is).
func (s *Server) setParams(args transport.Params) {
	if len(args) == 0 {
		args = nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pub != nil && !maps.Equal(s.pub, args) {
		s.cfg.logger().Error("pt published other client parameters than before: the published parameters changed and existing invites no longer work")
	}
	s.pub = args
}

// bindAddr checks a Listen address: an IP literal and a port, as
// TOR_PT_SERVER_BINDADDR requires; an empty host means every IPv4
// address.
func bindAddr(addr string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		return ap, nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err == nil && host == "" {
		if ap, err := netip.ParseAddrPort("0.0.0.0:" + port); err == nil {
			return ap, nil
		}
	}
	return netip.AddrPort{}, fmt.Errorf("pt: listen %q: want an IP address and a port", addr)
}

// launch starts the PT in server mode with the protocol variables env and
// returns it with the address of its SMETHOD line, whose ARGS become the
// Server's parameters. Errors are *StartError.
func (s *Server) launch(ctx context.Context, env []string) (*proc, netip.AddrPort, error) {
	p, m, err := launch(ctx, &s.cfg, env, true)
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	pub, err := netip.ParseAddrPort(m.addr)
	if err != nil {
		p.stop()
		return nil, netip.AddrPort{}, &StartError{Binary: p.binary, Method: p.method, Err: ErrProtocol,
			Detail: fmt.Sprintf("SMETHOD address %q is not an IP address and port", m.addr)}
	}
	s.setParams(m.args)
	return p, pub, nil
}

// Listen launches the PT in server mode bound to addr (an IP literal and a
// port; port 0 lets the PT choose) and returns a listener whose Addr is the
// address in the PT's SMETHOD line. ctx bounds the launch, as does
// Config.StartTimeout. Errors of the launch are *StartError. The listener
// launches the PT again if it exits (see the package doc).
func (s *Server) Listen(ctx context.Context, addr string) (transport.Listener, error) {
	bind, err := bindAddr(addr)
	if err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	or, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, wrapErr("listen on loopback for the PT", err)
	}
	l := &listener{
		srv:    s,
		method: s.cfg.Method,
		log:    s.cfg.logger(),
		or:     or.(*net.TCPListener),
		sem:    make(chan struct{}, 1),
	}
	bindVar := "TOR_PT_SERVER_BINDADDR=" + s.cfg.Method + "-"
	env := []string{
		"TOR_PT_SERVER_TRANSPORTS=" + s.cfg.Method,
		bindVar + bind.String(),
	}
	if s.cfg.ExtORPort {
		cookie, path, err := s.extCookie()
		if err != nil {
			or.Close()
			return nil, err
		}
		l.cookie = cookie
		env = append(env,
			"TOR_PT_EXTENDED_SERVER_PORT="+or.Addr().String(),
			"TOR_PT_AUTH_COOKIE_FILE="+path)
	} else {
		env = append(env,
			"TOR_PT_ORPORT="+or.Addr().String(),
			"TOR_PT_EXTENDED_SERVER_PORT=")
	}
	if s.opts != "" {
		env = append(env, "TOR_PT_SERVER_TRANSPORT_OPTIONS="+s.opts)
	}
	p, pub, err := s.launch(ctx, env)
	if err != nil {
		or.Close()
		return nil, err
	}
	if bind.Port() == 0 {
		// A relaunch binds the port this PT chose, which clients know.
		env[1] = bindVar + netip.AddrPortFrom(bind.Addr(), pub.Port()).String()
	}
	l.p, l.pub, l.addr, l.env = p, pub, net.TCPAddrFromAddrPort(pub), env
	l.life, l.endLife = context.WithCancel(context.Background())
	if l.cookie != nil {
		l.ext = transport.NewHandshakeListener(l.or, transport.HandshakeConfig{
			Transport:     "pt",
			Handshake:     l.extHandshake,
			MaxHandshakes: maxExtHandshakes,
			// Every connection comes from the proxy on loopback; the
			// client's own address arrives only inside the handshake.
			MaxPerSource: -1,
			QueueLen:     extReadyLen,
			Timeout:      extHandshakeTimeout,
			Logger:       l.log,
		})
	}
	l.supervisor.Go(func() { l.supervise(p) })
	return l, nil
}

// extCookie returns the Server's Extended ORPort cookie and its file,
// making them at the first call.
func (s *Server) extCookie() ([]byte, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cookie == nil {
		cookie, path, err := newCookie(s.cfg.StateDir)
		if err != nil {
			return nil, "", err
		}
		s.cookie, s.cookiePath = cookie, path
	}
	return s.cookie, s.cookiePath, nil
}

// Extended ORPort listener limits; see the package doc.
const (
	maxExtHandshakes    = 64
	extReadyLen         = 64
	extHandshakeTimeout = 10 * time.Second
)

// Waits before relaunching a listener's PT; see the package doc.
const (
	relaunchWait    = 100 * time.Millisecond
	relaunchWaitMax = 30 * time.Second
)

// listener is a transport.Listener over the loopback listener that its PT
// forwards streams to. It owns the PT process through its supervisor
// goroutine, which relaunches the PT when it exits and stops it at Close.
// The loopback listener stays open across relaunches: a new PT gets the
// same environment, and Accept waits in the meantime.
//
// With plain ORPort, Accept is made ctx-aware without a goroutine of its
// own, as transports/tcp's is: one Accept at a time waits in the kernel,
// and a ctx that ends moves the listener's deadline into the past to wake
// it. With Extended ORPort, a transport.HandshakeListener over the same
// loopback listener runs the handshakes and queues the connections.
type listener struct {
	srv    *Server
	method string
	log    *slog.Logger
	or     *net.TCPListener
	pub    netip.AddrPort // the SMETHOD address
	addr   *net.TCPAddr   // the same, for Addr
	env    []string       // the PT's protocol variables, for every relaunch
	sem    chan struct{}  // plain: holds a token while an Accept waits in or.Accept

	cookie []byte                       // Extended ORPort cookie; nil for plain ORPort
	ext    *transport.HandshakeListener // over or with Extended ORPort; else nil

	// life ends at Close: Accept then fails with transport.ErrClosed, and
	// the supervisor's waits and a relaunch in progress end.
	life       context.Context
	endLife    context.CancelFunc
	supervisor sync.WaitGroup

	mu sync.Mutex
	p  *proc // the newest PT process; the supervisor replaces it

	closeOnce sync.Once
}

// supervise owns the listener's PT p from Listen to Close. When the PT
// exits on its own (proc logs "pt exited"), it launches it again with the
// same environment, waiting before each attempt: relaunchWait at first,
// doubled after each failed attempt and each PT that exits again within
// relaunchWaitMax, up to relaunchWaitMax. At Close it stops the PT.
func (l *listener) supervise(p *proc) {
	first, most := l.srv.wait, l.srv.waitMax
	if first == 0 {
		first = relaunchWait
	}
	if most == 0 {
		most = relaunchWaitMax
	}
	wait := first
	for restarts := 1; ; restarts++ {
		up := time.Now()
		select {
		case <-l.life.Done():
			p.stop()
			return
		case <-p.exited:
		}
		p.stop() // reaps its output readers; it has exited already
		if time.Since(up) >= most {
			wait = first
		}
		for {
			t := time.NewTimer(wait)
			select {
			case <-l.life.Done():
				t.Stop()
				return
			case <-t.C:
			}
			wait = min(2*wait, most)
			np, err := l.relaunch()
			if err == nil {
				p = np
				break
			}
			if l.life.Err() != nil {
				return
			}
			l.log.Warn("pt relaunch failed", "err", err, "retry_in", wait)
		}
		l.mu.Lock()
		l.p = p
		l.mu.Unlock()
		l.log.Info("pt running again", "restarts", restarts, "addr", l.addr)
	}
}

// relaunch launches the PT again with the listener's environment, for at
// most Config.StartTimeout and until Close.
func (l *listener) relaunch() (*proc, error) {
	p, pub, err := l.srv.launch(l.life, l.env)
	if err != nil {
		return nil, err
	}
	if pub != l.pub {
		l.log.Error("relaunched pt listens on another address than the published one; clients cannot reach it",
			"addr", pub, "published", l.pub)
	}
	return p, nil
}

// Accept waits for the next stream the PT forwards, until ctx ends or the
// listener is closed; while the PT is being launched again, it waits. After
// Close it returns an error wrapping transport.ErrClosed; when ctx ends,
// one wrapping ctx.Err() (and transport.ErrTimeout for a deadline).
// Concurrent calls are served one at a time.
func (l *listener) Accept(ctx context.Context) (net.Conn, error) {
	if l.ext != nil {
		return l.acceptExt(ctx)
	}
	select {
	case <-l.life.Done():
		return nil, l.closedErr()
	case <-ctx.Done():
		return nil, ctxErr("accept", ctx)
	case l.sem <- struct{}{}:
	}
	defer func() { <-l.sem }()
	for {
		switch {
		case l.life.Err() != nil:
			return nil, l.closedErr()
		case ctx.Err() != nil:
			return nil, ctxErr("accept", ctx)
		}
		c, err := l.acceptOnce(ctx)
		if err == nil {
			return &conn{Conn: c}, nil
		}
		switch {
		case l.life.Err() != nil:
			return nil, l.closedErr()
		case errors.Is(err, net.ErrClosed):
			return nil, l.closedErr()
		case ctx.Err() != nil:
			return nil, ctxErr("accept", ctx)
		case errors.Is(err, os.ErrDeadlineExceeded):
			l.or.SetDeadline(time.Time{}) //nolint:errcheck // a closed listener is caught above
		case errors.Is(err, syscall.ECONNABORTED), errors.Is(err, syscall.ECONNRESET):
			// The PT gave up on a connection while it waited in the backlog.
		default:
			return nil, wrapErr("accept", err)
		}
	}
}

// acceptOnce calls or.Accept once, with ctx able to interrupt it. It
// returns only after the interrupting callback, if it started, has
// finished, and it leaves the listener without a deadline.
func (l *listener) acceptOnce(ctx context.Context) (*net.TCPConn, error) {
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		l.or.SetDeadline(pastDeadline) //nolint:errcheck // a closed listener is fine
	})
	c, err := l.or.AcceptTCP()
	if !stop() {
		<-fired
		l.or.SetDeadline(time.Time{}) //nolint:errcheck // a closed listener is fine
	}
	return c, err
}

// acceptExt is Accept with Extended ORPort: it takes the next handshaken
// connection from ext.
func (l *listener) acceptExt(ctx context.Context) (net.Conn, error) {
	c, err := l.ext.Accept(ctx)
	switch {
	case err == nil:
		return c, nil
	case l.life.Err() != nil:
		return nil, l.closedErr()
	case ctx.Err() != nil:
		return nil, ctxErr("accept", ctx)
	}
	return nil, err
}

// extHandshake runs the Extended ORPort handshake on raw, a connection to
// the loopback listener, for ext, which closes raw when the handshake
// fails or times out.
func (l *listener) extHandshake(ctx context.Context, raw net.Conn) (net.Conn, error) {
	meta, err := extServerHandshake(raw, l.cookie)
	if err != nil {
		if ctx.Err() != nil { // ext closed raw: the timeout, or Close
			err = fmt.Errorf("%w: %w", errExtOR, ctx.Err())
		}
		l.log.Warn("pt: dropped a connection to the Extended ORPort listener", "err", err)
		return nil, err
	}
	c := &conn{Conn: raw}
	if a := meta.addr(); a != nil {
		c.remote = a
	}
	return c, nil
}

// Close stops the listener and its PT (see the package doc): a pending
// Accept returns transport.ErrClosed, and the connections the PT carried
// end. It ends a wait before a relaunch and cancels a relaunch in
// progress, and returns once the PT has stopped and the supervisor has
// returned. With Extended ORPort it also interrupts the handshakes in
// progress, closes the connections no Accept took, and waits for its
// goroutines. Close is idempotent and returns nil.
func (l *listener) Close() error {
	l.closeOnce.Do(func() {
		l.endLife()
		if l.ext != nil {
			l.ext.Close() //nolint:errcheck // the listener is gone either way
		} else {
			l.or.Close()
		}
		l.supervisor.Wait()
	})
	return nil
}

// Addr is the address the PT listens on, from its SMETHOD line.
func (l *listener) Addr() net.Addr { return l.addr }

func (l *listener) closedErr() error {
	return fmt.Errorf("pt: %s accept on %s: %w", l.method, l.addr, transport.ErrClosed)
}
