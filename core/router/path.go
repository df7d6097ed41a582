package router

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commucat/commucat/core/frame"
	"github.com/commucat/commucat/core/session"
)

// PathState is where a path is in its life.
type PathState uint8

const (
	// PathJoining: the client sent a join message and waits for the
	// gateway's confirmation.
	PathJoining PathState = iota + 1
	// PathUnverified: the gateway accepted a join token and waits for the
	// client's first record on the path before it schedules data there.
	PathUnverified
	// PathActive: the path carries traffic.
	PathActive
	// PathStalled: nothing came back for the stall threshold; the path
	// carries only pings until it recovers or times out.
	PathStalled
	// PathDead: the connection failed or was closed.
	PathDead
)

func (s PathState) String() string {
	switch s {
	case PathJoining:
		return "joining"
	case PathUnverified:
		return "unverified"
	case PathActive:
		return "active"
	case PathStalled:
		return "stalled"
	case PathDead:
		return "dead"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// pendingPings is how many unanswered pings a path remembers.
const pendingPings = 4

type pendingPing struct {
	id   uint64
	sent time.Time
}

// inflight is one transmission of a reliable frame on a path.
type inflight struct {
	seq uint64
	at  time.Time
}

// path is one connection of a session. Fields below mu are guarded by the
// session's mu; the write queue has its own lock so that the writer never
// takes the session's.
type path struct {
	s    *Session
	id   uint64
	ep   Endpoint
	conn net.Conn
	// dg is the datagram side of conn, nil if it has none.
	dg *dgPath
	// dialer is the index in Config.Endpoints this path came from, or -1.
	dialer int
	// penalty multiplies the score: Config.Policy's for the endpoint
	// when the path opened (1 unless throttled).
	penalty float64

	// Write queue, guarded by qmu.
	qmu     sync.Mutex
	q       []qrec
	qBytes  atomic.Int64  // queued plus being written
	wake    chan struct{} // cap 1: the writer has work
	closing bool          // drain, then close the connection
	done    chan struct{} // closed when the path is dead

	// Guarded by s.mu.
	state        PathState
	opened       time.Time
	joinIndex    uint64
	wroteJoin    bool // the join message went out in full
	gotRecord    bool // a record arrived on the path
	srtt, rttvar time.Duration
	hasRTT       bool
	minRTT       time.Duration // least RTT sample in the last minRTTWindow
	minRTTAt     time.Time
	// ackRTT is the smoothed time from writing a frame to its
	// acknowledgement, for frames only this path carried: unlike ping
	// RTTs it includes the bytes queued in the connection ahead of them.
	ackRTT       time.Duration
	pings        [pendingPings]pendingPing
	pingWait     time.Time // first ping sent since the last pong, or zero
	pingSeq      uint64
	nextPing     time.Time
	lastData     time.Time // last reliable frame sent here
	lastProgress time.Time // last pong or credited ack
	stalledAt    time.Time
	flight       []inflight // reliable transmissions here, oldest first
	loss         float64    // EWMA of late or missing pongs
	rate         float64    // bytes per second, EWMA of acked bytes
	acked        uint64     // bytes of frames credited to this path
	rateAt       time.Time
	rateBase     uint64
	spreadBytes  float64 // bytes striped here by the spread scheduler
	sent         uint64  // records sealed for this path (padding index)
	stalls       uint64
	sched        [4]uint64 // records per scheduler (Best, Redundant, Spread)

	recordsSent, recordsRecv atomic.Uint64
	bytesSent, bytesRecv     atomic.Uint64
}

func (p *path) live() bool { return p.state != PathDead }

// usable reports whether the scheduler may put data on p.
func (p *path) usable() bool { return p.state == PathActive }

// queued is how many bytes wait to be written on p.
func (p *path) queued() int { return int(p.qBytes.Load()) }

// qrec is a sealed record waiting for the writer, with the reliable
// frames it carries (their send time is when it is written).
type qrec struct {
	raw  []byte
	outs []*out
}

// enqueue queues one sealed record for the writer. It reports false if the
// path is closing.
func (p *path) enqueue(rec []byte, outs ...*out) bool {
	p.qmu.Lock()
	if p.closing {
		p.qmu.Unlock()
		return false
	}
	p.q = append(p.q, qrec{raw: rec, outs: outs})
	p.qBytes.Add(int64(len(rec)))
	p.qmu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	return true
}

// flushTimeout bounds the last writes of a path that is being closed.
const flushTimeout = 200 * time.Millisecond

// writeLoop writes queued records until the path closes: then it writes
// what is left (within flushTimeout) and closes the connection.
func (p *path) writeLoop() {
	var batch []byte
	var outs []*out
	for {
		select {
		case <-p.wake:
		case <-p.done:
		}
		for {
			p.qmu.Lock()
			closing := p.closing
			batch, outs = batch[:0], outs[:0]
			for i, r := range p.q {
				batch = append(batch, r.raw...)
				outs = append(outs, r.outs...)
				p.q[i] = qrec{}
			}
			n := len(p.q)
			p.q = p.q[:0]
			p.qmu.Unlock()
			if len(batch) == 0 {
				if closing {
					p.conn.Close()
					return
				}
				break
			}
			if closing {
				p.conn.SetWriteDeadline(time.Now().Add(flushTimeout))
			}
			_, err := p.conn.Write(batch)
			p.qBytes.Add(-int64(len(batch)))
			if err != nil {
				p.s.pathFailed(p, fmt.Errorf("router: write: %w", err))
				p.conn.Close()
				return
			}
			p.recordsSent.Add(uint64(n))
			p.bytesSent.Add(uint64(len(batch)))
			if len(outs) > 0 {
				p.s.written(p, outs, time.Now())
				clear(outs)
			}
			p.s.wakeup()
		}
	}
}

// readBufSize is the reader's bufio buffer.
const readBufSize = 32 << 10

// readLoop reads and opens records until the connection fails.
func (p *path) readLoop() {
	br := bufio.NewReaderSize(p.conn, readBufSize)
	var buf, pt []byte
	defer func() {
		clear(buf[:cap(buf)])
		clear(pt[:cap(pt)])
	}()
	for {
		rec, err := session.ReadRecord(br, buf)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("router: connection closed by peer: %w", err)
			}
			p.s.pathFailed(p, err)
			return
		}
		buf = rec
		p.recordsRecv.Add(1)
		p.bytesRecv.Add(uint64(len(rec)))
		if err := p.s.onRecord(p, rec, &pt); err != nil {
			p.s.pathFailed(p, err)
			return
		}
	}
}

// ping records a ping on p and returns its frame. Called with s.mu held.
func (p *path) ping(now time.Time) frame.Frame {
	p.pingSeq++
	id := p.pingSeq
	p.pings[id%pendingPings] = pendingPing{id: id, sent: now}
	if p.pingWait.IsZero() {
		p.pingWait = now
	}
	var b [frame.PingLen]byte
	frame.PingPayload{ID: id, SentUnixNano: now.UnixNano()}.Append(b[:0])
	return frame.Frame{Type: frame.Ping, Payload: b[:]}
}

// lossAlpha is the weight of one sample in a path's loss average.
const lossAlpha = 0.125

// onPong takes an RTT sample from a pong received at now. Called with s.mu
// held.
func (p *path) onPong(pp frame.PingPayload, now time.Time) {
	slot := &p.pings[pp.ID%pendingPings]
	if slot.id != pp.ID || slot.sent.IsZero() {
		return
	}
	// Pongs come back in order on a stream: every earlier ping is
	// answered or lost, and the path works.
	p.pingWait = time.Time{}
	r := now.Sub(slot.sent)
	*slot = pendingPing{}
	late := 0.0
	if p.hasRTT && r > 2*p.srtt+4*p.rttvar+10*time.Millisecond {
		late = 1
	}
	p.loss += lossAlpha * (late - p.loss)
	if !p.hasRTT || r < p.minRTT || now.Sub(p.minRTTAt) > minRTTWindow {
		p.minRTT, p.minRTTAt = r, now
	}
	if !p.hasRTT {
		p.srtt, p.rttvar, p.hasRTT = r, r/2, true
	} else {
		d := p.srtt - r
		if d < 0 {
			d = -d
		}
		p.rttvar = (3*p.rttvar + d) / 4
		p.srtt = (7*p.srtt + r) / 8
	}
	p.lastProgress = now
}

// oldestPing is when the first ping not answered yet was sent, or zero.
func (p *path) oldestPing() time.Time { return p.pingWait }

// minRTTWindow is how long a path's least RTT sample counts.
const minRTTWindow = 30 * time.Second

// baseRTT is the path's least recent RTT: what it takes without queues
// or stalls.
func (p *path) baseRTT() time.Duration {
	if !p.hasRTT {
		return initialRTT
	}
	return p.minRTT
}

// initialRTT is assumed for a path without an RTT sample.
const initialRTT = 500 * time.Millisecond

func (p *path) rtt() (srtt, rttvar time.Duration) {
	if !p.hasRTT {
		return initialRTT, initialRTT / 2
	}
	return p.srtt, p.rttvar
}

// onAckRTT takes a sample of the time from writing a frame on p to its
// acknowledgement.
func (p *path) onAckRTT(r time.Duration) {
	if p.ackRTT == 0 {
		p.ackRTT = r
		return
	}
	p.ackRTT += (r - p.ackRTT) / 4
}

// lossRTT is the round trip after which a frame written on p is overdue:
// the larger of the ping RTT and the acknowledgement RTT.
func (p *path) lossRTT() time.Duration {
	srtt, _ := p.rtt()
	return max(srtt, p.ackRTT)
}

// stallAfter is the time without progress after which p counts as stalled.
func (p *path) stallAfter(floor time.Duration) time.Duration {
	srtt, rttvar := p.rtt()
	return max(3*srtt, srtt+4*rttvar, floor)
}

// defaultRate is assumed for a path whose rate is not measured yet: 1 MB/s.
const defaultRate = 1 << 20

func (p *path) rateOr() float64 {
	if p.rate <= 0 {
		return defaultRate
	}
	return p.rate
}

// score estimates how long a small record takes over p: lower is better.
// Loss makes it worse. (Queueing shows in the ping RTT.)
func (p *path) score() time.Duration {
	srtt, rttvar := p.rtt()
	return time.Duration(float64(srtt+2*rttvar) * (1 + 4*p.loss) * max(p.penalty, 1))
}
