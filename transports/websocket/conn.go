package websocket

import (
	"context"
	"io"
	"net"
	"sync"
	"time"

	ws "github.com/coder/websocket"

	"github.com/commucat/commucat/core/transport"
)

// Sizes of a connection's buffers.
const (
	// maxMessage is the largest WebSocket message a Write sends; longer
	// writes are split. It bounds how long a control frame (a pong, the
	// close frame) waits behind data, and the memory of the write
	// batches.
	maxMessage = 64 << 10
	// chunkSize is the size of one receive buffer, and chunks the number
	// of them: a connection holds at most chunks*chunkSize received bytes
	// that Read has not taken yet, and stops reading from the network
	// (so that TCP flow control pushes back on the peer) when they are
	// full.
	chunkSize = 64 << 10
	chunks    = 4
)

// closeTimeout bounds Close: the close handshake (our close frame, the
// peer's answer) and the reader goroutine's end.
const closeTimeout = 5 * time.Second

// pastDeadline is a deadline that has passed.
var pastDeadline = time.Unix(1, 0)

// conn is one WebSocket connection as a net.Conn: every Write sends binary
// messages of at most maxMessage bytes, and Read returns the payloads of the
// peer's binary messages as one byte stream. It is safe for concurrent use
// as net.Conn requires.
//
// websocket.NetConn (coder/websocket) does the framing, but a deadline
// that expires during one of its Reads or Writes closes the whole
// connection. To keep net.Conn's deadline semantics, a reader goroutine,
// owned by the conn and ended by Close, reads messages into a bounded set
// of buffers without any deadline, and Read waits on those with its own;
// write deadlines are set on the TLS connection underneath, which fails a
// blocked write as TCP would (crypto/tls then refuses further writes, so
// a write timeout leaves the connection unusable for writing).
type conn struct {
	nc  net.Conn // websocket.NetConn; never given a deadline
	wc  *ws.Conn
	raw net.Conn // the TLS connection under the WebSocket
	wb  batch    // gathers each message's writes

	rq      chan []byte        // chunks read, in order; closed when the reader ends
	free    chan []byte        // buffers for the reader; nil entries are not yet allocated
	rerr    error              // why the reader ended; written before rq is closed
	readMu  sync.Mutex         // serialises Read
	cur     []byte             // the rest of the chunk Read consumes
	curBuf  []byte             // cur's buffer, returned to free once consumed
	rdl     transport.Deadline // read deadline
	wmu     sync.Mutex         // serialises Write
	wdlMu   sync.Mutex         // guards wdl
	wdl     time.Time          // write deadline
	done    chan struct{}      // closed by Close
	readerC chan struct{}      // closed when the reader goroutine has returned

	closeOnce sync.Once
}

var _ net.Conn = (*conn)(nil)

// newConn wraps an established WebSocket whose TLS connection is raw and
// whose writes go through wb, and starts its reader goroutine.
func newConn(wc *ws.Conn, raw net.Conn, wb batch) *conn {
	c := &conn{
		nc:      ws.NetConn(context.Background(), wc, ws.MessageBinary),
		wc:      wc,
		raw:     raw,
		wb:      wb,
		rq:      make(chan []byte, chunks),
		free:    make(chan []byte, chunks),
		done:    make(chan struct{}),
		readerC: make(chan struct{}),
	}
	for range chunks {
		c.free <- nil
	}
	go c.readLoop()
	return c
}

// readLoop reads the peer's messages into chunks for Read until the
// WebSocket ends. After Close it reads and discards, so that the peer's
// close frame is seen and the close handshake completes.
func (c *conn) readLoop() {
	defer close(c.readerC)
	defer close(c.rq)
	for {
		var buf []byte
		select {
		case buf = <-c.free:
		case <-c.done:
			c.discard()
			return
		}
		if buf == nil {
			buf = make([]byte, chunkSize)
		}
		n, err := c.nc.Read(buf)
		if n > 0 {
			c.rq <- buf[:n] // never blocks: rq has room for every buffer
		} else {
			c.free <- buf
		}
		if err != nil {
			c.rerr = err
			return
		}
	}
}

// discard reads and drops messages until the WebSocket ends.
func (c *conn) discard() {
	buf := make([]byte, 4<<10)
	for {
		if _, err := c.nc.Read(buf); err != nil {
			return
		}
	}
}

// Read reads the peer's bytes. It returns io.EOF once the peer has closed
// the WebSocket normally and every byte sent before has been read; see the
// package doc for its errors.
func (c *conn) Read(b []byte) (int, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	if isDone(c.done) {
		return 0, closedErr("read")
	}
	if isDone(c.rdl.Done()) {
		return 0, timeoutErr("read")
	}
	if len(b) == 0 {
		return 0, nil
	}
	if len(c.cur) == 0 {
		select {
		case buf, ok := <-c.rq:
			if !ok {
				return 0, c.readErr()
			}
			c.cur, c.curBuf = buf, buf
		case <-c.rdl.Done():
			return 0, timeoutErr("read")
		case <-c.done:
			return 0, closedErr("read")
		}
	}
	n := copy(b, c.cur)
	c.cur = c.cur[n:]
	if len(c.cur) == 0 {
		c.free <- c.curBuf[:cap(c.curBuf)] // never blocks: free has room for every buffer
		c.cur, c.curBuf = nil, nil
	}
	return n, nil
}

// readErr is Read's error once the reader has ended.
func (c *conn) readErr() error {
	switch {
	case isDone(c.done):
		return closedErr("read")
	case c.rerr == io.EOF: //nolint:errorlint // NetConn returns a bare io.EOF for the peer's close frame only
		return io.EOF
	}
	return wrapErr("read", c.rerr)
}

// Write sends b as one or more binary messages; see the package doc for
// its errors.
func (c *conn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if isDone(c.done) {
		return 0, closedErr("write")
	}
	if c.writeExpired() {
		return 0, timeoutErr("write")
	}
	n := 0
	for len(b) > 0 {
		m := b[:min(len(b), maxMessage)]
		c.wb.begin()
		_, err := c.nc.Write(m)
		if ferr := c.wb.end(); err == nil {
			err = ferr
		}
		if err != nil {
			switch {
			case isDone(c.done):
				return n, closedErr("write")
			case c.writeExpired():
				return n, timeoutErr("write")
			}
			return n, wrapErr("write", err)
		}
		n += len(m)
		b = b[len(m):]
	}
	return n, nil
}

func (c *conn) writeExpired() bool {
	c.wdlMu.Lock()
	defer c.wdlMu.Unlock()
	return !c.wdl.IsZero() && !time.Now().Before(c.wdl)
}

// Close ends the connection with a WebSocket close handshake: bytes
// written before reach the peer before its io.EOF. It waits for the peer's
// close frame for at most 5 s, and ends a Write blocked on a peer that does
// not read, as closing a TCP socket would. A second Close returns an error
// wrapping transport.ErrClosed.
func (c *conn) Close() error {
	first := false
	c.closeOnce.Do(func() {
		first = true
		close(c.done)
		c.raw.SetDeadline(time.Now().Add(closeTimeout)) //nolint:errcheck // a closed conn fails later anyway
		if !c.wmu.TryLock() {
			// A Write is blocked: fail it now rather than after the
			// timeout. Its message is cut, so no close frame can follow.
			c.raw.SetWriteDeadline(pastDeadline) //nolint:errcheck // as above
		} else {
			c.wmu.Unlock()
		}
		// Not c.nc.Close: NetConn's Close first cancels the context of
		// the reader goroutine's Read, which closes the socket at once,
		// racing the close frame.
		c.wc.Close(ws.StatusNormalClosure, "") //nolint:errcheck // a failed close handshake still closes the socket
		<-c.readerC
		c.rdl.Stop()
	})
	if !first {
		return closedErr("close")
	}
	return nil
}

// abort closes the connection without a close handshake.
func (c *conn) abort() {
	c.closeOnce.Do(func() {
		close(c.done)
		c.wc.CloseNow() //nolint:errcheck // closing is all that is asked
		<-c.readerC
		c.rdl.Stop()
	})
}

// LocalAddr is the local TCP address.
func (c *conn) LocalAddr() net.Addr { return c.raw.LocalAddr() }

// RemoteAddr is the peer's TCP address.
func (c *conn) RemoteAddr() net.Addr { return c.raw.RemoteAddr() }

// SetDeadline sets both deadlines.
func (c *conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)  //nolint:errcheck // always nil
	c.SetWriteDeadline(t) //nolint:errcheck // always nil
	return nil
}

// SetReadDeadline sets the read deadline; it also wakes a Read that waits.
func (c *conn) SetReadDeadline(t time.Time) error {
	c.rdl.Set(t)
	return nil
}

// SetWriteDeadline sets the write deadline. A Write blocked past it fails
// and leaves the connection unusable for writing.
func (c *conn) SetWriteDeadline(t time.Time) error {
	c.wdlMu.Lock()
	c.wdl = t
	c.wdlMu.Unlock()
	if isDone(c.done) {
		return nil // Close owns the socket's deadlines now
	}
	c.raw.SetWriteDeadline(t) //nolint:errcheck // a closed socket fails the Write instead
	return nil
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
