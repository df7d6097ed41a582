package router

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/commucat/commucat/core/handshake"
)

// errUnconfirmed ends a gateway session whose only path died before the
// client sent a record: a client that lost a race of handshakes.
var errUnconfirmed = errors.New("router: path closed before the client confirmed the session")

// rateInterval is how often a path's delivery rate is sampled.
const rateInterval = 250 * time.Millisecond

// rateAlpha is the weight of one rate sample.
const rateAlpha = 0.25

// loop runs the timers until the session ends or ctx does.
func (s *Session) loop(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.mu.Lock()
			s.closeLocked()
			s.mu.Unlock()
			return
		case <-s.done:
			return
		case <-t.C:
		case <-s.kick:
		}
		s.mu.Lock()
		next := s.tick(time.Now())
		s.mu.Unlock()
		t.Reset(max(time.Until(next), time.Millisecond))
	}
}

// tick does what is due at now and returns when it should run next.
// Called with s.mu held.
func (s *Session) tick(now time.Time) time.Time {
	next := now.Add(time.Second)
	at := func(t time.Time) {
		if !t.IsZero() && t.Before(next) {
			next = t
		}
	}
	if s.ended() {
		return next
	}
	if s.ackDue {
		if !now.Before(s.ackAt) {
			s.sendAck(now)
		} else {
			at(s.ackAt)
		}
	}
	for _, p := range slices.Clone(s.paths) {
		if p.live() {
			s.tickPath(p, now, at)
		}
	}
	s.chooseBest(now, false)
	var retx []*out
	for _, o := range s.outq {
		if o.acked || o.queued || o.nsend == 0 {
			continue
		}
		if !now.Before(o.due) {
			o.queued = true
			retx = append(retx, o)
		} else {
			at(o.due)
		}
	}
	if len(retx) > 0 {
		s.requeue(retx)
	}
	if d, ok := s.enc.Deadline(); ok {
		if !now.Before(d) {
			s.noteBlock(s.enc.Pending())
			s.sendParity(s.enc.Flush(nil), now)
			_, s.fecM = s.fecParams()
		} else {
			at(d)
		}
	}
	s.flushDgFEC(now, at)
	if s.fecActive(now) {
		s.dec.Expire()
	}
	s.pump(now)
	if !s.hasUsable() {
		if s.detached.IsZero() {
			s.detached = now
		}
		if s.role == Gateway && !s.anyPath() && !s.isConfirmed() {
			s.end(errUnconfirmed)
			return next
		}
		dl := s.detached.Add(s.cfg.ResumeWindow)
		if !now.Before(dl) {
			s.end(fmt.Errorf("%w (%s)", ErrResumeExpired, s.cfg.ResumeWindow))
			return next
		}
		at(dl)
	}
	if s.role == Client {
		s.manage(now, at)
	}
	return next
}

func (s *Session) isConfirmed() bool {
	select {
	case <-s.confirmed:
		return true
	default:
		return false
	}
}

// tickPath runs p's timers: join timeout, stall detection, path timeout,
// pings and rate sampling. Called with s.mu held.
func (s *Session) tickPath(p *path, now time.Time, at func(time.Time)) {
	switch p.state {
	case PathJoining, PathUnverified:
		dl := p.opened.Add(s.cfg.JoinTimeout)
		if !now.Before(dl) {
			s.log.Debug("join timed out", "path", p.id, "transport", p.ep.Transport)
			s.closePath(p)
			s.pathsChanged(now)
			return
		}
		at(dl)
		if p.state == PathJoining {
			return
		}
	}
	for len(p.flight) > 0 {
		if o := s.lookup(p.flight[0].seq); o != nil && !o.acked {
			break
		}
		p.flight = p.flight[1:]
	}
	if len(p.flight) == 0 {
		p.flight = nil
	}
	threshold := p.stallAfter(s.cfg.StallFloor)
	if p.state == PathActive {
		oldest := p.oldestPing()
		if len(p.flight) > 0 && (oldest.IsZero() || p.flight[0].at.Before(oldest)) {
			oldest = p.flight[0].at
		}
		if !oldest.IsZero() {
			ref := oldest
			if p.lastProgress.After(ref) {
				ref = p.lastProgress
			}
			if dl := ref.Add(threshold); !now.Before(dl) {
				s.stall(p, now)
			} else {
				at(dl)
			}
		}
	}
	if p.state == PathStalled {
		dl := p.stalledAt.Add(s.cfg.PathTimeout)
		if !now.Before(dl) {
			s.log.Debug("stalled path timed out", "path", p.id, "transport", p.ep.Transport)
			s.closePath(p)
			s.pathsChanged(now)
			return
		}
		at(dl)
	}
	s.tickDatagrams(p, now, at)
	interval := s.cfg.KeepAlive
	busy := !p.lastData.IsZero() && now.Sub(p.lastData) < 2*time.Second ||
		p.dg != nil && !p.dg.lastSent.IsZero() && now.Sub(p.dg.lastSent) < 2*time.Second
	if busy || p.state != PathActive {
		srtt, _ := p.rtt()
		interval = min(interval, max(100*time.Millisecond, min(2*srtt, time.Second)))
		if p.state == PathStalled {
			interval = min(interval, threshold)
		}
	}
	if !now.Before(p.nextPing) {
		s.sendControl(p, p.ping(now))
		p.nextPing = now.Add(interval)
	} else if p.nextPing.After(now.Add(interval)) {
		p.nextPing = now.Add(interval) // traffic started: ping sooner
	}
	at(p.nextPing)
	if dt := now.Sub(p.rateAt); dt >= rateInterval {
		if d := p.acked - p.rateBase; d > 0 {
			sample := float64(d) / dt.Seconds()
			if p.rate == 0 {
				p.rate = sample
			} else if sample > p.rate || len(p.flight) > 0 {
				// A path that was idle part of the interval says
				// nothing about its capacity, unless it had frames
				// waiting.
				p.rate += rateAlpha * (sample - p.rate)
			}
		}
		p.rateAt, p.rateBase = now, p.acked
	}
	at(p.rateAt.Add(rateInterval))
}

// backoff is the wait before the next attempt at an endpoint that failed
// fails times in a row: none after the first failure, then RedialMin
// doubling up to RedialMax.
func (s *Session) backoff(fails int) time.Duration {
	if fails <= 0 {
		return 0
	}
	d := s.cfg.RedialMin
	for i := 1; i < fails && d < s.cfg.RedialMax; i++ {
		d *= 2
	}
	return min(d, s.cfg.RedialMax)
}

// manage keeps up to MaxPaths paths open on the client: it dials the
// endpoints that are free and out of backoff, in order of preference.
// Called with s.mu held.
func (s *Session) manage(now time.Time, at func(time.Time)) {
	if s.closing || s.state != stateRunning {
		return
	}
	// An endpoint is busy from its dial until its path dies: count those,
	// so that dials still in progress count against MaxPaths too.
	live := 0
	for _, p := range s.paths {
		if p.live() && (p.dialer < 0 || p.dialer >= len(s.eps)) {
			live++
		}
	}
	for _, e := range s.eps {
		if e.busy {
			live++
		}
	}
	for _, i := range s.dialOrder(now, at) {
		if live >= s.cfg.MaxPaths {
			return
		}
		e := &s.eps[i]
		if e.busy {
			continue
		}
		if now.Before(e.next) {
			at(e.next)
			continue
		}
		e.busy = true
		live++
		s.wg.Go(func() { s.dialJoin(i) })
	}
}

// dialJoin dials endpoint i and joins the connection to the session as a
// new path: it writes a join message and waits, as PathJoining, for the
// gateway's confirmation record.
func (s *Session) dialJoin(i int) {
	ep := s.cfg.Endpoints[i]
	ctx, cancel := context.WithTimeout(s.runCtx, s.cfg.JoinTimeout)
	defer cancel()
	fail := func(err error) {
		s.mu.Lock()
		e := &s.eps[i]
		e.busy = false
		e.next = time.Now().Add(s.backoff(e.fails + 1))
		e.fails++
		s.log.Debug("join failed", "transport", ep.Transport, "addr", s.addr(ep), "err", err)
		s.wakeup()
		s.mu.Unlock()
		s.onPathFailure(ep)
	}
	conn, err := ep.Dial(ctx)
	if err != nil {
		fail(err)
		return
	}
	s.mu.Lock()
	if s.ended() || s.state != stateRunning {
		s.eps[i].busy = false
		s.mu.Unlock()
		conn.Close()
		return
	}
	index := s.nextJoin
	s.nextJoin++
	tok := token(&s.joinKey, index)
	pad := 0
	if s.cfg.PadHandshake != nil {
		pad = s.cfg.PadHandshake(1, TokenSize)
	}
	s.mu.Unlock()
	body, err := AppendJoinMessage(nil, tok, pad)
	if err == nil {
		if dl, ok := ctx.Deadline(); ok {
			conn.SetWriteDeadline(dl)
		}
		err = handshake.WriteMessage(conn, body)
		conn.SetWriteDeadline(time.Time{})
	}
	clear(body)
	if err != nil {
		conn.Close()
		fail(err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended() || s.state != stateRunning {
		s.eps[i].busy = false
		conn.Close()
		return
	}
	p := s.newPath(conn, ep, PathJoining, i)
	p.joinIndex, p.wroteJoin = index, true
}

// addr is ep's address as logs may show it.
func (s *Session) addr(ep Endpoint) string {
	if s.cfg.UnsafeLogging {
		return ep.Addr
	}
	return "[scrubbed]"
}
