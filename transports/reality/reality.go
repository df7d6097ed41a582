// Package reality is CommuCat's TLS-camouflage transport, after the idea
// of Xray's REALITY in a construction of its own. To the network a client
// connection is a browser opening TLS to a well-known site (the cover);
// the gateway answers every connection that does not authenticate by
// relaying it, byte for byte, to that real site.
//
// # Client
//
// The client opens TCP to the gateway and sends a browser ClientHello
// (package fingerprint; "chrome" unless the "fp" parameter names another
// preset) with server_name set to a cover name ("sni"). It authenticates
// itself inside that ClientHello, in the 32-byte legacy_session_id that a
// TLS 1.3 browser fills with random bytes:
//
//	shared     = X25519(client's X25519 key-share private key, gateway key "pbk")
//	           = X25519(gateway private key, client's X25519 key share)
//	okm        = HKDF-SHA256(ikm shared, salt client_random, info "commucat reality v1", 64 bytes)
//	kS | kC    = okm[0:32] | okm[32:64]
//
//	plaintext (16 bytes):
//	+---------+----------+-------------------+---------------------+
//	| version | reserved | unix time, seconds| short id ("sid")    |
//	|  0x01   |  3 x 00  |  4 bytes, BE      |  8 bytes            |
//	+---------+----------+-------------------+---------------------+
//	session_id = AES-256-GCM(key kS, nonce client_random[0:12], plaintext,
//	             additional data = the ClientHello handshake message with
//	             the session id set to 32 zero bytes)          (16 + 16 = 32 bytes)
//
// The X25519 key share is the standalone X25519 one (Chrome also sends an
// X25519MLKEM768 hybrid share; that one is not used), so the key is fresh
// for every connection and the gateway's reply in the clear is an ordinary
// ServerHello. The additional data binds every other byte of the hello.
//
// # Gateway
//
// The gateway reads the ClientHello records into a buffer (at most 64 KiB,
// 10 s) and accepts the connection only if the hello offers TLS 1.3,
// names one of its cover names, carries a standalone X25519 key share, the
// session id opens under kS with the gateway's short id, the timestamp is
// within ±2 minutes of the gateway's clock, and that session id was not
// accepted before (a bounded replay cache; see replayCache). Anything else
// (a prober, a browser, a replayed hello, garbage) is relayed; a
// connection that closes before sending a byte is simply closed. To relay,
// the gateway dials the cover
// ("dest") and copies both directions, starting with the buffered bytes,
// so the peer completes TLS with the real site and sees its real
// certificate and content.
//
// An authenticated client gets a real TLS 1.3 handshake from crypto/tls,
// with a certificate made for this connection: self-signed by the
// gateway's persistent ECDSA P-256 key (stock crypto/tls signs with no
// Ed25519 key for a Chrome hello, which does not offer Ed25519), naming
// the requested cover, and carrying a non-critical extension (OID
// 1.3.6.1.4.1.60591.1.1) whose value is an OCTET STRING of
//
//	HMAC-SHA256(kC, "commucat reality v1 server" | client_random | SubjectPublicKeyInfo)
//
// The client accepts the server only if that MAC verifies. TLS 1.3's
// CertificateVerify then proves the server holds the certificate's
// private key. A man in the middle without the gateway's X25519 private
// key cannot compute kC, so it cannot bind a key of its own; it cannot
// reuse the gateway's certificate for another connection (the MAC covers
// the client random), nor present it in this one (it cannot sign
// CertificateVerify). A client with a wrong "pbk" or "sid", a clock off
// by more than 2 minutes, or one whose hello was replayed first, reaches
// the cover and fails with ErrServerAuth.
//
// After the handshake the connection carries CommuCat's byte stream
// (already sealed end to end by the session layer) as TLS application
// data; its errors wrap the core/transport sentinels (transport.ErrTimeout
// with os.ErrDeadlineExceeded, transport.ErrClosed, transport.ErrRefused).
//
// # What a censor can still see
//
//   - Active probes get the cover site: every unauthenticated byte goes
//     there, including replays of a recorded hello that arrive after the
//     original (the cover answers a ServerHello nobody can continue). A
//     censor inline on the path can instead hold the client's hello back
//     and send a copy first: the copy then gets the gateway's ServerHello
//     and the client is relayed. The replay cache lives in memory: a hello
//     recorded shortly before the gateway restarts is accepted once more
//     after it. The extra hop adds the gateway-to-cover round trip to the
//     probe's timings, and a probe that stops mid-record gets the cover's
//     behaviour only once the gateway's 10 s read timeout passes.
//   - Capacity differs from the cover's: at most 1024 connections are read
//     and verified at once (beyond that they wait in the kernel's
//     backlog), and at most 1024 are relayed at once (beyond that, an
//     unauthenticated connection is closed unanswered). Once more than
//     half of either is taken, one source (an IPv4 address, an IPv6 /64)
//     gets at most 64: its further connections go to the cover unread,
//     and its further relays are closed. So one host holding one-byte
//     connections open can no longer stall new ones for the 10 s
//     timeout; many hosts together still can. A relay whose one
//     direction ended gets 60 s more, as the kernel gives a half-closed
//     connection. A censor that opens that many connections can tell.
//   - The replay cache holds 65536 hellos. A flood that evicts a hello
//     within about a second of its timestamp (far more hellos than the
//     gateway can verify in that time) would let that hello be replayed
//     (see replayCache).
//   - The gateway's ServerHello (cipher suite, key-share group, extension
//     set) is Go crypto/tls's, not the cover's server's. Everything after
//     it is encrypted, including the certificate, but record sizes are not
//     hidden: our one small certificate is not the cover's chain, and the
//     traffic after it is not the cover site's web traffic.
//   - The destination address is the gateway's, not one the cover name
//     resolves to: a censor that resolves the SNI and compares addresses
//     sees the mismatch. Choose a cover hosted near the gateway.
//   - Anyone holding an invite (pbk, sid) can authenticate and so confirm
//     that an address is a gateway.
//
// Transport values are safe for concurrent use.
package reality

import (
	"context"
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	utls "github.com/refraction-networking/utls"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/transports/fingerprint"
)

// Name is the transport's registered name.
const Name = "reality"

// ErrServerAuth is wrapped by Dial's error when the server did not prove
// it holds the gateway key: a wrong "pbk" or "sid", a clock more than two
// minutes off, or someone in the path; the connection reached the cover
// site (or an impostor) instead of the gateway.
var ErrServerAuth = errors.New("reality: server not authenticated (wrong pbk or sid, clock skew, or a man in the middle): reached the cover site, not the gateway")

// oidBinding is the certificate extension carrying the server's MAC.
var oidBinding = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 60591, 1, 1}

// ClientConfig is the client side's configuration.
type ClientConfig struct {
	// PublicKey is the gateway's reality public key (parameter "pbk").
	// Required.
	PublicKey *ecdh.PublicKey
	// ServerNames are the cover names (parameter "sni"); each Dial uses
	// one at random. Required.
	ServerNames []string
	// ShortID is the gateway's short id (parameter "sid"); zero if the
	// gateway has none.
	ShortID [ShortIDLen]byte
	// Hello is the ClientHello shape. The zero value is the "chrome"
	// preset; a capture (fingerprint.FromFile) is a local choice, never an
	// invite parameter. It must include a standalone X25519 key share,
	// which every fingerprint preset has.
	Hello fingerprint.Hello

	now func() time.Time // the clock sealed into hellos; tests move it
}

// ServerConfig is the gateway side's configuration. It holds secrets and
// logs as "[redacted]".
type ServerConfig struct {
	// Keys are the gateway's long-term keys. Required.
	Keys Keys
	// Dest is the cover site, "host:port", where unauthenticated
	// connections are relayed. Required.
	Dest string
	// ServerNames are the cover names a client may send. Required.
	ServerNames []string
	// ShortID is the short id clients must seal in their hello.
	ShortID [ShortIDLen]byte
	// MaxSkew is how far a client's timestamp may be from the gateway's
	// clock. If zero, DefaultMaxSkew.
	MaxSkew time.Duration
	// HandshakeTimeout bounds reading the ClientHello and, for an
	// authenticated client, the TLS handshake. If zero, 10 s.
	HandshakeTimeout time.Duration
	// Logger receives debug events (component "reality"); peer addresses
	// are never logged. If nil, nothing is logged.
	Logger *slog.Logger
}

// LogValue implements slog.LogValuer: the configuration holds secrets.
func (ServerConfig) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// Transport is the reality transport: a client (NewClient, Factory) that
// can only Dial, or a gateway (NewServer, ServerFactory) that can only
// Listen. It is safe for concurrent use.
type Transport struct {
	client *ClientConfig
	server *ServerConfig
	replay *replayCache
}

var _ transport.Transport = (*Transport)(nil)

// LogValue implements slog.LogValuer: a Transport holds secrets.
func (*Transport) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// Validate reports the first problem with c, wrapping
// transport.ErrBadParams and naming the invite parameter.
func (c ClientConfig) Validate() error {
	if c.PublicKey == nil {
		return badParam("pbk", "no gateway public key")
	}
	return checkNames(c.ServerNames)
}

// Validate reports the first problem with c, wrapping
// transport.ErrBadParams and naming the config parameter.
func (c ServerConfig) Validate() error {
	if c.Keys.Static == nil || c.Keys.Cert == nil {
		return fmt.Errorf("reality: server: no keys: %w", transport.ErrBadParams)
	}
	if c.MaxSkew < 0 || c.HandshakeTimeout < 0 {
		return fmt.Errorf("reality: server: negative MaxSkew or HandshakeTimeout: %w", transport.ErrBadParams)
	}
	if err := checkDest(c.Dest); err != nil {
		return err
	}
	return checkNames(c.ServerNames)
}

// NewClient returns a client-side transport.
func NewClient(c ClientConfig) (*Transport, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	c.ServerNames = slices.Clone(c.ServerNames)
	return &Transport{client: &c}, nil
}

// NewServer returns a gateway-side transport.
func NewServer(c ServerConfig) (*Transport, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	c.ServerNames = slices.Clone(c.ServerNames)
	if c.MaxSkew <= 0 {
		c.MaxSkew = DefaultMaxSkew
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Logger = c.Logger.With("component", "reality")
	return &Transport{server: &c, replay: newReplayCache(replayCacheSize, c.MaxSkew)}, nil
}

// replayCacheSize bounds the replay cache: about 3 MiB.
const replayCacheSize = 1 << 16

// Name returns "reality".
func (*Transport) Name() string { return Name }

func badParam(name, format string, args ...any) error {
	return fmt.Errorf("reality: parameter %q: %s: %w", name, fmt.Sprintf(format, args...), transport.ErrBadParams)
}

// checkNames checks cover names: non-empty DNS names, not IP addresses
// (browsers send no server_name for those).
func checkNames(names []string) error {
	if len(names) == 0 {
		return badParam("sni", "no cover name")
	}
	for _, n := range names {
		if n == "" || len(n) > 253 || net.ParseIP(n) != nil || strings.HasSuffix(n, ".") {
			return badParam("sni", "%q is not a host name", n)
		}
		for _, r := range n {
			if !(r == '-' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
				return badParam("sni", "%q is not a host name", n)
			}
		}
	}
	return nil
}

func checkDest(dest string) error {
	host, port, err := net.SplitHostPort(dest)
	if err != nil || host == "" {
		return badParam("dest", "%q is not host:port", dest)
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return badParam("dest", "%q has no valid port", dest)
	}
	return nil
}

func parseShortID(s string) ([ShortIDLen]byte, error) {
	var sid [ShortIDLen]byte
	if s == "" {
		return sid, nil
	}
	b, err := hex.DecodeString(s)
	if err != nil || len(b) > ShortIDLen || len(s)%2 != 0 {
		return sid, badParam("sid", "want up to 16 hex digits")
	}
	copy(sid[:], b) // a shorter id is zero-padded
	return sid, nil
}

func splitNames(s string) []string {
	var out []string
	for _, n := range strings.Split(s, ",") {
		if n = strings.TrimSpace(n); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// checkKeys rejects parameters not in allowed, naming them.
func checkKeys(p transport.Params, allowed ...string) error {
	var unknown []string
	for k := range p {
		if !slices.Contains(allowed, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("reality: unknown parameters %s: %w", strings.Join(unknown, ", "), transport.ErrBadParams)
	}
	return nil
}

// Factory builds the client side from invite parameters: "pbk" (the
// gateway's public key, required), "sni" (cover names, comma-separated,
// required), "sid" (short id, up to 16 hex digits) and "fp" (a
// fingerprint preset name; default "chrome"; capture files are not
// accepted here: use NewClient with fingerprint.FromFile).
func Factory(p transport.Params) (transport.Transport, error) {
	return newFromParams(p, nil)
}

// FactoryWithHello returns a Factory that builds clients sending h, a
// local choice such as a browser's captured hello (fingerprint.FromFile),
// in place of the invite's "fp" preset, which it still validates.
func FactoryWithHello(h fingerprint.Hello) transport.Factory {
	return func(p transport.Params) (transport.Transport, error) {
		return newFromParams(p, &h)
	}
}

// newFromParams builds a client from invite parameters, with hello
// overriding "fp" if not nil.
func newFromParams(p transport.Params, override *fingerprint.Hello) (transport.Transport, error) {
	if err := checkKeys(p, "pbk", "sni", "sid", "fp"); err != nil {
		return nil, err
	}
	pub, err := DecodePublicKey(p["pbk"])
	if err != nil {
		return nil, badParam("pbk", "%v", err)
	}
	sid, err := parseShortID(p["sid"])
	if err != nil {
		return nil, err
	}
	hello, err := fingerprint.Preset(p["fp"])
	if err != nil {
		return nil, badParam("fp", "%v", err)
	}
	if override != nil {
		hello = *override
	}
	return NewClient(ClientConfig{PublicKey: pub, ServerNames: splitNames(p["sni"]), ShortID: sid, Hello: hello})
}

// ServerFactory builds the gateway side from the gateway config's
// parameters: "dest" (the cover site, host:port, required), "sni" (cover
// names clients may use, comma-separated, required), "sid" (short id, up
// to 16 hex digits, optional) and "fp" (the preset published to clients,
// default "chrome"). Its keys live in dir (KeyFile, CertKeyFile; created
// 0600 on first use). It returns the public parameters pbk, sni, fp and,
// if set, sid.
func ServerFactory(p transport.Params, dir string) (transport.Transport, transport.Params, error) {
	if err := checkKeys(p, "dest", "sni", "sid", "fp"); err != nil {
		return nil, nil, err
	}
	sid, err := parseShortID(p["sid"])
	if err != nil {
		return nil, nil, err
	}
	fp := p["fp"]
	if fp == "" {
		fp = fingerprint.DefaultPreset
	}
	if _, err := fingerprint.Preset(fp); err != nil {
		return nil, nil, badParam("fp", "%v", err)
	}
	names := splitNames(p["sni"])
	if err := checkNames(names); err != nil {
		return nil, nil, err
	}
	if err := checkDest(p["dest"]); err != nil {
		return nil, nil, err
	}
	keys, err := LoadOrCreateKeys(dir)
	if err != nil {
		return nil, nil, err
	}
	t, err := NewServer(ServerConfig{Keys: keys, Dest: p["dest"], ServerNames: names, ShortID: sid})
	if err != nil {
		return nil, nil, err
	}
	pub := transport.Params{
		"pbk": EncodePublicKey(keys.Static.PublicKey()),
		"sni": strings.Join(names, ","),
		"fp":  fp,
	}
	if sid != ([ShortIDLen]byte{}) {
		pub["sid"] = hex.EncodeToString(sid[:])
	}
	return t, pub, nil
}

// Dial opens a reality connection to the gateway at addr: TCP, then the
// authenticated TLS 1.3 handshake. ctx bounds the whole set-up. A refused
// TCP connection wraps transport.ErrRefused, a timeout transport.ErrTimeout,
// and a server that fails authentication ErrServerAuth.
func (t *Transport) Dial(ctx context.Context, addr string) (net.Conn, error) {
	if t.client == nil {
		return nil, fmt.Errorf("reality: dial on a gateway transport: %w", transport.ErrUnsupported)
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, wrapErr("dial "+addr, err)
	}
	if tc, ok := raw.(*net.TCPConn); ok {
		tc.SetNoDelay(true) //nolint:errcheck // an optimisation only
	}
	c, err := t.client.handshake(ctx, raw)
	if err != nil {
		raw.Close()
		return nil, err
	}
	return c, nil
}

// handshake runs the client's authenticated handshake over raw.
func (c *ClientConfig) handshake(ctx context.Context, raw net.Conn) (net.Conn, error) {
	sni := c.ServerNames[0]
	if len(c.ServerNames) > 1 {
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(c.ServerNames))))
		if err == nil {
			sni = c.ServerNames[n.Int64()]
		}
	}
	var k *keys // set before the handshake starts; read by verify
	var random []byte
	cfg := &utls.Config{
		ServerName:         sni,
		InsecureSkipVerify: true, // the certificate is checked by verify below
		VerifyPeerCertificate: func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
			return verifyServerCert(k, random, rawCerts)
		},
	}
	uc, err := c.Hello.Client(raw, cfg, nil)
	if err != nil {
		return nil, fmt.Errorf("reality: %w", err)
	}
	k, random, err = c.seal(uc)
	if err != nil {
		return nil, err
	}
	defer k.wipe()
	if err := uc.HandshakeContext(ctx); err != nil {
		if errors.Is(err, ErrServerAuth) {
			return nil, fmt.Errorf("reality: handshake with %s: %w", sni, ErrServerAuth)
		}
		if cerr := ctx.Err(); cerr != nil {
			return nil, wrapErr("handshake", cerr)
		}
		return nil, wrapErr("handshake", err)
	}
	if v := uc.ConnectionState().Version; v != utls.VersionTLS13 {
		return nil, fmt.Errorf("reality: negotiated tls version %#04x: %w", v, ErrServerAuth)
	}
	return &conn{tlsConn: uc}, nil
}

// seal builds uc's ClientHello and writes the authenticator into its
// session id. It returns the connection's keys and the client random.
func (c *ClientConfig) seal(uc *utls.UConn) (*keys, []byte, error) {
	if err := uc.BuildHandshakeState(); err != nil {
		return nil, nil, fmt.Errorf("reality: build clienthello: %w", err)
	}
	priv := uc.HandshakeState.State13.KeyShareKeys
	if priv == nil || priv.Ecdhe == nil || priv.Ecdhe.Curve() != ecdh.X25519() {
		return nil, nil, fmt.Errorf("reality: fingerprint %s has no x25519 key share: %w", c.Hello, transport.ErrUnsupported)
	}
	hello := uc.HandshakeState.Hello
	random := slices.Clone(hello.Random)
	k, err := deriveKeys(priv.Ecdhe, c.PublicKey, random)
	if err != nil {
		return nil, nil, err
	}
	hello.SessionId = make([]byte, sessionIDLen)
	if err := uc.MarshalClientHello(); err != nil {
		k.wipe()
		return nil, nil, fmt.Errorf("reality: marshal clienthello: %w", err)
	}
	aad := slices.Clone(hello.Raw)
	now := time.Now
	if c.now != nil {
		now = c.now
	}
	sid, err := k.sealSessionID(random, now(), c.ShortID, aad)
	if err != nil {
		k.wipe()
		return nil, nil, err
	}
	hello.SessionId = sid
	if err := uc.MarshalClientHello(); err != nil {
		k.wipe()
		return nil, nil, fmt.Errorf("reality: marshal clienthello: %w", err)
	}
	// The gateway checks the hello as sent; utls marshals it again before
	// sending, from the same fields. Make sure nothing but the session id
	// moved.
	const sidOffset = 4 + 2 + randomLen + 1
	got := slices.Clone(hello.Raw)
	if len(got) != len(aad) {
		k.wipe()
		return nil, nil, fmt.Errorf("reality: clienthello changed size when sealed")
	}
	clear(got[sidOffset : sidOffset+sessionIDLen])
	if !hmac.Equal(got, aad) {
		k.wipe()
		return nil, nil, fmt.Errorf("reality: clienthello changed when sealed")
	}
	return k, random, nil
}

// verifyServerCert checks the server's binding MAC.
func verifyServerCert(k *keys, random []byte, rawCerts [][]byte) error {
	if k == nil || len(rawCerts) == 0 {
		return ErrServerAuth
	}
	leaf, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return fmt.Errorf("%w: %w", ErrServerAuth, err)
	}
	for _, ext := range leaf.Extensions {
		if !ext.Id.Equal(oidBinding) {
			continue
		}
		var mac []byte
		rest, err := asn1.Unmarshal(ext.Value, &mac)
		if err != nil || len(rest) != 0 {
			return ErrServerAuth
		}
		if hmac.Equal(mac, k.certMACOf(random, leaf.RawSubjectPublicKeyInfo)) {
			return nil
		}
		return ErrServerAuth
	}
	return ErrServerAuth
}
