package obfs4

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/commucat/commucat/core/transport"
)

// listener is a transport.Listener that runs obfs4 server handshakes.
// One goroutine accepts TCP connections and starts a goroutine per
// handshake; both are owned by the listener and end in Close. A slot of
// sem is held from a connection's accept until its handshake has failed
// or it has been handed to the ready queue, which bounds the goroutines
// and the connections being handshaken.
type listener struct {
	t     *Transport
	ln    *net.TCPListener
	sem   chan struct{} // slots for handshakes in flight
	ready chan *conn    // handshaken connections waiting for Accept
	done  chan struct{} // closed by Close
	wg    sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	inflight map[net.Conn]struct{} // raw connections in a handshake

	closeOnce sync.Once
	closeErr  error
}

func newListener(t *Transport, ln *net.TCPListener, maxHandshakes int) *listener {
	l := &listener{
		t:        t,
		ln:       ln,
		sem:      make(chan struct{}, maxHandshakes),
		ready:    make(chan *conn, readyQueueLen),
		done:     make(chan struct{}),
		inflight: make(map[net.Conn]struct{}),
	}
	l.wg.Go(l.acceptLoop)
	return l
}

// Accept backoff after an accept error such as running out of file
// descriptors.
const (
	minBackoff = 5 * time.Millisecond
	maxBackoff = time.Second
)

// acceptLoop accepts TCP connections while a handshake slot is free and
// starts their handshakes, until Close.
func (l *listener) acceptLoop() {
	backoff := minBackoff
	for {
		select {
		case l.sem <- struct{}{}:
		case <-l.done:
			return
		}
		raw, err := l.ln.AcceptTCP()
		if err != nil {
			<-l.sem
			if isDone(l.done) || errors.Is(err, net.ErrClosed) {
				return
			}
			// A peer that reset while in the backlog, or a shortage of
			// descriptors or buffers: wait a little and go on.
			timer := time.NewTimer(backoff)
			select {
			case <-timer.C:
			case <-l.done:
				timer.Stop()
				return
			}
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		backoff = minBackoff
		if !l.track(raw) {
			raw.Close()
			<-l.sem
			return
		}
		l.wg.Go(func() { l.handshake(raw) })
	}
}

// handshake runs the server handshake on raw and queues the connection for
// Accept. It gives back raw's slot when it returns.
func (l *listener) handshake(raw *net.TCPConn) {
	defer func() { <-l.sem }()
	raw.SetNoDelay(true) //nolint:errcheck // a broken connection fails the handshake
	c, err := l.t.serverHandshake(raw)
	l.untrack(raw)
	if err != nil {
		return // the library has closed raw after its delay
	}
	select {
	case l.ready <- c:
	case <-l.done:
		c.Close()
	}
}

// track records raw as being handshaken, so that Close can interrupt it.
// It reports false once the listener is closed.
func (l *listener) track(raw net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.inflight[raw] = struct{}{}
	return true
}

func (l *listener) untrack(raw net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.inflight, raw)
}

// Accept waits for the next handshaken connection, until ctx ends or the
// listener is closed. After Close it returns an error wrapping
// transport.ErrClosed; when ctx ends, one wrapping ctx.Err() (and
// transport.ErrTimeout for a deadline). Failed handshakes are never
// reported. Concurrent calls are fine.
func (l *listener) Accept(ctx context.Context) (net.Conn, error) {
	if isDone(l.done) {
		return nil, l.closedErr()
	}
	if ctx.Err() != nil {
		return nil, ctxErr("accept", ctx)
	}
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		return nil, l.closedErr()
	case <-ctx.Done():
		return nil, ctxErr("accept", ctx)
	}
}

// Close stops the listener: it stops accepting, interrupts the handshakes
// in progress (including failed ones waiting out their close delay),
// closes the connections no Accept took, and waits for its goroutines.
// Connections already accepted stay open. A pending Accept returns
// transport.ErrClosed. Close is idempotent; only the first call can
// return an error.
func (l *listener) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		if err := l.ln.Close(); err != nil {
			l.closeErr = fmt.Errorf("obfs4: close listener: %w", err)
		}
		l.mu.Lock()
		l.closed = true
		for raw := range l.inflight {
			raw.Close()
		}
		l.mu.Unlock()
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

// Addr is the address the listener is bound to.
func (l *listener) Addr() net.Addr { return l.ln.Addr() }

func (l *listener) closedErr() error {
	return fmt.Errorf("obfs4: accept on %s: %w", l.ln.Addr(), transport.ErrClosed)
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
