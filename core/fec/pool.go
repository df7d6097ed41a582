package fec

// bufPool keeps a bounded number of byte buffers a Decoder has finished
// with, so that records and shards do not each cost an allocation. Not safe
// for concurrent use.
type bufPool struct {
	free     [][]byte
	bytes    int // capacity held in free
	maxBytes int
}

// poolScan is how many buffers get looks at before it allocates.
const poolScan = 8

// get returns a buffer of length n, reused if one of the last poolScan
// buffers is large enough. Its contents are undefined.
func (p *bufPool) get(n int) []byte {
	for i := len(p.free) - 1; i >= 0 && i >= len(p.free)-poolScan; i-- {
		if b := p.free[i]; cap(b) >= n {
			last := len(p.free) - 1
			p.free[i] = p.free[last]
			p.free[last] = nil
			p.free = p.free[:last]
			p.bytes -= cap(b)
			return b[:n]
		}
	}
	// Round up so that a buffer fits records of similar sizes later.
	return make([]byte, n, (n+511)&^511)
}

// clone returns a copy of b in a buffer from the pool.
func (p *bufPool) clone(b []byte) []byte {
	c := p.get(len(b))
	copy(c, b)
	return c
}

// put gives b back; it is dropped if the pool is full. The caller must not
// use b afterwards.
func (p *bufPool) put(b []byte) {
	if b == nil || p.bytes+cap(b) > p.maxBytes {
		return
	}
	p.free = append(p.free, b)
	p.bytes += cap(b)
}
