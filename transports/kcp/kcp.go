// Package kcp is CommuCat's KCP transport: a reliable stream over UDP built
// on kcp-go, tuned for latency over fairness (no-delay mode, a 10 ms
// interval, fast resend, no congestion window), with kcp-go's Reed-Solomon
// forward error correction (10 data and 3 parity shards by default) and
// its AES-GCM packet encryption. It suits lossy, high-latency links where
// TCP stalls; it makes no attempt to look like anything else.
//
// # Keys
//
// Both ends share a 32-byte key, carried in the invite as the "key"
// parameter (base64url, see NewKey). The AES-256-GCM packet key is derived
// from it with HKDF-SHA256. Every packet is sealed with a random 96-bit
// nonce, so one key should protect no more than about 2^32 packets (some
// 5 TB) across all of a gateway's connections: rotate the key before that.
//
// # Wire format
//
// Each UDP payload is nonce (12 bytes) | AES-GCM(kcp-go packet) | tag (16
// bytes). Inside, kcp-go's packet is a FEC header (seqid u32le | type u16le
// | size u16le) followed by KCP segments (conv u32le | cmd u8 | frg u8 |
// wnd u16le | ts u32le | sn u32le | una u32le | len u32le | data). KCP has
// no connection set-up or close of its own, so the byte stream it carries
// is framed:
//
//	frame = type u8 | length u16be | payload
//
//	0x01 HELLO    client's first frame: version u8 (1) | unix seconds u64be | nonce [16]
//	0x02 WELCOME  server's first frame: version u8 (1) | the client's nonce [16]
//	0x03 DATA     1 to 32768 bytes of the application's stream
//	0x04 FIN      empty: the sender closed; no DATA follows
//	0x05 FIN_ACK  empty: the FIN, and so all data before it, arrived
//	0x06 PING     empty: keep-alive
//
// Datagrams and resets travel as kcp-go out-of-band packets (FEC type
// 0xf3: seqid 0xffffffff, then conv u32le | kind u8 | payload), which are
// neither retransmitted nor ordered: kind 0x00 is a datagram, 0x01 a reset
// (the sender dropped the connection), 0x02 a copy of a FIN_ACK (kcp-go
// discards stream data it has not sent yet when a session closes, so the
// last word of a close is also written straight to the socket). A captured
// out-of-band packet can be replayed within its connection, so datagrams
// may arrive twice.
//
// A server answers a packet from an unknown address only if it
// authenticates, starts the KCP stream (the PUSH segment with sequence
// number 0) with a HELLO whose clock is within two minutes of the server's,
// and carries a nonce not seen in that time. Probes and replayed packets get
// no answer at all. Such a first packet from the address of an existing
// connection with another conversation ID replaces that connection: a
// client restarted behind the same NAT mapping is not locked out.
//
// # Connections
//
// Dial sends HELLO and waits for WELCOME, so it fails with
// transport.ErrTimeout when nobody answers. Close sends FIN and returns at
// once; the connection lingers until the peer acknowledges it (or closes
// too), for at most Config.Linger, so that the data written before Close
// reaches the peer before its io.EOF. A connection that hears nothing for
// Config.IdleTimeout is dropped; PINGs keep an idle one alive. KCP has no
// half-close, so there is no CloseWrite. Connections implement
// transport.DatagramConn; MaxDatagramSize depends on the MTU (1309 bytes
// for the default 1350).
//
// Each connection owns two goroutines (one reading and demultiplexing
// frames, one sending control frames and timing the connection out), and
// each listener one that reads its socket; Transport.Close stops them all.
// kcp-go also runs process-wide goroutines of its own (a timer scheduler
// started when the package loads, and packet workers started on first use)
// that never exit.
//
// I/O errors wrap the core/transport sentinels: a deadline or an idle
// timeout matches transport.ErrTimeout, I/O after Close transport.ErrClosed
// and net.ErrClosed, a peer that reset or closed the connection (for
// writes) transport.ErrRefused. io.EOF is returned as is.
package kcp

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	kcpgo "github.com/xtaci/kcp-go/v5"

	"github.com/commucat/commucat/core/transport"
)

// Name is the transport's registered name.
const Name = "kcp"

// Defaults for the zero fields of Config.
const (
	DefaultDataShards       = 10
	DefaultParityShards     = 3
	DefaultMTU              = 1350
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultIdleTimeout      = 30 * time.Second
	DefaultKeepAlive        = 10 * time.Second
	DefaultLinger           = 5 * time.Second
)

// maxSkew is the clock difference a HELLO may show.
const maxSkew = 2 * time.Minute

// KCP tuning: no-delay mode, 10 ms interval, resend after 2 duplicate ACKs,
// no congestion control; windows of 1024 segments each way.
const (
	noDelay, interval, resend, noCongestion = 1, 10, 2, 1
	window                                  = 1024
)

// Config configures a Transport. The zero value of each field but Key is
// its documented default. A Config holds the key: it redacts itself in
// logs.
type Config struct {
	// Key is the shared key, 32 bytes in base64url without padding (see
	// NewKey). Required.
	Key string
	// DataShards and ParityShards set the Reed-Solomon code over groups of
	// packets. If zero, DefaultDataShards and DefaultParityShards. Both
	// ends must agree.
	DataShards, ParityShards int
	// MTU is the largest UDP payload sent. If zero, DefaultMTU.
	MTU int
	// HandshakeTimeout bounds Dial's wait for WELCOME, and the server's
	// wait for HELLO. If zero, DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// IdleTimeout drops a connection that received nothing for this long.
	// If zero, DefaultIdleTimeout.
	IdleTimeout time.Duration
	// KeepAlive is the PING interval. If zero, DefaultKeepAlive; it must be
	// shorter than IdleTimeout.
	KeepAlive time.Duration
	// Linger bounds how long a closed connection waits for its FIN to be
	// acknowledged. If zero, DefaultLinger.
	Linger time.Duration
	// Logger receives debug records about dropped connections. If nil,
	// nothing is logged.
	Logger *slog.Logger
}

// LogValue implements slog.LogValuer: a Config holds the key.
func (Config) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// Validate reports the first invalid field of c, wrapping
// transport.ErrBadParams. It never includes the key in its message.
func (c Config) Validate() error {
	if c.Key == "" {
		return fmt.Errorf("kcp: config needs a Key: %w", transport.ErrBadParams)
	}
	if raw, err := decodeKey(c.Key); err != nil {
		return err
	} else {
		clear(raw)
	}
	c = c.withDefaults()
	if c.DataShards < 1 || c.ParityShards < 1 || c.DataShards+c.ParityShards > 256 {
		return fmt.Errorf("kcp: config shards %d+%d: want at least 1 of each and at most 256 in all: %w", c.DataShards, c.ParityShards, transport.ErrBadParams)
	}
	if c.MTU < 576 || c.MTU > 1472 {
		return fmt.Errorf("kcp: config MTU %d: want 576 to 1472: %w", c.MTU, transport.ErrBadParams)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"HandshakeTimeout", c.HandshakeTimeout}, {"IdleTimeout", c.IdleTimeout}, {"KeepAlive", c.KeepAlive}, {"Linger", c.Linger}} {
		if d.v < 0 {
			return fmt.Errorf("kcp: config %s is negative (%v): %w", d.name, d.v, transport.ErrBadParams)
		}
	}
	if c.KeepAlive >= c.IdleTimeout {
		return fmt.Errorf("kcp: config KeepAlive (%v) must be shorter than IdleTimeout (%v): %w", c.KeepAlive, c.IdleTimeout, transport.ErrBadParams)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.DataShards == 0 {
		c.DataShards = DefaultDataShards
	}
	if c.ParityShards == 0 {
		c.ParityShards = DefaultParityShards
	}
	if c.MTU == 0 {
		c.MTU = DefaultMTU
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

// decodeKey parses a key parameter. The caller wipes the result.
func decodeKey(s string) ([]byte, error) {
	raw, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil || len(raw) != 32 {
		clear(raw)
		return nil, fmt.Errorf("kcp: key must be 32 bytes in base64url without padding (43 characters): %w", transport.ErrBadParams)
	}
	return raw, nil
}

// NewKey returns a new random shared key for Config.Key and the "key"
// parameter.
func NewKey() string {
	var k [32]byte
	rand.Read(k[:]) //nolint:errcheck // crypto/rand.Read never fails
	s := base64.RawURLEncoding.EncodeToString(k[:])
	clear(k[:])
	return s
}

// packetAEAD derives the AES-256-GCM packet cipher from a key parameter.
func packetAEAD(key string) (cipher.AEAD, error) {
	raw, err := decodeKey(key)
	if err != nil {
		return nil, err
	}
	defer clear(raw)
	k, err := hkdf.Key(sha256.New, raw, []byte("commucat kcp v1"), "packet key", 32)
	if err != nil {
		return nil, fmt.Errorf("kcp: derive key: %w", err)
	}
	defer clear(k)
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, fmt.Errorf("kcp: derive key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("kcp: derive key: %w", err)
	}
	return aead, nil
}

// Transport dials and listens on KCP. It is safe for concurrent use. It
// owns the connections it dials and accepts until they have ended; Close
// ends them all.
type Transport struct {
	cfg   Config
	aead  cipher.AEAD
	block kcpgo.BlockCrypt
	log   *slog.Logger

	mu        sync.Mutex
	closed    bool
	conns     map[*conn]struct{}
	listeners map[*listener]struct{}
	wg        sync.WaitGroup // goroutines of connections and listeners
}

var _ transport.Transport = (*Transport)(nil)

// New returns a KCP transport; the same Transport dials and listens.
func New(cfg Config) (*Transport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	aead, err := packetAEAD(cfg.Key)
	if err != nil {
		return nil, err
	}
	return &Transport{
		cfg:       cfg,
		aead:      aead,
		block:     kcpgo.NewAEADCrypt(aead),
		log:       cfg.Logger.With("component", "transport/kcp"),
		conns:     make(map[*conn]struct{}),
		listeners: make(map[*listener]struct{}),
	}, nil
}

// Factory builds a KCP transport for the transport registry from its
// parameters: "key" (required), "datashards" and "parityshards". Other keys
// are rejected with transport.ErrBadParams.
func Factory(p transport.Params) (transport.Transport, error) {
	var unknown []string
	for k := range p {
		switch k {
		case "key", "datashards", "parityshards":
		default:
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("kcp: unknown parameters %s: %w", strings.Join(unknown, ", "), transport.ErrBadParams)
	}
	cfg := Config{Key: p["key"]}
	for _, f := range []struct {
		name string
		dst  *int
	}{{"datashards", &cfg.DataShards}, {"parityshards", &cfg.ParityShards}} {
		v, ok := p[f.name]
		if !ok {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("kcp: parameter %s %q is not a positive number: %w", f.name, v, transport.ErrBadParams)
		}
		*f.dst = n
	}
	return New(cfg)
}

// Name returns "kcp".
func (*Transport) Name() string { return Name }

// newSession tunes a kcp-go session for latency.
func (t *Transport) tune(s *kcpgo.UDPSession) {
	//lint:ignore SA1019 kcp-go marks it deprecated without a replacement; stream mode packs small writes into full segments.
	s.SetStreamMode(true)
	s.SetWriteDelay(false)
	s.SetNoDelay(noDelay, interval, resend, noCongestion)
	s.SetWindowSize(window, window)
	s.SetMtu(t.cfg.MTU)
	s.SetACKNoDelay(true)
}

// Dial connects to addr ("host:port"): it sends HELLO and waits for the
// server's WELCOME, for at most Config.HandshakeTimeout and until ctx ends.
func (t *Transport) Dial(ctx context.Context, addr string) (net.Conn, error) {
	if t.isClosed() {
		return nil, closedErr("dial " + addr)
	}
	raddr, err := resolve(ctx, addr)
	if err != nil {
		return nil, dialErr(ctx, addr, err)
	}
	network := "udp"
	if raddr.Addr().Is4() {
		network = "udp4"
	}
	udp, err := net.ListenUDP(network, nil)
	if err != nil {
		return nil, wrapErr("dial "+addr, err)
	}
	udp.SetReadBuffer(4 << 20)  //nolint:errcheck // best effort
	udp.SetWriteBuffer(4 << 20) //nolint:errcheck // best effort
	var convb [4]byte
	rand.Read(convb[:]) //nolint:errcheck // crypto/rand.Read never fails
	udpAddr := net.UDPAddrFromAddrPort(raddr)
	sess, err := kcpgo.NewConn4(binary.LittleEndian.Uint32(convb[:]), udpAddr, t.block, t.cfg.DataShards, t.cfg.ParityShards, true, udp)
	if err != nil {
		udp.Close()
		return nil, wrapErr("dial "+addr, err)
	}
	t.tune(sess)
	c := newConn(t, sess, udp, udpAddr)
	if err := c.dialHandshake(ctx); err != nil {
		sess.Close()
		return nil, dialErr(ctx, addr, err)
	}
	if !t.start(c) {
		return nil, closedErr("dial " + addr)
	}
	return c, nil
}

// resolve turns "host:port" into an address, honouring ctx for the lookup.
func resolve(ctx context.Context, addr string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.AddrPort{}, err
	}
	port, err := net.DefaultResolver.LookupPort(ctx, "udp", portStr)
	if err != nil {
		return netip.AddrPort{}, err
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if len(ips) == 0 {
		return netip.AddrPort{}, fmt.Errorf("no address for %s", host)
	}
	return netip.AddrPortFrom(ips[0].Unmap(), uint16(port)), nil
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
	if err := ctx.Err(); err != nil {
		return nil, ctxErr("listen "+addr, ctx)
	}
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(ctx, "udp", addr)
	if err != nil {
		return nil, wrapErr("listen "+addr, err)
	}
	udp := pc.(*net.UDPConn)
	udp.SetReadBuffer(4 << 20)  //nolint:errcheck // best effort
	udp.SetWriteBuffer(4 << 20) //nolint:errcheck // best effort
	l := newListener(t, udp)
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		udp.Close()
		return nil, closedErr("listen " + addr)
	}
	t.listeners[l] = struct{}{}
	t.wg.Add(1)
	t.mu.Unlock()
	go l.readLoop()
	return l, nil
}

// Close closes every listener of the transport, drops every connection it
// dialled or accepted (sending each peer a reset), and waits for their
// goroutines. Dial and Listen fail afterwards. It is idempotent.
func (t *Transport) Close() error {
	t.mu.Lock()
	t.closed = true
	ls := make([]*listener, 0, len(t.listeners))
	for l := range t.listeners {
		ls = append(ls, l)
	}
	cs := make([]*conn, 0, len(t.conns))
	for c := range t.conns {
		cs = append(cs, c)
	}
	t.mu.Unlock()
	for _, l := range ls {
		l.Close()
	}
	for _, c := range cs {
		c.teardown(errTransportClosed, true)
	}
	t.wg.Wait()
	return nil
}

func (t *Transport) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

// start registers c and starts its goroutines. It reports false, having
// torn c down, if the transport is closed.
func (t *Transport) start(c *conn) bool {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		c.teardown(errTransportClosed, true)
		return false
	}
	t.conns[c] = struct{}{}
	t.wg.Add(2)
	t.mu.Unlock()
	go c.readLoop()
	go c.controlLoop()
	return true
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

// KeyFile is where ServerFactory keeps the shared key, mode 0600.
const KeyFile = "kcp.key"

// ServerFactory builds the gateway side. The shared key is created in dir
// on first use (KeyFile) and reused after; "datashards" and "parityshards"
// tune the FEC. Clients get the key and the shard counts.
func ServerFactory(p transport.Params, dir string) (transport.Transport, transport.Params, error) {
	if _, ok := p["key"]; ok {
		return nil, nil, fmt.Errorf("kcp: the key is generated in the state directory, not configured: %w", transport.ErrBadParams)
	}
	key, err := loadOrCreateKey(filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, nil, err
	}
	pub := transport.Params{"key": key}
	for k, v := range p {
		pub[k] = v
	}
	t, err := Factory(pub)
	if err != nil {
		return nil, nil, err
	}
	return t, pub, nil
}

func loadOrCreateKey(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		key := strings.TrimSpace(string(b))
		if _, err := New(Config{Key: key}); err != nil {
			return "", fmt.Errorf("kcp: %s: %w", path, err)
		}
		return key, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("kcp: %w", err)
	}
	key := NewKey()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(key+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("kcp: write key: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("kcp: write key: %w", err)
	}
	return key, nil
}
