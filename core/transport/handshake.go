package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// HandshakeConfig configures a HandshakeListener. Handshake is required;
// the other fields may be left zero.
type HandshakeConfig struct {
	// Transport names the transport in errors, such as "obfs4".
	Transport string
	// Handshake runs the server side of a handshake on raw, a connection
	// just accepted, and returns the connection Accept hands out. ctx ends
	// at Timeout, when the listener closes, or when Handshake returns;
	// raw is closed when ctx ends before Handshake returns, so Handshake
	// need not watch ctx itself. After an error the listener closes raw
	// (Handshake may have closed it already, as late as it likes).
	// Handshake is called from many goroutines at once.
	Handshake func(ctx context.Context, raw net.Conn) (net.Conn, error)
	// MaxHandshakes bounds the handshakes in flight, counted from a
	// connection's accept until its handshake has failed or Accept's
	// queue has taken it. Beyond it, new connections wait in the
	// kernel's backlog. If zero, 64.
	MaxHandshakes int
	// MaxPerSource bounds the handshakes in flight from one source (see
	// SourceLimit) once more than half of MaxHandshakes are taken, so
	// that one host holding connections open cannot take every slot;
	// a connection beyond it is then closed at once. If zero, a
	// sixteenth of MaxHandshakes, at least 1; if negative, there is no
	// bound (for a listener whose every connection comes from one local
	// proxy).
	MaxPerSource int
	// QueueLen bounds the handshaken connections waiting for Accept. If
	// zero, 64.
	QueueLen int
	// Timeout bounds each handshake. If zero, there is none.
	Timeout time.Duration
	// Logger receives, at warning level, the errors of accepting that the
	// listener retries after. If nil, they are not logged.
	Logger *slog.Logger
}

// Defaults of HandshakeConfig.
const (
	defaultMaxHandshakes = 64
	defaultQueueLen      = 64
)

// Backoff after an accept error such as running out of file descriptors.
const (
	minAcceptBackoff = 5 * time.Millisecond
	maxAcceptBackoff = time.Second
)

// HandshakeListener is a Listener that runs a handshake on every
// connection a net.Listener accepts, each in a goroutine of its own, and
// hands the connections whose handshake succeeded to Accept. It owns the
// net.Listener, one goroutine that accepts and one per handshake in
// flight; Close ends them all. It is safe for concurrent use.
type HandshakeListener struct {
	ln      net.Listener
	name    string
	hs      func(context.Context, net.Conn) (net.Conn, error)
	timeout time.Duration
	log     *slog.Logger

	ctx    context.Context // the listener's lifetime, ended by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	sem    chan struct{} // slots for handshakes in flight
	perSrc *SourceLimit  // handshakes in flight per source
	ready  chan net.Conn // handshaken connections waiting for Accept

	stopped chan struct{} // closed when ln fails for good before Close
	stopErr error         // ln's error, written before stopped is closed

	closeOnce sync.Once
	closeErr  error
}

var _ Listener = (*HandshakeListener)(nil)

// NewHandshakeListener starts accepting connections on ln and running
// cfg.Handshake on them. It panics if cfg.Handshake is nil.
func NewHandshakeListener(ln net.Listener, cfg HandshakeConfig) *HandshakeListener {
	if cfg.Handshake == nil {
		panic("transport: HandshakeConfig.Handshake is nil")
	}
	maxHS, queue := cfg.MaxHandshakes, cfg.QueueLen
	if maxHS <= 0 {
		maxHS = defaultMaxHandshakes
	}
	if queue <= 0 {
		queue = defaultQueueLen
	}
	perSrc := cfg.MaxPerSource
	if perSrc == 0 {
		perSrc = max(1, maxHS/16)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &HandshakeListener{
		ln:      ln,
		name:    cfg.Transport,
		hs:      cfg.Handshake,
		timeout: cfg.Timeout,
		log:     log,
		ctx:     ctx,
		cancel:  cancel,
		sem:     make(chan struct{}, maxHS),
		perSrc:  NewSourceLimit(perSrc),
		ready:   make(chan net.Conn, queue),
		stopped: make(chan struct{}),
	}
	l.wg.Go(l.acceptLoop)
	return l
}

// acceptLoop accepts connections while a handshake slot is free and
// starts their handshakes, until Close or until ln fails for good.
func (l *HandshakeListener) acceptLoop() {
	backoff := minAcceptBackoff
	for {
		select {
		case l.sem <- struct{}{}:
		case <-l.ctx.Done():
			return
		}
		raw, err := l.ln.Accept()
		if err != nil {
			<-l.sem
			if l.ctx.Err() != nil {
				return
			}
			if errors.Is(err, net.ErrClosed) { // closed by someone else
				l.stopErr = err
				close(l.stopped)
				return
			}
			// A peer that reset while in the backlog, or a shortage of
			// descriptors or buffers: wait a little and go on.
			l.log.Warn("transport: accept failed; retrying", "err", err)
			timer := time.NewTimer(backoff)
			select {
			case <-timer.C:
			case <-l.ctx.Done():
				timer.Stop()
				return
			}
			backoff = min(2*backoff, maxAcceptBackoff)
			continue
		}
		backoff = minAcceptBackoff
		if l.ctx.Err() != nil {
			raw.Close()
			<-l.sem
			return
		}
		release, ok := l.perSrc.Take(raw.RemoteAddr(), Scarce(l.sem))
		if !ok {
			// Slots are scarce and its source holds its share.
			raw.Close()
			<-l.sem
			continue
		}
		l.wg.Go(func() { l.handshake(raw, release) })
	}
}

// handshake runs the handshake on raw and queues the connection for
// Accept. It gives back raw's slots when it returns.
func (l *HandshakeListener) handshake(raw net.Conn, release func()) {
	defer func() { <-l.sem }()
	defer release()
	var ctx context.Context
	var cancel context.CancelFunc
	if l.timeout > 0 {
		ctx, cancel = context.WithTimeout(l.ctx, l.timeout)
	} else {
		ctx, cancel = context.WithCancel(l.ctx)
	}
	defer cancel()
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		raw.Close()
	})
	c, err := l.hs(ctx, raw)
	if !stop() {
		<-fired // raw is closed: c, if any, is of no use
		if err == nil {
			c.Close()
			return
		}
	}
	if err != nil {
		raw.Close()
		return
	}
	select {
	case l.ready <- c:
	case <-l.ctx.Done():
		c.Close()
	}
}

// Accept waits for the next connection whose handshake succeeded, until
// ctx ends or the listener is closed. After Close it returns an error
// wrapping ErrClosed; when ctx ends, an *OpError wrapping ctx.Err() (and
// ErrTimeout for a deadline); if the net.Listener was closed by someone
// else, an *OpError wrapping its error. Failed handshakes are never
// reported. Concurrent calls are fine.
func (l *HandshakeListener) Accept(ctx context.Context) (net.Conn, error) {
	if l.ctx.Err() != nil {
		return nil, l.closedErr()
	}
	if ctx.Err() != nil {
		return nil, WrapError(l.name, "accept", ctx.Err())
	}
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.ctx.Done():
		return nil, l.closedErr()
	case <-l.stopped:
		return nil, WrapError(l.name, "accept on "+l.ln.Addr().String(), l.stopErr)
	case <-ctx.Done():
		return nil, WrapError(l.name, "accept", ctx.Err())
	}
}

// Close stops the listener: it closes the net.Listener, interrupts the
// handshakes in flight by closing their connections, closes the
// connections no Accept took, and waits for its goroutines. Connections
// already accepted stay open. A pending Accept returns ErrClosed. Close
// is idempotent; only the first call can return an error, that of
// closing the net.Listener.
func (l *HandshakeListener) Close() error {
	l.closeOnce.Do(func() {
		l.cancel()
		if err := l.ln.Close(); err != nil {
			l.closeErr = fmt.Errorf("%s: close listener: %w", l.name, err)
		}
		l.wg.Wait()
		for {
			select {
			case c := <-l.ready:
				c.Close()
			default:
				return
			}
		}
	})
	return l.closeErr
}

// Addr is the net.Listener's address.
func (l *HandshakeListener) Addr() net.Addr { return l.ln.Addr() }

func (l *HandshakeListener) closedErr() error {
	return fmt.Errorf("%s: accept on %s: %w", l.name, l.ln.Addr(), ErrClosed)
}
