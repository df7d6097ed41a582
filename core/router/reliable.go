package router

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/commucat/commucat/core/fec"
	"github.com/commucat/commucat/core/frame"
	"github.com/commucat/commucat/core/session"
)

// packTarget is how much plaintext one record carries before the next
// starts; a larger frame gets a record of its own.
const packTarget = 16 << 10

// redundantMax is the largest frame the redundant scheduler copies onto
// two paths by default; larger ones go on the best path.
const redundantMax = 8 << 10

// reserved reports whether f is a frame only the router sends.
func reserved(f frame.Frame) bool {
	switch f.Type {
	case frame.Ping, frame.Pong, frame.PathJoin, frame.Padding, frame.FECParity, frame.Close:
		return true
	case frame.Ack:
		if len(f.Payload) == 0 {
			return false
		}
		k := frame.AckKind(f.Payload[0])
		return k == frame.AckRecords || k == frame.AckDatagrams
	}
	return false
}

// ClassOf returns the scheduler a frame uses by default and whether it is
// reliable (sequenced, acknowledged, re-sent, delivered in order):
//
//   - Media: Spread, unreliable.
//   - StreamData: Spread.
//   - Message, CallSignal, Error, Register, Certificate, Ack, Close and any
//     frame with FlagUrgent, up to 8 KiB: Redundant; larger: Best.
//   - everything else: Best.
func ClassOf(f frame.Frame) (Scheduler, bool) {
	switch f.Type {
	case frame.Media:
		return Spread, false
	case frame.StreamData:
		return Spread, true
	case frame.Message, frame.CallSignal, frame.Error, frame.Register, frame.Certificate, frame.Ack, frame.Close:
		return redundantIfSmall(f), true
	}
	if f.Flags&frame.FlagUrgent != 0 {
		return redundantIfSmall(f), true
	}
	return Best, true
}

func redundantIfSmall(f frame.Frame) Scheduler {
	if frame.Size(f) <= redundantMax {
		return Redundant
	}
	return Best
}

// out is a frame waiting to be sent or acknowledged.
type out struct {
	seq    uint64 // 0: unreliable
	enc    []byte // the encoded frame
	class  Scheduler
	sends  []sendRec // the last transmissions, at most maxSends
	nsend  int       // transmissions so far
	acked  bool
	queued bool // in s.unsent
	due    time.Time
}

type sendRec struct {
	p  *path
	at time.Time
}

// maxSends bounds the transmissions an out remembers.
const maxSends = 4

// queue adds f to the frames to send. Called with s.mu held.
func (s *Session) queue(f frame.Frame, class Scheduler, reliable bool) {
	o := &out{class: class, queued: true}
	if reliable {
		o.seq = s.nextSeq
		s.nextSeq++
	}
	f.Seq = o.seq
	o.enc, _ = frame.Append(make([]byte, 0, frame.Size(f)), f) // checked by Send
	if reliable {
		s.outq = append(s.outq, o)
		s.outBytes += len(o.enc)
	}
	s.unsent = append(s.unsent, o)
	s.st.framesSent++
}

// lookup returns the unacknowledged frame with seq, or nil. Called with
// s.mu held.
func (s *Session) lookup(seq uint64) *out {
	if len(s.outq) == 0 || seq < s.outq[0].seq {
		return nil
	}
	i := seq - s.outq[0].seq
	if i >= uint64(len(s.outq)) {
		return nil
	}
	return s.outq[i]
}

// pump sends queued frames while some path has room. Called with s.mu
// held.
func (s *Session) pump(now time.Time) {
	if !s.hasUsable() {
		// Unreliable frames are not kept for a path that may come back;
		// a stalled path may still take them as datagrams.
		s.sendUnreliable(0, now)
		kept := s.unsent[:0]
		for _, o := range s.unsent {
			if o.seq == 0 {
				s.st.dropped++
				continue
			}
			kept = append(kept, o)
		}
		clear(s.unsent[len(kept):])
		s.unsent = kept
		return
	}
	for len(s.unsent) > 0 {
		o := s.unsent[0]
		if o.acked {
			o.queued = false
			s.unsent = s.unsent[1:]
			continue
		}
		if o.seq == 0 && s.sendDatagrams(0, now) {
			continue
		}
		class, avoid := s.sendClass(o)
		paths := s.pick(class, len(o.enc), avoid)
		if len(paths) == 0 {
			s.sendUnreliableBehind(now)
			break
		}
		batch := []*out{o}
		size := len(o.enc)
		i := 1
		for ; i < len(s.unsent); i++ {
			n := s.unsent[i]
			if n.acked {
				continue
			}
			c, a := s.sendClass(n)
			if c != class || a != avoid || size+len(n.enc) > packTarget {
				break
			}
			batch = append(batch, n)
			size += len(n.enc)
		}
		for _, x := range s.unsent[:i] {
			x.queued = false
		}
		clear(s.unsent[:i])
		s.unsent = s.unsent[i:]
		s.transmit(paths, class, batch, now)
	}
	if len(s.unsent) == 0 {
		s.unsent = nil // let the backing array go
	}
}

// sendClass is the scheduler for o's next transmission and the path it
// should avoid: re-sent frames go on another path than their last one
// where possible, and without FEC.
func (s *Session) sendClass(o *out) (Scheduler, *path) {
	if o.nsend == 0 {
		return o.class, nil
	}
	class := o.class
	if class == Spread {
		class = Best
	}
	return class, o.sends[len(o.sends)-1].p
}

// transmit seals batch into one record and queues it on paths. Called
// with s.mu held.
func (s *Session) transmit(paths []*path, class Scheduler, batch []*out, now time.Time) {
	var pt []byte
	if s.ackDue {
		pt = s.appendAck(pt, now)
	}
	for _, o := range batch {
		pt = append(pt, o.enc...)
	}
	raw, ok := s.seal(paths[0], pt)
	if !ok {
		return
	}
	var outs []*out
	for _, o := range batch {
		if o.seq != 0 {
			outs = append(outs, o)
		}
	}
	for _, p := range paths {
		if p != paths[0] {
			p.sent++
		}
		p.sched[class]++
		p.enqueue(raw, outs...)
	}
	s.st.sched[class]++
	for _, o := range batch {
		if o.seq == 0 {
			continue
		}
		o.nsend++
		if o.nsend > 1 {
			s.st.retransmits++
		}
		for _, p := range paths {
			if len(o.sends) == maxSends {
				copy(o.sends, o.sends[1:])
				o.sends = o.sends[:maxSends-1]
			}
			o.sends = append(o.sends, sendRec{p: p, at: now})
			p.flight = append(p.flight, inflight{seq: o.seq, at: now})
			p.lastData = now
		}
		o.due = now.Add(s.rto(paths[0], o.nsend))
	}
	if class == Spread && s.cfg.FEC != FECOff {
		s.fecAdd(raw, paths[0], now)
	}
}

// written records that the frames outs went out on p at now: their
// retransmission timers and loss detection count from when a record left
// the path's queue, not from when it joined it.
func (s *Session) written(p *path, outs []*out, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range outs {
		if o.acked {
			continue
		}
		for i := len(o.sends) - 1; i >= 0; i-- {
			if o.sends[i].p == p {
				o.sends[i].at = now
				break
			}
		}
		o.due = now.Add(s.rto(p, o.nsend))
	}
}

// rto is the retransmission timeout of a frame sent for the n-th time on
// p: max(RTOMin, 2 x RTT + 4 x RTTVAR + AckDelay), with RTT the path's
// loss RTT, doubled per earlier transmission, at most a minute.
func (s *Session) rto(p *path, n int) time.Duration {
	_, rttvar := p.rtt()
	r := max(s.cfg.RTOMin, 2*p.lossRTT()+4*rttvar+s.cfg.AckDelay)
	for i := 1; i < n && r < time.Minute; i++ {
		r *= 2
	}
	return min(r, time.Minute)
}

// seal pads pt for p and seals it into a record. It ends the session if
// the record layer fails (sequence numbers exhausted). Called with s.mu
// held.
func (s *Session) seal(p *path, pt []byte) ([]byte, bool) {
	if s.cfg.Pad != nil {
		if n := min(s.cfg.Pad(p.sent, len(pt)), frame.Padding.MaxPayload()); n > 0 {
			pt, _ = frame.Append(pt, frame.Frame{Type: frame.Padding, Payload: make([]byte, n)})
		}
	}
	p.sent++
	return s.sealPlain(pt)
}

// sealPlain seals pt, unpadded, into a record and wipes pt. It ends the
// session if the record layer fails. Called with s.mu held.
func (s *Session) sealPlain(pt []byte) ([]byte, bool) {
	raw, _, err := s.sealer.Seal(make([]byte, 0, len(pt)+session.Overhead), pt)
	clear(pt)
	if err != nil {
		s.end(fmt.Errorf("router: seal: %w", err))
		return nil, false
	}
	s.st.recordsSent++
	return raw, true
}

// maxControlQueue bounds a path's queue for control records: beyond it
// they are dropped (they are re-sent or regenerated anyway).
func (s *Session) maxControlQueue() int { return 4 * s.cfg.PathQueue }

// sendControl seals control frames into one record on p, whatever its
// state. Called with s.mu held.
func (s *Session) sendControl(p *path, fs ...frame.Frame) {
	if !p.live() || p.queued() > s.maxControlQueue() {
		return
	}
	var pt []byte
	for _, f := range fs {
		pt, _ = frame.Append(pt, f)
	}
	if raw, ok := s.seal(p, pt); ok {
		p.enqueue(raw)
	}
}

// sendConfirmation answers a join on p: a record with a PathJoin frame,
// padded to the length of a handshake message 2. Called with s.mu held.
func (s *Session) sendConfirmation(p *path, index uint64) {
	pt, _ := frame.Append(nil, pathJoinFrame(index))
	if s.cfg.PadHandshake != nil {
		if n := s.cfg.PadHandshake(2, len(pt)+session.Overhead) - frame.HeaderMax; n > 0 {
			pt, _ = frame.Append(pt, frame.Frame{Type: frame.Padding, Payload: make([]byte, min(n, frame.Padding.MaxPayload()))})
		}
	}
	p.sent++ // the confirmation is the path's first record: no profile padding
	raw, _, err := s.sealer.Seal(make([]byte, 0, len(pt)+session.Overhead), pt)
	if err != nil {
		s.end(fmt.Errorf("router: seal: %w", err))
		return
	}
	s.st.recordsSent++
	p.enqueue(raw)
}

// appendAck appends an AckRecords frame describing what was received and
// clears the pending acknowledgement. Called with s.mu held.
func (s *Session) appendAck(dst []byte, now time.Time) []byte {
	w := uint64(len(s.ring))
	sp := frame.SackPayload{Cumulative: s.recvNext - 1, Window: s.base + w - s.recvNext}
	var cur *frame.SackRange
	for seq := s.recvNext + 1; seq <= s.recvHigh && len(sp.Ranges) <= frame.MaxSackRanges; seq++ {
		if !s.ring[seq%w].ok {
			cur = nil
			continue
		}
		if cur == nil {
			if len(sp.Ranges) == frame.MaxSackRanges {
				break
			}
			sp.Ranges = append(sp.Ranges, frame.SackRange{First: seq, Last: seq})
			cur = &sp.Ranges[len(sp.Ranges)-1]
			continue
		}
		cur.Last = seq
	}
	s.ackDue, s.ackAt = false, time.Time{}
	s.advertised = sp.Cumulative + sp.Window
	s.st.acksSent++
	dst, _ = frame.Append(dst, frame.Frame{Type: frame.Ack, Payload: sp.Append(nil)})
	return dst
}

// sendAck sends a pending acknowledgement on the path data last came in
// on and on the best path. Called with s.mu held.
func (s *Session) sendAck(now time.Time) {
	ack := s.appendAck(nil, now)
	sent := false
	for _, p := range []*path{s.ackPath, s.best} {
		if p == nil || !p.live() || p.state == PathJoining || (sent && p == s.ackPath) {
			continue
		}
		if raw, ok := s.seal(p, append([]byte(nil), ack...)); ok {
			p.enqueue(raw)
			sent = true
		}
	}
	if !sent {
		for _, p := range s.paths {
			if p.usable() {
				if raw, ok := s.seal(p, ack); ok {
					p.enqueue(raw)
				}
				return
			}
		}
	}
}

// onSack applies an acknowledgement from the peer. Called with s.mu held.
func (s *Session) onSack(sp frame.SackPayload, now time.Time) {
	cum := min(sp.Cumulative, s.nextSeq-1)
	if limit := sp.Cumulative + sp.Window; limit > s.peerLimit {
		s.peerLimit = limit
	}
	var latest time.Time // the latest send of a frame acknowledged now
	ackOne := func(o *out) {
		if o.acked {
			return
		}
		if n := len(o.sends); n > 0 && o.sends[n-1].at.After(latest) {
			latest = o.sends[n-1].at
		}
		s.ack(o, now)
	}
	for len(s.outq) > 0 && s.outq[0].seq <= cum {
		ackOne(s.outq[0])
		s.outq[0] = nil
		s.outq = s.outq[1:]
	}
	for _, r := range sp.Ranges {
		if len(s.outq) == 0 || r.First >= s.nextSeq {
			break
		}
		for seq := max(r.First, s.outq[0].seq); seq <= r.Last && seq < s.nextSeq; seq++ {
			if o := s.lookup(seq); o != nil {
				ackOne(o)
			}
		}
	}
	for len(s.outq) > 0 && s.outq[0].acked {
		s.outq[0] = nil
		s.outq = s.outq[1:]
	}
	if len(s.outq) == 0 {
		s.outq = nil
	}
	if !latest.IsZero() {
		s.detectLoss(latest, now)
	}
	s.broadcast()
}

// expected is when an acknowledgement of o can be expected at the latest
// without suspecting loss: for the copy expected first, its send time plus
// its path's loss RTT (ping or acknowledgement RTT, whichever is larger),
// a reordering allowance (a quarter of the path's base RTT, at least 5ms)
// and the peer's acknowledgement delay.
func (o *out) expected(ackDelay time.Duration) time.Time {
	var t time.Time
	for _, sr := range o.sends {
		reo := max(sr.p.baseRTT()/4, 5*time.Millisecond)
		if e := sr.at.Add(sr.p.lossRTT() + reo + ackDelay); t.IsZero() || e.Before(t) {
			t = e
		}
	}
	return t
}

// detectLoss re-sends frames that were overtaken: a frame sent before
// latest (the last send of a frame just acknowledged) whose own
// acknowledgement is overdue at now is presumed stuck or lost on its path,
// as RACK (RFC 8985) does within one connection. Across paths this
// catches a path that stalls while others deliver about one RTT after the
// fact, long before the stall threshold. Called with s.mu held.
func (s *Session) detectLoss(latest, now time.Time) {
	var lost []*out
	for _, o := range s.outq {
		if o.acked || o.queued || o.nsend == 0 {
			continue
		}
		if o.sends[len(o.sends)-1].at.After(latest) {
			break // sent after the evidence; so is everything later
		}
		if o.expected(s.cfg.AckDelay).Before(now) {
			o.queued = true
			lost = append(lost, o)
		}
	}
	if len(lost) > 0 {
		s.st.overtaken += uint64(len(lost))
		s.requeue(lost)
	}
}

// ack marks o acknowledged and credits the path that carried it, if only
// one did. Called with s.mu held.
func (s *Session) ack(o *out, now time.Time) {
	if o.acked {
		return
	}
	o.acked = true
	s.outBytes -= len(o.enc)
	if len(o.sends) == 1 {
		p := o.sends[0].p
		p.lastProgress = now
		p.acked += uint64(len(o.enc))
		if o.nsend == 1 {
			p.onAckRTT(now.Sub(o.sends[0].at))
		}
	}
}

// rescue queues again every unacknowledged frame that no usable path
// carries: its last transmission went on a path that died or stalled, or
// it was never sent. Called with s.mu held.
func (s *Session) rescue() {
	var add []*out
	for _, o := range s.outq {
		if o.acked || o.queued {
			continue
		}
		carried := false
		for _, sr := range o.sends {
			if sr.p.usable() {
				carried = true
				break
			}
		}
		if !carried {
			o.queued = true
			add = append(add, o)
		}
	}
	if len(add) > 0 {
		s.requeue(add)
	}
}

// requeue puts frames back at the front of the send queue, in seq order.
// Called with s.mu held.
func (s *Session) requeue(add []*out) {
	s.unsent = append(add, s.unsent...)
}

// fecActive reports whether received records should be kept for FEC
// repair: parity arrived recently.
func (s *Session) fecActive(now time.Time) bool {
	return !s.fecSeen.IsZero() && now.Sub(s.fecSeen) < fecIdle
}

// fecIdle is how long after the last parity received records are still
// fed to the FEC decoder.
const fecIdle = 5 * time.Second

// onRecord opens and handles one record that arrived on p. An error ends
// p (a record that does not open, from someone without the keys) or, for
// malformed frames from the authenticated peer, the session.
func (s *Session) onRecord(p *path, rec []byte, ptbuf *[]byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.state == PathDead || s.ended() {
		return errPathClosed
	}
	if err := s.handleRecord(p, rec, ptbuf, nil); err != nil {
		return err
	}
	s.pump(time.Now())
	return nil
}

// handleRecord opens rec, received on p, and acts on its frames and on
// any records FEC repairs with it; authentic is called (if not nil) once
// the record proved authentic. An error is the opener's for a record that
// does not open, or one that ended the session. Called with s.mu held.
func (s *Session) handleRecord(p *path, rec []byte, ptbuf *[]byte, authentic func()) error {
	pt, _, err := s.opener.Open((*ptbuf)[:0], rec)
	if errors.Is(err, session.ErrReplay) {
		// A copy of a record that came first on another path, or was
		// repaired: the path works.
		s.st.replays++
		if authentic != nil {
			authentic()
		}
		return nil
	}
	if err != nil {
		return err
	}
	if authentic != nil {
		authentic()
	}
	*ptbuf = pt
	now := time.Now()
	s.confirmedOnce.Do(func() { close(s.confirmed) })
	p.gotRecord = true
	switch p.state {
	case PathJoining:
		s.log.Debug("path joined", "path", p.id, "transport", p.ep.Transport)
		p.state, p.lastProgress, p.nextPing = PathActive, now, now
		s.refusals = 0
		s.st.joins++
		s.pathsChanged(now)
	case PathUnverified:
		p.state, p.lastProgress = PathActive, now
		s.pathsChanged(now)
	}
	var repaired [][]byte
	if s.fecActive(now) {
		repaired = s.dec.AddRecord(nil, rec)
	}
	if err := s.dispatch(p, pt, now, &repaired); err != nil {
		s.end(err)
		return err
	}
	for len(repaired) > 0 {
		r := repaired[0]
		repaired = repaired[1:]
		pt, _, err := s.opener.Open(nil, r)
		if err != nil {
			continue // a replay: the original came after all
		}
		s.st.repaired++
		if err := s.dispatch(nil, pt, now, &repaired); err != nil {
			s.end(err)
			return err
		}
	}
	return nil
}

// errPathClosed stops the reader of a path that was closed.
var errPathClosed = errors.New("router: path closed")

// dispatch handles the frames of one record's plaintext, received on p (nil
// for a record repaired by FEC). It checks every frame before acting on
// any. Called with s.mu held.
func (s *Session) dispatch(p *path, pt []byte, now time.Time, repaired *[][]byte) error {
	for off := 0; off < len(pt); {
		f, n, err := frame.Decode(pt[off:])
		if err == nil {
			err = checkControl(f)
		}
		if err != nil {
			return fmt.Errorf("%w: frame at offset %d: %w", session.ErrMalformed, off, err)
		}
		off += n
	}
	for off := 0; off < len(pt); {
		f, n, _ := frame.Decode(pt[off:]) // checked above
		off += n
		switch f.Type {
		case frame.Padding, frame.PathJoin:
		case frame.Ping:
			if p != nil {
				pong := frame.Frame{Type: frame.Pong, Payload: f.Payload}
				if da, ok := p.dgAck(); ok {
					s.sendControl(p, pong, da)
				} else {
					s.sendControl(p, pong)
				}
			}
		case frame.Pong:
			if p != nil {
				pp, _ := frame.ParsePing(f.Payload)
				p.onPong(pp, now)
				if p.state == PathStalled {
					s.unstall(p, now)
				}
			}
		case frame.FECParity:
			s.fecSeen = now
			var err error
			if *repaired, err = s.dec.AddParity(*repaired, f.Payload); err != nil {
				s.log.Debug("bad parity", "err", err)
			}
		case frame.Ack:
			switch frame.AckKind(f.Payload[0]) {
			case frame.AckRecords:
				sp, _ := frame.ParseSack(f.Payload)
				s.onSack(sp, now)
			case frame.AckDatagrams:
				if p != nil {
					da, _ := frame.ParseDatagramAck(f.Payload)
					p.onDatagramAck(da)
				}
			default:
				s.receive(p, f, now)
			}
		default:
			s.receive(p, f, now)
		}
	}
	return nil
}

// checkControl parses the payloads the router itself consumes.
func checkControl(f frame.Frame) error {
	var err error
	switch f.Type {
	case frame.Ping, frame.Pong:
		_, err = frame.ParsePing(f.Payload)
	case frame.Close:
		_, err = frame.ParseClose(f.Payload)
	case frame.PathJoin:
		_, err = ParsePathJoin(f.Payload)
	case frame.Ack:
		if len(f.Payload) == 0 {
			return fmt.Errorf("router: empty ack")
		}
		switch frame.AckKind(f.Payload[0]) {
		case frame.AckRecords:
			_, err = frame.ParseSack(f.Payload)
		case frame.AckDatagrams:
			_, err = frame.ParseDatagramAck(f.Payload)
		}
	}
	return err
}

// receive takes one application frame (or Close) from the peer. Called
// with s.mu held.
func (s *Session) receive(p *path, f frame.Frame, now time.Time) {
	f.Payload = append([]byte(nil), f.Payload...)
	if len(f.Payload) == 0 {
		f.Payload = nil
	}
	if f.Seq == 0 {
		if len(s.unrel) >= len(s.ring) {
			s.st.dropped++
			return
		}
		s.unrel = append(s.unrel, f)
		s.st.framesRecv++
		s.broadcast()
		return
	}
	if p != nil {
		s.ackPath = p
	}
	if !s.ackDue {
		s.ackDue, s.ackAt = true, now.Add(s.cfg.AckDelay)
		s.wakeup()
	}
	w := uint64(len(s.ring))
	seq := f.Seq
	switch {
	case seq < s.recvNext:
		s.st.dups++
		return
	case seq >= s.base+w:
		s.st.beyond++
		return
	}
	sl := &s.ring[seq%w]
	if sl.ok {
		s.st.dups++
		return
	}
	*sl = slot{f: f, ok: true}
	s.recvHigh = max(s.recvHigh, seq)
	if seq > s.recvNext {
		s.ackAt = now // a gap: tell the sender at once
		s.wakeup()
	}
	for s.recvNext < s.base+w && s.ring[s.recvNext%w].ok {
		sl := &s.ring[s.recvNext%w]
		s.recvNext++
		s.st.framesRecv++
		if sl.f.Type == frame.Close {
			c, _ := frame.ParseClose(sl.f.Payload)
			*sl = slot{}
			s.peerClose = &session.CloseError{Code: c.Code, Reason: c.Reason}
			s.sendAck(now)
			s.end(s.peerClose)
			break
		}
	}
	s.broadcast()
}

// popRecv takes the next frame for Recv. Called with s.mu held.
func (s *Session) popRecv() (frame.Frame, bool) {
	if len(s.unrel) > 0 {
		f := s.unrel[0]
		s.unrel[0] = frame.Frame{}
		s.unrel = s.unrel[1:]
		return f, true
	}
	w := uint64(len(s.ring))
	for s.base < s.recvNext {
		sl := &s.ring[s.base%w]
		s.base++
		if !sl.ok {
			continue
		}
		f := sl.f
		*sl = slot{}
		// Re-open the peer's window once a quarter of it was consumed.
		if s.base+w-1 >= s.advertised+w/4 && !s.ackDue {
			s.ackDue, s.ackAt = true, time.Now().Add(s.cfg.AckDelay)
			s.wakeup()
		}
		return f, true
	}
	return frame.Frame{}, false
}

// fecAdd gives a sealed spread record, sent on p, to the FEC encoder and
// sends the parity of any block it closes. Called with s.mu held.
func (s *Session) fecAdd(raw []byte, p *path, now time.Time) {
	if s.enc.Pending() == 0 {
		k, m := s.fecParams()
		s.fecM = m
		if err := s.enc.SetParams(k, m); err != nil {
			return
		}
	}
	before := s.enc.Pending()
	parity, err := s.enc.Add(nil, raw)
	if err != nil {
		return
	}
	switch after := s.enc.Pending(); {
	case len(parity) > 0 && after == 0:
		// raw completed its block.
		s.fecShards[p]++
		s.noteBlock(before + 1)
		s.sendParity(parity, now)
	case len(parity) > 0:
		// The block before closed first; raw opened the next one.
		s.noteBlock(before)
		s.sendParity(parity, now)
		s.fecShards[p]++
	case after > before:
		s.fecShards[p]++
	}
}

// sendParity seals each parity payload into a record of its own, on the
// paths holding the fewest shards of its block, and starts the next
// block's tally. Called with s.mu held.
func (s *Session) sendParity(parity [][]byte, now time.Time) {
	defer clear(s.fecShards)
	for _, pl := range parity {
		f := frame.Frame{Type: frame.FECParity, Payload: pl}
		p := s.pickSpread(frame.Size(f), nil, s.fecShards)
		if p == nil {
			return
		}
		pt, _ := frame.Append(nil, f)
		raw, ok := s.seal(p, pt)
		if !ok {
			return
		}
		p.enqueue(raw)
		s.fecShards[p]++
		s.st.paritySent++
	}
}

// fecParams picks k and m for the next block from the measured loss of
// the paths the spread scheduler uses. Stream paths lose by stalling, and
// a stall holds back every record behind it on that path, so parity on
// the same path as its data helps nothing: one path gets none, and with n
// paths m is chosen so that a block survives losing every shard of one
// path, m >= k'/(n-1), where k' is the expected block size (blocks close
// after fecDelay, so at low rates they hold fewer than k records). The
// independent-loss model of fec.Controller raises m further at high loss.
// Without measured loss the block gets no parity (FECAlways: one shard).
func (s *Session) fecParams() (k, m int) {
	n, loss := 0, 0.0
	for _, p := range s.paths {
		if p.usable() {
			n++
			loss = max(loss, p.loss)
		}
	}
	if loss < fecLossFloor || n < 2 {
		if s.cfg.FEC == FECAlways {
			return fec.DefaultK, 1
		}
		return fec.DefaultK, 0
	}
	s.ctl.SetLoss(loss)
	ck, cm := s.ctl.Params()
	k = min(ck, fecStallK)
	kEst := max(1, min(float64(k), s.blockRecords))
	m = int(math.Ceil(kEst / float64(n-1)))
	m = max(m, int(math.Ceil(float64(cm)*kEst/float64(ck))))
	return k, min(m, fec.MaxM)
}

// fecLossFloor is the path loss under which spread records get no parity.
const fecLossFloor = 0.005

// fecStallK is the most records in a block once paths stall.
const fecStallK = 8

// noteBlock updates the average number of records per FEC block.
func (s *Session) noteBlock(n int) {
	if n <= 0 {
		return
	}
	if s.blockRecords == 0 {
		s.blockRecords = float64(n)
		return
	}
	s.blockRecords += 0.25 * (float64(n) - s.blockRecords)
}
