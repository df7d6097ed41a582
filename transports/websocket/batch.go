package websocket

import (
	"net"
	"sync"
)

// batchConn is a net.Conn whose writes between begin and end are gathered
// and written as one at end. A connection has two: one above TLS, so that
// the TLS layer gets a whole WebSocket frame at once (coder/websocket
// writes a client's masked payload in 4 KiB pieces, which would each
// become a small TLS record) and cuts it into full 16 KiB records; and one
// below TLS, so that those records leave in one system call. Writes
// outside a batch (the handshakes, control frames written while no data
// is) pass straight through; writes during a batch from another goroutine
// (a pong) join it. A failed write fails every later one, as crypto/tls
// does, since the bytes it lost cannot be sent again in order. Every write holds mu while it reaches Conn, so the
// order of bytes is the order of writes. A close frame that answers the
// peer's while a Write is in its batch is lost when coder/websocket closes
// the socket right after it; the peer, which closed first, then sees the
// socket end instead of the answer, and its Close returns as it would
// after the answer.
type batchConn struct {
	net.Conn

	mu  sync.Mutex
	on  bool
	buf []byte
	err error // the first write error: every later write fails with it
}

// begin starts gathering writes.
func (b *batchConn) begin() {
	b.mu.Lock()
	b.on = true
	b.mu.Unlock()
}

// Write gathers p during a batch and writes it through otherwise.
func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	if !b.on {
		n, err := b.Conn.Write(p)
		b.err = err
		return n, err
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

// end writes what the batch gathered and stops gathering.
func (b *batchConn) end() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.on = false
	if len(b.buf) == 0 || b.err != nil {
		b.buf = b.buf[:0]
		return b.err
	}
	_, b.err = b.Conn.Write(b.buf)
	b.buf = b.buf[:0]
	return b.err
}

// batch is the pair of batchConns of one connection.
type batch struct {
	above, below *batchConn // above and below TLS
}

func (b batch) begin() {
	b.above.begin()
	b.below.begin()
}

// end flushes the TLS layer's input, then its output.
func (b batch) end() error {
	err := b.above.end()
	if err2 := b.below.end(); err == nil {
		err = err2
	}
	return err
}
