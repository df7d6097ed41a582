package quic

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/commucat/commucat/core/transport"
)

// Bounds of a listener's queues.
const (
	// acceptQueue is the number of ready connections waiting for Accept.
	acceptQueue = 64
	// maxPending is the number of new connections whose stream and
	// preamble are awaited at once; more are refused with codeBusy.
	maxPending = 128
)

// listener accepts QUIC connections. An accept goroutine takes each
// handshaken connection from quic-go and hands it to a goroutine of its own
// that waits for the connection's stream and preamble and then queues it for
// Accept. All of them are owned by the listener and end in Close.
//
// The listener owns its UDP socket and quic-go Transport. Both outlive
// Close while connections it accepted are open, and are released when the
// last of them has ended.
type listener struct {
	t   *Transport
	udp *net.UDPConn
	tr  *quicgo.Transport
	ql  *quicgo.Listener
	log *slog.Logger

	refMu    sync.Mutex
	refs     int  // connections of this listener whose QUIC connection lives
	closed   bool // Close was called
	released bool // udp and tr are closed

	ctx    context.Context // ends with Close
	cancel context.CancelFunc
	queue  chan *conn
	sem    chan struct{} // one token per pending connection
	wg     sync.WaitGroup

	closeOnce sync.Once
}

var _ transport.Listener = (*listener)(nil)

func newListener(t *Transport, udp *net.UDPConn, tr *quicgo.Transport, ql *quicgo.Listener) *listener {
	ctx, cancel := context.WithCancel(context.Background())
	return &listener{
		t:      t,
		udp:    udp,
		tr:     tr,
		ql:     ql,
		log:    t.log,
		ctx:    ctx,
		cancel: cancel,
		queue:  make(chan *conn, acceptQueue),
		sem:    make(chan struct{}, maxPending),
	}
}

func (l *listener) start() {
	l.wg.Add(1)
	go l.acceptLoop()
}

func (l *listener) acceptLoop() {
	defer l.wg.Done()
	for {
		qc, err := l.ql.Accept(l.ctx)
		if err != nil {
			return // closed
		}
		select {
		case l.sem <- struct{}{}:
			l.wg.Add(1)
			go l.handshake(qc)
		default:
			l.log.Debug("refusing connection: too many pending")
			qc.CloseWithError(codeBusy, "") //nolint:errcheck // always nil
		}
	}
}

// handshake waits for the first stream of qc and its preamble, then queues
// the connection for Accept.
func (l *listener) handshake(qc *quicgo.Conn) {
	defer l.wg.Done()
	defer func() { <-l.sem }()
	timeout := l.t.cfg.HandshakeTimeout
	ctx, cancel := context.WithTimeout(l.ctx, timeout)
	defer cancel()
	str, err := qc.AcceptStream(ctx)
	if err != nil {
		l.log.Debug("connection without a stream", "err", err)
		qc.CloseWithError(codeProtocol, "") //nolint:errcheck // always nil
		return
	}
	str.SetReadDeadline(time.Now().Add(timeout)) //nolint:errcheck // always nil
	var b [1]byte
	if _, err := io.ReadFull(str, b[:]); err != nil || b[0] != preamble {
		l.log.Debug("bad stream preamble", "err", err)
		qc.CloseWithError(codeProtocol, "") //nolint:errcheck // always nil
		return
	}
	// Echo the preamble: the dialer's Dial returns once it reads it.
	str.SetWriteDeadline(time.Now().Add(timeout)) //nolint:errcheck // always nil
	if _, err := str.Write(b[:]); err != nil {
		l.log.Debug("preamble echo failed", "err", err)
		qc.CloseWithError(codeProtocol, "") //nolint:errcheck // always nil
		return
	}
	str.SetDeadline(time.Time{}) //nolint:errcheck // always nil
	l.refMu.Lock()
	l.refs++
	l.refMu.Unlock()
	c, ok := l.t.newConn(qc, str, l.connEnded)
	if !ok {
		return
	}
	select {
	case l.queue <- c:
	case <-l.ctx.Done():
		c.abort()
	}
}

// Accept waits for the next connection, until ctx ends or the listener is
// closed. After Close it returns an error wrapping transport.ErrClosed; when
// ctx ends, one wrapping ctx.Err() (and transport.ErrTimeout for a
// deadline).
func (l *listener) Accept(ctx context.Context) (net.Conn, error) {
	if l.ctx.Err() != nil {
		return nil, l.closedErr()
	}
	if ctx.Err() != nil {
		return nil, ctxErr("accept", ctx)
	}
	select {
	case c := <-l.queue:
		return c, nil
	case <-ctx.Done():
		return nil, ctxErr("accept", ctx)
	case <-l.ctx.Done():
		return nil, l.closedErr()
	}
}

func (l *listener) closedErr() error {
	return fmt.Errorf("quic: accept on %s: %w", l.ql.Addr(), transport.ErrClosed)
}

// Close stops the listener: pending Accept calls return
// transport.ErrClosed and connections not yet accepted are aborted.
// Connections already accepted stay open. Close is idempotent and returns
// nil.
func (l *listener) Close() error {
	l.closeOnce.Do(func() {
		l.cancel()
		l.ql.Close() //nolint:errcheck // always nil
		l.wg.Wait()
		// quic-go hands out the connections it queued before Close.
		for {
			qc, err := l.ql.Accept(context.Background())
			if err != nil {
				break
			}
			qc.CloseWithError(codeBusy, "") //nolint:errcheck // always nil
		}
		for {
			select {
			case c := <-l.queue:
				c.abort()
				continue
			default:
			}
			break
		}
		l.t.forgetListener(l)
		l.refMu.Lock()
		l.closed = true
		l.releaseLocked()
	})
	return nil
}

// connEnded drops the reference of a connection whose QUIC connection has
// ended.
func (l *listener) connEnded() {
	l.refMu.Lock()
	l.refs--
	l.releaseLocked()
}

// releaseLocked closes the quic-go Transport and the socket once the
// listener is closed and no connection of it is left. It unlocks refMu.
func (l *listener) releaseLocked() {
	free := l.closed && l.refs == 0 && !l.released
	if free {
		l.released = true
	}
	l.refMu.Unlock()
	if free {
		l.tr.Close()  //nolint:errcheck // only fails closing a socket it does not own
		l.udp.Close() //nolint:errcheck // nothing to do about it
	}
}

// Addr is the UDP address the listener is bound to.
func (l *listener) Addr() net.Addr { return l.ql.Addr() }
