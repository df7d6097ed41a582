package reality

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/transports/fingerprint"
)

// Bounds of a listener's work; variables for tests.
var (
	// maxHandshakes bounds connections between TCP accept and Accept: hello
	// reading, verification and TLS handshakes. Beyond it, new
	// connections wait in the kernel's backlog.
	maxHandshakes = 1024
	// maxRelays bounds connections relayed to the cover at once; beyond
	// it, an unauthenticated connection is closed.
	maxRelays = 1024
	// perSource bounds the handshakes, and apart from them the relays,
	// of one source (see transport.SourceLimit) once more than half of
	// their slots are taken, so that one host holding connections open
	// cannot take them all. A connection beyond it is relayed to the
	// cover at once, unread; a relay beyond it is closed.
	perSource = 64
)

const (
	// readyQueue bounds authenticated connections waiting for Accept.
	readyQueue = 64
	// certLifetime is the validity of the per-connection certificates.
	certLifetime = 90 * 24 * time.Hour
)

// Listen binds addr ("host:port") and serves reality on it. ctx bounds
// only the bind. The listener owns its goroutines: Close stops them,
// closes relayed connections and connections not yet accepted.
func (t *Transport) Listen(ctx context.Context, addr string) (transport.Listener, error) {
	if t.server == nil {
		return nil, fmt.Errorf("reality: listen on a client transport: %w", transport.ErrUnsupported)
	}
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, wrapErr("listen "+addr, err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&t.server.Keys.Cert.PublicKey)
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("reality: certificate key: %w", err)
	}
	lctx, cancel := context.WithCancel(context.Background())
	ln := &listener{
		cfg:        t.server,
		replay:     t.replay,
		spki:       spki,
		ln:         l,
		ctx:        lctx,
		cancel:     cancel,
		ready:      make(chan net.Conn, readyQueue),
		handshakes: make(chan struct{}, maxHandshakes),
		relays:     make(chan struct{}, maxRelays),
		hsSrc:      transport.NewSourceLimit(perSource),
		relaySrc:   transport.NewSourceLimit(perSource),
		done:       make(chan struct{}),
	}
	ln.wg.Go(ln.serve)
	return ln, nil
}

// listener is a reality transport.Listener: one goroutine accepts TCP
// connections, one per connection reads and checks its hello, then either
// relays it to the cover or completes TLS and queues it for Accept.
type listener struct {
	cfg    *ServerConfig
	replay *replayCache
	spki   []byte // DER SubjectPublicKeyInfo of the certificate key
	ln     net.Listener

	ctx    context.Context // the listener's lifetime
	cancel context.CancelFunc
	wg     sync.WaitGroup

	ready      chan net.Conn
	handshakes chan struct{}
	relays     chan struct{}
	hsSrc      *transport.SourceLimit // handshakes per source
	relaySrc   *transport.SourceLimit // relays per source
	done       chan struct{}
	closeOnce  sync.Once
	closeErr   error
}

// serve accepts TCP connections until the listener closes.
func (l *listener) serve() {
	backoff := 5 * time.Millisecond
	for {
		select {
		case l.handshakes <- struct{}{}:
		case <-l.ctx.Done():
			return
		}
		c, err := l.ln.Accept()
		if err != nil {
			<-l.handshakes
			if l.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors or similar: wait a little, then go on.
			tm := time.NewTimer(backoff)
			select {
			case <-tm.C:
			case <-l.ctx.Done():
				tm.Stop()
				return
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetNoDelay(true) //nolint:errcheck // an optimisation only
		}
		srcRelease, ok := l.hsSrc.Take(c.RemoteAddr(), transport.Scarce(l.handshakes))
		if !ok {
			// Slots are scarce and its source holds its share: the
			// cover answers it, as it would any connection.
			<-l.handshakes
			l.wg.Go(func() { l.relay(c, nil) })
			continue
		}
		l.wg.Go(func() { l.handle(c, srcRelease) })
	}
}

// handle reads one connection's hello and dispatches it. srcRelease
// gives back its source's count, along with its handshake slot.
func (l *listener) handle(c net.Conn, srcRelease func()) {
	released := false
	release := func() {
		if !released {
			released = true
			srcRelease()
			<-l.handshakes
		}
	}
	defer release()
	// Closing c when the listener closes wakes every blocked step below.
	stop := context.AfterFunc(l.ctx, func() { c.Close() })
	defer stop()

	ctx, cancel := context.WithTimeout(l.ctx, l.cfg.HandshakeTimeout)
	defer cancel()
	raw, err := fingerprint.Capture(ctx, c)
	if err == nil {
		var tc net.Conn
		tc, err = l.authenticate(ctx, c, raw)
		switch {
		case err == nil:
			stop()
			release()
			l.deliver(tc)
			return
		case errors.Is(err, errSpent):
			c.Close()
			l.cfg.Logger.Debug("authenticated client failed the tls handshake", "err", withoutAddrs(err))
			return
		}
	}
	if l.ctx.Err() != nil {
		c.Close()
		return
	}
	if len(raw) == 0 && errors.Is(err, io.ErrUnexpectedEOF) {
		c.Close() // the peer left without a byte: nothing to relay
		return
	}
	l.cfg.Logger.Debug("relaying an unauthenticated connection to the cover", "reason", reason(err))
	release()
	l.relay(c, raw)
}

// reason names why a connection was relayed, for debug logs, without
// anything the peer sent.
func reason(err error) string {
	switch {
	case errors.Is(err, errAuth):
		return "authenticator"
	case errors.Is(err, errReplay):
		return "stale or replayed"
	case errors.Is(err, errHello), errors.Is(err, fingerprint.ErrNotClientHello), errors.Is(err, fingerprint.ErrTooLarge):
		return "not a usable clienthello"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	return "read error"
}

// errReplay marks a stale or replayed hello, and errSpent a TLS handshake
// that failed after the client authenticated; they never leave the
// package.
var (
	errReplay = errors.New("reality: clienthello stale or replayed")
	errSpent  = errors.New("reality: handshake failed after authentication")
)

// authenticate checks the hello in raw and, if it authenticates, runs the
// TLS 1.3 server handshake on c. On an authentication failure nothing has
// been written to c, and the caller relays it.
func (l *listener) authenticate(ctx context.Context, c net.Conn, raw []byte) (net.Conn, error) {
	h, err := parseHello(raw)
	if err != nil {
		return nil, err
	}
	if !h.tls13 || !slices.Contains(l.cfg.ServerNames, h.serverName) {
		return nil, fmt.Errorf("%w: server name or version", errHello)
	}
	pub, err := l.cfg.Keys.Static.Curve().NewPublicKey(h.x25519)
	if err != nil {
		return nil, errAuth
	}
	k, err := deriveKeys(l.cfg.Keys.Static, pub, h.random)
	if err != nil {
		return nil, errAuth // a low-order share
	}
	defer k.wipe()
	ts, err := k.openSessionID(h.random, h.sessionID, l.cfg.ShortID, h.aad)
	if err != nil {
		return nil, err
	}
	if !l.replay.check(h.sessionID, ts, time.Now()) {
		return nil, errReplay
	}
	cert, err := l.certificate(k, h.random, h.serverName)
	if err != nil {
		return nil, err
	}
	tc := tls.Server(&prefixConn{Conn: c, prefix: raw}, &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{"h2", "http/1.1"},
	})
	if err := tc.HandshakeContext(ctx); err != nil {
		// The client authenticated but the handshake failed: the hello is
		// spent and the cover cannot take over a half-done handshake.
		return nil, fmt.Errorf("%w: %w", errSpent, err)
	}
	return &conn{tlsConn: tc}, nil
}

// certificate makes this connection's certificate: self-signed by the
// gateway's certificate key, for sni, carrying the binding MAC.
func (l *listener) certificate(k *keys, random []byte, sni string) (tls.Certificate, error) {
	mac, err := asn1.Marshal(k.certMACOf(random, l.spki))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("reality: certificate: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("reality: certificate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: sni},
		DNSNames:              []string{sni},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certLifetime),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		ExtraExtensions:       []pkix.Extension{{Id: oidBinding, Value: mac}},
	}
	key := l.cfg.Keys.Cert
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("reality: sign certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// deliver queues an authenticated connection for Accept, or closes it if
// the listener closes first.
func (l *listener) deliver(c net.Conn) {
	select {
	case l.ready <- c:
	case <-l.ctx.Done():
		c.Close()
	}
}

// relay connects c to the cover site and copies both ways, starting with
// the bytes already read from c, until both directions end or the
// listener closes.
func (l *listener) relay(c net.Conn, buffered []byte) {
	defer c.Close()
	select {
	case l.relays <- struct{}{}:
		defer func() { <-l.relays }()
	default:
		return // too many relays: drop, as an overloaded server would
	}
	srcRelease, ok := l.relaySrc.Take(c.RemoteAddr(), transport.Scarce(l.relays))
	if !ok {
		return // likewise, for one source
	}
	defer srcRelease()
	dctx, cancel := context.WithTimeout(l.ctx, l.cfg.HandshakeTimeout)
	var d net.Dialer
	cover, err := d.DialContext(dctx, "tcp", l.cfg.Dest)
	cancel()
	if err != nil {
		l.cfg.Logger.Debug("cover site unreachable", "err", err)
		return
	}
	defer cover.Close()
	stop := context.AfterFunc(l.ctx, func() {
		c.Close()
		cover.Close()
	})
	defer stop()
	if _, err := cover.Write(buffered); err != nil {
		return
	}
	var wg sync.WaitGroup
	ended := make(chan struct{}, 2)
	wg.Go(func() { pipe(cover, c); ended <- struct{}{} })
	wg.Go(func() { pipe(c, cover); ended <- struct{}{} })
	select {
	case <-ended:
		// One direction is over: the other gets relayLinger more, as the
		// kernel gives a half-closed connection, so that a prober that
		// stays silent after the cover closed holds no relay slot for
		// ever (the cover's own socket would be long gone).
		deadline := time.Now().Add(relayLinger)
		c.SetDeadline(deadline)     //nolint:errcheck // a closed connection needs none
		cover.SetDeadline(deadline) //nolint:errcheck // likewise
	case <-l.ctx.Done():
	}
	wg.Wait()
}

// relayLinger is how long a relay's other direction may go on once one
// direction ended: Linux's default tcp_fin_timeout. A variable for tests.
var relayLinger = 60 * time.Second

// withoutAddrs drops the addresses a *net.OpError puts into its text:
// peer addresses are never logged.
func withoutAddrs(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return fmt.Errorf("%s: %w", op.Op, op.Err)
	}
	return err
}

// pipe copies src to dst until src ends, then half-closes dst. On an
// error it closes both, to end the other direction too, and passes a reset
// from src on to dst as a reset, as the cover's own reset would reach a
// prober talking to it directly.
func pipe(dst, src net.Conn) {
	_, err := io.Copy(dst, src)
	if err == nil {
		if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			return
		}
	}
	if errors.Is(err, syscall.ECONNRESET) {
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.SetLinger(0) //nolint:errcheck // best effort: a FIN instead
		}
	}
	dst.Close()
	src.Close()
}

// Accept waits for the next authenticated connection, until ctx ends or
// the listener is closed. After Close it returns an error wrapping
// transport.ErrClosed; when ctx ends, one wrapping ctx.Err() (and
// transport.ErrTimeout for a deadline).
func (l *listener) Accept(ctx context.Context) (net.Conn, error) {
	select {
	case <-l.done:
		return nil, l.closedErr()
	default:
	}
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		return nil, l.closedErr()
	case <-ctx.Done():
		err := ctx.Err()
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("reality: accept: %w: %w", transport.ErrTimeout, err)
		}
		return nil, fmt.Errorf("reality: accept: %w", err)
	}
}

func (l *listener) closedErr() error {
	return fmt.Errorf("reality: accept on %s: %w", l.ln.Addr(), transport.ErrClosed)
}

// Close stops the listener and its goroutines: handshakes in progress and
// relays to the cover end, and connections not yet accepted are closed.
// Connections already accepted stay open. Close is idempotent; only the
// first call can return an error.
func (l *listener) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		l.cancel()
		if err := l.ln.Close(); err != nil {
			l.closeErr = fmt.Errorf("reality: close listener: %w", err)
		}
		l.wg.Wait()
		for len(l.ready) > 0 { // nobody sends after Wait
			(<-l.ready).Close()
		}
	})
	return l.closeErr
}

// Addr is the address the listener is bound to.
func (l *listener) Addr() net.Addr { return l.ln.Addr() }

// prefixConn replays the bytes already read from a connection before
// reading on from it.
type prefixConn struct {
	net.Conn
	prefix []byte
}

// Read returns the buffered bytes first.
func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// CloseWrite half-closes the underlying TCP connection.
func (p *prefixConn) CloseWrite() error {
	if cw, ok := p.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
