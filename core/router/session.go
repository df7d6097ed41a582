package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/commucat/commucat/core/fec"
	"github.com/commucat/commucat/core/frame"
	"github.com/commucat/commucat/core/handshake"
	"github.com/commucat/commucat/core/session"
)

// Errors that callers branch on with errors.Is. A session closed by either
// side ends with the record layer's errors: session.ErrClosed after Close
// or the end of Run's context, a *session.CloseError (matching
// session.ErrClosedByPeer) when the peer closed.
var (
	// ErrClosed is session.ErrClosed: this side closed the session.
	ErrClosed = session.ErrClosed
	// ErrResumeExpired means every path stayed dead for the resume window.
	ErrResumeExpired = errors.New("router: no path for the resume window")
	// ErrResumeRefused means the gateway refused the client's joins while
	// no path was alive: it no longer knows the session. The client falls
	// back to a full handshake (core/client.Dial).
	ErrResumeRefused = errors.New("router: gateway refused to resume the session")
	// ErrReserved means Send was given a frame type the router sends
	// itself (Ping, Pong, PathJoin, Padding, FECParity, Close, and Ack of
	// kinds AckRecords and AckDatagrams).
	ErrReserved = errors.New("router: frame type reserved for the router")
)

type runState uint8

const (
	stateNew runState = iota
	stateRunning
	stateStopped
)

// Session is one logical CCP-1 session over up to Config.MaxPaths
// connections (paths). Frames sent with Send are sealed into records with
// the session's one key schedule (nonces unique across paths), placed on
// paths by the scheduler, acknowledged, re-sent on another path if a path
// dies or stalls, and delivered by the peer exactly once and in order;
// Recv returns the peer's frames the same way. The session outlives its
// paths: the client re-dials and joins new ones, and when all died it
// resumes within Config.ResumeWindow.
//
// Send, Recv, Stats, Unacked and Close are safe for concurrent use; Run is
// called once.
type Session struct {
	role    Role
	cfg     Config
	log     *slog.Logger
	created time.Time

	// kick wakes the timer loop (cap 1).
	kick chan struct{}

	mu      sync.Mutex
	changed chan struct{} // closed and replaced when waiters should look again
	state   runState
	runCtx  context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	done    chan struct{} // closed when the session ends
	endOnce sync.Once
	stopped sync.Once // runs cfg.OnStop
	cause   error     // set before done is closed

	sealer  *session.Sealer
	opener  *session.Opener
	joinKey [32]byte
	tokMu   sync.Mutex // guards tok.table
	tok     tokenState // gateway: the rest guarded by tok.table.mu

	confirmed     chan struct{} // closed at the first authenticated record
	confirmedOnce sync.Once

	paths      []*path
	nextPathID uint64
	best       *path
	bestSince  time.Time
	detached   time.Time // when the last path died; zero while one lives
	hadPath    bool      // some path was active before (resume counting)

	// Client path manager.
	eps       []epState
	nextJoin  uint64
	refusals  int
	firstPath int

	// Send side.
	nextSeq   uint64 // next reliable sequence number, from 1
	outq      []*out // unacked reliable frames, contiguous seqs, oldest first
	outBytes  int
	unsent    []*out // frames waiting for (re)transmission, in order
	peerLimit uint64 // highest seq the peer accepts
	closing   bool   // Close frame queued

	// Receive side.
	base, recvNext, recvHigh uint64
	ring                     []slot
	unrel                    []frame.Frame
	ackDue                   bool
	ackAt                    time.Time
	ackPath                  *path
	advertised               uint64 // highest seq the peer was told it may send
	peerClose                *session.CloseError

	// FEC.
	enc     *fec.Encoder
	dec     *fec.Decoder
	ctl     *fec.Controller
	fecSeen time.Time
	// blockRecords is the moving average of records per FEC block.
	blockRecords float64
	fecM         int           // parity shards of the current or next block
	fecShards    map[*path]int // shards of the open block per path
	// FEC of datagram records: blocks of their own, sized for the
	// datagram loss of the path they start on.
	dgEnc          *fec.Encoder
	dgFECPath      *path
	dgBlockRecords float64 // moving average of records per block

	st counters
}

// slot is one place of the receive ring.
type slot struct {
	f  frame.Frame
	ok bool
}

// epState is the client's bookkeeping of one endpoint.
type epState struct {
	busy  bool // a path or an attempt uses it
	fails int
	next  time.Time
}

// New returns a session over conn, its first path, from a completed
// handshake. It copies the keys and hash from res; the caller still wipes
// res. ep describes conn. Nothing is read or written until Run. A gateway
// session is joinable once added to a Table. If cfg is invalid, the
// session starts ended with the validation error.
func New(role Role, res *handshake.Result, conn net.Conn, ep Endpoint, cfg Config) *Session {
	verr := cfg.Validate()
	if verr != nil {
		cfg = Config{Logger: cfg.Logger, OnStop: cfg.OnStop}
	}
	c := cfg.withDefaults()
	now := time.Now()
	s := &Session{
		role:      role,
		cfg:       c,
		log:       c.Logger.With("component", "router", "role", role.String()),
		created:   now,
		kick:      make(chan struct{}, 1),
		changed:   make(chan struct{}),
		done:      make(chan struct{}),
		sealer:    session.NewSealer(res.SendKey),
		opener:    session.NewOpener(res.RecvKey),
		confirmed: make(chan struct{}),
		nextSeq:   1,
		nextJoin:  1,
		firstPath: -1,
		base:      1,
		recvNext:  1,
		peerLimit: uint64(defaultPeerWindow),
		ring:      make([]slot, c.Window),
		fecShards: make(map[*path]int),
	}
	s.sealer.SetRekeyPolicy(c.RekeyAfterRecords, c.RekeyAfter)
	s.opener.SetGrace(c.RekeyGrace)
	err := verr
	if err == nil && role != Client && role != Gateway {
		err = fmt.Errorf("router: unknown role %d", role)
	}
	if err == nil {
		s.joinKey, err = joinKey(role, res)
	}
	if err == nil {
		s.enc, err = fec.NewEncoder(fec.EncoderConfig{MaxDelay: fecDelay})
	}
	if err == nil {
		s.dec, err = fec.NewDecoder(fec.DecoderConfig{})
	}
	if err == nil {
		s.ctl, err = fec.NewController(fec.ControllerConfig{})
	}
	if err == nil {
		s.dgEnc, err = fec.NewEncoder(fec.EncoderConfig{MaxDelay: dgFECDelay})
	}
	s.eps = make([]epState, len(c.Endpoints))
	for i, e := range c.Endpoints {
		if e.Transport == ep.Transport && e.Addr == ep.Addr && s.firstPath < 0 {
			s.firstPath = i
		}
	}
	p := s.newPath(conn, ep, PathActive, s.firstPath)
	p.lastProgress = now
	s.best, s.bestSince, s.hadPath = p, now, true
	if err != nil {
		s.end(err)
	}
	return s
}

// defaultPeerWindow is what the peer is assumed to accept before its first
// acknowledgement: the smallest Window a peer may advertise by default.
const defaultPeerWindow = 256

// fecDelay is how long an FEC block stays open waiting for records.
const fecDelay = 10 * time.Millisecond

// LogValue implements slog.LogValuer: a Session holds keys and never logs
// them.
func (s *Session) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// Role returns which end of the session this is.
func (s *Session) Role() Role { return s.role }

// Confirmed is closed when the first authenticated record from the peer
// arrives. The gateway starts serving a session only then: a client that
// lost a race of handshakes closes the losing connections without sending
// a record, and such sessions end when their path does.
func (s *Session) Confirmed() <-chan struct{} { return s.confirmed }

// Done is closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.done }

// newPath adds a path over conn. Called with s.mu held (or before the
// session is shared).
func (s *Session) newPath(conn net.Conn, ep Endpoint, st PathState, dialer int) *path {
	now := time.Now()
	s.nextPathID++
	p := &path{
		s:        s,
		id:       s.nextPathID,
		ep:       ep,
		conn:     conn,
		dg:       newDgPath(conn, s.cfg),
		dialer:   dialer,
		wake:     make(chan struct{}, 1),
		done:     make(chan struct{}),
		state:    st,
		opened:   now,
		rateAt:   now,
		nextPing: now,
		penalty:  s.cfg.Policy.Penalty(ep.Transport, ep.Addr),
	}
	s.paths = append(s.paths, p)
	if dialer >= 0 && dialer < len(s.eps) {
		s.eps[dialer].busy = true
	}
	if s.state == stateRunning {
		s.startPath(p)
	}
	return p
}

// startPath starts p's reader and writer. Called with s.mu held while
// running.
func (s *Session) startPath(p *path) {
	s.wg.Go(p.readLoop)
	s.wg.Go(p.writeLoop)
	if p.dg != nil {
		s.wg.Go(p.dgReadLoop)
		s.wg.Go(p.dgWriteLoop)
	}
}

func (s *Session) ended() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// end records why the session ended, once, and starts closing every
// path. It may be called with or without s.mu held.
func (s *Session) end(cause error) bool {
	first := false
	s.endOnce.Do(func() {
		s.cause = cause
		close(s.done)
		first = true
	})
	if first {
		s.wakeup()
	}
	return first
}

func (s *Session) err() error {
	<-s.done
	return s.cause
}

// broadcast wakes every goroutine waiting in Send, Recv or Close. Called
// with s.mu held.
func (s *Session) broadcast() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// wakeup nudges the timer loop.
func (s *Session) wakeup() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Run drives the session until it ends: it starts every path's reader and
// writer, pings, acknowledges, retransmits, detects stalls, and on the
// client keeps up to MaxPaths paths open. It returns nil after Close or
// the end of ctx, a *session.CloseError when the peer closed,
// ErrResumeExpired or ErrResumeRefused when the session could not be
// resumed, and otherwise the error that ended it. It returns only after
// every goroutine it started has exited and every connection is closed.
func (s *Session) Run(ctx context.Context) error {
	s.mu.Lock()
	switch s.state {
	case stateRunning:
		s.mu.Unlock()
		return errors.New("router: Run called more than once")
	case stateStopped:
		s.mu.Unlock()
		return s.result()
	}
	s.state = stateRunning
	s.runCtx, s.cancel = context.WithCancel(ctx)
	for _, p := range s.paths {
		if p.live() {
			s.startPath(p)
		}
	}
	s.mu.Unlock()

	s.loop(ctx)

	s.mu.Lock()
	s.state = stateStopped
	s.cancel()
	s.shutdownPaths()
	s.broadcast()
	s.mu.Unlock()
	s.wg.Wait()
	if t := s.joinTable(); t != nil {
		t.remove(s)
	}
	s.wipe()
	s.stop()
	err := s.result()
	s.log.Debug("session ended", "err", err)
	return err
}

// stop calls cfg.OnStop, once, without s.mu held.
func (s *Session) stop() {
	if s.cfg.OnStop != nil {
		s.stopped.Do(s.cfg.OnStop)
	}
}

// result is what Run returns once the session ended.
func (s *Session) result() error {
	if err := s.err(); !errors.Is(err, ErrClosed) {
		return err
	}
	return nil
}

// shutdownPaths makes every path flush and close. Called with s.mu held.
func (s *Session) shutdownPaths() {
	// closePath may compact s.paths (dropDead): iterate over a copy.
	for _, p := range slices.Clone(s.paths) {
		s.closePath(p)
	}
}

// closePath marks p dead and makes its writer flush and close the
// connection. Called with s.mu held.
func (s *Session) closePath(p *path) {
	if p.state == PathDead {
		return
	}
	p.state = PathDead
	close(p.done)
	p.qmu.Lock()
	p.closing = true
	p.qmu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	if s.state != stateRunning {
		// No writer runs: close the connection here.
		p.conn.Close()
	} else {
		// The writer may be inside a Write that a dead path never
		// completes (a black hole): the deadline ends it too, the writer
		// then closes the connection, and its goroutines end.
		p.conn.SetWriteDeadline(time.Now().Add(flushTimeout)) //nolint:errcheck // a closed connection needs none
	}
	if p.dialer >= 0 && p.dialer < len(s.eps) {
		e := &s.eps[p.dialer]
		e.busy = false
		if time.Since(p.opened) > time.Minute {
			e.fails = 0
		}
		e.next = time.Now().Add(s.backoff(e.fails))
		e.fails++
	}
	s.dropDead()
}

// maxDeadPaths is how many dead paths stay listed for Stats.
const maxDeadPaths = 8

// dropDead forgets the oldest dead paths beyond maxDeadPaths. Called with
// s.mu held.
func (s *Session) dropDead() {
	dead := 0
	for _, p := range s.paths {
		if p.state == PathDead {
			dead++
		}
	}
	if dead <= maxDeadPaths {
		return
	}
	kept := s.paths[:0]
	for _, p := range s.paths {
		if p.state == PathDead && dead > maxDeadPaths {
			dead--
			continue
		}
		kept = append(kept, p)
	}
	clear(s.paths[len(kept):])
	s.paths = kept
}

// wipe drops the keys once no goroutine uses them.
func (s *Session) wipe() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sealer.Wipe()
	s.opener.Wipe()
	clear(s.joinKey[:])
}

// Close sends a Close frame on every live path, waits (up to CloseLinger)
// for the peer to acknowledge everything sent, then ends the session and
// closes every path. It is idempotent and returns nil.
func (s *Session) Close() error {
	s.mu.Lock()
	if s.state == stateNew {
		s.state = stateStopped
		s.end(ErrClosed)
		s.shutdownPaths()
		s.mu.Unlock()
		s.wipe()
		s.stop()
		return nil
	}
	s.closeLocked()
	s.mu.Unlock()
	return nil
}

// closeLocked queues a Close frame and waits for the acknowledgement, then
// ends the session. Called with s.mu held; it releases it while waiting.
func (s *Session) closeLocked() {
	if s.ended() {
		return
	}
	if !s.closing && s.state == stateRunning {
		s.closing = true
		payload := frame.ClosePayload{Code: session.CloseNormal}.Append(nil)
		s.queue(frame.Frame{Type: frame.Close, Payload: payload}, Redundant, true)
		s.pump(time.Now())
		deadline := time.NewTimer(s.cfg.CloseLinger)
		defer deadline.Stop()
		for len(s.outq) > 0 && !s.ended() && s.anyPath() {
			ch := s.changed
			s.mu.Unlock()
			select {
			case <-ch:
			case <-deadline.C:
				s.mu.Lock()
				s.end(ErrClosed)
				return
			case <-s.done:
			}
			s.mu.Lock()
		}
	}
	s.end(ErrClosed)
}

// anyPath reports whether some path is alive. Called with s.mu held.
func (s *Session) anyPath() bool {
	for _, p := range s.paths {
		if p.live() {
			return true
		}
	}
	return false
}

// pathFailed records that p's connection failed with err.
func (s *Session) pathFailed(p *path, err error) {
	s.mu.Lock()
	if p.state == PathDead {
		s.mu.Unlock()
		return
	}
	defer s.onPathFailure(p.ep)
	defer s.mu.Unlock()
	refused := p.state == PathJoining && p.wroteJoin && !p.gotRecord
	s.log.Debug("path failed", "path", p.id, "transport", p.ep.Transport, "state", p.state, "err", err)
	s.closePath(p)
	p.conn.Close()
	if refused {
		s.onRefused(p)
	}
	s.pathsChanged(time.Now())
	s.wakeup()
}

// onRefused counts a join the gateway refused: it closed the connection
// after the join message without a record. Called with s.mu held.
func (s *Session) onRefused(p *path) {
	s.st.refused++
	if s.hasUsable() {
		return
	}
	s.refusals++
	if s.refusals >= s.cfg.JoinRefusals {
		s.end(fmt.Errorf("%w (%d joins refused)", ErrResumeRefused, s.refusals))
	}
}

func (s *Session) hasUsable() bool {
	for _, p := range s.paths {
		if p.usable() {
			return true
		}
	}
	return false
}

// pathsChanged re-evaluates the best path and rescues frames of paths
// that cannot carry them any more. Called with s.mu held.
func (s *Session) pathsChanged(now time.Time) {
	s.chooseBest(now, true)
	if s.hasUsable() {
		if !s.detached.IsZero() || !s.hadPath {
			if s.hadPath {
				s.st.resumes++
				s.log.Debug("session resumed")
			}
			s.detached, s.hadPath = time.Time{}, true
		}
		s.rescue()
		s.pump(now)
	} else if s.detached.IsZero() {
		s.detached = now
	}
	s.broadcast()
}

// attach adds an accepted, joined connection as a new path (gateway).
func (s *Session) attach(conn net.Conn, ep Endpoint, index uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended() || s.state == stateStopped {
		conn.Close()
		return
	}
	live := 0
	var worst *path
	for _, p := range s.paths {
		if !p.live() {
			continue
		}
		live++
		if worst == nil || p.state != PathActive && worst.state == PathActive || p.state == worst.state && p.score() > worst.score() {
			worst = p
		}
	}
	if live >= s.cfg.MaxPaths && worst != nil {
		s.log.Debug("path limit: closing the worst path", "path", worst.id)
		s.closePath(worst)
	}
	p := s.newPath(conn, ep, PathUnverified, -1)
	p.joinIndex = index
	s.st.joins++
	s.sendConfirmation(p, index)
	s.wakeup()
}

// Send queues frames for the peer and returns once they are buffered: it
// waits only while the send window or the unacknowledged-bytes limit is
// full (backpressure), until ctx ends. It sets each reliable frame's Seq:
// the peer's Recv returns reliable frames exactly once and in Send order
// across all of a session's paths. Media frames are unreliable: not
// re-sent, delivered as they come, with Seq 0. Send fails for frame types
// the router sends itself (ErrReserved).
func (s *Session) Send(ctx context.Context, fs ...frame.Frame) error {
	for i, f := range fs {
		if !f.Type.Known() {
			return fmt.Errorf("router: send frame %d: %w: 0x%02x", i, frame.ErrType, uint8(f.Type))
		}
		if max := f.Type.MaxPayload(); len(f.Payload) > max {
			return fmt.Errorf("router: send frame %d: %w", i, &frame.TooLargeError{Type: f.Type, Len: uint64(len(f.Payload)), Max: max})
		}
		if reserved(f) {
			return fmt.Errorf("router: send frame %d (%s): %w", i, f.Type, ErrReserved)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range fs {
		class, reliable := ClassOf(f)
		if s.cfg.Scheduler != ByClass {
			class = s.cfg.Scheduler
		}
		for reliable && !s.ended() && !s.closing && !s.roomFor(frame.Size(f)) {
			ch := s.changed
			s.mu.Unlock()
			select {
			case <-ch:
			case <-s.done:
			case <-ctx.Done():
				s.mu.Lock()
				return fmt.Errorf("router: send: %w", ctx.Err())
			}
			s.mu.Lock()
		}
		if s.ended() {
			return s.err()
		}
		if s.closing {
			return ErrClosed
		}
		s.queue(f, class, reliable)
	}
	s.pump(time.Now())
	return nil
}

// roomFor reports whether a reliable frame of n bytes fits the send
// window. Called with s.mu held.
func (s *Session) roomFor(n int) bool {
	if len(s.outq) == 0 {
		return true
	}
	return s.nextSeq <= s.peerLimit && s.outBytes+n <= s.cfg.MaxUnacked
}

// Recv returns the next frame from the peer, waiting until ctx ends.
// Frames that arrived before the session ended are still returned; then
// Recv returns the error that ended it (session.ErrClosed, a
// *session.CloseError, ...). The payload is the caller's.
func (s *Session) Recv(ctx context.Context) (frame.Frame, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if f, ok := s.popRecv(); ok {
			return f, nil
		}
		if s.ended() {
			return frame.Frame{}, s.err()
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-s.done:
		case <-ctx.Done():
			s.mu.Lock()
			return frame.Frame{}, fmt.Errorf("router: recv: %w", ctx.Err())
		}
		s.mu.Lock()
	}
}

// Unacked returns copies of the reliable frames sent but not yet
// acknowledged by the peer, in order. After ErrResumeRefused they are the
// frames the gateway may never have received; a client can send them
// again on a new session.
func (s *Session) Unacked() []frame.Frame {
	s.mu.Lock()
	defer s.mu.Unlock()
	var fs []frame.Frame
	for _, o := range s.outq {
		if o.acked {
			continue
		}
		f, _, err := frame.Decode(o.enc)
		if err != nil || f.Type == frame.Close {
			continue
		}
		f.Payload = append([]byte(nil), f.Payload...)
		fs = append(fs, f)
	}
	return fs
}
