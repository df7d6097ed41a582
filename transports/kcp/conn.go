package kcp

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	kcpgo "github.com/xtaci/kcp-go/v5"

	"github.com/commucat/commucat/core/transport"
)

// Queue bounds of a connection.
const (
	// dataQueue is the number of DATA payloads (up to 32 KiB each) read
	// ahead of the application; beyond it the reader stops and KCP's
	// receive window pushes back on the peer.
	dataQueue = 32
	// datagramQueue is the number of received datagrams kept; more are
	// dropped.
	datagramQueue = 128
)

// Reasons a connection ended, kept in conn.err.
var (
	errReset           = errors.New("kcp: connection reset by peer")
	errIdle            = errors.New("kcp: peer silent for too long")
	errLinger          = errors.New("kcp: peer did not acknowledge the close in time")
	errTransportClosed = errors.New("kcp: transport closed")
	errListenerClosed  = errors.New("kcp: listener closed")
	errBusy            = errors.New("kcp: accept queue full")
	errReplaced        = errors.New("kcp: a new connection from the same address replaced this one")
)

// pastDeadline wakes a blocked kcp-go operation.
var pastDeadline = time.Unix(1, 0)

// conn is one KCP connection. It implements net.Conn and
// transport.DatagramConn and is safe for concurrent use as net.Conn
// requires. Its two goroutines, readLoop and controlLoop, are counted in
// its Transport's WaitGroup and end with teardown.
type conn struct {
	t     *Transport
	sess  *kcpgo.UDPSession
	br    *bufio.Reader
	pc    net.PacketConn // the socket, for resets sent past kcp-go
	raddr *net.UDPAddr
	ln    *listener // the accepting listener; nil for a dialled connection

	// Read side. Only readLoop sends on data, and closes it after FIN.
	readMu  sync.Mutex
	data    chan []byte
	pending []byte // rest of the payload being read
	eof     bool
	rdl     transport.Deadline

	// Write side. writeMu serialises frames on the stream; dlMu guards the
	// application's write deadline against the internal writes that
	// replace it for their duration.
	writeMu  sync.Mutex
	dlMu     sync.Mutex
	wdl      time.Time
	internal bool

	mu          sync.Mutex
	localClosed bool // Close was called
	peerFin     bool // the peer's FIN arrived
	needFinAck  bool // a FIN_ACK is owed
	finSent     bool // our FIN was written
	finAcked    bool // our FIN was acknowledged
	peerReset   bool // a reset arrived
	err         error

	wake     chan struct{} // wakes controlLoop; capacity 1
	closing  chan struct{} // closed by Close
	done     chan struct{} // closed by teardown
	endOnce  sync.Once
	lastRecv atomic.Int64 // UnixNano of the last frame received

	dgrams   chan []byte
	maxDgram int
}

var (
	_ net.Conn               = (*conn)(nil)
	_ transport.DatagramConn = (*conn)(nil)
)

func newConn(t *Transport, sess *kcpgo.UDPSession, pc net.PacketConn, raddr *net.UDPAddr) *conn {
	c := &conn{
		t:       t,
		sess:    sess,
		br:      bufio.NewReaderSize(sess, 64<<10),
		pc:      pc,
		raddr:   raddr,
		data:    make(chan []byte, dataQueue),
		wake:    make(chan struct{}, 1),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
		dgrams:  make(chan []byte, datagramQueue),
	}
	c.lastRecv.Store(time.Now().UnixNano())
	c.maxDgram = sess.GetOOBMaxSize() - 1
	sess.SetOOBHandler(c.onOOB) //nolint:errcheck // fails only without FEC, which Validate forbids
	return c
}

// dialHandshake sends HELLO and waits for a WELCOME echoing its nonce.
func (c *conn) dialHandshake(ctx context.Context) error {
	h := hello{Time: time.Now().Unix()}
	rand.Read(h.Nonce[:]) //nolint:errcheck // crypto/rand.Read never fails
	deadline := time.Now().Add(c.t.cfg.HandshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	c.sess.SetDeadline(deadline) //nolint:errcheck // always nil
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		c.sess.SetDeadline(pastDeadline) //nolint:errcheck // always nil
	})
	err := c.exchangeHello(h)
	if !stop() {
		<-fired
		return ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("no welcome: %w", err)
	}
	c.sess.SetDeadline(time.Time{}) //nolint:errcheck // always nil
	return nil
}

func (c *conn) exchangeHello(h hello) error {
	payload := h.encode()
	if _, err := c.sess.WriteBuffers([][]byte{appendFrameHeader(nil, frameHello, len(payload)), payload}); err != nil {
		return err
	}
	typ, p, err := readFrame(c.br)
	if err != nil {
		return err
	}
	if typ != frameWelcome {
		return fmt.Errorf("%w: frame %#x before welcome", errProtocol, typ)
	}
	nonce, err := parseWelcome(p)
	if err != nil {
		return err
	}
	if nonce != h.Nonce {
		return fmt.Errorf("%w: welcome for another hello", errProtocol)
	}
	c.lastRecv.Store(time.Now().UnixNano())
	return nil
}

// acceptHandshake reads the client's HELLO (already checked by the
// listener), answers WELCOME and queues the connection for Accept.
func (c *conn) acceptHandshake() error {
	c.sess.SetReadDeadline(time.Now().Add(c.t.cfg.HandshakeTimeout)) //nolint:errcheck // always nil
	typ, p, err := readFrame(c.br)
	if err != nil {
		return err
	}
	c.sess.SetReadDeadline(time.Time{}) //nolint:errcheck // always nil
	if typ != frameHello {
		return fmt.Errorf("%w: frame %#x before hello", errProtocol, typ)
	}
	h, err := parseHello(p)
	if err != nil {
		return err
	}
	if err := c.writeControl(frameWelcome, encodeWelcome(h.Nonce)); err != nil {
		return err
	}
	return c.ln.enqueue(c)
}

// readLoop reads frames until the connection ends: DATA goes to the data
// queue, control frames update the state that controlLoop acts on.
func (c *conn) readLoop() {
	defer c.t.wg.Done()
	if c.ln != nil {
		if err := c.acceptHandshake(); err != nil {
			c.t.log.Debug("handshake failed", "err", err)
			c.teardown(err, true)
			return
		}
	}
	for {
		typ, p, err := readFrame(c.br)
		if err != nil {
			c.teardown(err, true)
			return
		}
		c.lastRecv.Store(time.Now().UnixNano())
		switch typ {
		case frameData:
			c.mu.Lock()
			fin := c.peerFin
			c.mu.Unlock()
			if fin {
				c.teardown(fmt.Errorf("%w: data after fin", errProtocol), true)
				return
			}
			select {
			case c.data <- p:
			case <-c.closing: // the application will not read it
			case <-c.done:
				return
			}
		case frameFin:
			c.mu.Lock()
			if !c.peerFin {
				c.peerFin = true
				c.needFinAck = true
				close(c.data)
			}
			c.mu.Unlock()
			c.kickWriter()
			c.wakeControl()
		case frameFinAck:
			c.mu.Lock()
			sent := c.finSent
			c.finAcked = sent
			c.mu.Unlock()
			if !sent {
				c.teardown(fmt.Errorf("%w: fin_ack before fin", errProtocol), true)
				return
			}
			c.wakeControl()
		case framePing:
		default:
			c.teardown(fmt.Errorf("%w: unexpected frame %#x", errProtocol, typ), true)
			return
		}
	}
}

// controlLoop sends FIN, FIN_ACK and PING, times the connection out and
// tears it down once both sides are done.
func (c *conn) controlLoop() {
	defer c.t.wg.Done()
	ticker := time.NewTicker(c.t.cfg.KeepAlive)
	defer ticker.Stop()
	var linger <-chan time.Time
	for {
		select {
		case <-c.done:
			return
		case <-ticker.C:
			idle := time.Since(time.Unix(0, c.lastRecv.Load()))
			if idle > c.t.cfg.IdleTimeout {
				c.teardown(errIdle, true)
				return
			}
			c.tryWriteControl(framePing)
			continue
		case <-linger:
			c.teardown(errLinger, true)
			return
		case <-c.wake:
		}
		c.mu.Lock()
		needAck, local, peerFin, acked, reset, finSent := c.needFinAck, c.localClosed, c.peerFin, c.finAcked, c.peerReset, c.finSent
		c.needFinAck = false
		c.mu.Unlock()
		if reset {
			c.teardown(errReset, false)
			return
		}
		if needAck {
			// The FIN_ACK goes out twice: straight to the socket, because
			// kcp-go drops what it has not sent yet when the session closes
			// right after, and in the stream, where KCP retransmits it.
			c.sendRaw(oobFinAck)
			if err := c.writeControl(frameFinAck, nil); err != nil {
				c.teardown(err, true)
				return
			}
		}
		if !local {
			continue
		}
		if peerFin || acked {
			c.teardown(nil, false)
			return
		}
		if !finSent {
			c.mu.Lock()
			c.finSent = true
			c.mu.Unlock()
			if err := c.writeControl(frameFin, nil); err != nil {
				c.teardown(err, true)
				return
			}
			linger = time.After(c.t.cfg.Linger)
		}
	}
}

func (c *conn) wakeControl() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// writeControl writes a control frame, waiting for a concurrent Write.
// Its own write deadline, Config.Linger from now, replaces the
// application's meanwhile.
func (c *conn) writeControl(typ byte, payload []byte) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	return c.writeControlLocked(typ, payload)
}

// tryWriteControl writes a payload-less control frame unless a Write is
// in progress, which tells the peer that we are alive anyway.
func (c *conn) tryWriteControl(typ byte) {
	if !c.writeMu.TryLock() {
		return
	}
	defer c.writeMu.Unlock()
	c.writeControlLocked(typ, nil) //nolint:errcheck // a failing connection ends by other ways
}

func (c *conn) writeControlLocked(typ byte, payload []byte) error {
	c.dlMu.Lock()
	c.internal = true
	c.sess.SetWriteDeadline(time.Now().Add(c.t.cfg.Linger)) //nolint:errcheck // always nil
	c.dlMu.Unlock()
	_, err := c.sess.WriteBuffers([][]byte{appendFrameHeader(nil, typ, len(payload)), payload})
	c.dlMu.Lock()
	c.internal = false
	c.sess.SetWriteDeadline(c.wdl) //nolint:errcheck // always nil
	c.dlMu.Unlock()
	return err
}

// kickWriter fails a blocked and every later application Write.
func (c *conn) kickWriter() {
	c.dlMu.Lock()
	c.wdl = pastDeadline
	if !c.internal {
		c.sess.SetWriteDeadline(pastDeadline) //nolint:errcheck // always nil
	}
	c.dlMu.Unlock()
}

// teardown ends the connection: it records why, sends the peer a reset
// if asked to, and closes the kcp-go session, which ends readLoop. It is
// idempotent; the first reason wins.
func (c *conn) teardown(why error, reset bool) {
	c.endOnce.Do(func() {
		c.mu.Lock()
		c.err = why
		c.mu.Unlock()
		if reset {
			c.sendRaw(oobReset)
		}
		close(c.done)
		c.sess.Close() //nolint:errcheck // fails only when already closed
		c.t.forget(c)
	})
}

// sendRaw writes an out-of-band packet of kind straight to the socket:
// kcp-go's own SendOOB queue is discarded when the session closes.
func (c *conn) sendRaw(kind byte) {
	var nonce [aeadNonceLen]byte
	rand.Read(nonce[:]) //nolint:errcheck // crypto/rand.Read never fails
	pkt := sealOOB(c.t.aead, nonce[:], c.sess.GetConv(), []byte{kind})
	c.pc.WriteTo(pkt, c.raddr) //nolint:errcheck // best effort
}

// onOOB receives kcp-go's out-of-band packets. kcp-go calls it inline
// from its packet input, so it must not block.
func (c *conn) onOOB(p []byte) {
	if len(p) == 0 {
		return
	}
	switch p[0] {
	case oobDatagram:
		select {
		case c.dgrams <- bytes.Clone(p[1:]):
		default: // full: datagrams may be lost
		}
	case oobReset:
		c.mu.Lock()
		c.peerReset = true
		c.mu.Unlock()
		c.wakeControl()
	case oobFinAck:
		c.mu.Lock()
		sent := c.finSent // a FIN_ACK before our FIN can only be a replay
		if sent {
			c.finAcked = true
		}
		c.mu.Unlock()
		if sent {
			c.wakeControl()
		}
	}
}

// endErr is the error of I/O on a connection that has ended.
func (c *conn) endErr(op string) error {
	c.mu.Lock()
	local, why := c.localClosed, c.err
	c.mu.Unlock()
	switch {
	case local, why == nil:
		return closedErr(op)
	case errors.Is(why, errReset), errors.Is(why, errLinger), errors.Is(why, errProtocol), errors.Is(why, errReplaced):
		return &transport.OpError{Transport: Name, Op: op, Kind: transport.ErrRefused, Err: why}
	case errors.Is(why, errIdle):
		return &transport.OpError{Transport: Name, Op: op, Kind: transport.ErrTimeout, Err: why}
	case errors.Is(why, errTransportClosed), errors.Is(why, errListenerClosed), errors.Is(why, errBusy):
		return &transport.OpError{Transport: Name, Op: op, Kind: transport.ErrClosed, Err: why}
	}
	return wrapErr(op, why)
}

// Read reads the peer's stream; see the package doc for its errors.
func (c *conn) Read(b []byte) (int, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	for len(c.pending) == 0 {
		if c.isLocalClosed() {
			return 0, closedErr("read")
		}
		if c.eof {
			return 0, io.EOF
		}
		if len(b) == 0 {
			return 0, nil
		}
		select { // data already queued goes first
		case p, ok := <-c.data:
			c.take(p, ok)
			continue
		default:
		}
		select {
		case p, ok := <-c.data:
			c.take(p, ok)
		case <-c.closing:
			return 0, closedErr("read")
		case <-c.done:
			select {
			case p, ok := <-c.data:
				c.take(p, ok)
				continue
			default:
			}
			return 0, c.endErr("read")
		case <-c.rdl.Done():
			return 0, timeoutErr("read")
		}
	}
	if c.isLocalClosed() {
		return 0, closedErr("read")
	}
	n := copy(b, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

func (c *conn) take(p []byte, ok bool) {
	if !ok {
		c.eof = true
		return
	}
	c.pending = p
}

func (c *conn) isLocalClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.localClosed
}

// writeState is the error a Write must fail with now, or nil.
func (c *conn) writeState(op string) error {
	c.mu.Lock()
	local, peerFin := c.localClosed, c.peerFin
	c.mu.Unlock()
	switch {
	case local:
		return closedErr(op)
	case peerFin:
		return &transport.OpError{Transport: Name, Op: op, Kind: transport.ErrRefused, Err: errors.New("peer closed the connection")}
	}
	select {
	case <-c.done:
		return c.endErr(op)
	default:
		return nil
	}
}

// Write writes to the stream in DATA frames; see the package doc for its
// errors. After a timeout, the frames already written stay written and
// count in n.
func (c *conn) Write(b []byte) (int, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	var hdr [frameHeaderLen]byte
	n := 0
	for {
		if err := c.writeState("write"); err != nil {
			return n, err
		}
		if len(b) == 0 {
			return n, nil
		}
		chunk := b[:min(len(b), maxDataPayload)]
		if _, err := c.sess.WriteBuffers([][]byte{appendFrameHeader(hdr[:0], frameData, len(chunk)), chunk}); err != nil {
			if st := c.writeState("write"); st != nil {
				return n, st
			}
			return n, wrapErr("write", err)
		}
		n += len(chunk)
		b = b[len(chunk):]
	}
}

// Close closes the connection: later I/O fails with transport.ErrClosed,
// and the peer reads io.EOF after the data already written. It returns at
// once; the connection lingers until the peer acknowledges, for at most
// Config.Linger. A second Close returns an error wrapping
// transport.ErrClosed.
func (c *conn) Close() error {
	c.mu.Lock()
	if c.localClosed {
		c.mu.Unlock()
		return closedErr("close")
	}
	c.localClosed = true
	c.mu.Unlock()
	close(c.closing)
	c.kickWriter()
	c.wakeControl()
	return nil
}

// LocalAddr returns the local UDP address.
func (c *conn) LocalAddr() net.Addr { return c.pc.LocalAddr() }

// RemoteAddr returns the peer's UDP address.
func (c *conn) RemoteAddr() net.Addr { return c.raddr }

// SetDeadline sets the read and write deadlines.
func (c *conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)  //nolint:errcheck // always nil
	c.SetWriteDeadline(t) //nolint:errcheck // always nil
	return nil
}

// SetReadDeadline sets the read deadline, for pending Reads as well.
func (c *conn) SetReadDeadline(t time.Time) error {
	c.rdl.Set(t)
	return nil
}

// SetWriteDeadline sets the write deadline, for a pending Write as well.
func (c *conn) SetWriteDeadline(t time.Time) error {
	c.dlMu.Lock()
	defer c.dlMu.Unlock()
	c.wdl = t
	if !c.internal {
		c.sess.SetWriteDeadline(t) //nolint:errcheck // always nil
	}
	return nil
}

// SendDatagram sends b in one out-of-band packet: unreliable, unordered,
// not protected by FEC. It fails with transport.ErrTooLarge above
// MaxDatagramSize. When kcp-go's send queue is full the datagram is
// dropped silently.
func (c *conn) SendDatagram(b []byte) error {
	if len(b) > c.maxDgram {
		return &transport.OpError{Transport: Name, Op: "send datagram", Kind: transport.ErrTooLarge, Err: fmt.Errorf("datagram of %d bytes exceeds %d", len(b), c.maxDgram)}
	}
	if c.isLocalClosed() {
		return closedErr("send datagram")
	}
	select {
	case <-c.done:
		return c.endErr("send datagram")
	default:
	}
	buf := make([]byte, 1+len(b))
	buf[0] = oobDatagram
	copy(buf[1:], b)
	if err := c.sess.SendOOB(buf); err != nil {
		return wrapErr("send datagram", err)
	}
	return nil
}

// ReceiveDatagram waits for the next datagram, until ctx ends or the
// connection does.
func (c *conn) ReceiveDatagram(ctx context.Context) ([]byte, error) {
	if c.isLocalClosed() {
		return nil, closedErr("receive datagram")
	}
	if err := ctx.Err(); err != nil {
		return nil, ctxErr("receive datagram", ctx)
	}
	select {
	case d := <-c.dgrams:
		return d, nil
	case <-ctx.Done():
		return nil, ctxErr("receive datagram", ctx)
	case <-c.closing:
		return nil, closedErr("receive datagram")
	case <-c.done:
		return nil, c.endErr("receive datagram")
	}
}

// MaxDatagramSize is the largest datagram SendDatagram accepts: kcp-go's
// out-of-band payload for the MTU, less one byte of kind.
func (c *conn) MaxDatagramSize() int { return c.maxDgram }
