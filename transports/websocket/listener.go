package websocket

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	ws "github.com/coder/websocket"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/transports/decoy"
)

// Bounds of a listener's queues.
const (
	// acceptQueue is the number of upgraded connections waiting for
	// Accept.
	acceptQueue = 64
	// maxPending is the number of upgrade requests handled at once (being
	// upgraded or waiting for room in the queue); beyond it, upgrade
	// requests get the site's answer.
	maxPending = 256
	// maxConns is the number of TCP connections open at once, upgraded or
	// not; beyond it, new connections wait in the kernel's backlog, as
	// they do when nginx reaches its worker_connections.
	maxConns = 8192
)

// Timeouts of the site's connections, nginx's defaults: keepalive_timeout
// closes a keep-alive connection idle this long; client_header_timeout
// bounds the TLS handshake and a request's header.
const (
	idleTimeout   = 75 * time.Second
	headerTimeout = 60 * time.Second
)

// Listen binds addr ("host:port"; port 0 picks a free one) and serves
// HTTPS there: the site for every request but a WebSocket upgrade on the
// secret path, whose connections Accept returns. ctx bounds only the
// bind. Connections the listener handed out stay open after its Close.
func (t *Transport) Listen(ctx context.Context, addr string) (transport.Listener, error) {
	if t.cfg.Certificate == nil {
		return nil, fmt.Errorf("websocket: listen %s: transport has no certificate: %w", addr, transport.ErrBadParams)
	}
	var lc net.ListenConfig
	tcp, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, wrapErr("listen "+addr, err)
	}
	l := &listener{
		t:       t,
		tcp:     tcp,
		queue:   make(chan *conn, acceptQueue),
		sem:     make(chan struct{}, maxPending),
		conns:   make(chan struct{}, maxConns),
		done:    make(chan struct{}),
		tracked: make(map[net.Conn]struct{}),
		tlsConf: &tls.Config{
			Certificates: []tls.Certificate{*t.cfg.Certificate},
			NextProtos:   []string{"http/1.1"},
			MinVersion:   tls.VersionTLS12,
		},
	}
	l.srv = &http.Server{
		Handler:           l,
		ReadHeaderTimeout: headerTimeout, // also bounds the TLS handshake, which runs inside the first read
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    64 << 10,
		// HTTP/1.1 only, as the ALPN says.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ConnState:    l.connState,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
		ErrorLog: log.New(logWriter{t.log}, "", 0),
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		l.srv.Serve(tlsListener{l}) //nolint:errcheck // returns http.ErrServerClosed after Close
	}()
	return l, nil
}

// connKey is the context key of the connection a request came on.
type connKey struct{}

// listener serves HTTPS with http.Server and queues upgraded connections
// for Accept. The Serve goroutine, the server's connection goroutines and
// the upgrade handlers are owned by the listener and end in Close.
type listener struct {
	t       *Transport
	tcp     net.Listener
	srv     *http.Server
	tlsConf *tls.Config
	queue   chan *conn
	sem     chan struct{} // one token per upgrade in progress
	conns   chan struct{} // one token per open TCP connection
	done    chan struct{} // closed by Close

	mu      sync.Mutex
	closed  bool
	tracked map[net.Conn]struct{} // server connections counted in wg
	wg      sync.WaitGroup

	closeOnce sync.Once
}

var _ transport.Listener = (*listener)(nil)

// connState counts the server's connection goroutines: from StateNew until
// the connection is closed or hijacked (an upgrade handler then holds its
// own count).
func (l *listener) connState(c net.Conn, s http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch s {
	case http.StateNew:
		if l.closed {
			// Accepted as Close ran: http.Server may not have seen it.
			c.Close()
			return
		}
		l.tracked[c] = struct{}{}
		l.wg.Add(1)
	case http.StateHijacked, http.StateClosed:
		if _, ok := l.tracked[c]; ok {
			delete(l.tracked, c)
			l.wg.Done()
		}
	}
}

// hold counts a goroutine in wg unless the listener is closed.
func (l *listener) hold() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.wg.Add(1)
	return true
}

// ServeHTTP upgrades a WebSocket request on the secret path and hands
// every other request to the site.
func (l *listener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, _ := r.Context().Value(connKey{}).(*serverConn)
	if c != nil {
		cs := c.tc.ConnectionState()
		r.TLS = &cs // for the site's redirects, as on any HTTPS server
	}
	if c == nil || !l.isSecret(r.URL.Path) || !isUpgrade(r) {
		l.t.cfg.Site.ServeHTTP(w, r)
		return
	}
	select {
	case l.sem <- struct{}{}:
		defer func() { <-l.sem }()
	default:
		l.t.log.Debug("refusing upgrade: too many pending")
		l.t.cfg.Site.ServeHTTP(w, r)
		return
	}
	if !l.hold() {
		l.t.cfg.Site.ServeHTTP(w, r)
		return
	}
	defer l.wg.Done()
	w.Header().Set("Server", decoy.ServerHeader)
	wc, err := ws.Accept(w, r, &ws.AcceptOptions{
		// The origin check protects a browser's cookies from other sites'
		// scripts; this endpoint has no cookies, and the secret path is
		// its only credential.
		InsecureSkipVerify: true,
		CompressionMode:    ws.CompressionDisabled,
	})
	if err != nil {
		l.t.log.Debug("upgrade failed", "err", err)
		return
	}
	c.SetDeadline(time.Time{}) //nolint:errcheck // clears the header timeout; a dead conn fails its first read
	sc := newConn(wc, c, batch{above: c.above, below: c.below})
	timer := time.NewTimer(l.t.cfg.HandshakeTimeout)
	defer timer.Stop()
	select {
	case l.queue <- sc:
	case <-l.done:
		sc.abort()
	case <-timer.C:
		l.t.log.Debug("dropping upgraded connection: nobody accepted it")
		sc.abort()
	}
}

// isSecret reports whether p is the secret path, in constant time.
func (l *listener) isSecret(p string) bool {
	return subtle.ConstantTimeCompare([]byte(p), []byte(l.t.cfg.Path)) == 1
}

// isUpgrade reports whether r is a well-formed WebSocket upgrade request,
// so that coder/websocket's Accept cannot fail it with an answer of its
// own: anything less gets the site's answer.
func isUpgrade(r *http.Request) bool {
	if r.Method != http.MethodGet || !r.ProtoAtLeast(1, 1) ||
		!hasToken(r.Header, "Connection", "upgrade") || !hasToken(r.Header, "Upgrade", "websocket") ||
		r.Header.Get("Sec-WebSocket-Version") != "13" {
		return false
	}
	key, err := base64.StdEncoding.DecodeString(r.Header.Get("Sec-WebSocket-Key"))
	return err == nil && len(key) == 16
}

// hasToken reports whether the comma-separated header key holds token,
// ignoring case.
func hasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// Accept waits for the next upgraded connection, until ctx ends or the
// listener is closed. After Close it returns an error wrapping
// transport.ErrClosed; when ctx ends, one wrapping ctx.Err() (and
// transport.ErrTimeout for a deadline).
func (l *listener) Accept(ctx context.Context) (net.Conn, error) {
	if isDone(l.done) {
		return nil, l.closedErr()
	}
	if ctx.Err() != nil {
		return nil, ctxErr("accept", ctx)
	}
	select {
	case c := <-l.queue:
		return c, nil
	case <-ctx.Done():
		return nil, ctxErr("accept", ctx)
	case <-l.done:
		return nil, l.closedErr()
	}
}

func (l *listener) closedErr() error {
	return fmt.Errorf("websocket: accept on %s: %w", l.tcp.Addr(), transport.ErrClosed)
}

// Close stops the listener: pending Accept calls return
// transport.ErrClosed, the site's connections are closed and upgraded
// connections not yet accepted are aborted. Connections already accepted
// stay open. Close waits for the listener's goroutines; it is idempotent
// and returns nil.
func (l *listener) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		l.srv.Close() //nolint:errcheck // the listener's close error says nothing useful
		l.wg.Wait()
		for {
			select {
			case c := <-l.queue:
				c.abort()
				continue
			default:
			}
			break
		}
	})
	return nil
}

// Addr is the TCP address the listener is bound to.
func (l *listener) Addr() net.Addr { return l.tcp.Addr() }

// tlsListener hands http.Server TLS connections wrapped in serverConn,
// whose handshake runs inside the first Read.
type tlsListener struct{ l *listener }

// Accept waits for a connection token and the next TCP connection, and
// wraps it for TLS.
func (tl tlsListener) Accept() (net.Conn, error) {
	select {
	case tl.l.conns <- struct{}{}:
	case <-tl.l.done:
		return nil, net.ErrClosed
	}
	c, err := tl.l.tcp.Accept()
	if err != nil {
		<-tl.l.conns
		return nil, err
	}
	below := &batchConn{Conn: c}
	tc := tls.Server(below, tl.l.tlsConf)
	return &serverConn{Conn: c, tc: tc, above: &batchConn{Conn: tc}, below: below, log: tl.l.t.log, release: func() { <-tl.l.conns }}, nil
}

// Close closes the TCP listener.
func (tl tlsListener) Close() error { return tl.l.tcp.Close() }

// Addr is the TCP listener's address.
func (tl tlsListener) Addr() net.Addr { return tl.l.tcp.Addr() }

// serverConn is a server-side TLS connection that http.Server does not
// recognise as one. So net/http neither negotiates HTTP/2 nor writes its
// own answer to a client that speaks plain HTTP to the TLS port
// ("Client sent an HTTP request to an HTTPS server."): serverConn answers
// such a client as nginx does. Conn is the TCP connection; every method
// but Read, Write and Close is its own.
type serverConn struct {
	net.Conn
	tc    *tls.Conn
	above *batchConn // over tc: Write goes through it
	below *batchConn // under tc, over Conn
	log   *slog.Logger

	once sync.Once
	herr error // the handshake's error

	release   func() // gives back the listener's connection token
	closeOnce sync.Once
}

// handshake runs the TLS handshake once and answers plain HTTP as nginx
// does.
func (c *serverConn) handshake() error {
	c.once.Do(func() {
		err := c.tc.Handshake()
		if err == nil {
			return
		}
		var rh tls.RecordHeaderError
		if errors.As(err, &rh) && rh.Conn != nil && looksLikeHTTP(rh.RecordHeader[:]) {
			c.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second)) //nolint:errcheck // best effort
			c.Conn.Write(decoy.PlainHTTPResponse(time.Now()))        //nolint:errcheck // best effort
		}
		c.log.Debug("tls handshake failed", "err", err)
		c.herr = err
	})
	return c.herr
}

// looksLikeHTTP reports whether the first bytes of a connection are the
// start of an HTTP request.
func looksLikeHTTP(b []byte) bool {
	for _, m := range []string{"GET ", "HEAD ", "POST ", "PUT ", "DELETE ", "OPTIONS ", "PATCH ", "CONNECT ", "TRACE "} {
		if strings.HasPrefix(m, string(b)) || strings.HasPrefix(string(b), m) {
			return true
		}
	}
	return false
}

// Read runs the handshake if it has not run yet, then reads plaintext.
func (c *serverConn) Read(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.tc.Read(b)
}

// Write runs the handshake if it has not run yet, then writes plaintext
// through the batch above TLS.
func (c *serverConn) Write(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.above.Write(b)
}

// Close closes the TLS connection (sending close_notify if the handshake
// is done) and the TCP connection.
func (c *serverConn) Close() error {
	err := c.tc.Close()
	c.closeOnce.Do(c.release)
	return err
}

// logWriter sends http.Server's log lines to slog at debug level.
type logWriter struct{ log *slog.Logger }

// Write logs one line of http.Server's log.
func (w logWriter) Write(b []byte) (int, error) {
	w.log.Debug(strings.TrimSpace(string(b)))
	return len(b), nil
}

var _ io.Writer = logWriter{}
