package fec

import (
	"bytes"
	"encoding/binary"
	"github.com/google/go-cmp/cmp"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// fakeRecord returns size bytes shaped like a sealed record with seq: a
// correct length field, epoch 0, seq, and random bytes standing in for the
// ciphertext. Tests that need authentication use a real session.Sealer.
func fakeRecord(rng *rand.Rand, seq uint64, size int) []byte {
	r := make([]byte, size)
	for i := recordHeaderSize; i < size; i++ {
		r[i] = byte(rng.Uint32())
	}
	n := size - recordLengthSize
	r[0], r[1], r[2] = byte(n>>16), byte(n>>8), byte(n)
	binary.BigEndian.PutUint64(r[4:recordHeaderSize], seq)
	return r
}

// fakeRecords returns one record per seq with sizes in [minSize, maxSize].
func fakeRecords(rng *rand.Rand, seqs []uint64, minSize, maxSize int) [][]byte {
	recs := make([][]byte, len(seqs))
	for i, s := range seqs {
		recs[i] = fakeRecord(rng, s, minSize+rng.IntN(maxSize-minSize+1))
	}
	return recs
}

// equalBytes makes cmp compare byte slices with bytes.Equal: its
// reflective walk is far too slow for shards of 64 KiB.
var equalBytes = cmp.Comparer(bytes.Equal)

// span returns n consecutive seqs from first.
func span(first uint64, n int) []uint64 {
	s := make([]uint64, n)
	for i := range s {
		s[i] = first + uint64(i)
	}
	return s
}

// encodeAll runs recs through an Encoder with cfg, flushes it, and returns
// the parity payloads. Tests outside a synctest bubble must not depend on
// the wall clock, so a zero MaxDelay means an hour here; newDecoder does
// the same for Timeout.
func encodeAll(t testing.TB, cfg EncoderConfig, recs [][]byte) [][]byte {
	t.Helper()
	if cfg.MaxDelay == 0 {
		cfg.MaxDelay = time.Hour // wall-clock pauses must not close blocks
	}
	e, err := NewEncoder(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var parity [][]byte
	for _, r := range recs {
		if parity, err = e.Add(parity, r); err != nil {
			t.Fatal(err)
		}
	}
	return e.Flush(parity)
}

func newDecoder(t testing.TB, cfg DecoderConfig) *Decoder {
	t.Helper()
	if cfg.Timeout == 0 {
		cfg.Timeout = time.Hour // wall-clock pauses must not expire blocks
	}
	d, err := NewDecoder(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// bySeq sorts records by their seq, for comparing sets of records.
func bySeq(recs [][]byte) [][]byte {
	recs = slices.Clone(recs)
	slices.SortFunc(recs, func(a, b []byte) int {
		sa, _ := recordSeq(a)
		sb, _ := recordSeq(b)
		return cmpUint(sa, sb)
	})
	return recs
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// shard is one arrival at a decoder: a data record or a parity payload.
type shard struct {
	parity bool
	b      []byte
}

// feed gives every shard to d in order and returns the repaired records.
func feed(t testing.TB, d *Decoder, shards []shard) [][]byte {
	t.Helper()
	var out [][]byte
	for _, s := range shards {
		if !s.parity {
			out = d.AddRecord(out, s.b)
			continue
		}
		var err error
		if out, err = d.AddParity(out, s.b); err != nil {
			t.Fatalf("AddParity: %v", err)
		}
	}
	return out
}

// feedChecked is feed that also checks each repaired record: it is one of
// originals byte for byte, was not given to d before and was not repaired
// before. A record may be repaired although it was only late, not lost:
// the Decoder rebuilds as soon as any k shards are there.
func feedChecked(t testing.TB, d *Decoder, shards []shard, originals [][]byte) [][]byte {
	t.Helper()
	orig := make(map[uint64][]byte)
	for _, r := range originals {
		s, _ := recordSeq(r)
		orig[s] = r
	}
	seen := make(map[uint64]bool)
	var all [][]byte
	for _, s := range shards {
		var out [][]byte
		// The Decoder must copy what it keeps: the caller's buffer is
		// clobbered after each call.
		in := slices.Clone(s.b)
		if s.parity {
			var err error
			if out, err = d.AddParity(nil, in); err != nil {
				t.Fatalf("AddParity: %v", err)
			}
		} else {
			out = d.AddRecord(nil, in)
			seq, _ := recordSeq(s.b)
			seen[seq] = true
		}
		for i := range in {
			in[i] = 0xee
		}
		for _, r := range out {
			seq, _ := recordSeq(r)
			switch {
			case seen[seq]:
				t.Fatalf("record %d returned, but it was given or repaired before", seq)
			case !bytes.Equal(r, orig[seq]):
				t.Fatalf("record %d repaired wrong", seq)
			}
			seen[seq] = true
		}
		all = append(all, out...)
	}
	return all
}

// missingFrom returns the records of sub that are not in set.
func missingFrom(set, sub [][]byte) [][]byte {
	var missing [][]byte
	for _, r := range sub {
		if !slices.ContainsFunc(set, func(x []byte) bool { return bytes.Equal(x, r) }) {
			missing = append(missing, r)
		}
	}
	return missing
}
