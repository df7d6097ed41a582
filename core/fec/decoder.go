package fec

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sync/atomic"
	"time"
)

// Decoder defaults; a zero DecoderConfig field means these.
const (
	// DefaultTimeout is how long a Decoder keeps a block or an unclaimed
	// data record.
	DefaultTimeout = time.Second
	// DefaultMaxBlocks is how many blocks a Decoder tracks at once,
	// finished ones included.
	DefaultMaxBlocks = 256
	// DefaultMaxRecords is how many data records not yet claimed by a
	// block (their parity has not arrived) a Decoder keeps.
	DefaultMaxRecords = 4096
	// DefaultMaxBytes bounds the shard and record bytes a Decoder holds.
	DefaultMaxBytes = 8 << 20
	// DefaultWindow is how far, in sequence numbers, a block or record may
	// lie behind the newest block before it is dropped: the session's
	// replay window (session.ReplayWindow), since a repaired record older
	// than that would be refused by Open anyway.
	DefaultWindow = replayWindow
)

// maxPoolBytes bounds the buffers a Decoder keeps for reuse, on top of
// MaxBytes.
const maxPoolBytes = 1 << 20

// DecoderConfig configures a Decoder. The zero value is the default.
type DecoderConfig struct {
	// Timeout is how long a block or an unclaimed data record is kept.
	// If zero, DefaultTimeout.
	Timeout time.Duration
	// MaxBlocks bounds the blocks tracked at once. If zero,
	// DefaultMaxBlocks.
	MaxBlocks int
	// MaxRecords bounds the data records kept before their block's parity
	// arrives. If zero, DefaultMaxRecords.
	MaxRecords int
	// MaxBytes bounds the bytes of records and shards held. It must be at
	// least MaxShard. If zero, DefaultMaxBytes.
	MaxBytes int
	// Window is how far behind the newest block's last seq a block or an
	// unclaimed record may be. If zero, DefaultWindow.
	Window uint64
}

// Validate reports whether c is usable.
func (c DecoderConfig) Validate() error {
	switch {
	case c.Timeout < 0:
		return fmt.Errorf("fec: decoder timeout %v is negative", c.Timeout)
	case c.MaxBlocks < 0:
		return fmt.Errorf("fec: decoder max blocks %d is negative", c.MaxBlocks)
	case c.MaxRecords < 0:
		return fmt.Errorf("fec: decoder max records %d is negative", c.MaxRecords)
	case c.MaxBytes != 0 && c.MaxBytes < MaxShard:
		return fmt.Errorf("fec: decoder max bytes %d (min %d)", c.MaxBytes, MaxShard)
	}
	return nil
}

// DecoderStats are a Decoder's counters since it was made.
type DecoderStats struct {
	// Parity is how many parity payloads AddParity accepted; Malformed how
	// many it refused (ErrMalformed or ErrConflict).
	Parity, Malformed uint64
	// Blocks is how many blocks the Decoder learned of (from their first
	// parity shard).
	Blocks uint64
	// Complete is how many blocks had every data record arrive, so needed
	// no repair.
	Complete uint64
	// RepairedBlocks is how many blocks were rebuilt, Repaired how many
	// data records they gave back.
	RepairedBlocks, Repaired uint64
	// Corrupt is how many rebuilt records were dropped because their
	// length field, seq or padding was wrong (a forged or damaged shard).
	Corrupt uint64
	// Unrecoverable is how many blocks left (timeout, window, limits)
	// with data records missing and fewer than k shards; Lost how many
	// data records those blocks were missing.
	Unrecoverable, Lost uint64
	// Dropped is how many data records were dropped unclaimed: their
	// block's parity never came, or came too late.
	Dropped uint64
}

type decoderCounters struct {
	parity, malformed, blocks, complete, repairedBlocks, repaired,
	corrupt, unrecoverable, lost, dropped atomic.Uint64
}

// block is one FEC block a Decoder is collecting.
type block struct {
	id       uint64
	k, m     int
	shardLen int
	seqs     []uint64
	shards   [][]byte // k+m; nil when missing; data shards unpadded
	have     int      // shards present
	haveData int      // data shards present
	bytes    int      // bytes held in shards
	created  time.Time
	done     bool // complete or repaired; only remembered to ignore late shards
}

func (b *block) last() uint64 { return b.seqs[len(b.seqs)-1] }

// index returns the data shard index of seq, or -1.
func (b *block) index(seq uint64) int {
	i, ok := slices.BinarySearch(b.seqs, seq)
	if !ok {
		return -1
	}
	return i
}

// unclaimed is a data record whose block the Decoder does not know yet.
type unclaimed struct {
	seq uint64
	rec []byte
	at  time.Time
}

// Decoder rebuilds lost sealed records from the records and parity shards
// that did arrive. The caller gives it every sealed data record of an
// FEC-protected flow (AddRecord) and every FECParity payload (AddParity),
// in any order and with duplicates, and opens the repaired records they
// return with session.Opener. It holds bounded memory (DecoderConfig),
// forgets blocks after Timeout or when the window moves past them, never
// panics on any input and starts no goroutines. Time advances only inside
// its methods: callers that may go quiet call Expire from a timer.
//
// Data records are not authenticated when they reach the Decoder, so a
// forged record with a seq of a block would spoil that block's repair
// (the repaired records then fail Open: denial of service, not forgery).
// Callers that open records out of place can feed AddRecord only records
// that opened.
//
// A Decoder is not safe for concurrent use, except Stats.
type Decoder struct {
	timeout    time.Duration
	maxBlocks  int
	maxRecords int
	maxBytes   int
	window     uint64
	codes      codes
	pool       bufPool

	blocks     map[uint64]*block // by first seq
	blockOrder []*block          // oldest first; may hold forgotten blocks
	bySeq      map[uint64]*block // data seq -> its block
	pending    map[uint64]*unclaimed
	pendOrder  []*unclaimed // oldest first; may hold forgotten records
	used       int          // bytes held
	newest     uint64       // last seq of the newest block (from parity)
	seqBuf     []uint64
	stats      decoderCounters
}

// NewDecoder returns a Decoder for cfg.
func NewDecoder(cfg DecoderConfig) (*Decoder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Decoder{
		timeout:    cmpOr(cfg.Timeout, DefaultTimeout),
		maxBlocks:  cmpOr(cfg.MaxBlocks, DefaultMaxBlocks),
		maxRecords: cmpOr(cfg.MaxRecords, DefaultMaxRecords),
		maxBytes:   cmpOr(cfg.MaxBytes, DefaultMaxBytes),
		window:     cmpOr(cfg.Window, DefaultWindow),
		blocks:     make(map[uint64]*block),
		bySeq:      make(map[uint64]*block),
		pending:    make(map[uint64]*unclaimed),
		pool:       bufPool{maxBytes: min(cmpOr(cfg.MaxBytes, DefaultMaxBytes)/4, maxPoolBytes)},
	}, nil
}

// AddRecord takes one received sealed record (length field included) and
// appends to dst any records its arrival let the Decoder rebuild. The
// Decoder keeps a copy of rec until its block is complete or expires;
// bytes that are not a whole record, or longer than MaxShard, are ignored.
func (d *Decoder) AddRecord(dst [][]byte, rec []byte) [][]byte {
	seq, err := recordSeq(rec)
	if err != nil || len(rec) > MaxShard {
		return dst
	}
	now := time.Now()
	d.expire(now)
	if d.tooOld(seq) {
		return dst
	}
	if b := d.bySeq[seq]; b != nil {
		if b.done {
			return dst
		}
		i := b.index(seq)
		if b.shards[i] != nil || len(rec) > b.shardLen || !d.makeRoom(len(rec)) || !d.live(b) {
			return dst
		}
		d.store(b, i, d.pool.clone(rec))
		return d.try(dst, b)
	}
	if _, ok := d.pending[seq]; ok {
		return dst
	}
	for len(d.pending) >= d.maxRecords && d.dropOldestRecord() {
	}
	if len(d.pending) >= d.maxRecords || !d.makeRoom(len(rec)) {
		return dst
	}
	u := &unclaimed{seq: seq, rec: d.pool.clone(rec), at: now}
	d.pending[seq] = u
	d.pendOrder = append(d.pendOrder, u)
	d.used += len(rec)
	d.compact()
	return dst
}

// AddParity takes one FECParity payload (it must come from a record that
// opened) and appends to dst any records it let the Decoder rebuild. It
// fails with ErrMalformed for a payload that does not decode and
// ErrConflict for one that disagrees with an earlier shard of its block;
// late shards of finished or expired blocks are ignored without error.
// The Decoder copies what it keeps.
func (d *Decoder) AddParity(dst [][]byte, payload []byte) ([][]byte, error) {
	h, shard, err := parseParity(payload, d.seqBuf)
	if h.seqs != nil {
		d.seqBuf = h.seqs[:0]
	}
	if err != nil {
		d.stats.malformed.Add(1)
		return dst, err
	}
	now := time.Now()
	d.expire(now)
	first, last := h.seqs[0], h.seqs[len(h.seqs)-1]
	if d.tooOld(last) {
		return dst, nil
	}
	b := d.blocks[first]
	if b == nil {
		for _, s := range h.seqs {
			if d.bySeq[s] != nil {
				d.stats.malformed.Add(1)
				return dst, fmt.Errorf("%w: seq %d already in another block", ErrConflict, s)
			}
		}
		if b = d.newBlock(&h, now); b == nil {
			return dst, nil
		}
		d.expire(now) // the window may have moved
	} else if b.id != h.block || b.k != h.k || b.m != h.m || b.shardLen != h.shardLen || !slices.Equal(b.seqs, h.seqs) {
		d.stats.malformed.Add(1)
		return dst, fmt.Errorf("%w: block at seq %d", ErrConflict, first)
	}
	d.stats.parity.Add(1)
	if b.done || b.shards[h.index] != nil || !d.makeRoom(len(shard)) || !d.live(b) {
		return dst, nil
	}
	d.store(b, h.index, d.pool.clone(shard))
	return d.try(dst, b), nil
}

// newBlock starts tracking the block h describes and claims its pending
// data records. It returns nil if there is no room.
func (d *Decoder) newBlock(h *header, now time.Time) *block {
	for len(d.blocks) >= d.maxBlocks && d.dropOldestBlock() {
	}
	if len(d.blocks) >= d.maxBlocks {
		return nil
	}
	b := &block{
		id: h.block, k: h.k, m: h.m, shardLen: h.shardLen,
		seqs:    slices.Clone(h.seqs),
		shards:  make([][]byte, h.k+h.m),
		created: now,
	}
	d.blocks[b.seqs[0]] = b
	d.blockOrder = append(d.blockOrder, b)
	for i, s := range b.seqs {
		d.bySeq[s] = b
		if u := d.pending[s]; u != nil {
			delete(d.pending, s)
			d.used -= len(u.rec)
			if len(u.rec) <= b.shardLen {
				d.store(b, i, u.rec)
			} else {
				d.pool.put(u.rec)
			}
		}
	}
	d.newest = max(d.newest, b.last())
	d.stats.blocks.Add(1)
	d.compact()
	return b
}

// live reports whether b is tracked and unfinished: making room may have
// dropped it.
func (d *Decoder) live(b *block) bool { return d.blocks[b.seqs[0]] == b && !b.done }

// store puts shard i of b in place; the caller checked it is missing and
// made room.
func (d *Decoder) store(b *block, i int, s []byte) {
	b.shards[i] = s
	b.have++
	if i < b.k {
		b.haveData++
	}
	b.bytes += len(s)
	d.used += len(s)
}

// try finishes b if every data record is there, or rebuilds the missing
// ones once k shards are there, appending rebuilt records to dst.
func (d *Decoder) try(dst [][]byte, b *block) [][]byte {
	switch {
	case b.haveData == b.k:
		d.stats.complete.Add(1)
		d.finish(b)
		return dst
	case b.have < b.k:
		return dst
	}
	code, err := d.codes.get(b.k, b.m)
	if err != nil {
		return dst
	}
	missing := make([]bool, b.k)
	for i := range b.k {
		missing[i] = b.shards[i] == nil
		if missing[i] {
			// Empty with room: the code rebuilds into it.
			b.shards[i] = d.pool.get(b.shardLen)[:0]
			continue
		}
		if s := b.shards[i]; len(s) < b.shardLen {
			// Pad the record with zeros: it is stored unpadded.
			n := len(s)
			if cap(s) < b.shardLen {
				s = d.pool.get(b.shardLen)
				copy(s, b.shards[i])
				d.pool.put(b.shards[i])
			}
			s = s[:b.shardLen]
			clear(s[n:])
			b.shards[i] = s
		}
	}
	if err := code.ReconstructData(b.shards); err != nil {
		// Cannot happen with k equal-length shards present; forget the
		// block rather than retry on every shard.
		d.finish(b)
		return dst
	}
	d.stats.repairedBlocks.Add(1)
	for i, miss := range missing {
		if !miss {
			continue
		}
		s := b.shards[i]
		n := int(s[0])<<16 | int(s[1])<<8 | int(s[2]) + recordLengthSize
		if n < recordOverhead || n > len(s) || binary.BigEndian.Uint64(s[4:recordHeaderSize]) != b.seqs[i] || !zero(s[n:]) {
			d.stats.corrupt.Add(1)
			continue
		}
		d.stats.repaired.Add(1)
		dst = append(dst, s[:n:n])
		b.shards[i] = nil // the caller owns it now
	}
	d.finish(b)
	return dst
}

func zero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// finish releases b's shards; b stays known so that late shards of it are
// ignored, until it expires.
func (d *Decoder) finish(b *block) {
	for _, s := range b.shards {
		d.pool.put(s)
	}
	b.done = true
	d.used -= b.bytes
	b.bytes, b.shards = 0, nil
}

// drop forgets b entirely, counting it as unrecoverable if it was not
// finished.
func (d *Decoder) drop(b *block) {
	if !b.done {
		d.stats.unrecoverable.Add(1)
		d.stats.lost.Add(uint64(b.k - b.haveData))
		d.finish(b)
	}
	for _, s := range b.seqs {
		if d.bySeq[s] == b {
			delete(d.bySeq, s)
		}
	}
	delete(d.blocks, b.seqs[0])
}

// dropOldestBlock drops the oldest tracked block; false if there is none.
func (d *Decoder) dropOldestBlock() bool {
	for len(d.blockOrder) > 0 {
		b := d.blockOrder[0]
		d.blockOrder[0] = nil
		d.blockOrder = d.blockOrder[1:]
		if d.blocks[b.seqs[0]] == b {
			d.drop(b)
			return true
		}
	}
	return false
}

// dropOldestRecord drops the oldest unclaimed record; false if there is
// none.
func (d *Decoder) dropOldestRecord() bool {
	for len(d.pendOrder) > 0 {
		u := d.pendOrder[0]
		d.pendOrder[0] = nil
		d.pendOrder = d.pendOrder[1:]
		if d.pending[u.seq] == u {
			d.dropRecord(u)
			return true
		}
	}
	return false
}

func (d *Decoder) dropRecord(u *unclaimed) {
	delete(d.pending, u.seq)
	d.used -= len(u.rec)
	d.pool.put(u.rec)
	d.stats.dropped.Add(1)
}

// compact removes forgotten entries from the order lists so that each
// stays within twice what it refers to.
func (d *Decoder) compact() {
	if len(d.pendOrder) > 2*len(d.pending)+64 {
		d.pendOrder = slices.DeleteFunc(d.pendOrder, func(u *unclaimed) bool { return d.pending[u.seq] != u })
	}
	if len(d.blockOrder) > 2*len(d.blocks)+64 {
		d.blockOrder = slices.DeleteFunc(d.blockOrder, func(b *block) bool { return d.blocks[b.seqs[0]] != b })
	}
}

// makeRoom frees bytes, oldest first, until n more fit. It reports false
// if n cannot fit.
func (d *Decoder) makeRoom(n int) bool {
	if n > d.maxBytes {
		return false
	}
	for d.used+n > d.maxBytes {
		ob, or := d.oldestLiveBlock(), d.oldestRecord()
		switch {
		case ob == nil && or == nil:
			return false
		case ob == nil || (or != nil && !or.at.After(ob.created)):
			d.dropRecord(or)
		default:
			d.drop(ob)
		}
	}
	return true
}

// oldestLiveBlock returns the oldest block still holding bytes.
func (d *Decoder) oldestLiveBlock() *block {
	for _, b := range d.blockOrder {
		if d.blocks[b.seqs[0]] == b && b.bytes > 0 {
			return b
		}
	}
	return nil
}

// oldestRecord returns the oldest unclaimed record.
func (d *Decoder) oldestRecord() *unclaimed {
	for _, u := range d.pendOrder {
		if d.pending[u.seq] == u {
			return u
		}
	}
	return nil
}

// tooOld reports whether seq is behind the window.
func (d *Decoder) tooOld(seq uint64) bool {
	return d.newest > d.window && seq < d.newest-d.window
}

// Expire forgets blocks and records older than Timeout or behind the
// window, counting unfinished blocks as unrecoverable. AddRecord and
// AddParity call it; a caller calls it from a timer when traffic may stop.
func (d *Decoder) Expire() { d.expire(time.Now()) }

func (d *Decoder) expire(now time.Time) {
	for len(d.blockOrder) > 0 {
		b := d.blockOrder[0]
		tracked := d.blocks[b.seqs[0]] == b
		if tracked && now.Sub(b.created) < d.timeout && !d.tooOld(b.last()) {
			break
		}
		d.blockOrder[0] = nil
		d.blockOrder = d.blockOrder[1:]
		if tracked {
			d.drop(b)
		}
	}
	for len(d.pendOrder) > 0 {
		u := d.pendOrder[0]
		tracked := d.pending[u.seq] == u
		if tracked && now.Sub(u.at) < d.timeout && !d.tooOld(u.seq) {
			break
		}
		d.pendOrder[0] = nil
		d.pendOrder = d.pendOrder[1:]
		if tracked {
			d.dropRecord(u)
		}
	}
}

// InFlight returns how many blocks and unclaimed records the Decoder holds
// and their bytes.
func (d *Decoder) InFlight() (blocks, records, bytes int) {
	return len(d.blocks), len(d.pending), d.used
}

// Stats returns the Decoder's counters. It is safe for concurrent use.
func (d *Decoder) Stats() DecoderStats {
	c := &d.stats
	return DecoderStats{
		Parity:         c.parity.Load(),
		Malformed:      c.malformed.Load(),
		Blocks:         c.blocks.Load(),
		Complete:       c.complete.Load(),
		RepairedBlocks: c.repairedBlocks.Load(),
		Repaired:       c.repaired.Load(),
		Corrupt:        c.corrupt.Load(),
		Unrecoverable:  c.unrecoverable.Load(),
		Lost:           c.lost.Load(),
		Dropped:        c.dropped.Load(),
	}
}
