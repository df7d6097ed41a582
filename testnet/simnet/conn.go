package simnet

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/commucat/commucat/core/transport"
)

// MaxDatagramSize is the largest datagram a Conn carries.
const MaxDatagramSize = 1200

// Addr is a simnet address, "host:port".
type Addr string

// Network returns "simnet".
func (Addr) Network() string { return "simnet" }

func (a Addr) String() string { return string(a) }

// Conn is one end of a pipe: a net.Conn over simulated links, which also
// carries datagrams (transport.DatagramConn). It is safe for concurrent
// use.
type Conn struct {
	in, out       *half // in: the peer writes, we read; out: we write
	local, remote Addr
	peer          *Conn
	closed        atomic.Bool
	closeOnce     sync.Once
	onClose       func() // tells the Network, if any
}

var (
	_ net.Conn               = (*Conn)(nil)
	_ transport.DatagramConn = (*Conn)(nil)
)

// Pipe returns the two ends of a new pipe: a to b over ab, b to a over ba.
// seed makes its randomness repeatable. It panics on an invalid Link, a
// programmer error in a test.
func Pipe(seed uint64, ab, ba Link) (a, b *Conn) {
	return newPipe(seed, 0, ab, ba, "a:1", "b:1")
}

func newPipe(seed, index uint64, ab, ba Link, aAddr, bAddr Addr) (a, b *Conn) {
	for _, l := range []Link{ab, ba} {
		if err := l.Validate(); err != nil {
			panic(err)
		}
	}
	h1 := newHalf(ab, seed, 2*index)
	h2 := newHalf(ba, seed, 2*index+1)
	a = &Conn{in: h2, out: h1, local: aAddr, remote: bAddr}
	b = &Conn{in: h1, out: h2, local: bAddr, remote: aAddr}
	a.peer, b.peer = b, a
	return a, b
}

func errClosed(op string) error {
	return fmt.Errorf("simnet: %s: %w: %w", op, transport.ErrClosed, net.ErrClosed)
}

func errTimeout(op string) error {
	return fmt.Errorf("simnet: %s: %w: %w", op, transport.ErrTimeout, os.ErrDeadlineExceeded)
}

// errReset is what I/O on a killed pipe, or a write to a peer that closed,
// fails with: like a TCP reset, it matches transport.ErrRefused and
// syscall.ECONNRESET.
var errReset = fmt.Errorf("simnet: %w: %w", transport.ErrRefused, syscall.ECONNRESET)

func expired(dl, now time.Time) bool { return !dl.IsZero() && !now.Before(dl) }

// Read reads bytes that have arrived, waiting for them until the read
// deadline. After the peer closed (or called CloseWrite) and every byte
// was read it returns io.EOF.
func (c *Conn) Read(p []byte) (int, error) {
	h := c.in
	h.mu.Lock()
	defer h.mu.Unlock()
	for {
		switch {
		case c.closed.Load():
			return 0, errClosed("read")
		case h.reset != nil:
			return 0, h.reset
		}
		now := time.Now()
		if expired(h.rdl, now) {
			return 0, errTimeout("read")
		}
		if len(p) == 0 {
			return 0, nil
		}
		n := 0
		for len(h.segs) > 0 && n < len(p) {
			s := &h.segs[0]
			if s.held || s.at.After(now) {
				break
			}
			if s.fin {
				if n > 0 {
					break
				}
				return 0, io.EOF
			}
			k := copy(p[n:], s.data)
			n += k
			h.queued -= k
			if s.data = s.data[k:]; len(s.data) == 0 {
				h.segs[0] = segment{}
				h.segs = h.segs[1:]
			}
		}
		if n > 0 {
			h.signal() // room for the writer
			return n, nil
		}
		var at time.Time
		if len(h.segs) > 0 && !h.segs[0].held {
			at = h.segs[0].at
		}
		if !h.rdl.IsZero() && (at.IsZero() || h.rdl.Before(at)) {
			at = h.rdl
		}
		h.wait(at, nil)
	}
}

// Write sends p as MTU-sized segments, waiting while the link's buffer is
// full until the write deadline.
func (c *Conn) Write(p []byte) (int, error) {
	h := c.out
	h.mu.Lock()
	defer h.mu.Unlock()
	total := 0
	for len(p) > 0 {
		switch {
		case c.closed.Load():
			return total, errClosed("write")
		case h.reset != nil:
			return total, h.reset
		case h.fin:
			return total, fmt.Errorf("simnet: write after CloseWrite: %w", net.ErrClosed)
		case h.rclosed:
			return total, errReset
		}
		now := time.Now()
		if expired(h.wdl, now) {
			return total, errTimeout("write")
		}
		n := min(len(p), h.link.mtu())
		if h.queued > 0 && h.queued+n > h.link.buffer() {
			h.wait(h.wdl, nil)
			continue
		}
		h.push(now, slices.Clone(p[:n]), false)
		total += n
		p = p[n:]
	}
	return total, nil
}

// CloseWrite ends the stream this end sends: the peer reads io.EOF after
// the bytes already written. Reading goes on.
func (c *Conn) CloseWrite() error {
	if c.closed.Load() {
		return errClosed("close write")
	}
	h := c.out
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.fin && h.reset == nil {
		h.fin = true
		h.push(time.Now(), nil, true)
	}
	return nil
}

// Close closes this end: the peer reads what was sent and then io.EOF, and
// its later writes fail as after a reset. Close is idempotent.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		c.out.mu.Lock()
		if !c.out.fin && c.out.reset == nil {
			c.out.fin = true
			c.out.push(time.Now(), nil, true)
		}
		c.out.signal()
		c.out.mu.Unlock()
		c.in.mu.Lock()
		c.in.rclosed = true
		c.in.segs, c.in.dgrams, c.in.queued = nil, nil, 0
		c.in.signal()
		c.in.mu.Unlock()
		if c.onClose != nil {
			c.onClose()
		}
	})
	return nil
}

// Kill resets the pipe: pending and later I/O on both ends fails with an
// error matching transport.ErrRefused and syscall.ECONNRESET, and what
// was in flight is lost.
func (c *Conn) Kill() {
	c.in.kill(errReset)
	c.out.kill(errReset)
}

// SetBlackhole silently holds everything in flight and everything sent
// later, in both directions (on), or lets it through again (off): stream
// bytes then arrive one delay later, datagrams sent meanwhile are lost.
func (c *Conn) SetBlackhole(on bool) {
	now := time.Now()
	for _, h := range []*half{c.out, c.in} {
		h.mu.Lock()
		h.setBlackhole(now, on)
		h.mu.Unlock()
	}
}

// SetLinks changes both directions' links: out for what this end sends, in
// for what it receives. Segments already in flight keep their times. It
// panics on an invalid Link.
func (c *Conn) SetLinks(out, in Link) {
	for _, l := range []Link{out, in} {
		if err := l.Validate(); err != nil {
			panic(err)
		}
	}
	c.out.setLink(out)
	c.in.setLink(in)
}

// Stats returns the counters of what this end sent.
func (c *Conn) Stats() Stats { return c.out.snapshot() }

// LocalAddr returns this end's address.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr returns the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets both deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// SetReadDeadline sets the read deadline; a pending Read sees it.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.in.mu.Lock()
	defer c.in.mu.Unlock()
	c.in.rdl = t
	c.in.signal()
	return nil
}

// SetWriteDeadline sets the write deadline; a pending Write sees it.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.out.mu.Lock()
	defer c.out.mu.Unlock()
	c.out.wdl = t
	c.out.signal()
	return nil
}

// SendDatagram sends b as one datagram. It is dropped, without an error,
// when the link loses it, the direction is blackholed or the link's
// datagram queue is full.
func (c *Conn) SendDatagram(b []byte) error {
	if len(b) > MaxDatagramSize {
		return fmt.Errorf("simnet: datagram of %d bytes (max %d): %w", len(b), MaxDatagramSize, transport.ErrTooLarge)
	}
	h := c.out
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case c.closed.Load():
		return errClosed("send datagram")
	case h.reset != nil:
		return h.reset
	case h.rclosed:
		return errReset
	}
	h.stats.Datagrams++
	at := h.depart(time.Now(), len(b))
	if h.dgramLost() || h.blackhole || len(h.dgrams) >= h.link.datagrams() {
		h.stats.DatagramsLost++
		return nil
	}
	i, _ := slices.BinarySearchFunc(h.dgrams, at, func(d dgram, t time.Time) int {
		if d.at.After(t) {
			return 1
		}
		return -1
	})
	h.dgrams = slices.Insert(h.dgrams, i, dgram{data: slices.Clone(b), at: at})
	h.signal()
	return nil
}

// ReceiveDatagram waits for the next datagram, or until ctx ends.
func (c *Conn) ReceiveDatagram(ctx context.Context) ([]byte, error) {
	h := c.in
	h.mu.Lock()
	defer h.mu.Unlock()
	for {
		switch {
		case c.closed.Load():
			return nil, errClosed("receive datagram")
		case h.reset != nil:
			return nil, h.reset
		case ctx.Err() != nil:
			return nil, fmt.Errorf("simnet: receive datagram: %w", ctx.Err())
		}
		var at time.Time
		if len(h.dgrams) > 0 {
			d := h.dgrams[0]
			if !d.at.After(time.Now()) {
				h.dgrams = h.dgrams[1:]
				return d.data, nil
			}
			at = d.at
		}
		h.wait(at, ctx.Done())
	}
}

// MaxDatagramSize returns MaxDatagramSize.
func (c *Conn) MaxDatagramSize() int { return MaxDatagramSize }
