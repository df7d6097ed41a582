package session

// The replay window is WireGuard's (RFC 6479 style): a ring of 64-bit
// blocks, one bit per sequence number. Moving the window forward clears
// whole blocks, so a check costs O(1) except after a long jump.
const (
	blockBits  = 64
	ringBlocks = 128
	// ReplayWindow is how far behind the highest sequence number seen a
	// record may still arrive: a record with seq >= highest-ReplayWindow
	// is accepted once.
	ReplayWindow = (ringBlocks - 1) * blockBits
)

// window remembers which recent sequence numbers were seen. Its zero value
// has seen nothing.
type window struct {
	last uint64 // highest sequence number seen
	ring [ringBlocks]uint64
}

// check reports whether seq is new and within the window, and marks it as
// seen if so.
func (w *window) check(seq uint64) bool {
	block := seq / blockBits
	if seq > w.last {
		cur := w.last / blockBits
		diff := min(block-cur, ringBlocks)
		for i := cur + 1; i <= cur+diff; i++ {
			w.ring[i%ringBlocks] = 0
		}
		w.last = seq
	} else if w.tooOld(seq) {
		return false
	}
	i, bit := block%ringBlocks, uint64(1)<<(seq%blockBits)
	if w.ring[i]&bit != 0 {
		return false
	}
	w.ring[i] |= bit
	return true
}

// tooOld reports whether seq is behind the window.
func (w *window) tooOld(seq uint64) bool {
	return seq < w.last && w.last-seq > ReplayWindow
}
