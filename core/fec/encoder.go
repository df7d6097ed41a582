package fec

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"sync/atomic"
	"time"
)

// Encoder defaults; a zero EncoderConfig field means these.
const (
	// DefaultK is the number of data records per block.
	DefaultK = 10
	// DefaultM is the number of parity shards per block.
	DefaultM = 3
	// DefaultMaxDelay is how long an open block waits for more records
	// before it should be closed (see Encoder.Deadline).
	DefaultMaxDelay = 20 * time.Millisecond
	// DefaultMaxBlockBytes bounds the padded size of one block's data
	// shards, so the memory an Encoder holds.
	DefaultMaxBlockBytes = 1 << 20
)

// EncoderConfig configures an Encoder. The zero value is the default.
type EncoderConfig struct {
	// K is the number of data records per block, 1..MaxK. If zero,
	// DefaultK.
	K int
	// M is the number of parity shards per block, 1..MaxM. If zero,
	// DefaultM. SetParams can turn parity off (m = 0).
	M int
	// MaxDelay is how long a block may stay open waiting for K records.
	// If zero, DefaultMaxDelay.
	MaxDelay time.Duration
	// MaxBlockBytes bounds k' times the shard length of a block: a record
	// that would take the block over it closes the block first. A block
	// always takes at least one record. If zero, DefaultMaxBlockBytes.
	MaxBlockBytes int
}

// Validate reports whether c is usable.
func (c EncoderConfig) Validate() error {
	switch {
	case c.K < 0 || c.K > MaxK:
		return fmt.Errorf("fec: encoder k = %d (want 1..%d, or 0 for %d)", c.K, MaxK, DefaultK)
	case c.M < 0 || c.M > MaxM:
		return fmt.Errorf("fec: encoder m = %d (want 1..%d, or 0 for %d)", c.M, MaxM, DefaultM)
	case c.MaxDelay < 0:
		return fmt.Errorf("fec: encoder max delay %v is negative", c.MaxDelay)
	case c.MaxBlockBytes < 0:
		return fmt.Errorf("fec: encoder max block bytes %d is negative", c.MaxBlockBytes)
	}
	return nil
}

// EncoderStats are an Encoder's counters since it was made.
type EncoderStats struct {
	// Records is how many records Add was given.
	Records uint64
	// Unprotected is how many of them no block covers: longer than
	// MaxShard, or given while m = 0.
	Unprotected uint64
	// DataBytes is the length of the records blocks cover.
	DataBytes uint64
	// Blocks is how many blocks were closed, PartialBlocks how many of
	// them with fewer than k records (Flush, delay, size, seq order).
	Blocks, PartialBlocks uint64
	// Parity is how many parity payloads were made, ParityBytes their
	// total length.
	Parity, ParityBytes uint64
}

type encoderCounters struct {
	records, unprotected, dataBytes, blocks, partial, parity, parityBytes atomic.Uint64
}

// Encoder groups outgoing sealed records into blocks and makes their
// parity payloads. The caller sends every record as it is and each parity
// payload in a frame.FECParity frame. An Encoder holds at most one open
// block and starts no goroutines; a block is closed when it has k records,
// by Flush (which the caller calls when Deadline passes, or to send parity
// for an urgent record at once), or by the next Add when the block's
// deadline has passed, its size limit would be exceeded or the record's
// seq is not above the block's last one.
//
// An Encoder is not safe for concurrent use, except Stats.
type Encoder struct {
	k, m          int // for the next block
	maxDelay      time.Duration
	maxBlockBytes int
	codes         codes

	// The open block: bk and bm are its parameters, recs copies of its
	// records (reused across blocks), seqs their sequence numbers.
	bk, bm   int
	recs     [][]byte
	seqs     []uint64
	shardLen int
	opened   time.Time
	nextID   uint64
	shards   [][]byte // scratch for the code

	stats encoderCounters
}

// NewEncoder returns an Encoder for cfg.
func NewEncoder(cfg EncoderConfig) (*Encoder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Encoder{
		k:             cmpOr(cfg.K, DefaultK),
		m:             cmpOr(cfg.M, DefaultM),
		maxDelay:      cmpOr(cfg.MaxDelay, DefaultMaxDelay),
		maxBlockBytes: cmpOr(cfg.MaxBlockBytes, DefaultMaxBlockBytes),
	}, nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// SetParams sets k (1..MaxK) and m (0..MaxM) for the blocks opened from
// now on; the open block keeps its own. m = 0 turns parity off: records
// are counted as unprotected and no block is opened.
func (e *Encoder) SetParams(k, m int) error {
	if k < 1 || k > MaxK || m < 0 || m > MaxM {
		return fmt.Errorf("fec: params k = %d, m = %d (want 1..%d, 0..%d)", k, m, MaxK, MaxM)
	}
	e.k, e.m = k, m
	return nil
}

// Params returns k and m for the next block.
func (e *Encoder) Params() (k, m int) { return e.k, e.m }

// recordSeq checks that rec is one whole sealed record and returns its seq.
func recordSeq(rec []byte) (uint64, error) {
	if len(rec) < recordOverhead {
		return 0, fmt.Errorf("%w: %d bytes (min %d)", ErrNotRecord, len(rec), recordOverhead)
	}
	if n := int(rec[0])<<16 | int(rec[1])<<8 | int(rec[2]); n != len(rec)-recordLengthSize {
		return 0, fmt.Errorf("%w: length field %d for %d bytes", ErrNotRecord, n, len(rec)-recordLengthSize)
	}
	seq := binary.BigEndian.Uint64(rec[4:recordHeaderSize])
	if seq == math.MaxUint64 {
		return 0, fmt.Errorf("%w: reserved seq", ErrNotRecord)
	}
	return seq, nil
}

// Add takes one sealed record (length field included; see core/session)
// that the caller is about to send, and appends to dst the parity payloads
// of any block it closed. The Encoder keeps a copy of rec. It fails with
// ErrNotRecord for bytes that are not a whole record.
func (e *Encoder) Add(dst [][]byte, rec []byte) ([][]byte, error) {
	seq, err := recordSeq(rec)
	if err != nil {
		return dst, err
	}
	e.stats.records.Add(1)
	if len(rec) > MaxShard || e.m == 0 {
		e.stats.unprotected.Add(1)
		return dst, nil
	}
	if n := len(e.seqs); n > 0 {
		if seq <= e.seqs[n-1] || (n+1)*max(e.shardLen, len(rec)) > e.maxBlockBytes || !time.Now().Before(e.opened.Add(e.maxDelay)) {
			dst = e.close(dst)
		}
	}
	if len(e.seqs) == 0 {
		e.bk, e.bm, e.shardLen, e.opened = e.k, e.m, 0, time.Now()
	}
	n := len(e.seqs)
	if n < cap(e.recs) {
		e.recs = e.recs[:n+1]
		e.recs[n] = append(e.recs[n][:0], rec...)
	} else {
		e.recs = append(e.recs, slices.Clone(rec))
	}
	e.seqs = append(e.seqs, seq)
	e.shardLen = max(e.shardLen, len(rec))
	e.stats.dataBytes.Add(uint64(len(rec)))
	if len(e.seqs) >= e.bk {
		dst = e.close(dst)
	}
	return dst, nil
}

// Flush closes the open block, if any, even with fewer than k records, and
// appends its parity payloads to dst.
func (e *Encoder) Flush(dst [][]byte) [][]byte {
	if len(e.seqs) == 0 {
		return dst
	}
	return e.close(dst)
}

// Deadline returns when the open block should be closed with Flush, and
// false if no block is open. The caller arms its own timer with it.
func (e *Encoder) Deadline() (time.Time, bool) {
	if len(e.seqs) == 0 {
		return time.Time{}, false
	}
	return e.opened.Add(e.maxDelay), true
}

// Pending is how many records the open block holds.
func (e *Encoder) Pending() int { return len(e.seqs) }

// close makes the open block's parity, appends it to dst and empties the
// block.
func (e *Encoder) close(dst [][]byte) [][]byte {
	k, m, sl := len(e.seqs), e.bm, e.shardLen
	defer e.reset()
	code, err := e.codes.get(k, m)
	if err != nil {
		// k and m are within bounds, so this does not happen; the records
		// were sent anyway, only their protection is lost.
		e.stats.unprotected.Add(uint64(k))
		return dst
	}
	h := header{block: e.nextID, k: k, m: m, index: k, shardLen: sl, seqs: e.seqs}
	hl := headerLen(h.block, sl, h.seqs)
	size := hl + sl
	buf := make([]byte, m*size)
	hdr := appendHeader(buf[:0], &h)
	shards := e.shards[:0]
	for i, r := range e.recs {
		n := len(r)
		r = slices.Grow(r, sl-n)[:sl]
		clear(r[n:])
		e.recs[i] = r
		shards = append(shards, r)
	}
	first := len(dst)
	for i := range m {
		p := buf[i*size : (i+1)*size : (i+1)*size]
		if i > 0 {
			copy(p, hdr)
		}
		p[indexOffset(h.block)] = byte(k + i)
		shards = append(shards, p[hl:])
		dst = append(dst, p)
	}
	e.shards = shards
	if err := code.Encode(shards); err != nil {
		e.stats.unprotected.Add(uint64(k))
		return dst[:first]
	}
	clear(e.shards) // drop references to the caller's payloads
	e.nextID++
	e.stats.blocks.Add(1)
	if k < e.bk {
		e.stats.partial.Add(1)
	}
	e.stats.parity.Add(uint64(m))
	e.stats.parityBytes.Add(uint64(len(buf)))
	return dst
}

// reset empties the open block. It keeps the record buffers for the next
// block unless together they are larger than the block size limit.
func (e *Encoder) reset() {
	e.seqs = e.seqs[:0]
	total := 0
	for _, r := range e.recs[:cap(e.recs)] {
		total += cap(r)
	}
	if total > e.maxBlockBytes {
		e.recs = nil
	}
	e.recs = e.recs[:0]
}

// Stats returns the Encoder's counters. It is safe for concurrent use.
func (e *Encoder) Stats() EncoderStats {
	c := &e.stats
	return EncoderStats{
		Records:       c.records.Load(),
		Unprotected:   c.unprotected.Load(),
		DataBytes:     c.dataBytes.Load(),
		Blocks:        c.blocks.Load(),
		PartialBlocks: c.partial.Load(),
		Parity:        c.parity.Load(),
		ParityBytes:   c.parityBytes.Load(),
	}
}
