package router

import "time"

// counters are a session's counters, guarded by s.mu.
type counters struct {
	framesSent, framesRecv, retransmits, dups, beyond, dropped uint64
	overtaken                                                  uint64
	recordsSent, replays, acksSent                             uint64
	paritySent, repaired                                       uint64
	stalls, switches, joins, refused, resumes                  uint64
	sched                                                      [4]uint64
	dgSent, dgRecv                                             uint64
}

// Stats are a session's counters and its paths' live metrics.
type Stats struct {
	// FramesSent and FramesReceived count application frames (reliable
	// ones once, however often they were sent or received).
	FramesSent, FramesReceived uint64
	// Retransmits counts reliable frames sent again (after a path died or
	// stalled, a frame sent later on another path overtook them, or a
	// retransmission timeout); Overtaken counts the frames presumed lost
	// because a later one was acknowledged first.
	Retransmits, Overtaken uint64
	// Duplicates counts reliable frames received again and dropped;
	// Beyond those dropped because they were beyond the window.
	Duplicates, Beyond uint64
	// Dropped counts unreliable frames dropped (no path, full queue).
	Dropped uint64
	// RecordsSent counts sealed records; Replays records received again
	// (a redundant copy, or the original of a repaired record) and
	// dropped by the replay window; AcksSent acknowledgement frames.
	RecordsSent, Replays, AcksSent uint64
	// Best, Redundant and Spread count records placed by each scheduler.
	Best, Redundant, Spread uint64
	// ParitySent counts FEC parity records; Repaired records rebuilt from
	// parity.
	ParitySent, Repaired uint64
	// Stalls counts paths that stalled; Switches changes of the best path.
	Stalls, Switches uint64
	// Joins counts paths joined after the first; Refused joins the
	// gateway refused; Resumes times the session came back after every
	// path had died.
	Joins, Refused, Resumes uint64
	// DatagramsSent and DatagramsReceived count records sent and
	// received as datagrams (unreliable frames and their parity).
	DatagramsSent, DatagramsReceived uint64
	// Unacked is how many reliable frames wait for acknowledgement.
	Unacked int
	// Paths are the live paths and the last few dead ones.
	Paths []PathStats
}

// PathStats are one path's live metrics.
type PathStats struct {
	ID        uint64
	Transport string
	// Addr is the endpoint's address.
	Addr  string
	State PathState
	// Best reports whether the scheduler's best path is this one.
	Best bool
	// SRTT and RTTVar are the smoothed RTT and its variance from pings on
	// this path (zero before the first pong).
	SRTT, RTTVar time.Duration
	// Rate is the delivery rate in bytes per second (acknowledged bytes
	// of frames only this path carried), zero until measured.
	Rate float64
	// Loss is the share of late or missing pongs (moving average).
	Loss float64
	// Score is the scheduler's estimate of a small record's delivery
	// time; lower is better.
	Score time.Duration
	// Queued is how many bytes wait to be written.
	Queued int
	// Records and bytes on the wire, both directions.
	RecordsSent, RecordsReceived, BytesSent, BytesReceived uint64
	// Best, Redundant and Spread count records each scheduler put here.
	ScheduledBest, ScheduledRedundant, ScheduledSpread uint64
	// Datagrams reports whether unreliable frames go as datagrams on the
	// path: this side sends them, and the peer confirmed it reads them.
	Datagrams bool
	// DatagramsSent and DatagramsReceived count its datagrams;
	// DatagramsMissing is how many numbers below the highest received
	// never arrived; DatagramLoss is the share of this side's datagrams
	// the peer reports lost (moving average).
	DatagramsSent, DatagramsReceived, DatagramsMissing uint64
	DatagramLoss                                       float64
	// Stalls counts how often the path stalled.
	Stalls uint64
	// Opened is when the path was added.
	Opened time.Time
}

// Stats returns the session's counters and path metrics.
func (s *Session) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := &s.st
	st := Stats{
		FramesSent: c.framesSent, FramesReceived: c.framesRecv,
		Retransmits: c.retransmits, Overtaken: c.overtaken, Duplicates: c.dups, Beyond: c.beyond, Dropped: c.dropped,
		RecordsSent: c.recordsSent, Replays: c.replays, AcksSent: c.acksSent,
		Best: c.sched[Best], Redundant: c.sched[Redundant], Spread: c.sched[Spread],
		ParitySent: c.paritySent, Repaired: c.repaired,
		Stalls: c.stalls, Switches: c.switches,
		Joins: c.joins, Refused: c.refused, Resumes: c.resumes,
		DatagramsSent: c.dgSent, DatagramsReceived: c.dgRecv,
	}
	for _, o := range s.outq {
		if !o.acked {
			st.Unacked++
		}
	}
	for _, p := range s.paths {
		ps := PathStats{
			ID: p.id, Transport: p.ep.Transport, Addr: p.ep.Addr, State: p.state,
			Best: p == s.best && p.usable(),
			Rate: p.rate, Loss: p.loss, Score: p.score(), Queued: p.queued(),
			RecordsSent: p.recordsSent.Load(), RecordsReceived: p.recordsRecv.Load(),
			BytesSent: p.bytesSent.Load(), BytesReceived: p.bytesRecv.Load(),
			ScheduledBest: p.sched[Best], ScheduledRedundant: p.sched[Redundant], ScheduledSpread: p.sched[Spread],
			Stalls: p.stalls, Opened: p.opened,
		}
		if p.hasRTT {
			ps.SRTT, ps.RTTVar = p.srtt, p.rttvar
		}
		if d := p.dg; d != nil {
			ps.Datagrams = d.send && d.confirmed && !d.failed
			ps.DatagramsSent, ps.DatagramsReceived = d.sent, d.recv
			ps.DatagramsMissing, ps.DatagramLoss = d.high-d.recv, d.loss
		}
		st.Paths = append(st.Paths, ps)
	}
	return st
}
