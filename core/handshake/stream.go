package handshake

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// Client runs the client side of a handshake over rw (usually a freshly
// dialled transport connection): it writes message 1, reads message 2 and
// writes message 3, each framed by WriteMessage. The returned Result's
// keys belong to the caller, who must Wipe it.
//
// If rw has a SetDeadline(time.Time) error method (net.Conn does), the
// handshake uses ctx's deadline and aborts a blocked read or write when ctx
// is cancelled; the deadline is cleared before Client returns. Without
// that method, ctx is checked only between messages. An error caused by ctx
// wraps ctx.Err().
func Client(ctx context.Context, rw io.ReadWriter, cfg ClientConfig) (*Result, error) {
	ini, err := NewInitiator(cfg)
	if err != nil {
		return nil, err
	}
	defer ini.Wipe()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	stop := watch(ctx, rw)
	res, err := runClient(ctx, rw, ini)
	stop()
	if err != nil {
		return nil, ctxError(ctx, err)
	}
	return res, nil
}

func runClient(ctx context.Context, rw io.ReadWriter, ini *Initiator) (*Result, error) {
	m1, err := ini.WriteMessage1()
	if err != nil {
		return nil, err
	}
	if err := WriteMessage(rw, m1); err != nil {
		return nil, fmt.Errorf("handshake: write message 1: %w", err)
	}
	m2, err := ReadMessage(rw)
	if err != nil {
		return nil, fmt.Errorf("handshake: read message 2: %w", err)
	}
	if err := ini.ReadMessage2(m2); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	m3, res, err := ini.WriteMessage3()
	if err != nil {
		return nil, err
	}
	if err := WriteMessage(rw, m3); err != nil {
		res.Wipe()
		return nil, fmt.Errorf("handshake: write message 3: %w", err)
	}
	return res, nil
}

// Server runs the gateway side of a handshake over rw: it reads message 1,
// writes message 2 and reads message 3. It writes nothing if message 1 is
// refused (ErrAuth, ErrStale, ErrReplay, ErrMalformed, ErrTooLarge,
// ErrRateLimited), so a prober learns nothing from a reply; the caller
// decides how to close the connection. The caller must check
// Result.PeerStatic (and the payload, such as a device certificate)
// before trusting the client, and Wipe the Result.
//
// Per-source rate limiting (RateLimiter) is the caller's job, before
// calling Server. Context handling is as for Client.
func Server(ctx context.Context, rw io.ReadWriter, cfg ServerConfig) (*Result, error) {
	resp, err := NewResponder(cfg)
	if err != nil {
		return nil, err
	}
	defer resp.Wipe()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	stop := watch(ctx, rw)
	res, err := runServer(ctx, rw, resp)
	stop()
	if err != nil {
		return nil, ctxError(ctx, err)
	}
	return res, nil
}

func runServer(ctx context.Context, rw io.ReadWriter, resp *Responder) (*Result, error) {
	m1, err := ReadMessage(rw)
	if err != nil {
		return nil, fmt.Errorf("handshake: read message 1: %w", err)
	}
	if err := resp.ReadMessage1(m1); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	m2, err := resp.WriteMessage2()
	if err != nil {
		return nil, err
	}
	if err := WriteMessage(rw, m2); err != nil {
		return nil, fmt.Errorf("handshake: write message 2: %w", err)
	}
	m3, err := ReadMessage(rw)
	if err != nil {
		return nil, fmt.Errorf("handshake: read message 3: %w", err)
	}
	return resp.ReadMessage3(m3)
}

// deadliner is the optional ability of rw that lets ctx interrupt I/O.
type deadliner interface {
	SetDeadline(t time.Time) error
}

// watch applies ctx's deadline to rw and arranges for cancellation to
// interrupt blocked I/O. The returned stop waits for the cancellation
// callback if it started, then clears the deadline.
func watch(ctx context.Context, rw io.ReadWriter) (stop func()) {
	d, ok := rw.(deadliner)
	if !ok {
		return func() {}
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = d.SetDeadline(dl)
	}
	done := make(chan struct{})
	stopAfter := context.AfterFunc(ctx, func() {
		defer close(done)
		_ = d.SetDeadline(time.Unix(1, 0)) // in the past: wakes blocked I/O
	})
	return func() {
		if !stopAfter() {
			<-done
		}
		_ = d.SetDeadline(time.Time{})
	}
}

// ctxError makes an error caused by ctx say so, wrapping both ctx's error
// and the I/O error. A deadline error from rw at ctx's deadline counts even
// if ctx has not noticed yet.
func ctxError(ctx context.Context, err error) error {
	cerr := ctx.Err()
	if cerr == nil && errors.Is(err, os.ErrDeadlineExceeded) {
		if _, ok := ctx.Deadline(); ok {
			cerr = context.DeadlineExceeded
		}
	}
	if cerr == nil || errors.Is(err, cerr) {
		return err
	}
	return fmt.Errorf("handshake: %w: %w", cerr, err)
}

// WriteMessage writes one handshake message to w as a 2-byte big-endian
// length followed by the message, in a single Write. Messages must be 1 to
// MaxMessageSize bytes.
func WriteMessage(w io.Writer, msg []byte) error {
	if len(msg) > MaxMessageSize {
		return fmt.Errorf("%w: message is %d bytes (max %d)", ErrTooLarge, len(msg), MaxMessageSize)
	}
	if len(msg) == 0 {
		return fmt.Errorf("%w: empty message", ErrMalformed)
	}
	buf := make([]byte, 2, 2+len(msg))
	binary.BigEndian.PutUint16(buf, uint16(len(msg)))
	buf = append(buf, msg...)
	_, err := w.Write(buf)
	return err
}

// ReadMessage reads one message written by WriteMessage. A length over
// MaxMessageSize fails with ErrTooLarge before anything is allocated, a
// zero length with ErrMalformed; a stream that ends inside a message fails
// with io.ErrUnexpectedEOF, one that ends before it with io.EOF.
func ReadMessage(r io.Reader) ([]byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if n > MaxMessageSize {
		return nil, fmt.Errorf("%w: message length %d (max %d)", ErrTooLarge, n, MaxMessageSize)
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: zero message length", ErrMalformed)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return msg, nil
}
