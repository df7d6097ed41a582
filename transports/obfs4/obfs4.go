// Package obfs4 is CommuCat's obfs4 transport: TCP carrying the obfs4
// protocol of Tor's pluggable transports, built on the reference library
// gitlab.com/yawning/obfs4.git (imported as obfs4lib). A gateway's obfs4
// identity lives in the same state files an obfs4proxy bridge keeps, so an
// operator can move a bridge's identity to CommuCat and back, and a client
// takes the same "cert" and "iat-mode" arguments a Tor bridge line carries.
//
// # Wire format
//
// Everything on the wire looks like uniformly random bytes. The client
// opens with (all lengths in bytes; B is the server's identity public key,
// ID its 20-byte node ID, both from "cert"):
//
//	+----------------+----------------+-------+--------+
//	| X' (32)        | P_C (77..8128) | M_C   | MAC_C  |
//	+----------------+----------------+-------+--------+
//	X'    Elligator2 representative of the client's ephemeral Curve25519 key
//	P_C   random padding
//	M_C   HMAC-SHA256-128(B | ID, X')                       (16)
//	MAC_C HMAC-SHA256-128(B | ID, X' | P_C | M_C | E)        (16)
//	E     the hour since the epoch as decimal ASCII (±1 hour accepted)
//
// The server answers Y' | AUTH | P_S | M_S | MAC_S, the same shape keyed to
// its own ephemeral key Y with the ntor AUTH tag (32 bytes) and 0 to 8051
// bytes of padding, followed by a frame carrying its length-distribution
// seed. Neither side sends more than 8192 bytes before the other's
// handshake is found. Both sides derive keys with ntor (Curve25519,
// HMAC-SHA256). Data then travels in frames of at most 1448 bytes:
//
//	+-----------------+--------------------------------------------------+
//	| length (2)      | NaCl secretbox (XSalsa20-Poly1305): tag (16) |   |
//	| XOR SipHash-2-4 |   type (1) | payload length (2) | payload | pad |
//	| OFB mask        |                                                  |
//	+-----------------+--------------------------------------------------+
//
// Nonces are a fixed prefix and a frame counter that never travels. Each
// burst of writes is padded to a length drawn from a per-server
// distribution. The full specification is doc/obfs4-spec.txt in the
// library's repository.
//
// # Parameters
//
// The client (Factory) needs "cert", the server's node ID and identity
// public key in unpadded base64 (70 characters), and "iat-mode": "0" sends
// each write at once, "1" splits bursts into MTU-sized writes with random
// gaps of up to 10 ms, and "2" also randomises every write's size, at a
// large cost in throughput. The server (ServerFactory) takes "iat-mode"
// only; when it is absent, the mode stored in the state file is used (0 for
// a new one), as obfs4proxy does. The server returns "cert" and "iat-mode"
// for its invites.
//
// The library's paranoid mode panics when a write length of 0 is drawn,
// which about 3.5% of length-distribution seeds make possible. A server in
// iat-mode 2 with such a seed gets a new seed at start (the cert stays);
// a client cannot choose the seed it uses before the server's arrives, so
// its Write turns the panic into an error and the connection is broken
// for writing. Prefer "0" or "1".
//
// # State
//
// ServerFactory keeps the node ID, the identity key pair, the DRBG seed of
// the length distribution and the IAT mode in StateFile (JSON, obfs4proxy's
// format, mode 0600), generating them on first use and reusing them after a
// restart, so the "cert" stays the same. It also writes BridgeLineFile, the
// Tor bridge line obfs4proxy writes. The library rewrites both files on
// every start in place (not atomically); keep a backup of StateFile.
//
// # Probing resistance
//
// A server never answers anything but a valid client handshake for its own
// identity from this hour, seen for the first time (a replay filter keeps
// the MACs of the last three hours). On a failed handshake it goes on
// reading and discarding until a fixed time after the connection began:
// the 30 s handshake timeout plus a per-server delay of 0 to 59 s derived
// from the DRBG seed, and then closes without having sent a byte. The
// listener runs handshakes concurrently, each in a goroutine it owns, at
// most 1024 at a time including failed ones waiting out their delay; beyond
// that new connections wait in the kernel's backlog (accepting and closing
// them would tell a prober something). So that one host holding
// connections open cannot stall everyone that way, once more than half
// the slots are taken a source (an IPv4 address, an IPv6 /64) that holds
// 64 has further connections closed at once, as a server with a
// per-address connection limit would: a prober that opens over 512
// connections from one address can see that. Handshaken connections wait
// in a queue of 64 for Accept. Close interrupts every handshake in progress and
// closes the queued connections.
//
// # Connections
//
// Connections have TCP_NODELAY set. Their I/O errors wrap the
// core/transport sentinels as transports/tcp's do: a deadline matches
// transport.ErrTimeout and os.ErrDeadlineExceeded, I/O after Close
// transport.ErrClosed and net.ErrClosed, a reset transport.ErrRefused;
// io.EOF is returned as is. obfs4 encrypts a write before sending it, so a
// write that fails, for a deadline too, leaves the stream broken: every
// later Write returns the same error, as crypto/tls does. A Write whose
// deadline has already passed when it starts fails without that harm.
// Writes larger than 64 KiB go to the library in 64 KiB pieces, each a
// padded burst, to bound the buffer it builds per call. obfs4 has no
// half-close, so connections have no CloseWrite.
//
// The replay filter lives in memory: after a restart, a first flight
// recorded up to two hours before (the MAC's epoch-hour window) is
// answered once more, which tells a prober that the server speaks obfs4,
// though not how to talk to it. The library
// registers a command-line flag, -obfs4-distBias, on the standard flag
// set; it is false, the uniform length distribution obfs4proxy uses by
// default.
//
// # Detection
//
// obfs4 resists a censor who looks for patterns and one who probes the
// server, but it is a fully encrypted protocol: its first packet is
// high-entropy bytes with no printable prefix and no TLS or HTTP framing.
// The Great Firewall's passive rule for such traffic (Wu et al., "How the
// Great Firewall of China Detects and Blocks Fully Encrypted Traffic",
// USENIX Security 2023) matches it, blocking a share of such connections
// and then the server's port for minutes. Where that rule is in force, a
// transport that looks like TLS (reality, websocket) serves better; this
// package does not try to evade it. The fixed close time of failed
// handshakes is the same for every probe of one server, which a prober
// can measure.
package obfs4

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"gitlab.com/yawning/obfs4.git/transports/base"
	obfs4lib "gitlab.com/yawning/obfs4.git/transports/obfs4"
	pt "gitlab.torproject.org/tpo/anti-censorship/pluggable-transports/goptlib"

	"github.com/commucat/commucat/core/transport"
)

// Name is the transport's registered name.
const Name = "obfs4"

// Files in a server's state directory, named and formatted as obfs4proxy's.
const (
	// StateFile holds the server's node ID, identity key pair, DRBG seed
	// and IAT mode as JSON. It holds the private key: mode 0600.
	StateFile = "obfs4_state.json"
	// BridgeLineFile holds the Tor bridge line for this server, for the
	// operator's information; editing it has no effect.
	BridgeLineFile = "obfs4_bridgeline.txt"
)

// Parameter names.
const (
	paramCert    = "cert"
	paramIATMode = "iat-mode"
)

// certLen is the length of a decoded cert: node ID (20) and identity
// public key (32).
const certLen = 20 + 32

// Listener limits; see the package doc.
const (
	defaultMaxHandshakes = 1024
	readyQueueLen        = 64
)

// Transport dials and listens with obfs4. A client Transport (from Factory)
// can only dial; a server Transport (from ServerFactory) listens and can
// also dial itself with its public parameters. It is safe for concurrent
// use and owns no goroutines of its own: its listeners own theirs. A
// server Transport holds the identity private key and redacts itself in
// logs.
type Transport struct {
	client base.ClientFactory
	args   pt.Args            // "cert" and "iat-mode" as a client sends them; read-only
	server base.ServerFactory // nil for a client

	maxHandshakes int // handshakes a listener runs at once; tests lower it
}

var _ transport.Transport = (*Transport)(nil)

// Factory builds a client obfs4 transport for the transport registry from
// a bridge line's arguments: "cert" and "iat-mode", both required. Other
// keys, including the old-style "node-id" and "public-key", are rejected
// with transport.ErrBadParams.
func Factory(p transport.Params) (transport.Transport, error) {
	if err := checkKeys(p, paramCert, paramIATMode); err != nil {
		return nil, err
	}
	cert, ok := p[paramCert]
	if !ok {
		return nil, fmt.Errorf("obfs4: parameter cert is required: %w", transport.ErrBadParams)
	}
	if err := checkCert(cert); err != nil {
		return nil, err
	}
	mode, ok := p[paramIATMode]
	if !ok {
		return nil, fmt.Errorf("obfs4: parameter iat-mode is required: %w", transport.ErrBadParams)
	}
	if err := checkIATMode(mode); err != nil {
		return nil, err
	}
	args := pt.Args{}
	args.Add(paramCert, cert)
	args.Add(paramIATMode, mode)
	return newTransport(args, nil)
}

// ServerFactory builds the gateway side of the obfs4 transport. p may hold
// "iat-mode" ("0", "1" or "2"); dir is the private state directory, where
// StateFile and BridgeLineFile are created on first use and reused after.
// It returns the clients' parameters, "cert" and "iat-mode". A state file
// that cannot be used fails with an error wrapping ErrBadState.
func ServerFactory(p transport.Params, dir string) (transport.Transport, transport.Params, error) {
	if err := checkKeys(p, paramIATMode); err != nil {
		return nil, nil, err
	}
	args := pt.Args{}
	if mode, ok := p[paramIATMode]; ok {
		if err := checkIATMode(mode); err != nil {
			return nil, nil, err
		}
		args.Add(paramIATMode, mode)
	}
	if dir == "" {
		return nil, nil, fmt.Errorf("obfs4: no state directory: %w", transport.ErrBadParams)
	}
	if err := checkStateFile(dir); err != nil {
		return nil, nil, err
	}
	lib := &obfs4lib.Transport{}
	sf, err := lib.ServerFactory(dir, &args)
	if err != nil {
		return nil, nil, fmt.Errorf("obfs4: state in %s: %w", dir, err)
	}
	if reseeded, err := reseedIfNeeded(dir); err != nil {
		return nil, nil, err
	} else if reseeded {
		if sf, err = lib.ServerFactory(dir, &args); err != nil {
			return nil, nil, fmt.Errorf("obfs4: state in %s: %w", dir, err)
		}
	}
	pub := sf.Args()
	cert, _ := pub.Get(paramCert)
	mode, _ := pub.Get(paramIATMode)
	cargs := pt.Args{}
	cargs.Add(paramCert, cert)
	cargs.Add(paramIATMode, mode)
	t, err := newTransport(cargs, sf)
	if err != nil {
		return nil, nil, err
	}
	return t, t.Params(), nil
}

// newTransport checks args with the library, which is what every Dial
// does again to draw a fresh session key.
func newTransport(args pt.Args, sf base.ServerFactory) (*Transport, error) {
	cf, err := (&obfs4lib.Transport{}).ClientFactory("")
	if err != nil {
		return nil, fmt.Errorf("obfs4: client factory: %w", err)
	}
	if _, err := cf.ParseArgs(&args); err != nil {
		return nil, fmt.Errorf("obfs4: parameters: %w: %w", transport.ErrBadParams, err)
	}
	return &Transport{client: cf, args: args, server: sf, maxHandshakes: defaultMaxHandshakes}, nil
}

// checkKeys rejects the keys of p not in allowed.
func checkKeys(p transport.Params, allowed ...string) error {
	var unknown []string
	for k := range p {
		if !slices.Contains(allowed, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("obfs4: unknown parameters %s: %w", strings.Join(unknown, ", "), transport.ErrBadParams)
	}
	return nil
}

// checkCert checks a bridge line's cert: unpadded standard base64 of the
// node ID and the identity public key.
func checkCert(s string) error {
	b, err := base64.RawStdEncoding.Strict().DecodeString(s)
	if err != nil {
		return fmt.Errorf("obfs4: parameter cert is not unpadded base64: %w", transport.ErrBadParams)
	}
	if len(b) != certLen {
		return fmt.Errorf("obfs4: parameter cert holds %d bytes, want %d: %w", len(b), certLen, transport.ErrBadParams)
	}
	return nil
}

// checkIATMode accepts exactly "0", "1" and "2".
func checkIATMode(s string) error {
	switch s {
	case "0", "1", "2":
		return nil
	}
	return fmt.Errorf("obfs4: parameter iat-mode %q is not 0, 1 or 2: %w", s, transport.ErrBadParams)
}

// Name returns "obfs4".
func (*Transport) Name() string { return Name }

// Params returns the parameters a client needs to reach this transport's
// server: "cert" and "iat-mode".
func (t *Transport) Params() transport.Params {
	cert, _ := t.args.Get(paramCert)
	mode, _ := t.args.Get(paramIATMode)
	return transport.Params{paramCert: cert, paramIATMode: mode}
}

// LogValue implements slog.LogValuer: a server Transport holds a private
// key.
func (*Transport) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// Dial connects to addr ("host:port") over TCP and runs the obfs4 client
// handshake. ctx bounds all of it: when it ends, the connection is closed
// and Dial returns ctx's error (wrapping transport.ErrTimeout for a
// deadline). A refused or reset connection wraps transport.ErrRefused; a
// server that answers with a bad handshake, ErrHandshake. A server with
// another identity never answers, so a wrong cert ends with ctx's
// deadline, or the library's 60 s handshake timeout.
func (t *Transport) Dial(ctx context.Context, addr string) (net.Conn, error) {
	op := "dial " + addr
	if ctx.Err() != nil {
		return nil, ctxErr(op, ctx)
	}
	// The session key is drawn before connecting, as the library intends,
	// so that the time its Elligator2 rejection sampling takes is not seen
	// between the TCP handshake and the first flight.
	args, err := t.client.ParseArgs(&t.args)
	if err != nil { // not reached: newTransport checked the args
		return nil, fmt.Errorf("obfs4: %s: %w", op, err)
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctxErr(op, ctx)
		}
		return nil, wrapErr(op, err)
	}
	if tc, ok := raw.(*net.TCPConn); ok {
		if err := tc.SetNoDelay(true); err != nil {
			raw.Close()
			return nil, wrapErr(op, err)
		}
	}
	c, err := t.clientHandshake(ctx, raw, args)
	if err != nil {
		return nil, handshakeErr(op, ctx, err)
	}
	return c, nil
}

// clientHandshake runs the client handshake on raw with args from
// ParseArgs (they hold the session key: one use only), closing raw if it
// fails or when ctx ends first.
func (t *Transport) clientHandshake(ctx context.Context, raw net.Conn, args any) (*conn, error) {
	// Closing raw is the one interruption the library cannot undo: it
	// sets its own deadlines during the handshake.
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		raw.Close()
	})
	dialFn := func(string, string) (net.Conn, error) { return raw, nil }
	oc, err := t.client.Dial("tcp", raw.RemoteAddr().String(), dialFn, args)
	if !stop() {
		<-fired
		if err == nil {
			oc.Close()
			err = ctx.Err()
		}
	}
	if err != nil {
		raw.Close() // the library closes it too; a second Close is harmless
		return nil, err
	}
	return newConn(oc, raw), nil
}

// Listen binds addr ("host:port"; port 0 picks a free one) and starts
// accepting obfs4 connections; see the package doc. ctx bounds only the
// bind. Only a server Transport listens; a client one fails with
// transport.ErrUnsupported.
func (t *Transport) Listen(ctx context.Context, addr string) (transport.Listener, error) {
	op := "listen " + addr
	if t.server == nil {
		return nil, fmt.Errorf("obfs4: %s: a client transport cannot listen: %w", op, transport.ErrUnsupported)
	}
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctxErr(op, ctx)
		}
		return nil, wrapErr(op, err)
	}
	return transport.NewHandshakeListener(l, transport.HandshakeConfig{
		Transport:     Name,
		Handshake:     t.acceptHandshake,
		MaxHandshakes: t.maxHandshakes,
		QueueLen:      readyQueueLen,
	}), nil
}

// acceptHandshake is the listener's handshake. The library keeps its own
// time (it sets raw's deadlines), so the listener has no Timeout: it
// closes raw only when it closes itself, which also cuts short the close
// delay of a failed handshake.
func (t *Transport) acceptHandshake(_ context.Context, raw net.Conn) (net.Conn, error) {
	if tc, ok := raw.(*net.TCPConn); ok {
		tc.SetNoDelay(true) //nolint:errcheck // a broken connection fails the handshake
	}
	c, err := t.serverHandshake(raw)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// serverHandshake runs the server handshake on raw. On failure the library
// has already kept raw open and read it until its close delay passed, and
// closed it.
func (t *Transport) serverHandshake(raw net.Conn) (*conn, error) {
	oc, err := t.server.WrapConn(raw)
	if err != nil {
		return nil, err
	}
	return newConn(oc, raw), nil
}

// statePath is the path of the state file in dir.
func statePath(dir string) string { return filepath.Join(dir, StateFile) }

// checkStateFile checks an existing state file before the library loads
// it, so that a bad one fails with ErrBadState and a message that shows
// none of its contents. A missing file is fine: the library creates it.
func checkStateFile(dir string) error {
	b, err := os.ReadFile(statePath(dir))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("obfs4: read state: %w", err)
	}
	defer clear(b)
	return checkState(b)
}
