package router

import (
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"time"

	"github.com/commucat/commucat/core/fec"
	"github.com/commucat/commucat/core/frame"
	"github.com/commucat/commucat/core/session"
	"github.com/commucat/commucat/core/transport"
)

// Datagram paths. A path whose connection also carries unreliable
// datagrams (transport.DatagramConn: QUIC DATAGRAM frames, KCP's
// out-of-band packets) carries the session's unreliable frames (Media)
// as datagrams, so that a lost packet delays nothing behind it. Each
// datagram holds one sealed record, numbered per path:
//
//	+------------------------+--------------------------------------+
//	| number                 | record (core/session format)         |
//	| 4 bytes, big-endian    | length | epoch | seq | ciphertext+tag |
//	+------------------------+--------------------------------------+
//
// Numbers count from 1 per path and direction and wrap after 2^32; the
// receiver extends them to 64 bits (serial-number arithmetic, RFC 1982).
// The record's own sequence number and the session's replay window absorb
// reordering and duplicates, as on stream paths. The receiver counts the
// datagrams it opened and the highest number seen, and reports both in an
// Ack frame of kind AckDatagrams (frame.DatagramAckPayload) beside its
// Pong on that path; the sender takes 1 - Δreceived/Δhighest between two
// reports as a loss sample of the path. Records of datagrams get
// Reed-Solomon parity (core/fec) in blocks of their own, chosen for the
// measured datagram loss, sent as datagrams on the same path when they
// fit (else on the best stream path).

// dgHeader is the datagram number before the record.
const dgHeader = 4

// dgParityRoom is kept free in a datagram for the FEC parity of a block
// of such records: the FECParity frame's header, the parity header and
// the parity record's own overhead. It is tight: in a long session the
// parity of a block of the largest records may not fit, and then goes on
// the best stream path instead.
const dgParityRoom = 48

// dgQueue bounds the datagrams waiting for a path's datagram writer; a
// datagram that finds it full is dropped (Stats.Dropped).
const dgQueue = 256

// dgMinRecord is the least record size a datagram path must take.
const dgMinRecord = 256

// dgLossSample is how many datagrams a loss sample spans at least.
const dgLossSample = 16

// dgLossAlpha is the weight of one loss sample in a path's datagram loss
// average: a sample spans at least dgLossSample datagrams, so few samples
// come in a second of audio.
const dgLossAlpha = 0.25

// dgFECDelay is how long a block of datagram records waits for more
// before its parity goes out: media comes every 10 to 20 ms, and a
// repair that waits longer than a jitter buffer is useless.
const dgFECDelay = 40 * time.Millisecond

// dgFECMaxK bounds a datagram block, so repairs wait for few records.
const dgFECMaxK = 8

// dgPath is the datagram side of a path. conn, q and max are set when the
// path is made; the rest is guarded by the session's mu.
type dgPath struct {
	conn transport.DatagramConn
	q    chan []byte // to the writer; full: dropped
	max  int         // the largest record one datagram takes
	send bool        // this side may send media as datagrams (not NoDatagrams)

	next       uint32 // number of the last datagram queued
	sent       uint64
	recv       uint64 // distinct datagrams received and opened
	high       uint64 // highest number received, extended
	seen       [dgWindow / 64]uint64
	reported   uint64    // recv at the last report
	reportedAt time.Time // when a report last went out unasked
	ackRecv    uint64    // the peer's report the last sample ended at
	ackHigh    uint64
	sampled    bool    // a loss sample was taken since the peer confirmed
	loss       float64 // moving average of the peer's reported loss
	confirmed  bool    // the peer reported datagrams it received
	reportAt   time.Time
	sentAt     uint64    // sent when the last report came (or the path was confirmed)
	firstAfter time.Time // when the first datagram after sentAt was sent
	probeAt    time.Time
	lastSent   time.Time
	decayedAt  time.Time // when the idle path's loss last decayed, or zero
	bad        uint64    // datagrams that did not open or were malformed
	failed     bool      // the writer stopped: SendDatagram failed
}

// dgReportEvery is how often at most a receiver reports datagrams as
// they arrive (it also reports with every pong).
const dgReportEvery = 100 * time.Millisecond

// dgWindow is how many datagram numbers below the highest a receiver
// remembers, so that a replayed or duplicated datagram counts once.
const dgWindow = 1024

// newDgPath returns the datagram side of conn, or nil if conn carries no
// datagrams big enough for a record. With cfg.NoDatagrams this side still
// receives datagrams (and reports them) but sends none.
func newDgPath(conn any, cfg Config) *dgPath {
	dc, ok := conn.(transport.DatagramConn)
	if !ok {
		return nil
	}
	n := dc.MaxDatagramSize() - dgHeader - dgParityRoom
	if n < dgMinRecord {
		return nil
	}
	return &dgPath{conn: dc, q: make(chan []byte, dgQueue), max: n, send: !cfg.NoDatagrams}
}

// dgUsable reports whether unreliable frames may go as datagrams on p:
// only once the peer has reported datagrams it received there (a peer
// that does not read them, or a path that drops every one, never does).
// A stalled path still may: its stream is held up (often behind its own
// queue), but its datagrams are confirmed until the peer falls silent.
func (p *path) dgUsable() bool {
	return p.dg != nil && p.dg.send && p.dg.confirmed && !p.dg.failed &&
		(p.state == PathActive || p.state == PathStalled)
}

// dgProbeEvery is how often a path whose datagrams are not confirmed gets
// a probe datagram (a Padding frame) for the peer to report.
const dgProbeEvery = time.Second

// dgSilence is how long, beyond 4 RTT, the peer may leave datagrams
// unreported before the path counts as losing them all.
const dgSilence = time.Second

// dgLossHalfLife is how fast the datagram loss of a path that carries
// none decays, so that a path avoided for loss is tried again.
const dgLossHalfLife = 10 * time.Second

// tickDatagrams runs p's datagram timers: a probe while the peer has not
// confirmed datagrams, total loss when it stopped reporting them, and
// the decay of an idle path's loss. Called with s.mu held.
func (s *Session) tickDatagrams(p *path, now time.Time, at func(time.Time)) {
	d := p.dg
	if d == nil || !d.send || d.failed || p.state != PathActive && p.state != PathStalled {
		return
	}
	if !d.confirmed {
		if now.Sub(d.probeAt) >= dgProbeEvery {
			d.probeAt = now
			pt, _ := frame.Append(nil, frame.Frame{Type: frame.Padding, Payload: []byte{0}})
			if raw, ok := s.sealPlain(pt); ok {
				s.queueDatagram(p, raw, now)
			}
		}
		at(d.probeAt.Add(dgProbeEvery))
		return
	}
	srtt, _ := p.rtt()
	if d.sent-d.sentAt >= dgLossSample {
		// Silence counts from the first datagram the peer has not
		// reported yet: after an idle spell, the last report is long past.
		from := d.reportAt
		if d.firstAfter.After(from) {
			from = d.firstAfter
		}
		dl := from.Add(4*srtt + dgSilence)
		if !now.Before(dl) {
			s.log.Debug("datagrams unanswered", "path", p.id, "transport", p.ep.Transport)
			d.loss, d.confirmed, d.sampled = 1, false, false
			return
		}
		at(dl)
	}
	// The decay follows the time since the last tick that decayed, not
	// the number of ticks (which come as often as the session has work).
	if d.loss > 0 && now.Sub(d.lastSent) > 2*time.Second {
		if !d.decayedAt.IsZero() {
			d.loss *= math.Exp2(-float64(now.Sub(d.decayedAt)) / float64(dgLossHalfLife))
		}
		d.decayedAt = now
		at(now.Add(rateInterval))
	} else {
		d.decayedAt = time.Time{}
	}
}

// dgScore is p's score for datagrams: its score, worse with the loss its
// peer reports.
func (p *path) dgScore() time.Duration {
	return time.Duration(float64(p.score()) * (1 + 4*p.dg.loss))
}

// pickDatagram returns the paths for a datagram under class: the best
// datagram path (the scheduler's best path while it is within Hysteresis
// of the best datagram score), and for Redundant also the second best;
// nil if no path carries datagrams. Called with s.mu held.
func (s *Session) pickDatagram(class Scheduler) []*path {
	var first, second *path
	for _, p := range s.paths {
		if !p.dgUsable() {
			continue
		}
		switch {
		case first == nil || p.dgScore() < first.dgScore():
			first, second = p, first
		case second == nil || p.dgScore() < second.dgScore():
			second = p
		}
	}
	if first == nil {
		return nil
	}
	if b := s.best; b != first && b != nil && b.dgUsable() &&
		float64(first.dgScore()) > float64(b.dgScore())*(1-s.cfg.Hysteresis) {
		if second == b {
			second = first
		}
		first = b
	}
	if class == Redundant && second != nil {
		return []*path{first, second}
	}
	return []*path{first}
}

// sendDatagrams sends the unreliable frames from s.unsent[i] on as one
// datagram record, if a datagram path can take them, and reports whether
// it did (they are then gone from s.unsent). Called with s.mu held.
func (s *Session) sendDatagrams(i int, now time.Time) bool {
	o := s.unsent[i]
	paths := s.pickDatagram(o.class)
	if len(paths) == 0 {
		return false
	}
	budget := paths[0].dg.max
	for _, p := range paths[1:] {
		budget = min(budget, p.dg.max)
	}
	budget -= session.Overhead
	if len(o.enc) > budget {
		return false
	}
	pt := append([]byte(nil), o.enc...)
	j := i + 1
	for ; j < len(s.unsent); j++ {
		n := s.unsent[j]
		if n.seq != 0 || n.class != o.class || len(pt)+len(n.enc) > budget {
			break
		}
		pt = append(pt, n.enc...)
	}
	for _, x := range s.unsent[i:j] {
		x.queued = false
	}
	s.unsent = slices.Delete(s.unsent, i, j)
	n := j - i
	raw, ok := s.sealPlain(pt)
	if !ok {
		return true
	}
	sent := false
	for _, p := range paths {
		if s.queueDatagram(p, raw, now) {
			p.sched[o.class]++
			sent = true
		}
	}
	if !sent {
		s.st.dropped += uint64(n)
		return true
	}
	s.st.sched[o.class]++
	if s.cfg.FEC != FECOff {
		s.dgFECAdd(raw, paths[0], now)
	}
	return true
}

// maxUnreliableWaiting bounds the unreliable frames waiting behind a
// reliable frame no path has room for; the oldest beyond it are dropped
// (media that late is useless).
const maxUnreliableWaiting = 256

// sendUnreliableBehind sends, as datagrams, the unreliable frames waiting
// behind s.unsent[0], which no path has room for: they need no order.
// It drops the oldest of those it cannot send beyond maxUnreliableWaiting.
// Called with s.mu held.
func (s *Session) sendUnreliableBehind(now time.Time) {
	waiting := s.sendUnreliable(1, now)
	for i := 1; waiting > maxUnreliableWaiting && i < len(s.unsent); {
		if o := s.unsent[i]; o.seq == 0 {
			o.queued = false
			s.unsent = slices.Delete(s.unsent, i, i+1)
			s.st.dropped++
			waiting--
			continue
		}
		i++
	}
}

// sendUnreliable sends, as datagrams, the unreliable frames of s.unsent
// from index from on (they need no order), and returns how many of them
// it could not send. Called with s.mu held.
func (s *Session) sendUnreliable(from int, now time.Time) (waiting int) {
	for i := from; i < len(s.unsent); {
		if o := s.unsent[i]; o.seq == 0 {
			if s.sendDatagrams(i, now) {
				continue
			}
			waiting++
		}
		i++
	}
	return waiting
}

// queueDatagram numbers raw for p and hands it to p's datagram writer;
// it reports false when the writer's queue is full. Called with s.mu
// held.
func (s *Session) queueDatagram(p *path, raw []byte, now time.Time) bool {
	d := p.dg
	b := make([]byte, dgHeader+len(raw))
	binary.BigEndian.PutUint32(b, d.next+1)
	copy(b[dgHeader:], raw)
	select {
	case d.q <- b:
	default:
		return false
	}
	if d.sent == d.sentAt {
		d.firstAfter = now
	}
	d.next++
	d.sent++
	d.lastSent = now
	s.st.dgSent++
	return true
}

// dgWriteLoop sends p's queued datagrams until the path is dead. A send
// that fails for another reason than size stops datagrams on p: its
// unreliable frames go on streams from then on.
func (p *path) dgWriteLoop() {
	for {
		select {
		case b := <-p.dg.q:
			err := p.dg.conn.SendDatagram(b)
			if err == nil {
				p.recordsSent.Add(1)
				p.bytesSent.Add(uint64(len(b)))
				continue
			}
			if errors.Is(err, transport.ErrTooLarge) {
				continue // counted as lost by the peer
			}
			p.s.mu.Lock()
			if p.live() {
				p.s.log.Debug("datagrams failed", "path", p.id, "transport", p.ep.Transport, "err", err)
			}
			p.dg.failed = true
			p.s.mu.Unlock()
			return
		case <-p.done:
			return
		}
	}
}

// dgReadLoop receives p's datagrams until the connection or the session
// ends. A datagram that does not open is dropped; it does not end the
// path.
func (p *path) dgReadLoop() {
	ctx := p.s.runCtx
	var pt []byte
	defer func() { clear(pt[:cap(pt)]) }()
	for {
		b, err := p.dg.conn.ReceiveDatagram(ctx)
		if err != nil {
			return
		}
		if err := p.s.onDatagram(p, b, &pt); errors.Is(err, errPathClosed) {
			return
		}
	}
}

// extendSerial extends the 32-bit datagram number n to 64 bits, taking
// the value closest to high (never below zero or above the 64-bit range).
func extendSerial(high uint64, n uint32) uint64 {
	d := int64(int32(n - uint32(high)))
	switch {
	case d < 0 && uint64(-d) > high:
		return uint64(n)
	case d < 0:
		return high - uint64(-d)
	case high > ^uint64(0)-uint64(d):
		return high
	}
	return high + uint64(d)
}

// onDatagram handles one datagram received on p.
func (s *Session) onDatagram(p *path, b []byte, ptbuf *[]byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.state == PathDead || s.ended() {
		return errPathClosed
	}
	d := p.dg
	if len(b) < dgHeader+session.Overhead {
		d.bad++
		return nil
	}
	num := extendSerial(d.high, binary.BigEndian.Uint32(b))
	rec := b[dgHeader:]
	p.recordsRecv.Add(1)
	p.bytesRecv.Add(uint64(len(b)))
	counted := func() {
		if d.count(num) {
			s.st.dgRecv++
		}
	}
	err := s.handleRecord(p, rec, ptbuf, counted)
	now := time.Now()
	if err == nil && p.live() && now.Sub(d.reportedAt) >= dgReportEvery {
		// Report at once rather than with the next pong: the sender
		// waits for a first report before it sends media here, and the
		// pong may be stuck behind its own stream's queue.
		if f, ok := p.dgAck(); ok {
			d.reportedAt = now
			s.sendControl(p, f)
		}
	}
	switch {
	case err == nil:
		s.pump(now)
	case s.ended():
		return err
	default:
		d.bad++
	}
	return nil
}

// count records that datagram num arrived and reports whether it is new:
// a number seen before, older than the window, or implausibly far ahead
// (more than dgWindow times 64 above the highest) counts nothing.
func (d *dgPath) count(num uint64) bool {
	switch {
	case num == 0 || num+dgWindow <= d.high || num > d.high+64*dgWindow:
		return false
	case num > d.high:
		for n := d.high + 1; n <= num && n <= d.high+dgWindow; n++ {
			d.seen[n/64%uint64(len(d.seen))] &^= 1 << (n % 64)
		}
		d.high = num
	}
	w, bit := &d.seen[num/64%uint64(len(d.seen))], uint64(1)<<(num%64)
	if *w&bit != 0 {
		return false
	}
	*w |= bit
	d.recv = min(d.recv+1, d.high)
	return true
}

// dgAck returns the report of p's received datagrams if it changed since
// the last one. Called with s.mu held.
func (p *path) dgAck() (frame.Frame, bool) {
	d := p.dg
	if d == nil || d.recv == d.reported {
		return frame.Frame{}, false
	}
	d.reported = d.recv
	pl := frame.DatagramAckPayload{Received: d.recv, Highest: d.high}.Append(nil)
	return frame.Frame{Type: frame.Ack, Payload: pl}, true
}

// onDatagramAck takes the peer's report of the datagrams it received on
// p: the loss since the last sample, once it spans dgLossSample numbers.
// Called with s.mu held.
func (p *path) onDatagramAck(a frame.DatagramAckPayload) {
	d := p.dg
	if d == nil || a.Highest > uint64(d.sent) || a.Highest < d.ackHigh || a.Received < d.ackRecv {
		return // not ours, or older than the last sample
	}
	d.reportAt, d.sentAt = time.Now(), d.sent
	if !d.confirmed {
		// The peer reads this path's datagrams: media may use it. Loss
		// is measured afresh from this report on.
		d.confirmed, d.sampled = true, false
		d.ackHigh, d.ackRecv = a.Highest, a.Received
		return
	}
	dh, dr := a.Highest-d.ackHigh, a.Received-d.ackRecv
	if dh < dgLossSample {
		return
	}
	sample := 1 - float64(min(dr, dh))/float64(dh)
	if !d.sampled {
		d.loss, d.sampled = sample, true // the first sample replaces the estimate
	} else {
		d.loss += dgLossAlpha * (sample - d.loss)
	}
	d.ackHigh, d.ackRecv = a.Highest, a.Received
}

// dgFECAdd gives a sealed datagram record, sent on p, to the datagram
// FEC encoder and sends the parity of any block it closes. Blocks get
// parity only while p shows loss (or with FECAlways). Called with s.mu
// held.
func (s *Session) dgFECAdd(raw []byte, p *path, now time.Time) {
	if d, ok := s.dgEnc.Deadline(); ok && !now.Before(d) {
		// A block past its time closes before raw opens the next, which
		// chooses its parity afresh.
		s.noteDgBlock(s.dgEnc.Pending())
		s.sendDgParity(s.dgEnc.Flush(nil), now)
	}
	if s.dgEnc.Pending() == 0 {
		m := s.dgFECParity(p)
		if m == 0 {
			return
		}
		if err := s.dgEnc.SetParams(dgFECMaxK, m); err != nil {
			return
		}
		s.dgFECPath = p
		s.wakeup() // the timer loop closes the block at its deadline
	}
	before := s.dgEnc.Pending()
	parity, err := s.dgEnc.Add(nil, raw)
	if err != nil {
		return
	}
	if len(parity) > 0 {
		if s.dgEnc.Pending() == 0 {
			before++ // raw completed the block
		}
		s.noteDgBlock(before)
	}
	s.sendDgParity(parity, now)
}

// dgFECParity chooses the parity shards for a block of datagram records
// on p: the fewest that keep a record's chance of being lost and not
// repaired under dgFECTarget at p's measured loss, for the number of
// records a block has held on average (blocks close after dgFECDelay, so
// sparse media makes short blocks). Datagrams are lost one by one, so
// fec's independent-loss model fits them.
func (s *Session) dgFECParity(p *path) int {
	loss := p.dg.loss
	if loss < fecLossFloor {
		if s.cfg.FEC == FECAlways {
			return 1
		}
		return 0
	}
	k := int(math.Round(s.dgBlockRecords))
	k = max(1, min(k, dgFECMaxK))
	for m := 1; m < dgFECMaxM; m++ {
		if fec.Residual(loss, k, m) <= dgFECTarget {
			return m
		}
	}
	return dgFECMaxM
}

// dgFECTarget is the residual media loss datagram FEC aims for: audio and
// video codecs conceal this much.
const dgFECTarget = 0.01

// dgFECMaxM bounds the parity shards of a datagram block.
const dgFECMaxM = 8

// noteDgBlock updates the average number of records per datagram block.
func (s *Session) noteDgBlock(n int) {
	switch {
	case n <= 0:
	case s.dgBlockRecords == 0:
		s.dgBlockRecords = float64(n)
	default:
		s.dgBlockRecords += 0.25 * (float64(n) - s.dgBlockRecords)
	}
}

// sendDgParity seals each parity payload into a record and sends it as a
// datagram on the block's path, or on the best stream path if it does not
// fit. Called with s.mu held.
func (s *Session) sendDgParity(parity [][]byte, now time.Time) {
	for _, pl := range parity {
		pt, err := frame.Append(nil, frame.Frame{Type: frame.FECParity, Payload: pl})
		if err != nil {
			continue
		}
		raw, ok := s.sealPlain(pt)
		if !ok {
			return
		}
		s.st.paritySent++
		if p := s.dgFECPath; p != nil && p.dgUsable() && len(raw) <= p.dg.max+dgParityRoom && s.queueDatagram(p, raw, now) {
			continue
		}
		if p := s.pickBest(len(raw), nil, nil); p != nil {
			p.enqueue(raw)
		}
	}
}

// flushDgFEC closes the open block of datagram records when its time is
// up, and tells at when that is. Called with s.mu held.
func (s *Session) flushDgFEC(now time.Time, at func(time.Time)) {
	d, ok := s.dgEnc.Deadline()
	if !ok {
		return
	}
	if now.Before(d) {
		at(d)
		return
	}
	s.noteDgBlock(s.dgEnc.Pending())
	s.sendDgParity(s.dgEnc.Flush(nil), now)
}
