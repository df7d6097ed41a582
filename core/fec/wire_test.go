package fec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"testing"

	"github.com/commucat/commucat/core/frame"
	"github.com/commucat/commucat/core/session"
	"github.com/google/go-cmp/cmp"
)

// TestLimits checks the constants this package copies from core/session and
// core/frame.
func TestLimits(t *testing.T) {
	got := map[string]int{
		"record header":     recordHeaderSize,
		"record overhead":   recordOverhead,
		"replay window":     replayWindow,
		"parity payload":    MaxPayload,
		"header fits":       min(MaxPayload-MaxShard, maxHeader),
		"64 KiB frame fits": min(MaxShard, recordOverhead+frame.HeaderMax+64<<10),
	}
	want := map[string]int{
		"record header":     session.HeaderSize,
		"record overhead":   session.Overhead,
		"replay window":     session.ReplayWindow,
		"parity payload":    frame.FECParity.MaxPayload(),
		"header fits":       maxHeader,
		"64 KiB frame fits": recordOverhead + frame.HeaderMax + 64<<10,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("limits (-want +got):\n%s", diff)
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	tests := []struct {
		name       string
		h          header
		wantFormat byte
		wantLen    int // header length
	}{
		{"one record", header{block: 0, k: 1, m: 1, index: 1, shardLen: 28, seqs: []uint64{0}}, formatGaps, 7},
		{"ten in a row", header{block: 7, k: 10, m: 3, index: 12, shardLen: 1200, seqs: span(1000, 10)}, formatBitmap, 1 + 1 + 3 + 2 + 2 + 1 + 2},
		{"three in a row", header{block: 1, k: 3, m: 2, index: 3, shardLen: 100, seqs: span(5, 3)}, formatGaps, 1 + 1 + 3 + 1 + 1 + 2},
		{"interleaved", header{block: 300, k: 4, m: 2, index: 5, shardLen: 66560, seqs: []uint64{10, 12, 14, 16}}, formatBitmap, 1 + 2 + 3 + 3 + 1 + 2},
		{"sparse", header{block: 2, k: 3, m: 1, index: 3, shardLen: 500, seqs: []uint64{1, 1000, 1 << 40}}, formatGaps, 1 + 1 + 3 + 2 + 1 + 2 + 6},
		{"big first seq", header{block: math.MaxUint64, k: 2, m: 1, index: 2, shardLen: 40, seqs: []uint64{math.MaxUint64 - 2, math.MaxUint64 - 1}}, formatGaps, 1 + 10 + 3 + 1 + 10 + 1},
		{"max k in a row", header{block: 9, k: MaxK, m: MaxM, index: MaxK + MaxM - 1, shardLen: 2000, seqs: span(1<<20, MaxK)}, formatBitmap, 1 + 1 + 3 + 2 + 3 + 1 + 8},
		{"bitmap with holes", header{block: 3, k: 5, m: 2, index: 6, shardLen: 64, seqs: []uint64{100, 101, 103, 104, 106}}, formatBitmap, 1 + 1 + 3 + 1 + 1 + 1 + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			shard := bytes.Repeat([]byte{0xa5}, tt.h.shardLen)
			p := append(appendHeader(nil, &tt.h), shard...)
			if p[0] != tt.wantFormat {
				t.Errorf("format %d, want %d", p[0], tt.wantFormat)
			}
			if got := len(p) - len(shard); got != tt.wantLen || got != headerLen(tt.h.block, tt.h.shardLen, tt.h.seqs) {
				t.Errorf("header is %d bytes, want %d (headerLen %d)", got, tt.wantLen, headerLen(tt.h.block, tt.h.shardLen, tt.h.seqs))
			}
			got, gotShard, err := parseParity(p, nil)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.h, got, cmp.AllowUnexported(header{})); diff != "" {
				t.Errorf("header (-want +got):\n%s", diff)
			}
			if !bytes.Equal(gotShard, shard) {
				t.Error("shard differs")
			}
		})
	}
}

// payload builds a parity payload from hand-written header bytes and a
// shard of n bytes.
func payload(n int, hdr ...byte) []byte {
	return append(hdr, make([]byte, n)...)
}

func TestParseRejects(t *testing.T) {
	good := payload(28, 0, 0, 2, 1, 2, 28, 5, 0) // k=2 m=1 index 2, seqs 5, 6
	if _, _, err := parseParity(good, nil); err != nil {
		t.Fatalf("the base case does not parse: %v", err)
	}
	tests := []struct {
		name string
		p    []byte
	}{
		{"empty", nil},
		{"too long", make([]byte, MaxPayload+1)},
		{"unknown format", payload(28, 2, 0, 2, 1, 2, 28, 5, 0)},
		{"truncated block", []byte{0, 0x80}},
		{"non-minimal block", payload(28, 0, 0x80, 0, 2, 1, 2, 28, 5, 0)},
		{"truncated k m index", []byte{0, 0, 2, 1}},
		{"k zero", payload(28, 0, 0, 0, 1, 0, 28, 5)},
		{"k too big", payload(28, 0, 0, MaxK+1, 1, MaxK+1, 28, 5)},
		{"m zero", payload(28, 0, 0, 2, 0, 2, 28, 5, 0)},
		{"m too big", payload(28, 0, 0, 2, MaxM+1, 2, 28, 5, 0)},
		{"index of a data shard", payload(28, 0, 0, 2, 1, 1, 28, 5, 0)},
		{"index past the block", payload(28, 0, 0, 2, 1, 3, 28, 5, 0)},
		{"shard shorter than a record", payload(27, 0, 0, 2, 1, 2, 27, 5, 0)},
		{"shard too long", payload(0, 0, 0, 2, 1, 2, 0x81, 0x88, 0x04, 5, 0)},
		{"shard length mismatch", payload(29, 0, 0, 2, 1, 2, 28, 5, 0)},
		{"shard truncated", payload(27, 0, 0, 2, 1, 2, 28, 5, 0)},
		{"truncated first seq", []byte{0, 0, 2, 1, 2, 28, 0x80}},
		{"reserved first seq", payload(28, 0, 0, 1, 1, 1, 28, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)},
		{"first seq overflows", payload(28, 0, 0, 1, 1, 1, 28, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02)},
		{"gap overflows", payload(28, 0, 0, 2, 1, 2, 28, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 1)},
		{"truncated gaps", []byte{0, 0, 3, 1, 3, 28, 5, 0}},
		{"bitmap for one record", payload(28, 1, 0, 1, 1, 1, 28, 5, 0)},
		{"bitmap where gaps are shorter", payload(28, 1, 0, 2, 1, 2, 28, 5, 1, 1)},
		{"gaps where the bitmap is shorter", payload(28, 0, 0, 10, 1, 10, 28, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0)},
		{"bitmap span too short", payload(28, 1, 0, 10, 1, 10, 28, 5, 8, 0xff, 0xff)},
		{"bitmap truncated", []byte{1, 0, 10, 1, 10, 28, 5, 9, 0xff}},
		{"bitmap wrong count", payload(28, 1, 0, 10, 1, 10, 28, 5, 9, 0xff, 0x00)},
		{"bitmap bits past span", payload(28, 1, 0, 10, 1, 10, 28, 5, 9, 0x7f, 0x03)},
		{"bitmap not ending at span", payload(28, 1, 0, 9, 1, 9, 28, 5, 9, 0xff, 0x00)},
		{"bitmap span overflows", payload(28, 1, 0, 2, 1, 2, 28, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 1, 1)},
		{"span varint too long", payload(28, 1, 0, 10, 1, 10, 28, 5, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := parseParity(tt.p, nil)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("parseParity = %v, want ErrMalformed", err)
			}
		})
	}
}

// TestBitmapChoice checks that the encoder's choice between gap list and
// bitmap is the shorter one for many seq sets.
func TestBitmapChoice(t *testing.T) {
	for k := 1; k <= MaxK; k++ {
		for _, stride := range []uint64{1, 2, 3, 9, 100} {
			seqs := make([]uint64, k)
			for i := range seqs {
				seqs[i] = 1 + uint64(i)*stride
			}
			h := header{k: k, m: 1, index: k, shardLen: 28, seqs: seqs}
			p := append(appendHeader(nil, &h), make([]byte, 28)...)
			if _, _, err := parseParity(p, nil); err != nil {
				t.Fatalf("k=%d stride=%d: %v", k, stride, err)
			}
			var gaps []byte
			for i := 1; i < k; i++ {
				gaps = binary.AppendUvarint(gaps, seqs[i]-seqs[i-1]-1)
			}
			if want := len(gaps) > bitmapLen(seqs); useBitmap(seqs) != want {
				t.Errorf("k=%d stride=%d: bitmap %v, want %v", k, stride, useBitmap(seqs), want)
			}
		}
	}
}
