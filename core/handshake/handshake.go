package handshake

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/cloudflare/circl/kem/mlkem/mlkem768"
	"github.com/flynn/noise"
)

// Protocol constants of handshake version 1. They are part of the wire
// format: changing any of them makes a new protocol version.
const (
	// Version is the handshake version carried in message 1.
	Version = 1
	// ProtocolName is the Noise protocol name hashed into the initial
	// handshake state.
	ProtocolName = "Noise_XKpsk3_25519_ChaChaPoly_SHA256"
	// Prologue is mixed into the handshake hash by both sides before
	// message 1; a peer using another prologue fails with ErrAuth.
	Prologue = "CommuCat handshake v1"
	// MaxMessageSize is the largest handshake message (the bytes after the
	// 2-byte length prefix). Larger lengths are refused before allocation.
	MaxMessageSize = 4096
	// MaxPayload is the largest application payload message 3 can carry
	// (message 3 without padding must fit in MaxMessageSize).
	MaxPayload = MaxMessageSize - msg3Min
	// DefaultMaxSkew is the clock skew the gateway accepts on the message 1
	// timestamp when ServerConfig.MaxSkew is zero.
	DefaultMaxSkew = 2 * time.Minute
	// maxMaxSkew bounds ServerConfig.MaxSkew: a day is far beyond any
	// clock worth accepting, and twice it (the replay cache's hold) is
	// nowhere near overflowing.
	maxMaxSkew = 24 * time.Hour
)

// Sizes of the fixed parts of the three messages (see the package doc).
const (
	keySize      = 32
	tagSize      = 16
	kemPublicLen = mlkem768.PublicKeySize  // 1184
	kemCTLen     = mlkem768.CiphertextSize // 1088

	// msg1Plain is the plaintext of message 1 without padding bytes:
	// version(1) | timestamp(8) | ML-KEM public key(1184) | padding length(2).
	msg1Plain = 1 + 8 + kemPublicLen + 2
	msg1Min   = keySize + msg1Plain + tagSize
	// msg2Plain: ML-KEM ciphertext(1088) | padding length(2).
	msg2Plain = kemCTLen + 2
	msg2Min   = keySize + msg2Plain + tagSize
	// msg3Plain without payload and padding: payload length(2) | padding length(2).
	msg3Plain = 2 + 2
	msg3Min   = keySize + tagSize + msg3Plain + tagSize
)

// Errors returned by the handshake. Callers branch on them with errors.Is;
// the returned errors wrap them with detail that never contains key bytes.
var (
	// ErrStale means the message 1 timestamp is further than MaxSkew from
	// the gateway's clock.
	ErrStale = errors.New("handshake: stale timestamp")
	// ErrReplay means the gateway has already accepted this exact message 1
	// within the replay window.
	ErrReplay = errors.New("handshake: replayed message 1")
	// ErrAuth means a message failed to decrypt or authenticate: a wrong
	// gateway key, a tampered message, a different prologue or protocol, or
	// an ML-KEM secret that does not match.
	ErrAuth = errors.New("handshake: authentication failed")
	// ErrMalformed means bytes that decrypted (or a key string or file) do
	// not have the documented layout, or a message is too short.
	ErrMalformed = errors.New("handshake: malformed")
	// ErrRateLimited means the gateway refuses the handshake because it is
	// over capacity (the replay cache is full of unexpired entries).
	// RateLimiter users return it too when Allow says no.
	ErrRateLimited = errors.New("handshake: rate limited")
	// ErrTooLarge means a message or payload is over MaxMessageSize or
	// MaxPayload.
	ErrTooLarge = errors.New("handshake: too large")
)

// errOrder is returned when the steps of an Initiator or Responder are
// called out of order or after a failure: a programmer error, not input.
var errOrder = errors.New("handshake: step called out of order or after a failure")

// cipherSuite is X25519, ChaCha20-Poly1305 and SHA-256.
var cipherSuite = noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashSHA256)

// ClientConfig configures the client (initiator) side of a handshake. It is
// read, never modified, and may be shared by concurrent handshakes.
type ClientConfig struct {
	// Static is the device's long-term X25519 key; required.
	Static *StaticKey
	// ServerPublic is the gateway's static X25519 public key, from the
	// invite; required.
	ServerPublic [32]byte
	// Payload is sent to the gateway, encrypted, in message 3 (for example
	// a device certificate). It may be empty; at most MaxPayload bytes.
	Payload []byte
	// Pad returns how many random padding bytes to add to message msg (1 or
	// 3) whose unpadded length is n. Negative results count as zero and
	// results are capped so the message fits in MaxMessageSize. If nil,
	// no padding is added.
	Pad func(msg, n int) int
	// Now is the clock for the message 1 timestamp. If nil, time.Now.
	Now func() time.Time

	// rand is the source of every random byte (tests only). If nil,
	// crypto/rand.Reader.
	rand io.Reader
}

// Validate reports whether the configuration is usable.
func (c *ClientConfig) Validate() error {
	if c.Static == nil || c.Static.isZero() {
		return errors.New("handshake: client config: Static is missing or wiped")
	}
	if c.ServerPublic == ([32]byte{}) {
		return errors.New("handshake: client config: ServerPublic is missing")
	}
	if len(c.Payload) > MaxPayload {
		return fmt.Errorf("%w: client config: Payload is %d bytes (max %d)", ErrTooLarge, len(c.Payload), MaxPayload)
	}
	return nil
}

// ServerConfig configures the gateway (responder) side of a handshake. It
// is read, never modified, and may be shared by concurrent handshakes.
type ServerConfig struct {
	// Static is the gateway's long-term X25519 key; required.
	Static *StaticKey
	// Replay remembers accepted message 1s; required, and shared by every
	// handshake of the gateway (a nil cache would disable replay
	// protection, so it is an error rather than a default).
	Replay *ReplayCache
	// MaxSkew is the largest accepted difference between the message 1
	// timestamp and Now. If zero, DefaultMaxSkew. Replay cache entries live
	// for 2*MaxSkew.
	MaxSkew time.Duration
	// Pad returns how many random padding bytes to add to message 2 whose
	// unpadded length is n (msg is 2). Negative results count as zero and
	// results are capped so the message fits in MaxMessageSize. If nil, no
	// padding is added.
	Pad func(msg, n int) int
	// Now is the gateway's clock. If nil, time.Now.
	Now func() time.Time

	// rand is the source of every random byte (tests only). If nil,
	// crypto/rand.Reader.
	rand io.Reader
}

// Validate reports whether the configuration is usable.
func (c *ServerConfig) Validate() error {
	if c.Static == nil || c.Static.isZero() {
		return errors.New("handshake: server config: Static is missing or wiped")
	}
	if c.Replay == nil {
		return errors.New("handshake: server config: Replay is nil")
	}
	if c.MaxSkew < 0 || c.MaxSkew > maxMaxSkew {
		return fmt.Errorf("handshake: server config: MaxSkew %v is outside 0 to %v", c.MaxSkew, maxMaxSkew)
	}
	return nil
}

func (c *ServerConfig) maxSkew() time.Duration {
	if c.MaxSkew == 0 {
		return DefaultMaxSkew
	}
	return c.MaxSkew
}

// Result is what a completed handshake yields. SendKey and RecvKey are raw
// ChaCha20-Poly1305 keys for the session layer: the client's SendKey equals
// the gateway's RecvKey and the other way round. The owner must call Wipe
// when the keys have been handed on. A Result is not safe for concurrent
// mutation.
type Result struct {
	// SendKey encrypts records this side sends.
	SendKey [32]byte
	// RecvKey decrypts records this side receives.
	RecvKey [32]byte
	// Hash is the Noise handshake hash (32 bytes), equal on both sides; use
	// it as a channel binding, for example to derive path-join proofs.
	Hash []byte
	// PeerStatic is the peer's static X25519 public key: on the gateway the
	// client's (authenticated by message 3; the caller must still decide
	// whether it is allowed), on the client the gateway's.
	PeerStatic [32]byte
	// Payload is, on the gateway, the client's message 3 payload; nil on
	// the client.
	Payload []byte
}

// Wipe zeroes the keys, the hash and the payload.
func (r *Result) Wipe() {
	if r == nil {
		return
	}
	clear(r.SendKey[:])
	clear(r.RecvKey[:])
	clear(r.Hash)
	clear(r.Payload)
	r.PeerStatic = [32]byte{}
}

// LogValue implements slog.LogValuer: a Result never logs its keys.
func (r Result) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// String implements fmt.Stringer without revealing keys.
func (r Result) String() string { return "handshake.Result[redacted]" }

// GoString implements fmt.GoStringer so %#v does not reveal keys either.
func (r Result) GoString() string { return r.String() }

// Format implements fmt.Formatter: every verb formats String, so verbs
// that skip String (%d, %o, %b, %c, %U, %e and the like) cannot print the
// keys either.
func (r Result) Format(f fmt.State, verb rune) { formatRedacted(f, verb, r.String()) }

// formatRedacted formats s with the directive f and verb describe.
func formatRedacted(f fmt.State, verb rune, s string) {
	fmt.Fprintf(f, fmt.FormatString(f, verb), s)
}

// Initiator runs the client side of one handshake as three explicit steps,
// without any I/O: WriteMessage1, ReadMessage2, WriteMessage3. Client is a
// thin wrapper that moves the messages over a stream. An Initiator is used
// once, by one goroutine; after any error every later step fails. Call Wipe
// when giving up early.
type Initiator struct {
	cfg  ClientConfig
	rng  io.Reader
	hs   *noise.HandshakeState
	kem  *mlkem768.PrivateKey
	step int // number of steps completed
	err  error
}

// NewInitiator validates cfg and prepares a handshake.
func NewInitiator(cfg ClientConfig) (*Initiator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rng := cfg.rand
	if rng == nil {
		rng = rand.Reader
	}
	peer := cfg.ServerPublic
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:           cipherSuite,
		Random:                rng,
		Pattern:               noise.HandshakeXK,
		Initiator:             true,
		Prologue:              []byte(Prologue),
		PresharedKeyPlacement: 3,
		StaticKeypair:         cfg.Static.dhKey(),
		PeerStatic:            peer[:],
	})
	if err != nil {
		return nil, fmt.Errorf("handshake: new initiator: %w", err)
	}
	return &Initiator{cfg: cfg, rng: rng, hs: hs}, nil
}

func (i *Initiator) begin(step int) error {
	if i.err != nil {
		return i.err
	}
	if i.step != step {
		return errOrder
	}
	return nil
}

func (i *Initiator) fail(err error) error {
	i.Wipe()
	i.err = err
	return err
}

func (i *Initiator) now() time.Time {
	if i.cfg.Now != nil {
		return i.cfg.Now()
	}
	return time.Now()
}

// WriteMessage1 returns message 1 (`-> e, es`): an ephemeral X25519 key and,
// encrypted to the gateway's static key, the version, the current time and a
// fresh ML-KEM-768 encapsulation key.
func (i *Initiator) WriteMessage1() ([]byte, error) {
	if err := i.begin(0); err != nil {
		return nil, err
	}
	var seed [mlkem768.KeySeedSize]byte
	if _, err := io.ReadFull(i.rng, seed[:]); err != nil {
		return nil, i.fail(fmt.Errorf("handshake: message 1: read random: %w", err))
	}
	pk, sk := mlkem768.NewKeyFromSeed(seed[:])
	clear(seed[:])
	i.kem = sk

	pad := padLength(i.cfg.Pad, 1, msg1Min)
	plain := make([]byte, 1+8+kemPublicLen, msg1Plain+pad)
	plain[0] = Version
	binary.BigEndian.PutUint64(plain[1:9], uint64(i.now().UnixNano()))
	pk.Pack(plain[9 : 9+kemPublicLen])
	plain, err := appendPadding(plain, pad, i.rng)
	if err != nil {
		return nil, i.fail(fmt.Errorf("handshake: message 1: %w", err))
	}
	msg, _, _, err := i.hs.WriteMessage(make([]byte, 0, msg1Min+pad), plain)
	if err != nil {
		return nil, i.fail(fmt.Errorf("handshake: message 1: %w", err))
	}
	i.step = 1
	return msg, nil
}

// ReadMessage2 processes message 2 (`<- e, ee`): it authenticates the
// gateway, decapsulates the ML-KEM shared secret and installs it as the
// Noise PSK for message 3. It fails with ErrAuth if the message does not
// decrypt (wrong gateway key, tampering) and ErrMalformed on a bad layout.
func (i *Initiator) ReadMessage2(msg []byte) error {
	if err := i.begin(1); err != nil {
		return err
	}
	if err := checkSize(2, msg, msg2Min); err != nil {
		return i.fail(err)
	}
	plain, _, _, err := i.hs.ReadMessage(nil, msg)
	if err != nil {
		return i.fail(fmt.Errorf("%w: message 2", ErrAuth))
	}
	if err := checkPadding(2, plain[kemCTLen:]); err != nil {
		return i.fail(err)
	}
	var ss [mlkem768.SharedKeySize]byte
	i.kem.DecapsulateTo(ss[:], plain[:kemCTLen])
	i.kem = nil
	err = i.hs.SetPresharedKey(ss[:])
	clear(ss[:])
	if err != nil {
		return i.fail(fmt.Errorf("handshake: message 2: %w", err))
	}
	i.step = 2
	return nil
}

// WriteMessage3 returns message 3 (`-> s, se, psk`), carrying the client's
// static key and the configured payload, and the handshake's Result. The
// client learns whether the gateway accepted message 3 only from the
// session traffic that follows.
func (i *Initiator) WriteMessage3() ([]byte, *Result, error) {
	if err := i.begin(2); err != nil {
		return nil, nil, err
	}
	payload := i.cfg.Payload
	pad := padLength(i.cfg.Pad, 3, msg3Min+len(payload))
	plain := make([]byte, 2, msg3Plain+len(payload)+pad)
	binary.BigEndian.PutUint16(plain, uint16(len(payload)))
	plain = append(plain, payload...)
	plain, err := appendPadding(plain, pad, i.rng)
	if err != nil {
		return nil, nil, i.fail(fmt.Errorf("handshake: message 3: %w", err))
	}
	msg, c1, c2, err := i.hs.WriteMessage(make([]byte, 0, msg3Min+len(payload)+pad), plain)
	if err != nil {
		return nil, nil, i.fail(fmt.Errorf("handshake: message 3: %w", err))
	}
	res := &Result{
		SendKey:    c1.UnsafeKey(),
		RecvKey:    c2.UnsafeKey(),
		Hash:       append([]byte(nil), i.hs.ChannelBinding()...),
		PeerStatic: i.cfg.ServerPublic,
	}
	i.step = 3
	i.Wipe()
	return msg, res, nil
}

// Wipe zeroes the ephemeral secrets the Initiator holds and ends it: later
// steps fail. It is safe to call at any time, more than once.
func (i *Initiator) Wipe() {
	if i.hs != nil {
		clear(i.hs.LocalEphemeral().Private)
	}
	i.kem = nil
	if i.err == nil {
		i.err = errOrder
	}
}

// Responder runs the gateway side of one handshake as three explicit steps,
// without any I/O: ReadMessage1, WriteMessage2, ReadMessage3. Server is a
// thin wrapper that moves the messages over a stream. A Responder is used
// once, by one goroutine; after any error every later step fails. Call Wipe
// when giving up early.
type Responder struct {
	cfg  ServerConfig
	rng  io.Reader
	hs   *noise.HandshakeState
	kem  *mlkem768.PublicKey
	step int
	err  error
}

// NewResponder validates cfg and prepares a handshake.
func NewResponder(cfg ServerConfig) (*Responder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rng := cfg.rand
	if rng == nil {
		rng = rand.Reader
	}
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:           cipherSuite,
		Random:                rng,
		Pattern:               noise.HandshakeXK,
		Initiator:             false,
		Prologue:              []byte(Prologue),
		PresharedKeyPlacement: 3,
		StaticKeypair:         cfg.Static.dhKey(),
	})
	if err != nil {
		return nil, fmt.Errorf("handshake: new responder: %w", err)
	}
	return &Responder{cfg: cfg, rng: rng, hs: hs}, nil
}

func (r *Responder) begin(step int) error {
	if r.err != nil {
		return r.err
	}
	if r.step != step {
		return errOrder
	}
	return nil
}

func (r *Responder) fail(err error) error {
	r.Wipe()
	r.err = err
	return err
}

func (r *Responder) now() time.Time {
	if r.cfg.Now != nil {
		return r.cfg.Now()
	}
	return time.Now()
}

// ReadMessage1 processes message 1. In order, it fails with ErrTooLarge or
// ErrMalformed on a bad length, ErrAuth if the message does not decrypt
// under the gateway's static key, ErrMalformed on an unknown version or bad
// layout, ErrStale if the timestamp is outside ±MaxSkew, ErrReplay if the
// same message 1 was accepted within the replay window and ErrRateLimited
// if the replay cache is full. Only a message that passed every other check
// enters the replay cache. The gateway should send nothing back on failure.
func (r *Responder) ReadMessage1(msg []byte) error {
	if err := r.begin(0); err != nil {
		return err
	}
	if err := checkSize(1, msg, msg1Min); err != nil {
		return r.fail(err)
	}
	plain, _, _, err := r.hs.ReadMessage(nil, msg)
	if err != nil {
		return r.fail(fmt.Errorf("%w: message 1", ErrAuth))
	}
	if plain[0] != Version {
		return r.fail(fmt.Errorf("%w: message 1: unsupported version %d (want %d)", ErrMalformed, plain[0], Version))
	}
	if err := checkPadding(1, plain[1+8+kemPublicLen:]); err != nil {
		return r.fail(err)
	}
	now := r.now()
	skew := r.cfg.maxSkew()
	sent := time.Unix(0, int64(binary.BigEndian.Uint64(plain[1:9])))
	if d := now.Sub(sent); d > skew || d < -skew {
		return r.fail(fmt.Errorf("%w: message 1 is %v from the gateway clock (max ±%v)", ErrStale, d.Round(time.Millisecond), skew))
	}
	pk := new(mlkem768.PublicKey)
	if err := pk.Unpack(plain[9 : 9+kemPublicLen]); err != nil {
		return r.fail(fmt.Errorf("%w: message 1: ML-KEM public key: %w", ErrMalformed, err))
	}
	if err := r.cfg.Replay.check(sha256.Sum256(msg), now, 2*skew); err != nil {
		return r.fail(err)
	}
	r.kem = pk
	r.step = 1
	return nil
}

// WriteMessage2 returns message 2 (`<- e, ee`): an ephemeral X25519 key and,
// encrypted, an ML-KEM-768 ciphertext to the client's encapsulation key. It
// then installs the encapsulated secret as the Noise PSK for message 3.
func (r *Responder) WriteMessage2() ([]byte, error) {
	if err := r.begin(1); err != nil {
		return nil, err
	}
	var seed [mlkem768.EncapsulationSeedSize]byte
	if _, err := io.ReadFull(r.rng, seed[:]); err != nil {
		return nil, r.fail(fmt.Errorf("handshake: message 2: read random: %w", err))
	}
	var ss [mlkem768.SharedKeySize]byte
	pad := padLength(r.cfg.Pad, 2, msg2Min)
	plain := make([]byte, kemCTLen, msg2Plain+pad)
	r.kem.EncapsulateTo(plain, ss[:], seed[:])
	clear(seed[:])
	r.kem = nil
	plain, err := appendPadding(plain, pad, r.rng)
	if err != nil {
		clear(ss[:])
		return nil, r.fail(fmt.Errorf("handshake: message 2: %w", err))
	}
	msg, _, _, err := r.hs.WriteMessage(make([]byte, 0, msg2Min+pad), plain)
	if err != nil {
		clear(ss[:])
		return nil, r.fail(fmt.Errorf("handshake: message 2: %w", err))
	}
	err = r.hs.SetPresharedKey(ss[:])
	clear(ss[:])
	if err != nil {
		return nil, r.fail(fmt.Errorf("handshake: message 2: %w", err))
	}
	r.step = 2
	return msg, nil
}

// ReadMessage3 processes message 3 and returns the Result, whose PeerStatic
// is the client's authenticated static key and Payload the client's
// payload. It fails with ErrAuth if the message does not decrypt (tampering,
// a client that could not decapsulate) and ErrMalformed on a bad layout.
func (r *Responder) ReadMessage3(msg []byte) (*Result, error) {
	if err := r.begin(2); err != nil {
		return nil, err
	}
	if err := checkSize(3, msg, msg3Min); err != nil {
		return nil, r.fail(err)
	}
	plain, c1, c2, err := r.hs.ReadMessage(nil, msg)
	if err != nil {
		return nil, r.fail(fmt.Errorf("%w: message 3", ErrAuth))
	}
	n := int(binary.BigEndian.Uint16(plain))
	if 2+n+2 > len(plain) {
		return nil, r.fail(fmt.Errorf("%w: message 3: payload length %d overruns the message", ErrMalformed, n))
	}
	if err := checkPadding(3, plain[2+n:]); err != nil {
		return nil, r.fail(err)
	}
	res := &Result{
		SendKey: c2.UnsafeKey(),
		RecvKey: c1.UnsafeKey(),
		Hash:    append([]byte(nil), r.hs.ChannelBinding()...),
		Payload: append([]byte(nil), plain[2:2+n]...),
	}
	copy(res.PeerStatic[:], r.hs.PeerStatic())
	r.step = 3
	r.Wipe()
	return res, nil
}

// Wipe zeroes the ephemeral secrets the Responder holds and ends it: later
// steps fail. It is safe to call at any time, more than once.
func (r *Responder) Wipe() {
	if r.hs != nil {
		clear(r.hs.LocalEphemeral().Private)
	}
	r.kem = nil
	if r.err == nil {
		r.err = errOrder
	}
}

// padLength asks pad how much padding to add to message msg of unpadded
// length n and clamps the answer to [0, MaxMessageSize-n].
func padLength(pad func(msg, n int) int, msg, n int) int {
	if pad == nil {
		return 0
	}
	p := pad(msg, n)
	room := MaxMessageSize - n
	switch {
	case p < 0:
		return 0
	case p > room:
		return max(room, 0)
	}
	return p
}

// appendPadding appends the 2-byte padding length and n random bytes.
func appendPadding(b []byte, n int, rng io.Reader) ([]byte, error) {
	b = binary.BigEndian.AppendUint16(b, uint16(n))
	start := len(b)
	b = append(b, make([]byte, n)...)
	if _, err := io.ReadFull(rng, b[start:]); err != nil {
		return nil, fmt.Errorf("read random padding: %w", err)
	}
	return b, nil
}

// checkPadding checks that tail is exactly a 2-byte padding length followed
// by that many bytes.
func checkPadding(msg int, tail []byte) error {
	if len(tail) < 2 {
		return fmt.Errorf("%w: message %d: missing padding length", ErrMalformed, msg)
	}
	if n := int(binary.BigEndian.Uint16(tail)); n != len(tail)-2 {
		return fmt.Errorf("%w: message %d: padding length %d, but %d bytes follow", ErrMalformed, msg, n, len(tail)-2)
	}
	return nil
}

// checkSize checks a message's length before it is processed.
func checkSize(msg int, b []byte, minLen int) error {
	if len(b) > MaxMessageSize {
		return fmt.Errorf("%w: message %d is %d bytes (max %d)", ErrTooLarge, msg, len(b), MaxMessageSize)
	}
	if len(b) < minLen {
		return fmt.Errorf("%w: message %d is %d bytes (min %d)", ErrMalformed, msg, len(b), minLen)
	}
	return nil
}
