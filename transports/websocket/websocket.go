// Package websocket is CommuCat's WebSocket transport: to an observer it
// is a browser talking to a small HTTPS website over a WebSocket. It uses
// coder/websocket for the WebSocket protocol and utls for the client's
// TLS ClientHello.
//
// # Server
//
// The server is an HTTPS server (crypto/tls, TLS 1.2 and 1.3, ALPN
// http/1.1) with a self-signed ECDSA certificate kept in its state
// directory (decoy.LoadOrCreateCert). Every request is answered by the
// decoy site (transports/decoy, a static blog served the way nginx serves
// it), except a valid WebSocket upgrade request (GET, HTTP/1.1, Upgrade:
// websocket, version 13, a 16-byte key) on one secret path: "/" and 22
// random base64url characters, generated on first start and kept in the
// state directory. So a browser, a crawler or an active prober sees only
// the blog: "/" is its home page, other paths its 404 page, a WebSocket
// upgrade on any other path, or a plain GET of the secret path, gets
// exactly what the blog would answer, and plain HTTP on the HTTPS port
// gets nginx's "400 The plain HTTP request was sent to HTTPS port". The
// secret path is the only thing that tells a gateway apart, so it is
// treated as a secret: never logged, redacted from Config's log value.
//
// # Client
//
// Dial opens a TCP connection and sends a browser's ClientHello through
// transports/fingerprint (parameter "fp", default "chrome") with ALPN
// forced to http/1.1, as Chrome offers on the separate connection it opens
// for a WebSocket; otherwise a Chrome ClientHello offers h2. The server's
// certificate is checked against the pin instead of a certificate
// authority. Then it sends the WebSocket upgrade request for the secret
// path over that connection, with a browser's request headers
// (User-Agent, Origin, Cache-Control, Accept-Language, ...), which matter
// when a CDN or reverse proxy in front of the gateway sees them.
//
// # Mapping
//
// Each net.Conn is one WebSocket. Write sends binary messages of at most
// 64 KiB, unmasked from the server and masked from the client as RFC 6455
// requires; Read returns the payloads of the peer's binary messages as one
// stream. permessage-deflate is never negotiated: the bytes above are
// already encrypted, so compression would cost CPU and gain nothing. Close
// runs the WebSocket close handshake (status 1000), so bytes written
// before Close reach the peer before its io.EOF; a peer that does not
// answer within 5 s is cut off. WebSocket has no half-close, so there is
// no CloseWrite.
//
// # Parameters
//
// Factory (the client) reads "pin" and "path" (both required, as
// ServerFactory publishes them), "sni" (server_name; if absent, the host
// of the dialled address when it is a name, and none for an IP address,
// as a browser would send: no single default name for a censor to match),
// "host" (the Host header; if absent, the SNI, else the dialled address)
// and "fp" (a fingerprint.Parse name; default "chrome").
//
// ServerFactory (the gateway) reads "sni" (the name on the certificate,
// published to clients) and "path" (a fixed secret path instead of the
// generated one), and publishes "pin", "path" and, if set, "sni".
//
// # Errors
//
// I/O errors wrap the core/transport sentinels: a deadline matches
// transport.ErrTimeout and os.ErrDeadlineExceeded, I/O after Close
// matches transport.ErrClosed and net.ErrClosed, and a peer that reset the
// connection or dropped it without a close frame matches
// transport.ErrRefused. io.EOF is returned as is. Dial fails with
// ErrPinMismatch when the certificate does not carry the pinned key, and
// with ErrRejected (and transport.ErrRefused) when the server does not
// upgrade the connection.
package websocket

import (
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/transports/decoy"
	"github.com/commucat/commucat/transports/fingerprint"
)

// Name is the transport's registered name.
const Name = "websocket"

// DefaultHandshakeTimeout bounds a connection's set-up when
// Config.HandshakeTimeout is zero.
const DefaultHandshakeTimeout = 10 * time.Second

// Config configures a Transport. The zero value of each field is its
// documented default. A Config holds the server's private key and the
// secret path: it redacts itself in logs.
type Config struct {
	// Certificate is the server's certificate; Listen needs it. See
	// decoy.LoadOrCreateCert.
	Certificate *tls.Certificate
	// Path is the secret path that upgrades to a WebSocket, such as
	// "/3nq0x...": "/" followed by letters, digits and "-._~/". Both
	// sides need it.
	Path string
	// Site answers every request that is not an upgrade on Path. If nil,
	// decoy.Handler().
	Site http.Handler

	// Pin is the pin of the server's certificate (see PinOf); Dial needs
	// it.
	Pin string
	// SNI is the server name a client sends. If empty, the host of the
	// dialled address, or none for an IP address.
	SNI string
	// Host is the Host header of the upgrade request. If empty, SNI, or
	// the dialled address.
	Host string
	// Fingerprint names the ClientHello shape (see fingerprint.Parse). If
	// empty, "chrome".
	Fingerprint string

	// HandshakeTimeout bounds a client's TLS and WebSocket handshakes, and
	// the server's wait for an Accept to take an upgraded connection. (The
	// server waits for a request as nginx does: 60 s for the TLS
	// handshake and the header, 75 s on an idle keep-alive connection.)
	// If zero, DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// Logger receives debug records about failed handshakes and refused
	// connections. If nil, nothing is logged.
	Logger *slog.Logger
}

// LogValue implements slog.LogValuer: a Config holds a private key and the
// secret path.
func (Config) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// Validate reports the first invalid field of c, wrapping
// transport.ErrBadParams.
func (c Config) Validate() error {
	if c.Certificate == nil && c.Pin == "" {
		return fmt.Errorf("websocket: config needs a Certificate (to listen) or a Pin (to dial): %w", transport.ErrBadParams)
	}
	if c.Certificate != nil && len(c.Certificate.Certificate) == 0 {
		return fmt.Errorf("websocket: config Certificate is empty: %w", transport.ErrBadParams)
	}
	if c.Pin != "" {
		if _, err := decodePin(c.Pin); err != nil {
			return fmt.Errorf("%w: %w", err, transport.ErrBadParams)
		}
	}
	if err := checkPath(c.Path); err != nil {
		return err
	}
	if c.SNI != "" && (!validHost(c.SNI) || net.ParseIP(c.SNI) != nil) {
		return fmt.Errorf("websocket: config SNI %q is not a host name: %w", c.SNI, transport.ErrBadParams)
	}
	if c.Host != "" && !validHostPort(c.Host) {
		return fmt.Errorf("websocket: config Host %q is not a host or host:port: %w", c.Host, transport.ErrBadParams)
	}
	if _, err := fingerprint.Parse(c.Fingerprint); err != nil {
		return fmt.Errorf("websocket: config Fingerprint: %w: %w", err, transport.ErrBadParams)
	}
	if c.HandshakeTimeout < 0 {
		return fmt.Errorf("websocket: config HandshakeTimeout is negative (%v): %w", c.HandshakeTimeout, transport.ErrBadParams)
	}
	return nil
}

// checkPath accepts "/" followed by 1 to 255 characters of letters,
// digits and "-._~/".
func checkPath(p string) error {
	ok := len(p) >= 2 && len(p) <= 256 && p[0] == '/'
	for i := 1; ok && i < len(p); i++ {
		ch := p[i]
		ok = ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || strings.IndexByte("-._~/", ch) >= 0
	}
	if !ok {
		// The path is a secret: the message does not repeat it.
		return fmt.Errorf("websocket: path must be \"/\" and 1 to 255 of a-z A-Z 0-9 - . _ ~ /: %w", transport.ErrBadParams)
	}
	return nil
}

// validHost accepts a host name of printable ASCII without spaces, as the
// TLS server_name extension carries.
func validHost(h string) bool {
	return h != "" && len(h) <= 253 && !strings.ContainsFunc(h, func(r rune) bool {
		return r <= ' ' || r >= 0x7f || r == '/' || r == ':' || r == '[' || r == ']'
	})
}

// validHostPort accepts a host name, an IP address or either with a port.
func validHostPort(h string) bool {
	if host, port, err := net.SplitHostPort(h); err == nil {
		if port == "" || strings.Trim(port, "0123456789") != "" || len(port) > 5 {
			return false
		}
		h = host
	}
	return net.ParseIP(h) != nil || validHost(h)
}

func (c Config) withDefaults() Config {
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Site == nil {
		c.Site = decoy.Handler()
	}
	return c
}

// Transport dials and listens for WebSocket connections over TLS. It is
// safe for concurrent use and keeps no connections of its own: each
// connection belongs to its caller, each listener to whoever opened it.
type Transport struct {
	cfg    Config
	pin    [sha256.Size]byte
	hasPin bool
	hello  fingerprint.Hello
	log    *slog.Logger
}

var _ transport.Transport = (*Transport)(nil)

// New returns a WebSocket transport. A client needs cfg.Pin and cfg.Path, a
// server cfg.Certificate and cfg.Path; one Transport may have both.
func New(cfg Config) (*Transport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	t := &Transport{cfg: cfg, log: cfg.Logger.With("component", "transport/websocket")}
	if cfg.Pin != "" {
		t.pin, _ = decodePin(cfg.Pin) // checked by Validate
		t.hasPin = true
	}
	t.hello, _ = fingerprint.Parse(cfg.Fingerprint) // checked by Validate
	return t, nil
}

// Factory builds a client WebSocket transport for the transport registry
// from its parameters: "pin" and "path" (required), "sni", "host" and
// "fp". Other keys are rejected with transport.ErrBadParams.
func Factory(p transport.Params) (transport.Transport, error) {
	if err := checkKeys(p, "pin", "path", "sni", "host", "fp"); err != nil {
		return nil, err
	}
	for _, k := range []string{"pin", "path"} {
		if p[k] == "" {
			return nil, fmt.Errorf("websocket: parameter %s is required: %w", k, transport.ErrBadParams)
		}
	}
	return New(Config{Pin: p["pin"], Path: p["path"], SNI: p["sni"], Host: p["host"], Fingerprint: p["fp"]})
}

// checkKeys rejects parameters other than allowed.
func checkKeys(p transport.Params, allowed ...string) error {
	var unknown []string
	for k := range p {
		known := false
		for _, a := range allowed {
			known = known || k == a
		}
		if !known {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("websocket: unknown parameters %s: %w", strings.Join(unknown, ", "), transport.ErrBadParams)
	}
	return nil
}

// LogValue implements slog.LogValuer: a Transport holds the server's
// private key and the secret path.
func (*Transport) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// Name returns "websocket".
func (*Transport) Name() string { return Name }

// Pin returns the pin clients use for this transport: that of the
// certificate for a server, the configured one for a client.
func (t *Transport) Pin() string {
	if t.cfg.Certificate != nil && t.cfg.Certificate.Leaf != nil {
		return PinOf(t.cfg.Certificate.Leaf)
	}
	return t.cfg.Pin
}
