package quic

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/commucat/commucat/core/transport"
)

// pastDeadline wakes a blocked stream operation.
var pastDeadline = time.Unix(1, 0)

// conn is one QUIC connection carrying one bidirectional stream. It
// implements net.Conn, CloseWrite and transport.DatagramConn, and is safe
// for concurrent use as net.Conn requires. Its two goroutines, the
// watcher and the datagram sender, owned by the Transport, live until the
// QUIC connection ends.
type conn struct {
	t   *Transport
	qc  *quicgo.Conn
	str *quicgo.Stream

	// writeMu serialises Write, CloseWrite and the FIN sent by Close:
	// quic-go forbids closing a stream concurrently with a Write.
	writeMu sync.Mutex

	mu          sync.Mutex
	localClosed bool        // Close was called
	peerClosed  bool        // the peer's close notice arrived
	linger      *time.Timer // aborts the connection if the peer does not close

	onEnd func() // run by the watcher when the connection has ended; may be nil

	dq      chan []byte   // datagrams for sendDatagrams, at most dgQueue
	closing chan struct{} // closed by Close and abort
	closeCh sync.Once
}

// markClosing releases SendDatagram calls waiting for room.
func (c *conn) markClosing() { c.closeCh.Do(func() { close(c.closing) }) }

// dgQueue bounds the datagrams a connection holds beyond quic-go's own
// send queue (32).
const dgQueue = 64

var (
	_ net.Conn               = (*conn)(nil)
	_ transport.DatagramConn = (*conn)(nil)
)

func (c *conn) isLocalClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.localClosed
}

// Read reads from the stream; see the package doc for its errors.
func (c *conn) Read(b []byte) (int, error) {
	if c.isLocalClosed() {
		return 0, closedErr("read")
	}
	n, err := c.str.Read(b)
	if err != nil && err != io.EOF {
		if c.isLocalClosed() {
			return n, closedErr("read")
		}
		err = wrapErr("read", err)
	}
	return n, err
}

// Write writes to the stream; see the package doc for its errors.
func (c *conn) Write(b []byte) (int, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if c.isLocalClosed() {
		return 0, closedErr("write")
	}
	n, err := c.str.Write(b)
	if err != nil {
		if c.isLocalClosed() {
			return n, closedErr("write")
		}
		err = wrapErr("write", err)
	}
	return n, err
}

// CloseWrite ends the sending side of the stream (FIN): the peer reads
// io.EOF after the data already written, and may go on writing. It waits
// for a concurrent Write to return.
func (c *conn) CloseWrite() error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if c.isLocalClosed() {
		return closedErr("close write")
	}
	if err := c.str.Close(); err != nil {
		return wrapErr("close write", err)
	}
	return nil
}

// Close ends the stream in both directions and tells the peer; the QUIC
// connection ends once the peer has closed too, or after Config.Linger
// (see the package doc). It does not block on the network. A second Close
// returns an error wrapping transport.ErrClosed.
func (c *conn) Close() error {
	c.mu.Lock()
	if c.localClosed {
		c.mu.Unlock()
		return closedErr("close")
	}
	c.localClosed = true
	c.mu.Unlock()
	c.markClosing()

	c.str.CancelRead(streamCodeClosed)   // wakes a blocked Read
	c.str.SetWriteDeadline(pastDeadline) //nolint:errcheck // always nil; wakes a blocked Write
	c.writeMu.Lock()
	c.str.Close() //nolint:errcheck // fails only if the peer stopped reading, which is fine
	c.writeMu.Unlock()

	if notice, err := c.qc.OpenUniStream(); err == nil {
		notice.Write([]byte{closeNotice}) //nolint:errcheck // the connection may be gone
		notice.Close()                    //nolint:errcheck // likewise
	}

	c.mu.Lock()
	peer := c.peerClosed
	if !peer {
		c.linger = time.AfterFunc(c.t.cfg.Linger, func() {
			c.qc.CloseWithError(codeAbort, "") //nolint:errcheck // always nil
		})
	}
	c.mu.Unlock()
	if peer {
		c.qc.CloseWithError(codeNormal, "") //nolint:errcheck // always nil
	}
	return nil
}

// abort closes the QUIC connection at once, discarding data in flight.
func (c *conn) abort() {
	c.mu.Lock()
	c.localClosed = true
	c.mu.Unlock()
	c.markClosing()
	c.qc.CloseWithError(codeAbort, "") //nolint:errcheck // always nil
}

// watch waits for the peer's close notice until the QUIC connection ends.
// When both sides have closed it ends the connection.
func (c *conn) watch() {
	defer c.t.wg.Done()
	defer c.t.forget(c)
	if c.onEnd != nil {
		defer c.onEnd()
	}
	for {
		notice, err := c.qc.AcceptUniStream(context.Background())
		if err != nil { // the connection has ended
			c.mu.Lock()
			if c.linger != nil {
				c.linger.Stop()
			}
			c.mu.Unlock()
			return
		}
		notice.CancelRead(streamCodeClosed) // its content carries no information
		c.mu.Lock()
		c.peerClosed = true
		local := c.localClosed
		c.mu.Unlock()
		if local {
			c.qc.CloseWithError(codeNormal, "") //nolint:errcheck // always nil
		}
	}
}

// LocalAddr returns the local UDP address.
func (c *conn) LocalAddr() net.Addr { return c.qc.LocalAddr() }

// RemoteAddr returns the peer's UDP address.
func (c *conn) RemoteAddr() net.Addr { return c.qc.RemoteAddr() }

// SetDeadline sets the read and write deadlines of the stream.
func (c *conn) SetDeadline(t time.Time) error { return c.str.SetDeadline(t) }

// SetReadDeadline sets the read deadline of the stream.
func (c *conn) SetReadDeadline(t time.Time) error { return c.str.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline of the stream.
func (c *conn) SetWriteDeadline(t time.Time) error { return c.str.SetWriteDeadline(t) }

// SendDatagram sends b in one QUIC DATAGRAM frame. It fails with
// transport.ErrTooLarge above MaxDatagramSize. Delivery is not guaranteed.
// When the connection already holds dgQueue datagrams that quic-go could
// not send yet, it waits for room (the congestion controller's
// backpressure) until Close, which ends the wait with an error wrapping
// transport.ErrClosed at once, or until the connection ends.
func (c *conn) SendDatagram(b []byte) error {
	if len(b) > MaxDatagramSize {
		return &transport.OpError{Transport: Name, Op: "send datagram", Kind: transport.ErrTooLarge, Err: fmt.Errorf("datagram of %d bytes exceeds %d", len(b), MaxDatagramSize)}
	}
	ctx := c.qc.Context()
	select {
	case <-c.closing:
		return closedErr("send datagram")
	case <-ctx.Done():
		return wrapErr("send datagram", context.Cause(ctx))
	default:
	}
	select {
	case c.dq <- bytes.Clone(b):
		return nil
	case <-c.closing:
		return closedErr("send datagram")
	case <-ctx.Done():
		return wrapErr("send datagram", context.Cause(ctx))
	}
}

// sendDatagrams hands the queued datagrams to quic-go until the QUIC
// connection ends. quic-go's SendDatagram waits while its own queue is
// full, which on a path that carries nothing lasts until the connection
// ends (after Config.Linger, once closed) and which nothing else
// interrupts: this goroutine waits there, so that Close can release the
// caller of SendDatagram at once.
func (c *conn) sendDatagrams() {
	defer c.t.wg.Done()
	done := c.qc.Context().Done()
	for {
		select {
		case b := <-c.dq:
			// Too large for the path's current estimate, or the
			// connection ended: lost either way, as datagrams may be.
			c.qc.SendDatagram(b) //nolint:errcheck // see above
		case <-done:
			return
		}
	}
}

// ReceiveDatagram waits for the next datagram, until ctx ends or the
// connection does.
func (c *conn) ReceiveDatagram(ctx context.Context) ([]byte, error) {
	if c.isLocalClosed() {
		return nil, closedErr("receive datagram")
	}
	b, err := c.qc.ReceiveDatagram(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctxErr("receive datagram", ctx)
		}
		if c.isLocalClosed() {
			return nil, closedErr("receive datagram")
		}
		return nil, wrapErr("receive datagram", err)
	}
	return b, nil
}

// MaxDatagramSize returns MaxDatagramSize.
func (c *conn) MaxDatagramSize() int { return MaxDatagramSize }
