package session

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commucat/commucat/core/frame"
)

// Session errors that callers branch on with errors.Is (besides the record
// errors ErrAuth, ErrReplay, ErrTooLarge, ErrMalformed).
var (
	// ErrClosed is returned by Send, Recv and Rekey after this side closed
	// the session (Close, or the end of Run's context).
	ErrClosed = errors.New("session: closed")
	// ErrClosedByPeer is matched by the *CloseError returned once the peer
	// closed the session with a Close frame.
	ErrClosedByPeer = errors.New("session: closed by peer")
	// ErrIdle means nothing was received for IdleTimeout.
	ErrIdle = errors.New("session: idle timeout")
)

// Close codes carried in a Close frame's payload. Other codes are reserved;
// a receiver reports any code in CloseError.
const (
	// CloseNormal: the sender is done with the session.
	CloseNormal uint16 = 0
)

// CloseError reports that the peer closed the session, with the code and
// reason from its Close frame. It matches ErrClosedByPeer.
type CloseError struct {
	Code   uint16
	Reason string
}

func (e *CloseError) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("session: closed by peer (code %d)", e.Code)
	}
	return fmt.Sprintf("session: closed by peer (code %d: %q)", e.Code, e.Reason)
}

// Unwrap returns ErrClosedByPeer.
func (e *CloseError) Unwrap() error { return ErrClosedByPeer }

// Config tunes a Session. The zero value is the documented default for
// every field.
type Config struct {
	// KeepAlive is how often a Ping is sent. If zero, 15s.
	KeepAlive time.Duration
	// IdleTimeout ends the session (ErrIdle) when no record was received
	// for that long. If zero, 4*KeepAlive.
	IdleTimeout time.Duration
	// RekeyAfterRecords is how many records are sent under one key. If
	// zero, DefaultRekeyAfterRecords.
	RekeyAfterRecords uint64
	// RekeyAfter is how long one key is used for sending. If zero,
	// DefaultRekeyAfter.
	RekeyAfter time.Duration
	// RekeyGrace is how long the peer's previous key is kept after it
	// moved on. If zero, DefaultRekeyGrace.
	RekeyGrace time.Duration
	// RecvQueue is how many received frames wait for Recv before the
	// reader stops reading. If zero, 64.
	RecvQueue int
	// Logger receives debug events. If nil, nothing is logged.
	Logger *slog.Logger
	// Pad returns how many bytes of padding to add to the record-th record
	// this side sends (counting from 0), whose frames take n bytes. The
	// padding travels as a Padding frame inside the record, so it is
	// encrypted and authenticated like everything else. Results at or
	// below zero add nothing; results are capped at the Padding frame's
	// limit. If nil, records are not padded. CommuCat pads the first few
	// records of a session so that their lengths do not give the tunnel
	// away (see core/padding).
	Pad func(record uint64, n int) int
}

// Validate reports a field that cannot be used: a negative duration or
// queue length.
func (c Config) Validate() error {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"KeepAlive", c.KeepAlive}, {"IdleTimeout", c.IdleTimeout}, {"RekeyAfter", c.RekeyAfter}, {"RekeyGrace", c.RekeyGrace}} {
		if d.v < 0 {
			return fmt.Errorf("session: config: %s is negative (%s)", d.name, d.v)
		}
	}
	if c.RecvQueue < 0 {
		return fmt.Errorf("session: config: RecvQueue is negative (%d)", c.RecvQueue)
	}
	return nil
}

func (c Config) withDefaults() Config {
	c.KeepAlive = cmpOr(c.KeepAlive, 15*time.Second)
	c.IdleTimeout = cmpOr(c.IdleTimeout, 4*c.KeepAlive)
	c.RecvQueue = cmpOr(c.RecvQueue, 64)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Stats are a session's counters. Bytes count whole records on the wire.
type Stats struct {
	RecordsSent, RecordsReceived uint64
	BytesSent, BytesReceived     uint64
	// ReplaysDropped counts authentic records dropped by the replay window.
	ReplaysDropped uint64
	// Rekeys counts this side's moves to a new sending epoch; PeerRekeys
	// the peer's moves, as seen by the receiver.
	Rekeys, PeerRekeys uint64
}

const (
	// packTarget is how much plaintext Send packs into one record before
	// it starts the next; a larger frame gets a record of its own.
	packTarget = 16 << 10
	// flushSize is how many sealed bytes Send collects before it writes.
	flushSize = 64 << 10
	// readBufSize is the reader's bufio buffer.
	readBufSize = 32 << 10
	// closeTimeout bounds the best-effort write of a Close frame.
	closeTimeout = time.Second
	// pendingPings is how many unanswered pings are remembered.
	pendingPings = 4
)

type runState int

const (
	stateNew runState = iota
	stateRunning
	stateStopped
)

type pendingPing struct {
	id   uint64
	sent time.Time
}

// Session is one CCP-1 session over one connection: it seals frames into
// records on Send, and Run reads, opens and dispatches the records the
// peer sends. Send, Recv, RTT, Rekey, Stats and Close are safe for
// concurrent use; Run is called once.
type Session struct {
	conn    io.ReadWriteCloser
	cfg     Config
	log     *slog.Logger
	created time.Time

	// writeSem serializes sealing and writing; it is a channel so that
	// waiting for it honours a context.
	writeSem chan struct{}
	sealer   *Sealer // guarded by writeSem
	pbuf     []byte  // plaintext being packed; guarded by writeSem
	wbuf     []byte  // sealed records to write; guarded by writeSem
	unsent   uint64  // records in wbuf; guarded by writeSem
	sealed   uint64  // records sealed so far; guarded by writeSem
	broken   error   // a write failed part-way; guarded by writeSem

	opener *Opener // used by the reader goroutine only

	recvq chan frame.Frame
	pongs chan [frame.PingLen]byte

	done    chan struct{} // closed when the session ends
	endOnce sync.Once
	cause   error // why it ended; set before done is closed

	closeOnce sync.Once
	closeErr  error

	// readerUp is set while Run's reader runs; readerDone is closed when
	// it has returned.
	readerUp   atomic.Bool
	readerDone chan struct{}

	mu    sync.Mutex
	state runState

	lastRecv atomic.Int64 // ns since created
	stalled  atomic.Bool  // the reader waits for room in recvq

	rttMu   sync.Mutex
	srtt    time.Duration
	rttvar  time.Duration
	pingID  uint64
	pending [pendingPings]pendingPing

	recordsSent, recordsRecv atomic.Uint64
	bytesSent, bytesRecv     atomic.Uint64
	replays                  atomic.Uint64
	rekeys, peerRekeys       atomic.Uint64
}

// New returns a session over conn with keys from the handshake. It copies
// the keys; the caller wipes its own. Nothing is read or written until Run
// or Send. If cfg is invalid, the session starts ended with the
// validation error. conn.Close must unblock pending Read and Write calls,
// as net.Conn's does.
func New(conn io.ReadWriteCloser, keys Keys, cfg Config) *Session {
	defer keys.Wipe() // this copy; the caller wipes its own
	c := cfg.withDefaults()
	s := &Session{
		conn:       conn,
		cfg:        c,
		log:        c.Logger.With("component", "session"),
		created:    time.Now(),
		writeSem:   make(chan struct{}, 1),
		sealer:     NewSealer(keys.Send),
		opener:     NewOpener(keys.Recv),
		recvq:      make(chan frame.Frame, c.RecvQueue),
		pongs:      make(chan [frame.PingLen]byte, 1),
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
	}
	s.sealer.SetRekeyPolicy(c.RekeyAfterRecords, c.RekeyAfter)
	s.opener.SetGrace(c.RekeyGrace)
	if err := cfg.Validate(); err != nil {
		s.end(err)
	}
	return s
}

// end records why the session ended, once, and reports whether this call
// was the one that ended it.
func (s *Session) end(cause error) bool {
	first := false
	s.endOnce.Do(func() {
		s.cause = cause
		close(s.done)
		first = true
	})
	return first
}

func (s *Session) ended() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// err is the error Send and Recv return once the session ended.
func (s *Session) err() error {
	<-s.done
	return s.cause
}

// Run reads and dispatches records until the peer closes, the connection
// fails, nothing arrives for IdleTimeout, Close is called or ctx ends. It
// answers Pings, sends its own every KeepAlive and queues application
// frames for Recv. It returns nil after Close or the end of ctx, a
// *CloseError (matching ErrClosedByPeer) when the peer closed, and
// otherwise the error that ended the session. It closes the connection and
// returns only after every goroutine it started has exited.
func (s *Session) Run(ctx context.Context) error {
	s.mu.Lock()
	switch s.state {
	case stateRunning:
		s.mu.Unlock()
		return errors.New("session: Run called more than once")
	case stateStopped:
		s.mu.Unlock()
		return s.result()
	}
	s.state = stateRunning
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.state = stateStopped
		s.mu.Unlock()
	}()

	s.lastRecv.Store(s.sinceCreated())
	var wg sync.WaitGroup
	if !s.ended() {
		s.readerUp.Store(true)
		wg.Go(s.readLoop)
		wg.Go(func() { s.keepAliveLoop(ctx) })
	}
	idle := time.NewTimer(s.cfg.IdleTimeout)
	defer idle.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			s.closeLocal()
			break loop
		case <-s.done:
			s.shutdown(false)
			break loop
		case <-idle.C:
			quiet := time.Duration(s.sinceCreated() - s.lastRecv.Load())
			if s.stalled.Load() {
				quiet = 0
			}
			if quiet >= s.cfg.IdleTimeout {
				s.end(fmt.Errorf("%w: nothing received for %s", ErrIdle, quiet))
				continue
			}
			idle.Reset(s.cfg.IdleTimeout - quiet)
		}
	}
	wg.Wait()
	s.wipe()
	err := s.result()
	s.log.Debug("session ended", "err", err, "stats", s.Stats())
	return err
}

// result is what Run returns once the session ended.
func (s *Session) result() error {
	if err := s.err(); err != ErrClosed {
		return err
	}
	return nil
}

func (s *Session) sinceCreated() int64 { return int64(time.Since(s.created)) }

// closeLocal ends the session on this side's request: a Close frame (best
// effort) and the connection closed.
func (s *Session) closeLocal() {
	s.shutdown(s.end(ErrClosed))
}

// shutdown closes the connection once, first trying to send a Close frame
// for at most closeTimeout if sendClose is set.
func (s *Session) shutdown(sendClose bool) {
	s.closeOnce.Do(func() {
		var wrote chan struct{}
		if sendClose {
			wrote = make(chan struct{})
			ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
			defer cancel()
			payload := frame.ClosePayload{Code: CloseNormal}.Append(nil)
			go func() {
				defer close(wrote)
				err := s.send(ctx, true, []frame.Frame{{Type: frame.Close, Payload: payload}})
				if err != nil {
					s.log.Debug("close frame not sent", "err", err)
				}
			}()
			select {
			case <-wrote:
				s.linger(ctx)
			case <-ctx.Done():
			}
		}
		if err := s.conn.Close(); err != nil {
			s.closeErr = fmt.Errorf("session: close: %w", err)
		}
		if wrote != nil {
			<-wrote
		}
	})
}

// linger half-closes the connection after the Close frame and reads what
// the peer still sends until it closes too, or until ctx ends. Closing a
// TCP socket with bytes unread, or that receives bytes after, makes the
// kernel answer with a reset, which discards what the peer had not read
// yet: the frames sent before the Close frame, and the Close frame itself.
func (s *Session) linger(ctx context.Context) {
	cw, ok := s.conn.(interface{ CloseWrite() error })
	if !ok || !s.readerUp.Load() || cw.CloseWrite() != nil {
		return
	}
	select {
	case <-s.readerDone: // the peer closed, or the reader stopped reading
	case <-ctx.Done():
		return
	}
	rd, ok := s.conn.(interface{ SetReadDeadline(time.Time) error })
	if d, ok2 := ctx.Deadline(); ok && ok2 && rd.SetReadDeadline(d) == nil {
		io.Copy(io.Discard, s.conn) //nolint:errcheck // ends at the peer's close or the deadline
	}
}

// wipe drops both directions' keys and clears the plaintext buffer, once
// no goroutine of Run uses them.
func (s *Session) wipe() {
	s.writeSem <- struct{}{}
	s.sealer.Wipe()
	clear(s.pbuf[:cap(s.pbuf)])
	s.pbuf, s.wbuf = nil, nil
	<-s.writeSem
	s.opener.Wipe()
}

// Close sends a Close frame (best effort, within a second), closes the
// connection and makes Run return. It is idempotent and returns the
// connection's Close error, if any.
func (s *Session) Close() error {
	s.closeLocal()
	s.mu.Lock()
	neverRan := s.state == stateNew
	if neverRan {
		s.state = stateStopped
	}
	s.mu.Unlock()
	if neverRan {
		s.wipe()
	}
	return s.closeErr
}

// Send packs frames into records (several small frames per record, never
// a frame split across records), seals them and writes them in order. It
// is safe for concurrent use; each call's frames stay together and in
// order. ctx bounds the wait for the connection and, through the
// connection's write deadline when it has one, the write itself. A write
// that fails part-way ends the session.
func (s *Session) Send(ctx context.Context, fs ...frame.Frame) error {
	for i, f := range fs {
		if !f.Type.Known() {
			return fmt.Errorf("session: send frame %d: %w: 0x%02x", i, frame.ErrType, uint8(f.Type))
		}
		if max := f.Type.MaxPayload(); len(f.Payload) > max {
			return fmt.Errorf("session: send frame %d: %w", i, &frame.TooLargeError{Type: f.Type, Len: uint64(len(f.Payload)), Max: max})
		}
	}
	if len(fs) == 0 {
		return nil
	}
	return s.send(ctx, false, fs)
}

// send seals and writes fs. final is set for the Close frame, which is
// sent after the session ended.
func (s *Session) send(ctx context.Context, final bool, fs []frame.Frame) error {
	var done <-chan struct{}
	if !final {
		done = s.done
	}
	select {
	case s.writeSem <- struct{}{}:
	case <-done:
		return s.err()
	case <-ctx.Done():
		return fmt.Errorf("session: send: %w", ctx.Err())
	}
	defer func() { <-s.writeSem }()
	if !final && s.ended() {
		return s.err()
	}
	if s.broken != nil {
		return s.broken
	}
	disarm := s.armDeadline(ctx)
	defer disarm()

	s.pbuf, s.wbuf, s.unsent = s.pbuf[:0], s.wbuf[:0], 0
	for _, f := range fs {
		if len(s.pbuf) > 0 && len(s.pbuf)+frame.Size(f) > packTarget {
			if err := s.sealPacked(); err != nil {
				return err
			}
			if len(s.wbuf) >= flushSize {
				if err := s.flush(ctx); err != nil {
					return err
				}
			}
		}
		s.pbuf, _ = frame.Append(s.pbuf, f) // checked by Send
	}
	if err := s.sealPacked(); err != nil {
		return err
	}
	return s.flush(ctx)
}

// sealPacked seals the packed plaintext into one record in wbuf.
func (s *Session) sealPacked() error {
	if s.cfg.Pad != nil {
		if n := min(s.cfg.Pad(s.sealed, len(s.pbuf)), frame.Padding.MaxPayload()); n > 0 {
			s.pbuf = appendPadding(s.pbuf, n)
		}
	}
	s.sealed++
	var err error
	s.wbuf, _, err = s.sealer.Seal(s.wbuf, s.pbuf)
	s.pbuf = s.pbuf[:0]
	if err != nil {
		err = fmt.Errorf("session: seal: %w", err)
		s.end(err)
		return err
	}
	s.unsent++
	if r := s.sealer.Rekeys(); r != s.rekeys.Load() {
		s.rekeys.Store(r)
		s.log.Debug("send key rekeyed", "epoch", s.sealer.Epoch())
	}
	return nil
}

// appendPadding appends a Padding frame with n zero bytes of payload (n is
// within the Padding limit, so Append cannot fail).
func appendPadding(dst []byte, n int) []byte {
	dst, _ = frame.Append(dst, frame.Frame{Type: frame.Padding, Payload: make([]byte, n)})
	return dst
}

type writeDeadliner interface {
	SetWriteDeadline(t time.Time) error
}

// longAgo is a deadline in the past: it makes a pending write return.
var longAgo = time.Unix(1, 0)

// armDeadline sets the connection's write deadline from ctx, and makes a
// cancelled ctx interrupt the write. The returned func undoes the
// cancellation hook.
func (s *Session) armDeadline(ctx context.Context) (disarm func()) {
	dw, ok := s.conn.(writeDeadliner)
	if !ok {
		return func() {}
	}
	d, _ := ctx.Deadline() // zero: no deadline
	dw.SetWriteDeadline(d)
	if ctx.Done() == nil {
		return func() {}
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		dw.SetWriteDeadline(longAgo)
	})
	return func() {
		if !stop() {
			<-fired
		}
	}
}

// flush writes wbuf. A write that wrote nothing before ctx ended leaves the
// stream intact; any other failure ends the session.
func (s *Session) flush(ctx context.Context) error {
	if len(s.wbuf) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("session: send: %w", err)
	}
	n, err := s.conn.Write(s.wbuf)
	s.bytesSent.Add(uint64(n))
	if err == nil {
		s.recordsSent.Add(s.unsent)
		s.wbuf, s.unsent = s.wbuf[:0], 0
		return nil
	}
	if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
		cerr := ctx.Err()
		if cerr == nil {
			cerr = context.DeadlineExceeded
		}
		return fmt.Errorf("session: send: %w", cerr)
	}
	if cerr := ctx.Err(); cerr != nil {
		err = fmt.Errorf("%w part-way through a record", cerr)
	}
	s.broken = fmt.Errorf("session: write: %w", err)
	s.end(s.broken)
	return s.broken
}

// Recv returns the next application frame, waiting for it until ctx ends.
// Frames received before the session ended are still returned; after
// them, Recv returns ErrClosed, a *CloseError or the error that ended the
// session. The frame's payload is its own: nothing reuses it.
func (s *Session) Recv(ctx context.Context) (frame.Frame, error) {
	select {
	case f := <-s.recvq:
		return f, nil
	default:
	}
	select {
	case f := <-s.recvq:
		return f, nil
	case <-s.done:
		select {
		case f := <-s.recvq:
			return f, nil
		default:
			return frame.Frame{}, s.err()
		}
	case <-ctx.Done():
		return frame.Frame{}, fmt.Errorf("session: recv: %w", ctx.Err())
	}
}

// RTT is the smoothed round-trip time and its variance (RFC 6298), or
// zeros before the first Pong.
func (s *Session) RTT() (srtt, rttvar time.Duration) {
	s.rttMu.Lock()
	defer s.rttMu.Unlock()
	return s.srtt, s.rttvar
}

// Rekey moves the sending direction to the next key epoch now. It waits
// for a Send in progress to finish. If no record was sent since the last
// move, the current key is unused and Rekey does nothing (see
// Sealer.Rekey): a second move would leave the peer unable to open the
// next record.
func (s *Session) Rekey() error {
	select {
	case s.writeSem <- struct{}{}:
	case <-s.done:
		return s.err()
	}
	defer func() { <-s.writeSem }()
	if s.ended() {
		return s.err()
	}
	if err := s.sealer.Rekey(); err != nil {
		return fmt.Errorf("session: rekey: %w", err)
	}
	s.rekeys.Store(s.sealer.Rekeys())
	s.log.Debug("send key rekeyed", "epoch", s.sealer.Epoch())
	return nil
}

// Stats returns the session's counters.
func (s *Session) Stats() Stats {
	return Stats{
		RecordsSent:     s.recordsSent.Load(),
		RecordsReceived: s.recordsRecv.Load(),
		BytesSent:       s.bytesSent.Load(),
		BytesReceived:   s.bytesRecv.Load(),
		ReplaysDropped:  s.replays.Load(),
		Rekeys:          s.rekeys.Load(),
		PeerRekeys:      s.peerRekeys.Load(),
	}
}

// keepAliveLoop sends a Ping now and every KeepAlive, and the Pongs the
// reader asks for.
func (s *Session) keepAliveLoop(ctx context.Context) {
	s.ping(ctx)
	t := time.NewTimer(s.cfg.KeepAlive)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			s.ping(ctx)
			t.Reset(s.cfg.KeepAlive)
		case p := <-s.pongs:
			s.control(ctx, frame.Frame{Type: frame.Pong, Payload: p[:]})
		}
	}
}

func (s *Session) ping(ctx context.Context) {
	now := time.Now()
	s.rttMu.Lock()
	s.pingID++
	id := s.pingID
	s.pending[id%pendingPings] = pendingPing{id: id, sent: now}
	s.rttMu.Unlock()
	var b [frame.PingLen]byte
	frame.PingPayload{ID: id, SentUnixNano: now.UnixNano()}.Append(b[:0])
	s.control(ctx, frame.Frame{Type: frame.Ping, Payload: b[:]})
}

// control sends one control frame, giving up after KeepAlive.
func (s *Session) control(ctx context.Context, f frame.Frame) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.KeepAlive)
	defer cancel()
	if err := s.send(ctx, false, []frame.Frame{f}); err != nil && !s.ended() {
		s.log.Debug("control frame not sent", "type", f.Type, "err", err)
	}
}

// onPongAt takes an RTT sample if p, received at now, answers a pending
// ping.
func (s *Session) onPongAt(p frame.PingPayload, now time.Time) {
	s.rttMu.Lock()
	defer s.rttMu.Unlock()
	slot := &s.pending[p.ID%pendingPings]
	if slot.id != p.ID || slot.sent.IsZero() {
		return
	}
	r := now.Sub(slot.sent)
	*slot = pendingPing{}
	if s.srtt == 0 && s.rttvar == 0 {
		s.srtt, s.rttvar = r, r/2
		return
	}
	d := s.srtt - r
	if d < 0 {
		d = -d
	}
	s.rttvar = (3*s.rttvar + d) / 4
	s.srtt = (7*s.srtt + r) / 8
}

// deliver queues f for Recv, waiting while the queue is full. While it
// waits, the reader reads nothing, so the idle timeout is held off: a slow
// application is not a silent peer.
func (s *Session) deliver(f frame.Frame) error {
	select {
	case s.recvq <- f:
		return nil
	default:
	}
	s.stalled.Store(true)
	defer s.stalled.Store(false)
	select {
	case s.recvq <- f:
		s.lastRecv.Store(s.sinceCreated())
		return nil
	case <-s.done:
		return errStopped
	}
}

// readLoop runs the reader until the session ends.
func (s *Session) readLoop() {
	defer close(s.readerDone)
	err := s.read()
	if err != nil && !s.ended() {
		s.log.Debug("reader stopped", "err", err)
	}
	s.end(err)
}

// errStopped tells read's caller that the session ended while the reader
// was waiting.
var errStopped = errors.New("session: stopped")

func (s *Session) read() error {
	br := bufio.NewReaderSize(s.conn, readBufSize)
	var buf []byte
	defer func() { clear(buf[:cap(buf)]) }()
	for {
		rec, err := ReadRecord(br, buf)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("session: connection closed by peer without a close frame: %w", err)
			}
			if errors.Is(err, ErrTooLarge) || errors.Is(err, ErrMalformed) {
				return err
			}
			return fmt.Errorf("session: read: %w", err)
		}
		buf = rec
		s.bytesRecv.Add(uint64(len(rec)))
		pt, _, err := s.opener.Open(rec[HeaderSize:HeaderSize], rec)
		if errors.Is(err, ErrReplay) {
			s.replays.Add(1)
			continue
		}
		if err != nil {
			return err
		}
		s.recordsRecv.Add(1)
		s.lastRecv.Store(s.sinceCreated())
		if r := s.opener.Rekeys(); r != s.peerRekeys.Load() {
			s.peerRekeys.Store(r)
			s.log.Debug("receive key rekeyed", "epoch", s.opener.Epoch())
		}
		if err := s.dispatch(pt); err != nil {
			return err
		}
	}
}

// appFrame reports whether frames of type t go to Recv.
func appFrame(t frame.Type) bool {
	switch t {
	case frame.Ping, frame.Pong, frame.Padding, frame.Close:
		return false
	}
	return true
}

// dispatch handles the frames of one record's plaintext pt. It checks
// every frame before acting on any, copies application payloads out of pt
// (which the reader reuses) and returns a *CloseError after a Close frame.
func (s *Session) dispatch(pt []byte) error {
	total := 0
	for off := 0; off < len(pt); {
		f, n, err := frame.Decode(pt[off:])
		if err == nil {
			switch f.Type {
			case frame.Ping, frame.Pong:
				_, err = frame.ParsePing(f.Payload)
			case frame.Close:
				_, err = frame.ParseClose(f.Payload)
			}
		}
		if err != nil {
			return fmt.Errorf("%w: frame at offset %d: %w", ErrMalformed, off, err)
		}
		if appFrame(f.Type) {
			total += len(f.Payload)
		}
		off += n
	}
	var keep []byte
	if total > 0 {
		keep = make([]byte, 0, total)
	}
	for off := 0; off < len(pt); {
		f, n, _ := frame.Decode(pt[off:]) // checked above
		off += n
		switch f.Type {
		case frame.Padding:
		case frame.Ping:
			select {
			case s.pongs <- [frame.PingLen]byte(f.Payload):
			default: // a Pong is already waiting; the peer pings again
			}
		case frame.Pong:
			p, _ := frame.ParsePing(f.Payload)
			s.onPongAt(p, time.Now())
		case frame.Close:
			c, _ := frame.ParseClose(f.Payload)
			return &CloseError{Code: c.Code, Reason: c.Reason}
		default:
			if len(f.Payload) == 0 {
				f.Payload = nil
			} else {
				start := len(keep)
				keep = append(keep, f.Payload...)
				f.Payload = keep[start:len(keep):len(keep)]
			}
			if err := s.deliver(f); err != nil {
				return err
			}
		}
	}
	return nil
}
