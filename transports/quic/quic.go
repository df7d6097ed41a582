// Package quic is CommuCat's QUIC transport, built on quic-go: to an
// observer it looks like an HTTP/3 connection (UDP, TLS 1.3, ALPN "h3" by
// default), and it carries QUIC DATAGRAM frames (RFC 9221) beside the
// stream for traffic that prefers loss to delay.
//
// # Mapping
//
// Each net.Conn is one bidirectional stream on its own QUIC connection.
// Dial completes the handshake, opens stream 0 and writes one preamble byte
// (0x01, the version of this mapping) so that the server learns of the
// stream at once: quic-go announces a stream to the peer only with its
// first data. The server's listener reads and checks that byte before its
// Accept returns the connection, and echoes it; Dial returns only once it
// has read the echo, so a connection the server refuses after the QUIC
// handshake (quic-go refuses with CONNECTION_REFUSED when its accept queue
// is full) fails inside Dial, which then retries with a short backoff. The
// application never sees either byte. On the wire the preamble looks like
// the HEADERS frame type an HTTP/3 request stream starts with, though QUIC
// encrypts it anyway.
//
// # Closing
//
// QUIC tears a connection down at once, discarding data still in flight,
// so Close is split in two. Close ends the stream (FIN), stops reading
// (STOP_SENDING), tells the peer with a close notice (a unidirectional
// stream carrying the byte 0x01) and returns; the connection itself stays
// up until both sides have closed, so bytes written before Close still
// reach the peer before its io.EOF. Whichever side closes second, seeing
// the other's notice, closes the QUIC connection with application error
// code 0. If the peer has not closed within Config.Linger, the connection
// is closed with code 1. Other codes: 2 for a protocol violation (a bad
// preamble), 3 when the server is too busy to take the connection.
// CloseWrite only ends the stream, as TCP's half-close does.
//
// # Authentication
//
// The server presents a certificate (see LoadOrCreateCert); the client
// pins its public key with the "pin" parameter instead of trusting a CA,
// so no certificate authority or host name is involved and a censor cannot
// impersonate the gateway without its key.
//
// # Parameters
//
// Factory reads "pin" (required), "sni" and "alpn". When "sni" is empty
// the client sends the host of the address it dials as the server name:
// none for an IP address, as an HTTP/3 client connecting by address would,
// and the name for a host name. There is no fixed default name, since one
// string shared by every gateway would be one string for a censor to block.
//
// # Errors and operations
//
// I/O errors wrap the core/transport sentinels: a deadline or an idle
// connection matches transport.ErrTimeout (and os.ErrDeadlineExceeded for
// deadlines), I/O after Close matches transport.ErrClosed and
// net.ErrClosed, and a peer that reset the stream or aborted the connection
// matches transport.ErrRefused. io.EOF is returned as is. A server whose
// certificate does not match the pin fails Dial with an error wrapping
// ErrPinMismatch.
//
// quic-go asks the kernel for 7 MiB UDP socket buffers and logs a warning
// through the standard log package when it may not have them. Operators
// should raise net.core.rmem_max and net.core.wmem_max (see quic-go's
// "UDP Buffer Sizes" wiki page); where that is impossible, setting
// QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING=true silences the warning. The
// tests set it.
package quic

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/commucat/commucat/core/transport"
)

// Name is the transport's registered name.
const Name = "quic"

// DefaultALPN is the ALPN protocol offered when Config.ALPN is empty.
const DefaultALPN = "h3"

// MaxDatagramSize is the largest datagram a connection sends: the 1200
// bytes every QUIC path carries, less 50 for the QUIC short header (with a
// connection ID of up to 20 bytes), the AEAD tag and the DATAGRAM frame
// header. It is a constant so that it does not shrink during a connection.
const MaxDatagramSize = 1150

// Defaults for the zero fields of Config.
const (
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultIdleTimeout      = 30 * time.Second
	DefaultKeepAlive        = 10 * time.Second
	DefaultLinger           = 30 * time.Second
)

// Application and stream error codes on the wire; see the package doc.
const (
	codeNormal   quicgo.ApplicationErrorCode = 0
	codeAbort    quicgo.ApplicationErrorCode = 1
	codeProtocol quicgo.ApplicationErrorCode = 2
	codeBusy     quicgo.ApplicationErrorCode = 3

	streamCodeClosed quicgo.StreamErrorCode = 0
)

// Bytes on the wire; see the package doc.
const (
	preamble    = 0x01
	closeNotice = 0x01
)

// Config configures a Transport. The zero value of each field is its
// documented default. A Config holds the server's private key: it redacts
// itself in logs.
type Config struct {
	// Certificate is the server's certificate; Listen needs it. See
	// LoadOrCreateCert.
	Certificate *tls.Certificate
	// Pin is the pin of the server's certificate; Dial needs it.
	Pin string
	// SNI is the server name a client sends. If empty, the host of the
	// dialled address (none for an IP address).
	SNI string
	// ALPN is the application protocol offered and accepted. If empty,
	// DefaultALPN.
	ALPN string
	// HandshakeTimeout bounds the wait for the peer during the handshake,
	// and the server's wait for a new connection's stream. If zero,
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// IdleTimeout closes a connection that received nothing for this long.
	// If zero, DefaultIdleTimeout.
	IdleTimeout time.Duration
	// KeepAlive is the interval of keep-alive packets. If zero,
	// DefaultKeepAlive; it must be shorter than IdleTimeout.
	KeepAlive time.Duration
	// Linger bounds how long a closed connection waits for its peer to
	// close too; see the package doc. If zero, DefaultLinger.
	Linger time.Duration
	// Logger receives debug records about rejected connections. If nil,
	// nothing is logged.
	Logger *slog.Logger
}

// LogValue implements slog.LogValuer: a Config holds a private key.
func (Config) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// Validate reports the first invalid field of c, wrapping
// transport.ErrBadParams.
func (c Config) Validate() error {
	if c.Certificate == nil && c.Pin == "" {
		return fmt.Errorf("quic: config needs a Certificate (to listen) or a Pin (to dial): %w", transport.ErrBadParams)
	}
	if c.Certificate != nil && len(c.Certificate.Certificate) == 0 {
		return fmt.Errorf("quic: config Certificate is empty: %w", transport.ErrBadParams)
	}
	if c.Pin != "" {
		if _, err := decodePin(c.Pin); err != nil {
			return fmt.Errorf("%w: %w", err, transport.ErrBadParams)
		}
	}
	if len(c.SNI) > 253 || strings.ContainsFunc(c.SNI, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
		return fmt.Errorf("quic: config SNI %q is not a host name: %w", c.SNI, transport.ErrBadParams)
	}
	if len(c.ALPN) > 255 {
		return fmt.Errorf("quic: config ALPN is longer than 255 bytes: %w", transport.ErrBadParams)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"HandshakeTimeout", c.HandshakeTimeout}, {"IdleTimeout", c.IdleTimeout}, {"KeepAlive", c.KeepAlive}, {"Linger", c.Linger}} {
		if d.v < 0 {
			return fmt.Errorf("quic: config %s is negative (%v): %w", d.name, d.v, transport.ErrBadParams)
		}
	}
	c = c.withDefaults()
	if c.KeepAlive >= c.IdleTimeout {
		return fmt.Errorf("quic: config KeepAlive (%v) must be shorter than IdleTimeout (%v): %w", c.KeepAlive, c.IdleTimeout, transport.ErrBadParams)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.ALPN == "" {
		c.ALPN = DefaultALPN
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = DefaultKeepAlive
	}
	if c.Linger == 0 {
		c.Linger = DefaultLinger
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Transport dials and listens on QUIC. It is safe for concurrent use. It
// owns the connections it dials and accepts until they are closed; Close
// ends them all.
type Transport struct {
	cfg     Config
	pin     [sha256.Size]byte
	hasPin  bool
	log     *slog.Logger
	quicCfg *quicgo.Config // client side
	srvCfg  *quicgo.Config // server side

	mu        sync.Mutex
	closed    bool
	conns     map[*conn]struct{}
	listeners map[*listener]struct{}
	wg        sync.WaitGroup // connection watchers
}

var _ transport.Transport = (*Transport)(nil)

// New returns a QUIC transport. A client needs cfg.Pin, a server
// cfg.Certificate; one Transport may have both.
func New(cfg Config) (*Transport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	t := &Transport{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "transport/quic"),
		conns:     make(map[*conn]struct{}),
		listeners: make(map[*listener]struct{}),
	}
	if cfg.Pin != "" {
		t.pin, _ = decodePin(cfg.Pin) // checked by Validate
		t.hasPin = true
	}
	base := quicgo.Config{
		HandshakeIdleTimeout:  cfg.HandshakeTimeout,
		MaxIdleTimeout:        cfg.IdleTimeout,
		KeepAlivePeriod:       cfg.KeepAlive,
		EnableDatagrams:       true,
		MaxIncomingUniStreams: 1, // the peer's close notice
	}
	client, server := base, base
	client.MaxIncomingStreams = -1 // the server never opens a stream
	server.MaxIncomingStreams = 1  // one stream per connection
	t.quicCfg, t.srvCfg = &client, &server
	return t, nil
}

// Factory builds a client QUIC transport for the transport registry from
// its parameters: "pin" (required), "sni" and "alpn". Other keys are
// rejected with transport.ErrBadParams.
func Factory(p transport.Params) (transport.Transport, error) {
	var unknown []string
	for k := range p {
		switch k {
		case "pin", "sni", "alpn":
		default:
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("quic: unknown parameters %s: %w", strings.Join(unknown, ", "), transport.ErrBadParams)
	}
	if p["pin"] == "" {
		return nil, fmt.Errorf("quic: parameter pin is required: %w", transport.ErrBadParams)
	}
	return New(Config{Pin: p["pin"], SNI: p["sni"], ALPN: p["alpn"]})
}

// Name returns "quic".
func (*Transport) Name() string { return Name }

// Pin returns the pin clients use for this transport: that of the
// certificate for a server, the configured one for a client.
func (t *Transport) Pin() string {
	if t.cfg.Certificate != nil {
		if leaf := t.cfg.Certificate.Leaf; leaf != nil {
			return pinOf(leaf)
		}
	}
	return t.cfg.Pin
}

// clientTLS is the TLS configuration of a dial.
func (t *Transport) clientTLS() *tls.Config {
	pin := t.pin
	return &tls.Config{
		ServerName: t.cfg.SNI, // empty: quic-go uses the dialled host
		NextProtos: []string{t.cfg.ALPN},
		MinVersion: tls.VersionTLS13,
		// The pin replaces CA verification: VerifyConnection checks the
		// server's public key against it on every handshake, so skipping
		// the CA chain and host name checks loses nothing.
		InsecureSkipVerify: true, //nolint:gosec // see above
		VerifyConnection:   func(cs tls.ConnectionState) error { return verifyPin(pin, cs) },
	}
}

// Dial connects to addr ("host:port"), checks the server's certificate
// against the pin and opens the connection's stream. ctx bounds all of it.
func (t *Transport) Dial(ctx context.Context, addr string) (net.Conn, error) {
	if !t.hasPin {
		return nil, fmt.Errorf("quic: dial %s: transport has no pin: %w", addr, transport.ErrBadParams)
	}
	// A busy server refuses new connections (quic-go's CONNECTION_REFUSED
	// when its accept queue is full, or our codeBusy): try again with a
	// short backoff while ctx allows.
	backoff := 10 * time.Millisecond
	for attempt := 1; ; attempt++ {
		c, err := t.dialOnce(ctx, addr)
		if err == nil || !isBusy(err) || attempt == maxDialAttempts {
			return c, err
		}
		select {
		case <-ctx.Done():
			return nil, ctxErr("dial "+addr, ctx)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// maxDialAttempts bounds Dial's retries against a busy server.
const maxDialAttempts = 8

// isBusy reports whether err is a server's refusal for lack of room.
func isBusy(err error) bool {
	var te *quicgo.TransportError
	if errors.As(err, &te) && te.ErrorCode == quicgo.ConnectionRefused {
		return true
	}
	var ae *quicgo.ApplicationError
	return errors.As(err, &ae) && ae.ErrorCode == codeBusy
}

// dialOnce connects, opens the stream, sends the preamble and waits for the
// listener's echo of it, so that a connection the server refuses after the
// handshake (a full accept queue) fails here, where Dial can retry, and not
// at the first read.
func (t *Transport) dialOnce(ctx context.Context, addr string) (net.Conn, error) {
	if t.isClosed() {
		return nil, closedErr("dial " + addr)
	}
	qc, err := quicgo.DialAddr(ctx, addr, t.clientTLS(), t.quicCfg)
	if err != nil {
		return nil, dialErr(ctx, addr, err)
	}
	str, err := qc.OpenStreamSync(ctx)
	if err != nil {
		qc.CloseWithError(codeAbort, "") //nolint:errcheck // always nil
		return nil, dialErr(ctx, addr, err)
	}
	deadline := time.Now().Add(t.cfg.HandshakeTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	str.SetDeadline(deadline) //nolint:errcheck // always nil
	stop := context.AfterFunc(ctx, func() { str.SetDeadline(time.Unix(1, 0)) })
	var b [1]byte
	_, err = str.Write([]byte{preamble})
	if err == nil {
		_, err = io.ReadFull(str, b[:])
		if err == nil && b[0] != preamble {
			err = fmt.Errorf("unexpected preamble echo 0x%02x", b[0])
		}
	}
	stop()
	if err != nil {
		qc.CloseWithError(codeAbort, "") //nolint:errcheck // always nil
		return nil, dialErr(ctx, addr, err)
	}
	str.SetDeadline(time.Time{}) //nolint:errcheck // always nil
	c, ok := t.newConn(qc, str, nil)
	if !ok {
		return nil, closedErr("dial " + addr)
	}
	return c, nil
}

// dialErr wraps a dial failure, preferring the context's reason.
func dialErr(ctx context.Context, addr string, err error) error {
	if ctx.Err() != nil {
		return ctxErr("dial "+addr, ctx)
	}
	return wrapErr("dial "+addr, err)
}

// Listen binds addr ("host:port"; port 0 picks a free one) and returns a
// listener. ctx bounds only the bind. Connections the listener accepted
// stay open after its Close; the UDP socket is released once they end.
func (t *Transport) Listen(ctx context.Context, addr string) (transport.Listener, error) {
	if t.cfg.Certificate == nil {
		return nil, fmt.Errorf("quic: listen %s: transport has no certificate: %w", addr, transport.ErrBadParams)
	}
	if err := ctx.Err(); err != nil {
		return nil, ctxErr("listen "+addr, ctx)
	}
	tlsConf := &tls.Config{
		Certificates: []tls.Certificate{*t.cfg.Certificate},
		NextProtos:   []string{t.cfg.ALPN},
		MinVersion:   tls.VersionTLS13,
	}
	udpAddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, wrapErr("listen "+addr, err)
	}
	udp, err := net.ListenUDP("udp", udpAddr)
	if err != nil {
		return nil, wrapErr("listen "+addr, err)
	}
	tr := &quicgo.Transport{Conn: udp}
	ql, err := tr.Listen(tlsConf, t.srvCfg)
	if err != nil {
		tr.Close()
		udp.Close()
		return nil, wrapErr("listen "+addr, err)
	}
	l := newListener(t, udp, tr, ql)
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		l.Close()
		return nil, closedErr("listen " + addr)
	}
	t.listeners[l] = struct{}{}
	t.mu.Unlock()
	l.start()
	return l, nil
}

// Close closes every listener of the transport, aborts every connection it
// dialled or accepted that is still open or lingering, and waits for their
// goroutines. Dial and Listen fail afterwards. It is idempotent.
func (t *Transport) Close() error {
	t.mu.Lock()
	t.closed = true
	ls := make([]*listener, 0, len(t.listeners))
	for l := range t.listeners {
		ls = append(ls, l)
	}
	t.mu.Unlock()
	for _, l := range ls {
		l.Close()
	}
	t.mu.Lock()
	cs := make([]*conn, 0, len(t.conns))
	for c := range t.conns {
		cs = append(cs, c)
	}
	t.mu.Unlock()
	for _, c := range cs {
		c.abort()
	}
	t.wg.Wait()
	return nil
}

func (t *Transport) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

// newConn wraps an established connection and its stream and starts the
// watcher of the peer's close notice. onEnd, if not nil, runs once the QUIC
// connection has ended. It reports false, having aborted the connection and
// run onEnd, if the transport is closed.
func (t *Transport) newConn(qc *quicgo.Conn, str *quicgo.Stream, onEnd func()) (*conn, bool) {
	c := &conn{t: t, qc: qc, str: str, onEnd: onEnd, dq: make(chan []byte, dgQueue), closing: make(chan struct{})}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		qc.CloseWithError(codeAbort, "") //nolint:errcheck // always nil
		if onEnd != nil {
			onEnd()
		}
		return nil, false
	}
	t.conns[c] = struct{}{}
	t.wg.Add(2)
	t.mu.Unlock()
	go c.watch()
	go c.sendDatagrams()
	return c, true
}

func (t *Transport) forget(c *conn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
}

func (t *Transport) forgetListener(l *listener) {
	t.mu.Lock()
	delete(t.listeners, l)
	t.mu.Unlock()
}

// ServerFactory builds the gateway side: the certificate and key are
// created in dir on first use and reused after (see LoadOrCreateCert).
// Parameter "alpn" overrides DefaultALPN. Clients get "pin" (and "alpn" if
// set).
func ServerFactory(p transport.Params, dir string) (transport.Transport, transport.Params, error) {
	for k := range p {
		if k != "alpn" {
			return nil, nil, fmt.Errorf("quic: unknown server parameter %s: %w", k, transport.ErrBadParams)
		}
	}
	cert, pin, err := LoadOrCreateCert(dir)
	if err != nil {
		return nil, nil, err
	}
	t, err := New(Config{Certificate: &cert, ALPN: p["alpn"]})
	if err != nil {
		return nil, nil, err
	}
	pub := transport.Params{"pin": pin}
	if p["alpn"] != "" {
		pub["alpn"] = p["alpn"]
	}
	return t, pub, nil
}
