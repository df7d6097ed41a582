package router

import "time"

// minDwell is how long a best path stays best before a better-scored one
// may replace it (unless it stops being usable).
const minDwell = time.Second

// chooseBest re-evaluates the best path with hysteresis: another usable
// path replaces it only if its score is better by Config.Hysteresis and
// the current one was best for minDwell, or at once if the current one is
// no longer usable (force also skips the dwell time). Called with s.mu
// held.
func (s *Session) chooseBest(now time.Time, force bool) {
	var cand *path
	for _, p := range s.paths {
		if p.usable() && (cand == nil || p.score() < cand.score()) {
			cand = p
		}
	}
	b := s.best
	switch {
	case cand == nil:
		return // keep the last best for reference; nothing is usable
	case b == nil || !b.usable():
	case cand == b:
		return
	case !force && now.Sub(s.bestSince) < minDwell:
		return
	case float64(cand.score()) > float64(b.score())*(1-s.cfg.Hysteresis):
		return
	}
	if b != cand {
		if b != nil {
			s.st.switches++
		}
		s.log.Debug("best path", "path", cand.id, "transport", cand.ep.Transport)
	}
	s.best, s.bestSince = cand, now
}

// room reports whether p can take n more bytes now.
func (s *Session) room(p *path, n int) bool {
	q := p.queued()
	return q == 0 || q+n <= s.cfg.PathQueue
}

// pick chooses the paths for a record of n bytes under scheduler class,
// avoiding avoid where another path can take it. It returns nil when no
// usable path has room. Called with s.mu held.
func (s *Session) pick(class Scheduler, n int, avoid *path) []*path {
	var first, second *path
	switch class {
	case Spread:
		var shards map[*path]int
		if s.cfg.FEC != FECOff && (s.fecM > 0 || s.enc.Pending() > 0) {
			shards = s.fecShards
		}
		if p := s.pickSpread(n, avoid, shards); p != nil {
			return []*path{p}
		}
		return nil
	default:
		first = s.pickBest(n, avoid, nil)
		if first == nil {
			return nil
		}
		if class == Redundant {
			second = s.pickBest(n, nil, first)
		}
	}
	if second == nil {
		return []*path{first}
	}
	return []*path{first, second}
}

// pickBest returns the best usable path other than not, or, if that is
// avoid, the next best; nil if that path has no room (the caller waits:
// the best scheduler keeps to one path).
func (s *Session) pickBest(n int, avoid, not *path) *path {
	ok := func(p *path) bool { return p != nil && p != not && p.usable() }
	cand := s.best
	if !ok(cand) || cand == avoid {
		cand = nil
		for _, p := range s.paths {
			if ok(p) && p != avoid && (cand == nil || p.score() < cand.score()) {
				cand = p
			}
		}
		if cand == nil && ok(avoid) {
			cand = avoid
		}
	}
	if cand == nil || !s.room(cand, n) {
		return nil
	}
	return cand
}

// spreadSlack admits a path to the spread scheduler if its base RTT is
// within twice the fastest path's plus this much.
const spreadSlack = 10 * time.Millisecond

// pickSpread stripes records over the usable paths whose base RTT is close
// to the fastest one's, each in proportion to its measured delivery rate
// (weighted round robin): the path that carried the fewest bytes for its
// rate goes next. With shards set (an FEC block is being built), the path
// holding the fewest shards of the block goes first, so that the block
// survives losing any one path.
func (s *Session) pickSpread(n int, avoid *path, shards map[*path]int) *path {
	var fastest time.Duration = -1
	for _, p := range s.paths {
		if p.usable() {
			if r := p.baseRTT(); fastest < 0 || r < fastest {
				fastest = r
			}
		}
	}
	if fastest < 0 {
		return nil
	}
	limit := 2*fastest + spreadSlack
	var cand *path
	var low float64
	better := func(p *path, v float64) bool {
		if cand == nil {
			return true
		}
		if shards != nil && shards[p] != shards[cand] {
			return shards[p] < shards[cand]
		}
		return v < low
	}
	for _, p := range s.paths {
		if !p.usable() || p == avoid || !s.room(p, n) || p.baseRTT() > limit {
			continue
		}
		if v := p.spreadBytes / p.rateOr(); better(p, v) {
			cand, low = p, v
		}
	}
	if cand == nil {
		if avoid != nil && avoid.usable() && s.room(avoid, n) {
			cand = avoid
		} else {
			return nil
		}
	}
	// A path that joins late starts level with the others.
	for _, p := range s.paths {
		if p.usable() && p.spreadBytes/p.rateOr() < low-1 {
			p.spreadBytes = low * p.rateOr()
		}
	}
	cand.spreadBytes += float64(n)
	return cand
}

// stall marks p stalled and rescues its frames. Called with s.mu held.
func (s *Session) stall(p *path, now time.Time) {
	s.log.Debug("path stalled", "path", p.id, "transport", p.ep.Transport)
	p.state, p.stalledAt = PathStalled, now
	p.stalls++
	p.loss += lossAlpha * (1 - p.loss)
	s.st.stalls++
	s.pathsChanged(now)
}

// unstall makes a stalled path usable again after it showed progress.
// Called with s.mu held.
func (s *Session) unstall(p *path, now time.Time) {
	s.log.Debug("path recovered", "path", p.id, "transport", p.ep.Transport)
	p.state, p.stalledAt = PathActive, time.Time{}
	p.flight = p.flight[:0]
	s.pathsChanged(now)
}
