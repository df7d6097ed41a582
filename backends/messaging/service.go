package messaging

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/commucat/commucat/backends/store"
	"github.com/commucat/commucat/core/frame"
)

// Store is the part of store.Store the Service uses.
type Store interface {
	AddCode(ctx context.Context, hash [32]byte, expires time.Time) error
	Register(ctx context.Context, codeHash [32]byte, name string, device store.Device, now time.Time) (store.User, error)
	DeviceByKey(ctx context.Context, key [32]byte) (store.Device, store.User, error)
	UserByName(ctx context.Context, name string) (store.User, error)
	Enqueue(ctx context.Context, m store.Message, quota int) (dup bool, err error)
	Pending(ctx context.Context, userID int64, now time.Time, limit int) ([]store.Message, error)
	Ack(ctx context.Context, userID, fromID int64, id [16]byte) (bool, error)
	PurgeExpired(ctx context.Context, now time.Time) (int, error)
}

// Issuer issues a device certificate binding a device's static key to a
// user. The gateway's wiring implements it with core/handshake.
type Issuer interface {
	Issue(user string, deviceID [16]byte, deviceKey [32]byte) ([]byte, error)
}

// Conn is one authenticated session as the messaging protocol sees it; a
// core/session.Session satisfies it. Send may be called from several
// goroutines at once only if the implementation allows it: the Service
// serialises its own calls.
type Conn interface {
	Send(ctx context.Context, frames ...frame.Frame) error
	Recv(ctx context.Context) (frame.Frame, error)
}

// Peer is the user and device at the other end of an authenticated
// session.
type Peer struct {
	UserID   int64
	User     string
	DeviceID [16]byte
}

// Defaults for zero Config fields.
const (
	DefaultInboxTTL       = 7 * 24 * time.Hour
	DefaultInboxQuota     = 1000
	DefaultCodeTTL        = 24 * time.Hour
	DefaultMaxOnlineQueue = 64
	DefaultRedeliverAfter = 30 * time.Second
	DefaultPurgeInterval  = time.Minute
)

// deliverBatch is the most Message frames the gateway hands to one Send.
const deliverBatch = 32

// Config tunes a Service. The zero value is the documented defaults.
type Config struct {
	// InboxTTL is how long an undelivered message is kept. If zero, 7 days.
	InboxTTL time.Duration
	// InboxQuota is the most undelivered messages one user's inbox holds;
	// further submissions are refused. If zero, 1000.
	InboxQuota int
	// CodeTTL is how long a registration code from NewCode stays valid. If
	// zero, 24h.
	CodeTTL time.Duration
	// MaxOnlineQueue is the most messages the gateway sends one session
	// before the client acknowledges them (the delivery window). If zero,
	// 64. Keep it no larger than the clients' inbox queue: a client drops
	// what does not fit there, and the gateway sends it again only after
	// RedeliverAfter.
	MaxOnlineQueue int
	// RedeliverAfter is how long a session's unacknowledged message waits
	// before the gateway sends it again on the same session. If zero, 30s.
	RedeliverAfter time.Duration
	// PurgeInterval is how often Run deletes expired messages. If zero, 1
	// minute.
	PurgeInterval time.Duration
	// Now is the clock for stored times, expiry and registration codes. If
	// nil, time.Now.
	Now func() time.Time
}

// Validate reports a negative duration or count.
func (c Config) Validate() error {
	for _, f := range []struct {
		name string
		bad  bool
	}{
		{"inbox_ttl", c.InboxTTL < 0},
		{"inbox_quota", c.InboxQuota < 0},
		{"code_ttl", c.CodeTTL < 0},
		{"max_online_queue", c.MaxOnlineQueue < 0},
		{"redeliver_after", c.RedeliverAfter < 0},
		{"purge_interval", c.PurgeInterval < 0},
	} {
		if f.bad {
			return fmt.Errorf("messaging: %s: must not be negative", f.name)
		}
	}
	return nil
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.InboxTTL, DefaultInboxTTL)
	def(&c.CodeTTL, DefaultCodeTTL)
	def(&c.RedeliverAfter, DefaultRedeliverAfter)
	def(&c.PurgeInterval, DefaultPurgeInterval)
	if c.InboxQuota <= 0 {
		c.InboxQuota = DefaultInboxQuota
	}
	if c.MaxOnlineQueue <= 0 {
		c.MaxOnlineQueue = DefaultMaxOnlineQueue
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Service is the gateway side of the messaging protocol: registration,
// store-and-forward of messages between users, and live delivery to online
// sessions. One Service serves every session of a gateway process; its
// methods are safe for concurrent use.
//
// Live delivery is signalled in memory, so it reaches sessions of this
// Service only; sessions on other processes see new messages on their
// next inbox read (a new session or a redelivery timeout).
type Service struct {
	st  Store
	iss Issuer
	cfg Config
	log *slog.Logger
	hub *hub
}

// New returns a Service over st. iss may be nil if the Service never
// registers devices (NewCode works without it). Non-positive Config fields
// take their defaults. A nil log discards.
func New(st Store, iss Issuer, cfg Config, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{
		st:  st,
		iss: iss,
		cfg: cfg.withDefaults(),
		log: log.With("component", "messaging"),
		hub: newHub(),
	}
}

// HashCode is the hash under which a registration code is stored:
// SHA-256 of the code's bytes.
func HashCode(code string) [32]byte { return sha256.Sum256([]byte(code)) }

// codeBytes is the size of a registration code's secret, and CodeLen the
// length of the code NewCode returns (base64url without padding).
const (
	codeBytes = 16
	CodeLen   = (codeBytes*8 + 5) / 6
)

// NewCode creates a single-use registration code of 128 random bits
// (base64url, 22 characters), valid for Config.CodeTTL, and stores only its
// hash. The code is a secret: hand it to one user and do not log it.
func (s *Service) NewCode(ctx context.Context) (code string, expires time.Time, err error) {
	var raw [codeBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", time.Time{}, fmt.Errorf("messaging: new code: %w", err)
	}
	code = base64.RawURLEncoding.EncodeToString(raw[:])
	clear(raw[:])
	expires = s.cfg.Now().Add(s.cfg.CodeTTL)
	if err := s.st.AddCode(ctx, HashCode(code), expires); err != nil {
		return "", time.Time{}, fmt.Errorf("messaging: new code: %w", err)
	}
	return code, expires, nil
}

// Register registers the device with static key deviceKey as the first
// device of a new user named req.Name, consuming the registration code
// req.Code, and returns the device certificate. A refusal the client may
// be told about is a *RefusedError (matching ErrRegistrationRefused and one
// of ErrCodeUnknown, ErrCodeUsed, ErrCodeExpired, ErrNameTaken,
// ErrDeviceRegistered, ErrBadName); other errors are internal.
func (s *Service) Register(ctx context.Context, req RegisterRequest, deviceKey [32]byte) ([]byte, error) {
	if err := ValidName(req.Name); err != nil {
		return nil, &RefusedError{Reason: err, Detail: "name must be 1 to 64 of a-z 0-9 . _ - and start with a letter or digit"}
	}
	if validCode(req.Code) != nil {
		// No code of that shape was ever issued.
		return nil, &RefusedError{Reason: ErrCodeUnknown, Detail: "registration code unknown"}
	}
	if s.iss == nil {
		return nil, errors.New("messaging: register: no certificate issuer")
	}
	var devID [16]byte
	if _, err := rand.Read(devID[:]); err != nil {
		return nil, fmt.Errorf("messaging: register: %w", err)
	}
	// The certificate is issued first so that the store's one transaction
	// creates the device with it; it is discarded if the store refuses.
	cert, err := s.iss.Issue(req.Name, devID, deviceKey)
	if err != nil {
		return nil, fmt.Errorf("messaging: register: issue certificate: %w", err)
	}
	dev := store.Device{ID: devID, Key: deviceKey, Certificate: cert}
	if _, err := s.st.Register(ctx, HashCode(req.Code), req.Name, dev, s.cfg.Now()); err != nil {
		for _, r := range refusals {
			if errors.Is(err, r.err) {
				s.log.Info("registration refused", "name", req.Name, "reason", r.detail)
				return nil, &RefusedError{Reason: r.err, Detail: r.detail}
			}
		}
		return nil, fmt.Errorf("messaging: register: %w", err)
	}
	s.log.Info("registered", "user", req.Name, "device", hex.EncodeToString(devID[:4]))
	return cert, nil
}

// Authenticate finds the registered device with static key deviceKey
// (ErrUnknownDevice if there is none) and returns its Peer.
func (s *Service) Authenticate(ctx context.Context, deviceKey [32]byte) (Peer, error) {
	d, u, err := s.st.DeviceByKey(ctx, deviceKey)
	if errors.Is(err, store.ErrNotFound) {
		return Peer{}, ErrUnknownDevice
	}
	if err != nil {
		return Peer{}, fmt.Errorf("messaging: authenticate: %w", err)
	}
	return Peer{UserID: u.ID, User: u.Name, DeviceID: d.ID}, nil
}

// Bounds of an unregistered session: the Register frames it may send,
// the other frames (each answered or ignored) and how long it may stay
// unregistered, so that a device holding the gateway's key from an
// invite, but no valid code, cannot keep a session open for ever.
const (
	maxRegisterAttempts   = 3
	maxUnregisteredFrames = 32
	registerTimeout       = 2 * time.Minute
)

// ServeRegistration serves a session from a device that is not registered
// yet (deviceKey is its static key from the handshake): it answers Register
// frames with a Certificate or an Error frame and, once the device is
// registered, returns its Peer so the caller can go on with ServeSession on
// the same session. Other frames are answered with ProblemUnauthorized
// (messages) or ignored. After maxRegisterAttempts refusals it returns the
// last refusal; after 32 other frames, or 2 minutes without registering,
// an error wrapping ErrRegistrationRefused.
func (s *Service) ServeRegistration(ctx context.Context, deviceKey [32]byte, c Conn) (Peer, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, registerTimeout, fmt.Errorf("%w: not registered within %v", ErrRegistrationRefused, registerTimeout))
	defer cancel()
	others := 0
	for attempts := 1; ; {
		f, err := c.Recv(ctx)
		if err != nil {
			if cause := context.Cause(ctx); errors.Is(cause, ErrRegistrationRefused) {
				err = cause
			}
			return Peer{}, fmt.Errorf("messaging: registration: receive: %w", err)
		}
		if f.Type != frame.Register && f.Type != frame.Close {
			if others++; others > maxUnregisteredFrames {
				return Peer{}, fmt.Errorf("messaging: registration: %w: %d frames without registering", ErrRegistrationRefused, others)
			}
		}
		switch f.Type {
		case frame.Register:
		case frame.Close:
			return Peer{}, fmt.Errorf("messaging: registration: %w", ErrClosed)
		case frame.Message:
			var ref []byte
			if len(f.Payload) >= 16 {
				ref = f.Payload[:16]
			}
			if err := sendError(ctx, c, frame.ProblemUnauthorized, ref, "register this device first"); err != nil {
				return Peer{}, err
			}
			continue
		default:
			continue
		}
		req, err := ParseRegisterRequest(f.Payload)
		if err != nil {
			err = &RefusedError{Reason: err, Detail: "malformed registration request"}
			if err := sendError(ctx, c, frame.ProblemBadRequest, nil, "malformed registration request"); err != nil {
				return Peer{}, err
			}
		} else if cert, rerr := s.Register(ctx, req, deviceKey); rerr != nil {
			var re *RefusedError
			if !errors.As(rerr, &re) {
				s.log.Error("registration failed", "err", rerr)
				sendError(ctx, c, frame.ProblemInternal, nil, "internal error")
				return Peer{}, rerr
			}
			if err := sendError(ctx, c, re.Problem(), nil, re.Detail); err != nil {
				return Peer{}, err
			}
			err = rerr
		} else {
			if err := c.Send(ctx, frame.Frame{Type: frame.Certificate, Payload: cert}); err != nil {
				return Peer{}, fmt.Errorf("messaging: registration: send certificate: %w", err)
			}
			return s.Authenticate(ctx, deviceKey)
		}
		if attempts >= maxRegisterAttempts {
			return Peer{}, err
		}
		attempts++
	}
}

// Run deletes expired messages every Config.PurgeInterval until ctx is
// done, then returns nil. Errors are logged, not returned: the next round
// tries again.
func (s *Service) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.PurgeInterval)
	defer t.Stop()
	for {
		n, err := s.st.PurgeExpired(ctx, s.cfg.Now())
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Warn("purging expired messages failed", "err", err)
		case n > 0:
			s.log.Info("purged expired messages", "count", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// ServeSession runs the messaging protocol on an authenticated session of
// p until the client sends frame.Close or the session ends (nil), ctx is
// done (nil) or sending fails (an error).
//
// The session has two goroutines, both owned and awaited here: this one
// reads frames (submissions, acknowledgements) and another delivers the
// inbox: everything pending at start, in order and in batches, then new
// messages as the hub announces them. At most Config.MaxOnlineQueue
// messages are outstanding; one not acknowledged within
// Config.RedeliverAfter is sent again, so the client must suppress
// duplicates. A message leaves the inbox only when the client sends
// AckDelivered for it.
func (s *Service) ServeSession(ctx context.Context, p Peer, c Conn) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lc := &lockedConn{c: c}
	sub := s.hub.subscribe(p.UserID) // before the first inbox read, so nothing is missed
	defer s.hub.unsubscribe(sub)
	acked := make(chan [][16]byte, 4)
	var wg sync.WaitGroup
	var derr error
	wg.Go(func() {
		derr = s.deliver(ctx, p, lc, sub.ch, acked)
		cancel()
	})
	rerr := s.read(ctx, p, lc, acked)
	cancel()
	wg.Wait()
	if rerr != nil {
		return rerr
	}
	return derr
}

// read handles the frames the client sends.
func (s *Service) read(ctx context.Context, p Peer, c Conn, acked chan<- [][16]byte) error {
	for {
		f, err := c.Recv(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("messaging: session of %s: receive: %w", p.User, err)
		}
		switch f.Type {
		case frame.Message:
			err = s.submit(ctx, p, c, f.Payload)
		case frame.Ack:
			err = s.ack(ctx, p, c, f.Payload, acked)
		case frame.Register:
			err = sendError(ctx, c, frame.ProblemBadRequest, nil, "device already registered")
		case frame.Close:
			return nil
		default:
			s.log.Debug("ignoring frame", "type", f.Type, "user", p.User)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// submit stores one message a client sent and answers AckStored or Error.
// It returns only errors that end the session.
func (s *Service) submit(ctx context.Context, p Peer, c Conn, payload []byte) error {
	env, err := ParseEnvelope(payload)
	if err != nil {
		var ref []byte
		if len(payload) >= 16 {
			ref = payload[:16]
		}
		if errors.Is(err, ErrTooLarge) {
			return sendError(ctx, c, frame.ProblemTooLarge, ref, fmt.Sprintf("message body over %d bytes", MaxBody))
		}
		return sendError(ctx, c, frame.ProblemBadRequest, ref, "malformed message envelope")
	}
	rcpt, err := s.st.UserByName(ctx, env.Peer)
	if errors.Is(err, store.ErrNotFound) {
		return sendError(ctx, c, frame.ProblemUnknownRecipient, env.ID[:], "unknown recipient")
	}
	if err != nil {
		return s.internal(ctx, c, env.ID[:], "look up recipient", err)
	}
	now := s.cfg.Now()
	m := store.Message{
		ID: env.ID, From: p.UserID, To: rcpt.ID, Body: env.Body,
		Sent: env.Sent, Stored: now, Expires: now.Add(s.cfg.InboxTTL),
	}
	dup, err := s.st.Enqueue(ctx, m, s.cfg.InboxQuota)
	if errors.Is(err, store.ErrQuotaExceeded) {
		return sendError(ctx, c, frame.ProblemQuotaExceeded, env.ID[:], "recipient inbox full")
	}
	if err != nil {
		return s.internal(ctx, c, env.ID[:], "enqueue", err)
	}
	if !dup {
		s.hub.notify(rcpt.ID)
	}
	ack := frame.AckPayload{Kind: frame.AckStored, IDs: [][16]byte{env.ID}}
	if err := c.Send(ctx, frame.Frame{Type: frame.Ack, Payload: ack.Append(nil)}); err != nil {
		return fmt.Errorf("messaging: send ack: %w", err)
	}
	return nil
}

// ack hands the ids a client acknowledged as delivered to the session's
// delivery loop, which deletes the messages it delivered under those ids
// (an id names a message only together with its sender; the Ack frame
// carries ids alone). A client can so delete only what this session sent
// it.
func (s *Service) ack(ctx context.Context, p Peer, c Conn, payload []byte, acked chan<- [][16]byte) error {
	a, err := frame.ParseAck(payload)
	if err != nil {
		return sendError(ctx, c, frame.ProblemBadRequest, nil, "malformed ack")
	}
	if a.Kind != frame.AckDelivered {
		s.log.Debug("ignoring ack", "kind", a.Kind, "user", p.User)
		return nil
	}
	if len(a.IDs) == 0 {
		return nil
	}
	select {
	case acked <- a.IDs:
	case <-ctx.Done():
	}
	return nil
}

// deleteAcked deletes from p's inbox the messages in inflight that the
// client acknowledged by id, and forgets them.
func (s *Service) deleteAcked(ctx context.Context, p Peer, ids [][16]byte, inflight map[msgKey]time.Time) {
	for _, id := range ids {
		for k := range inflight {
			if k.id != id {
				continue
			}
			if _, err := s.st.Ack(ctx, p.UserID, k.from, id); err != nil {
				if ctx.Err() != nil {
					return
				}
				// The message stays in the inbox and is delivered again; the
				// client suppresses the duplicate and acknowledges it again.
				s.log.Warn("deleting an acknowledged message failed", "user", p.User, "err", err)
				continue
			}
			delete(inflight, k)
		}
	}
}

// internal logs err and tells the client that the gateway failed.
func (s *Service) internal(ctx context.Context, c Conn, ref []byte, what string, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	s.log.Error("messaging failed", "op", what, "err", err)
	return sendError(ctx, c, frame.ProblemInternal, ref, "internal error")
}

// msgKey names a message in a user's inbox.
type msgKey struct {
	from int64
	id   [16]byte
}

// deliver sends p's inbox to the session until ctx is done.
func (s *Service) deliver(ctx context.Context, p Peer, c Conn, notify <-chan struct{}, acked <-chan [][16]byte) error {
	window := s.cfg.MaxOnlineQueue
	inflight := make(map[msgKey]time.Time, window) // sent, not acknowledged: when last sent
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	read := true
	for {
		if read {
			if err := s.deliverPending(ctx, p, c, inflight); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			timer.Stop()
			if len(inflight) > 0 {
				oldest := time.Now()
				for _, t := range inflight {
					if t.Before(oldest) {
						oldest = t
					}
				}
				timer.Reset(time.Until(oldest.Add(s.cfg.RedeliverAfter)))
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-notify:
			// With a full window, the new message waits for acks.
			read = len(inflight) < window
		case ids := <-acked:
			s.deleteAcked(ctx, p, ids, inflight)
			read = true
		case <-timer.C:
			read = true
		}
	}
}

// deliverPending reads the first window of p's inbox and sends the messages
// not yet sent, or sent longer than RedeliverAfter ago. inflight is updated
// to hold exactly the messages still pending.
func (s *Service) deliverPending(ctx context.Context, p Peer, c Conn, inflight map[msgKey]time.Time) error {
	msgs, err := s.st.Pending(ctx, p.UserID, s.cfg.Now(), s.cfg.MaxOnlineQueue)
	if err != nil {
		return fmt.Errorf("messaging: read inbox of %s: %w", p.User, err)
	}
	now := time.Now()
	next := make(map[msgKey]time.Time, len(msgs))
	var batch []frame.Frame
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := c.Send(ctx, batch...)
		batch = nil
		if err != nil {
			return fmt.Errorf("messaging: deliver to %s: %w", p.User, err)
		}
		return nil
	}
	for _, m := range msgs {
		k := msgKey{m.From, m.ID}
		if t, ok := inflight[k]; ok && now.Sub(t) < s.cfg.RedeliverAfter {
			next[k] = t
			continue
		}
		next[k] = now
		env := Envelope{ID: m.ID, Peer: m.FromName, Sent: m.Sent, Body: m.Body}
		batch = append(batch, frame.Frame{Type: frame.Message, Payload: env.Append(nil)})
		if len(batch) == deliverBatch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	clear(inflight)
	for k, t := range next {
		inflight[k] = t
	}
	return nil
}

// sendError sends an Error frame.
func sendError(ctx context.Context, c Conn, code frame.Problem, ref []byte, detail string) error {
	e := frame.ErrorPayload{Code: code, Ref: ref, Detail: detail}
	if err := c.Send(ctx, frame.Frame{Type: frame.Error, Payload: e.Append(nil)}); err != nil {
		return fmt.Errorf("messaging: send error: %w", err)
	}
	return nil
}

// lockedConn serialises Send calls of a session's goroutines.
type lockedConn struct {
	mu sync.Mutex
	c  Conn
}

func (l *lockedConn) Send(ctx context.Context, frames ...frame.Frame) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.c.Send(ctx, frames...)
}

func (l *lockedConn) Recv(ctx context.Context) (frame.Frame, error) { return l.c.Recv(ctx) }
