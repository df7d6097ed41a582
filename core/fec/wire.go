package fec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
)

// Limits of the parity payload (see the package documentation).
const (
	// MaxK is the largest number of data shards in a block.
	MaxK = 64
	// MaxM is the largest number of parity shards in a block.
	MaxM = 32
	// MaxPayload is the largest parity payload: the limit of a CCP-1
	// frame.FECParity payload, 66 KiB.
	MaxPayload = 66 << 10
	// MaxShard is the longest shard, so the longest record an Encoder
	// protects: MaxPayload minus 1 KiB for the header. A record carrying
	// one 64 KiB frame fits.
	MaxShard = MaxPayload - 1<<10
	// MinShard is the shortest shard: a record with an empty plaintext
	// (session.Overhead bytes).
	MinShard = recordOverhead
)

// maxHeader bounds the parity header: format, block, k, m, index, shard
// length, first seq and the shorter seq set of MaxK records. MaxShard
// leaves room for it.
const maxHeader = 1 + binary.MaxVarintLen64 + 3 + 3 + binary.MaxVarintLen64 + (MaxK-1)*binary.MaxVarintLen64

// Session record layout (core/session; a test checks these against it).
const (
	recordLengthSize = 3
	recordHeaderSize = recordLengthSize + 1 + 8
	recordOverhead   = recordHeaderSize + 16
	// replayWindow is session.ReplayWindow.
	replayWindow = 127 * 64
)

// Seq set encodings.
const (
	formatGaps   = 0
	formatBitmap = 1
)

// Sentinel errors that callers branch on with errors.Is.
var (
	// ErrMalformed means a parity payload does not decode.
	ErrMalformed = errors.New("fec: malformed parity")
	// ErrConflict means a parity shard disagrees with an earlier shard of
	// the same block (parameters or sequence numbers).
	ErrConflict = errors.New("fec: conflicting parity")
	// ErrNotRecord means an Encoder was given bytes that are not one whole
	// sealed record.
	ErrNotRecord = errors.New("fec: not a sealed record")
)

// header is a decoded parity header.
type header struct {
	block    uint64
	k, m     int
	index    int
	shardLen int
	seqs     []uint64 // k entries, strictly increasing
}

func uvarintLen(x uint64) int {
	return (bits.Len64(x|1) + 6) / 7
}

// gapsLen and bitmapLen are the encoded sizes of seqs's seq set.
func gapsLen(seqs []uint64) int {
	n := 0
	for i := 1; i < len(seqs); i++ {
		n += uvarintLen(seqs[i] - seqs[i-1] - 1)
	}
	return n
}

func bitmapLen(seqs []uint64) int {
	span := seqs[len(seqs)-1] - seqs[0]
	return uvarintLen(span) + int((span+7)/8)
}

// useBitmap reports whether seqs are written as a bitmap. The bitmap length
// is only computed when it can be shorter, so a huge span costs nothing.
func useBitmap(seqs []uint64) bool {
	g := gapsLen(seqs)
	span := seqs[len(seqs)-1] - seqs[0]
	if span/8 >= uint64(g) {
		return false
	}
	return bitmapLen(seqs) < g
}

// headerLen is the encoded length of a header for seqs and blockID.
func headerLen(blockID uint64, shardLen int, seqs []uint64) int {
	n := 1 + uvarintLen(blockID) + 3 + uvarintLen(uint64(shardLen)) + uvarintLen(seqs[0])
	if useBitmap(seqs) {
		return n + bitmapLen(seqs)
	}
	return n + gapsLen(seqs)
}

// indexOffset is where the index byte sits in a header.
func indexOffset(blockID uint64) int { return 1 + uvarintLen(blockID) + 2 }

// appendHeader appends h's encoding to dst.
func appendHeader(dst []byte, h *header) []byte {
	seqs := h.seqs
	bitmap := useBitmap(seqs)
	format := byte(formatGaps)
	if bitmap {
		format = formatBitmap
	}
	dst = append(dst, format)
	dst = binary.AppendUvarint(dst, h.block)
	dst = append(dst, byte(h.k), byte(h.m), byte(h.index))
	dst = binary.AppendUvarint(dst, uint64(h.shardLen))
	dst = binary.AppendUvarint(dst, seqs[0])
	if !bitmap {
		for i := 1; i < len(seqs); i++ {
			dst = binary.AppendUvarint(dst, seqs[i]-seqs[i-1]-1)
		}
		return dst
	}
	span := seqs[len(seqs)-1] - seqs[0]
	dst = binary.AppendUvarint(dst, span)
	start := len(dst)
	dst = append(dst, make([]byte, (span+7)/8)...)
	for _, s := range seqs[1:] {
		j := s - seqs[0] - 1
		dst[start+int(j/8)] |= 1 << (j % 8)
	}
	return dst
}

// malformed wraps ErrMalformed with what was wrong.
func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// uvarint decodes the minimal varint at b[off:].
func uvarint(b []byte, off int, what string) (uint64, int, error) {
	var x uint64
	for i := 0; i < binary.MaxVarintLen64; i++ {
		if off+i >= len(b) {
			return 0, off, malformed("truncated %s", what)
		}
		c := b[off+i]
		if c < 0x80 {
			switch {
			case i == binary.MaxVarintLen64-1 && c > 1:
				return 0, off, malformed("%s overflows 64 bits", what)
			case i > 0 && c == 0:
				return 0, off, malformed("%s varint not minimal", what)
			}
			return x | uint64(c)<<(7*i), off + i + 1, nil
		}
		x |= uint64(c&0x7f) << (7 * i)
	}
	return 0, off, malformed("%s varint too long", what)
}

// parseParity decodes a parity payload. The returned header's seqs reuse
// seqBuf's storage and the shard aliases p. It never panics and checks
// every length before it allocates or indexes.
func parseParity(p []byte, seqBuf []uint64) (header, []byte, error) {
	var h header
	if len(p) > MaxPayload {
		return h, nil, malformed("payload of %d bytes (max %d)", len(p), MaxPayload)
	}
	if len(p) < 1 {
		return h, nil, malformed("empty payload")
	}
	format := p[0]
	if format != formatGaps && format != formatBitmap {
		return h, nil, malformed("unknown format %d", format)
	}
	var err error
	off := 1
	if h.block, off, err = uvarint(p, off, "block"); err != nil {
		return h, nil, err
	}
	if len(p) < off+3 {
		return h, nil, malformed("truncated header")
	}
	h.k, h.m, h.index = int(p[off]), int(p[off+1]), int(p[off+2])
	off += 3
	switch {
	case h.k < 1 || h.k > MaxK:
		return h, nil, malformed("k = %d (want 1..%d)", h.k, MaxK)
	case h.m < 1 || h.m > MaxM:
		return h, nil, malformed("m = %d (want 1..%d)", h.m, MaxM)
	case h.index < h.k || h.index >= h.k+h.m:
		return h, nil, malformed("parity index %d outside %d..%d", h.index, h.k, h.k+h.m-1)
	}
	var shardLen uint64
	if shardLen, off, err = uvarint(p, off, "shard length"); err != nil {
		return h, nil, err
	}
	if shardLen < MinShard || shardLen > MaxShard {
		return h, nil, malformed("shard length %d (want %d..%d)", shardLen, MinShard, MaxShard)
	}
	h.shardLen = int(shardLen)
	var first uint64
	if first, off, err = uvarint(p, off, "first seq"); err != nil {
		return h, nil, err
	}
	if first == math.MaxUint64 {
		return h, nil, malformed("reserved first seq")
	}
	seqs := append(seqBuf[:0], first)
	if format == formatGaps {
		for range h.k - 1 {
			var gap uint64
			if gap, off, err = uvarint(p, off, "seq gap"); err != nil {
				return h, nil, err
			}
			last := seqs[len(seqs)-1]
			if gap >= math.MaxUint64-1-last {
				return h, nil, malformed("seq overflows")
			}
			seqs = append(seqs, last+gap+1)
		}
	} else {
		var span uint64
		if span, off, err = uvarint(p, off, "span"); err != nil {
			return h, nil, err
		}
		if span >= math.MaxUint64-first {
			return h, nil, malformed("seq overflows")
		}
		if span == 0 || span < uint64(h.k-1) {
			return h, nil, malformed("span %d for %d records", span, h.k)
		}
		if (span+7)/8 > uint64(len(p)-off) {
			return h, nil, malformed("truncated bitmap")
		}
		nb := int((span + 7) / 8)
		bm := p[off : off+nb]
		off += nb
		ones := 0
		for _, c := range bm {
			ones += bits.OnesCount8(c)
		}
		if ones != h.k-1 {
			return h, nil, malformed("bitmap has %d records, k = %d", ones+1, h.k)
		}
		if span%8 != 0 && bm[nb-1]>>(span%8) != 0 {
			return h, nil, malformed("bitmap bits past the span")
		}
		if bm[(span-1)/8]&(1<<((span-1)%8)) == 0 {
			return h, nil, malformed("bitmap does not end at the span")
		}
		for i, c := range bm {
			for c != 0 {
				j := bits.TrailingZeros8(c)
				c &= c - 1
				seqs = append(seqs, first+1+uint64(i*8+j))
			}
		}
	}
	if (format == formatBitmap) != useBitmap(seqs) {
		return h, nil, malformed("seq set not in its shortest encoding")
	}
	h.seqs = seqs
	shard := p[off:]
	if len(shard) != h.shardLen {
		return h, nil, malformed("shard of %d bytes, header says %d", len(shard), h.shardLen)
	}
	return h, shard, nil
}
