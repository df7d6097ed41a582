package kcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	kcpgo "github.com/xtaci/kcp-go/v5"

	"github.com/commucat/commucat/core/transport"
)

// Bounds of a listener.
const (
	// acceptQueue is the number of connections waiting for Accept; a
	// connection that finds it full is reset.
	acceptQueue = 128
	// maxSessions is the number of connections one listener serves at
	// once; packets opening more are ignored.
	maxSessions = 8192
	// replayCap is the number of HELLO nonces remembered; when it is full
	// of unexpired ones, new connections are refused.
	replayCap = 1 << 16
	// maxUDP is the largest UDP payload read.
	maxUDP = 2048
)

// listener demultiplexes one UDP socket into kcp-go sessions, one per
// remote address. It does not use kcp-go's Listener, whose accept backlog
// cannot be drained on close: its goroutine reads the socket and pushes
// each packet into its session through a vconn (kcp-go's PacketPusher),
// and opens a session only for a packet that parseFirstPacket accepts.
//
// The socket outlives Close while connections the listener opened are
// alive, and is closed when the last of them has ended, which ends the
// goroutine.
type listener struct {
	t   *Transport
	udp *net.UDPConn

	mu       sync.Mutex
	sessions map[netip.AddrPort]*vconn
	closed   bool
	released bool // udp is closed
	replay   replayCache

	queue     chan *conn
	done      chan struct{} // closed by Close
	closeOnce sync.Once
}

var _ transport.Listener = (*listener)(nil)

func newListener(t *Transport, udp *net.UDPConn) *listener {
	return &listener{
		t:        t,
		udp:      udp,
		sessions: make(map[netip.AddrPort]*vconn),
		replay:   replayCache{seen: make(map[[nonceLen]byte]struct{})},
		queue:    make(chan *conn, acceptQueue),
		done:     make(chan struct{}),
	}
}

// readLoop reads the socket until it is closed.
func (l *listener) readLoop() {
	defer l.t.wg.Done()
	buf := make([]byte, maxUDP)
	scratch := make([]byte, maxUDP)
	for {
		n, ap, err := l.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || l.isReleased() {
				return
			}
			continue // a transient error of one datagram
		}
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		l.mu.Lock()
		vc := l.sessions[ap]
		l.mu.Unlock()
		if vc != nil && !(n == firstPacketLen && l.replaces(vc, buf[:n], scratch)) {
			vc.deliver(buf[:n])
			continue
		}
		l.open(buf[:n], ap, scratch)
	}
}

func (l *listener) isReleased() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.released
}

// firstPacketLen is the size of a client's first packet: nonce, FEC header,
// one KCP segment holding the HELLO frame, tag.
const firstPacketLen = aeadNonceLen + fecHeaderLen + kcpOverhead + frameHeaderLen + helloLen + aeadOverhead

// replaces reports whether pkt, from the address of vc's session, opens a
// new connection rather than belonging to vc's: a client that reuses the
// address of one that vanished (a restarted client behind the same NAT
// mapping, a recycled port). If so it drops vc's connection, without a
// reset, which would reach the new client. Only packets of the size of a
// first packet are checked, which keeps decryption off the data path.
func (l *listener) replaces(vc *vconn, pkt, scratch []byte) bool {
	fp, err := parseFirstPacket(l.t.aead, pkt, scratch)
	if err != nil || fp.Conv == vc.conv {
		return false
	}
	if c := vc.c.Load(); c != nil {
		c.teardown(errReplaced, false)
	} else {
		l.remove(vc)
	}
	return true
}

// open starts a connection for an opening packet from ap, and ignores any
// other packet.
func (l *listener) open(pkt []byte, ap netip.AddrPort, scratch []byte) {
	fp, err := parseFirstPacket(l.t.aead, pkt, scratch)
	if err != nil {
		return
	}
	now := time.Now()
	if !clockOK(fp.Hello.Time, now) {
		l.t.log.Debug("ignoring a hello with a skewed clock", "skew", now.Sub(time.Unix(fp.Hello.Time, 0)))
		return
	}
	vc := &vconn{l: l, raddr: net.UDPAddrFromAddrPort(ap), key: ap, conv: fp.Conv}
	l.mu.Lock()
	switch {
	case l.closed:
		l.mu.Unlock()
		return
	case len(l.sessions) >= maxSessions:
		l.mu.Unlock()
		l.t.log.Debug("ignoring a connection: too many")
		return
	case !l.replay.add(fp.Hello.Nonce, now):
		l.mu.Unlock()
		l.t.log.Debug("ignoring a replayed or excess hello")
		return
	}
	l.sessions[ap] = vc
	l.mu.Unlock()

	sess, err := kcpgo.NewConn4(fp.Conv, vc.raddr, l.t.block, l.t.cfg.DataShards, l.t.cfg.ParityShards, false, vc)
	if err != nil { // not reached: NewConn4 does not fail
		l.remove(vc)
		return
	}
	l.t.tune(sess)
	c := newConn(l.t, sess, l.udp, vc.raddr)
	c.ln = l
	vc.c.Store(c)
	if !l.t.start(c) {
		return
	}
	vc.deliver(pkt)
}

// enqueue hands a connection whose handshake is done to Accept.
func (l *listener) enqueue(c *conn) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errListenerClosed
	}
	select {
	case l.queue <- c:
		return nil
	default:
		return errBusy
	}
}

// remove forgets a session that kcp-go closed, and releases the socket
// once the listener is closed and no session is left.
func (l *listener) remove(vc *vconn) {
	l.mu.Lock()
	if l.sessions[vc.key] == vc {
		delete(l.sessions, vc.key)
	}
	free := l.closed && len(l.sessions) == 0 && !l.released
	if free {
		l.released = true
	}
	l.mu.Unlock()
	if free {
		l.udp.Close() //nolint:errcheck // nothing to do about it
	}
}

// Accept waits for the next connection, until ctx ends or the listener is
// closed. After Close it returns an error wrapping transport.ErrClosed; when
// ctx ends, one wrapping ctx.Err() (and transport.ErrTimeout for a
// deadline).
func (l *listener) Accept(ctx context.Context) (net.Conn, error) {
	select {
	case <-l.done:
		return nil, l.closedErr()
	default:
	}
	if ctx.Err() != nil {
		return nil, ctxErr("accept", ctx)
	}
	select {
	case c := <-l.queue:
		return c, nil
	case <-ctx.Done():
		return nil, ctxErr("accept", ctx)
	case <-l.done:
		return nil, l.closedErr()
	}
}

func (l *listener) closedErr() error {
	return fmt.Errorf("kcp: accept on %s: %w", l.udp.LocalAddr(), transport.ErrClosed)
}

// Close stops the listener: pending Accept calls return
// transport.ErrClosed and connections not yet accepted are reset.
// Connections already accepted stay open. Close is idempotent and returns
// nil.
func (l *listener) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		close(l.done)
		var pending []*conn
		for len(l.queue) > 0 {
			pending = append(pending, <-l.queue)
		}
		free := len(l.sessions) == 0 && !l.released
		if free {
			l.released = true
		}
		l.mu.Unlock()
		for _, c := range pending {
			c.teardown(errListenerClosed, true)
		}
		if free {
			l.udp.Close() //nolint:errcheck // nothing to do about it
		}
		l.t.forgetListener(l)
	})
	return nil
}

// Addr is the UDP address the listener is bound to.
func (l *listener) Addr() net.Addr { return l.udp.LocalAddr() }

// vconn is the net.PacketConn of one server-side kcp-go session: writes go
// to the listener's socket, and the listener pushes the session's packets
// to the receiver kcp-go registers (kcpgo.PacketPusher).
type vconn struct {
	l     *listener
	raddr *net.UDPAddr
	key   netip.AddrPort
	conv  uint32
	c     atomic.Pointer[conn]
	recv  atomic.Pointer[func(b []byte, addr net.Addr, err error)]
}

var (
	_ net.PacketConn     = (*vconn)(nil)
	_ kcpgo.PacketPusher = (*vconn)(nil)
)

// SetPacketReceiver registers kcp-go's receiver; nil, set when the session
// closes, removes the session from the listener.
func (v *vconn) SetPacketReceiver(fn func(b []byte, addr net.Addr, err error)) {
	if fn == nil {
		v.recv.Store(nil)
		v.l.remove(v)
		return
	}
	v.recv.Store(&fn)
}

// deliver pushes one packet to the session; only the listener's goroutine
// calls it, as PacketPusher requires.
func (v *vconn) deliver(b []byte) {
	if fn := v.recv.Load(); fn != nil {
		(*fn)(b, v.raddr, nil)
	}
}

// ReadFrom is never called: packets are pushed.
func (v *vconn) ReadFrom([]byte) (int, net.Addr, error) { return 0, nil, net.ErrClosed }

// WriteTo sends on the listener's socket.
func (v *vconn) WriteTo(b []byte, addr net.Addr) (int, error) { return v.l.udp.WriteTo(b, addr) }

// Close does nothing: the listener owns the socket.
func (v *vconn) Close() error { return nil }

// LocalAddr is the listener's address.
func (v *vconn) LocalAddr() net.Addr { return v.l.udp.LocalAddr() }

// SetDeadline does nothing.
func (v *vconn) SetDeadline(time.Time) error { return nil }

// SetReadDeadline does nothing.
func (v *vconn) SetReadDeadline(time.Time) error { return nil }

// SetWriteDeadline does nothing.
func (v *vconn) SetWriteDeadline(time.Time) error { return nil }

// replayCache remembers HELLO nonces for twice the allowed clock skew, the
// longest a HELLO can pass the clock check. Entries expire in insertion
// order.
type replayCache struct {
	seen  map[[nonceLen]byte]struct{}
	order []replayEntry
	head  int
}

type replayEntry struct {
	nonce   [nonceLen]byte
	expires time.Time
}

// add records nonce and reports whether it was new and there was room.
func (r *replayCache) add(nonce [nonceLen]byte, now time.Time) bool {
	for r.head < len(r.order) && now.After(r.order[r.head].expires) {
		delete(r.seen, r.order[r.head].nonce)
		r.order[r.head] = replayEntry{}
		r.head++
	}
	if r.head > len(r.order)/2 {
		r.order = append(r.order[:0], r.order[r.head:]...)
		r.head = 0
	}
	if _, dup := r.seen[nonce]; dup {
		return false
	}
	if len(r.seen) >= replayCap {
		return false
	}
	r.seen[nonce] = struct{}{}
	r.order = append(r.order, replayEntry{nonce: nonce, expires: now.Add(2 * maxSkew)})
	return true
}
