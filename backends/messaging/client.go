package messaging

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/commucat/commucat/core/frame"
)

// SeenStore remembers which messages a client has shown; store.SQLite
// implements it. MarkSeen reports whether (from, id) is new and records it.
type SeenStore interface {
	MarkSeen(ctx context.Context, from string, id [16]byte, now time.Time) (firstTime bool, err error)
}

// ClientConfig tunes a Client. The zero value is the documented defaults.
type ClientConfig struct {
	// Inbox is how many received messages wait for Listen. A message that
	// finds it full is dropped unacknowledged; the gateway sends it again
	// after its redelivery timeout or on the next session. If zero,
	// DefaultMaxOnlineQueue, the gateway's default window.
	Inbox int
	// Now is the clock for Envelope.Sent and seen records. If nil,
	// time.Now.
	Now func() time.Time
}

// Client is the client side of the messaging protocol on one session.
//
// One goroutine reads the session: Run, which the caller starts and which
// must be running for Send, Register and Listen to make progress. Run
// dispatches what it reads: AckStored and Error frames to the Send waiting
// for that message id, Certificate and unreferenced Error frames to the
// pending Register, and Message frames to a bounded queue that Listen
// drains. Run never blocks on a slow consumer (a full queue drops the
// message, which the gateway redelivers), so Send, Register and Listen can
// run at the same time from different goroutines, and a Listen handler may
// itself call Send.
//
// Client is safe for concurrent use; call Listen from one goroutine at a
// time.
type Client struct {
	c     Conn
	cfg   ClientConfig
	log   *slog.Logger
	inbox chan Envelope

	regMu sync.Mutex // one Register at a time

	mu      sync.Mutex
	waiters map[[16]byte]chan error
	reg     chan regResult // the pending Register's answer, or nil

	once sync.Once
	done chan struct{} // closed when Run returns
}

type regResult struct {
	cert []byte
	err  error
}

// NewClient returns a Client on session c. A nil log discards.
func NewClient(c Conn, cfg ClientConfig, log *slog.Logger) *Client {
	if cfg.Inbox <= 0 {
		cfg.Inbox = DefaultMaxOnlineQueue // the gateway's window: nothing it sends is dropped here
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Client{
		c:       c,
		cfg:     cfg,
		log:     log.With("component", "messaging-client"),
		inbox:   make(chan Envelope, cfg.Inbox),
		waiters: make(map[[16]byte]chan error),
		done:    make(chan struct{}),
	}
}

// Run reads the session and dispatches frames until ctx is done or the
// session ends (nil: ctx done, io.EOF or frame.Close from the gateway;
// otherwise the receive error). After Run returns, waiting and later calls
// fail with ErrClosed. Run is called once.
func (c *Client) Run(ctx context.Context) error {
	defer c.once.Do(func() { close(c.done) })
	for {
		f, err := c.c.Recv(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("messaging: client: receive: %w", err)
		}
		switch f.Type {
		case frame.Message:
			env, err := ParseEnvelope(f.Payload)
			if err != nil {
				c.log.Warn("dropping malformed message from the gateway", "err", err)
				continue
			}
			select {
			case c.inbox <- env:
			default:
				c.log.Debug("inbox full, dropping a message the gateway will send again")
			}
		case frame.Ack:
			a, err := frame.ParseAck(f.Payload)
			if err != nil {
				c.log.Warn("dropping malformed ack from the gateway", "err", err)
				continue
			}
			if a.Kind == frame.AckStored {
				for _, id := range a.IDs {
					c.answer(id, nil)
				}
			}
		case frame.Error:
			e, err := frame.ParseError(f.Payload)
			if err != nil {
				c.log.Warn("dropping malformed error from the gateway", "err", err)
				continue
			}
			perr := &ProblemError{Problem: e.Code, Ref: e.Ref, Detail: e.Detail}
			if len(e.Ref) == 16 && c.answer([16]byte(e.Ref), perr) {
				continue
			}
			if !c.answerRegister(regResult{err: perr}) {
				c.log.Warn("gateway reported a problem", "problem", e.Code, "detail", e.Detail)
			}
		case frame.Certificate:
			if !c.answerRegister(regResult{cert: bytes.Clone(f.Payload)}) {
				c.log.Warn("dropping an unrequested certificate")
			}
		case frame.Close:
			return nil
		}
	}
}

// answer hands err (nil: stored) to the Send waiting for id.
func (c *Client) answer(id [16]byte, err error) bool {
	c.mu.Lock()
	ch, ok := c.waiters[id]
	delete(c.waiters, id)
	c.mu.Unlock()
	if ok {
		ch <- err // capacity 1, one answer per waiter
	}
	return ok
}

func (c *Client) answerRegister(r regResult) bool {
	c.mu.Lock()
	ch := c.reg
	c.reg = nil
	c.mu.Unlock()
	if ch != nil {
		ch <- r // capacity 1
	}
	return ch != nil
}

// Send sends body to the user named to and waits until the gateway has
// stored it. It returns the message id, also with an error, so a caller
// can retry with SendEnvelope and the same id without risking a duplicate.
// A refusal is a *ProblemError matching ErrUnknownRecipient,
// ErrQuotaExceeded or ErrTooLarge.
func (c *Client) Send(ctx context.Context, to string, body []byte) (id [16]byte, err error) {
	if _, err := rand.Read(id[:]); err != nil {
		return id, fmt.Errorf("messaging: send: %w", err)
	}
	return id, c.SendEnvelope(ctx, Envelope{ID: id, Peer: to, Sent: c.cfg.Now(), Body: body})
}

// SendEnvelope sends env (Peer is the recipient) and waits until the
// gateway has stored it. Sending an envelope again with the same ID is
// safe: the gateway stores it once.
func (c *Client) SendEnvelope(ctx context.Context, env Envelope) error {
	if err := env.Validate(); err != nil {
		return fmt.Errorf("messaging: send: %w", err)
	}
	ch := make(chan error, 1)
	c.mu.Lock()
	if _, busy := c.waiters[env.ID]; busy {
		c.mu.Unlock()
		return fmt.Errorf("messaging: send: message %x is already being sent", env.ID[:4])
	}
	c.waiters[env.ID] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.waiters[env.ID] == ch {
			delete(c.waiters, env.ID)
		}
		c.mu.Unlock()
	}()
	if err := c.c.Send(ctx, frame.Frame{Type: frame.Message, Payload: env.Append(nil)}); err != nil {
		return fmt.Errorf("messaging: send: %w", err)
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return ErrClosed
	}
}

// Register asks the gateway to register this device (the session's static
// key) as user req.Name with the registration code req.Code, and returns
// the device certificate. A refusal is a *ProblemError matching
// ErrRegistrationRefused; its Detail says why.
func (c *Client) Register(ctx context.Context, req RegisterRequest) ([]byte, error) {
	if err := req.Validate(); err != nil {
		return nil, fmt.Errorf("messaging: register: %w", err)
	}
	c.regMu.Lock()
	defer c.regMu.Unlock()
	ch := make(chan regResult, 1)
	c.mu.Lock()
	c.reg = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.reg == ch {
			c.reg = nil
		}
		c.mu.Unlock()
	}()
	if err := c.c.Send(ctx, frame.Frame{Type: frame.Register, Payload: req.Append(nil)}); err != nil {
		return nil, fmt.Errorf("messaging: register: %w", err)
	}
	select {
	case r := <-ch:
		return r.cert, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.done:
		return nil, ErrClosed
	}
}

// Listen receives messages and calls handle once per message, never twice
// for the same (sender, id), also across restarts, because seen records
// every message before handle runs. It then acknowledges the message as
// delivered (duplicates too, so the gateway can delete them). handle runs
// on Listen's goroutine and may call Send. Listen returns nil when ctx is
// done, ErrClosed when Run has returned, or the first error of seen or
// handle; a message whose handle failed is not acknowledged, and is not
// handled again when the gateway redelivers it.
func (c *Client) Listen(ctx context.Context, handle func(Envelope) error, seen SeenStore) error {
	acks := make([][16]byte, 0, frame.MaxAckIDs)
	flush := func() error {
		if len(acks) == 0 {
			return nil
		}
		a := frame.AckPayload{Kind: frame.AckDelivered, IDs: acks}
		err := c.c.Send(ctx, frame.Frame{Type: frame.Ack, Payload: a.Append(nil)})
		acks = acks[:0]
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("messaging: listen: send ack: %w", err)
		}
		return nil
	}
	for {
		var env Envelope
		select {
		case env = <-c.inbox:
		case <-ctx.Done():
			return nil
		case <-c.done:
			return ErrClosed
		}
		// Handle everything already queued, then acknowledge it in one frame.
		for {
			first, err := seen.MarkSeen(ctx, env.Peer, env.ID, c.cfg.Now())
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return errors.Join(fmt.Errorf("messaging: listen: mark seen: %w", err), flush())
			}
			if first {
				if err := handle(env); err != nil {
					return errors.Join(fmt.Errorf("messaging: listen: handle message: %w", err), flush())
				}
			}
			acks = append(acks, env.ID)
			if len(acks) == cap(acks) {
				if err := flush(); err != nil {
					return err
				}
			}
			var more bool
			select {
			case env, more = <-c.inbox:
			default:
			}
			if !more {
				break
			}
		}
		if err := flush(); err != nil {
			return err
		}
	}
}
