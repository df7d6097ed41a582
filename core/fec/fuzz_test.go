package fec

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the seed files in testdata/fuzz")

// fuzzBlock is the block FuzzParity's decoder holds all but one record
// of, so that a parity payload for it reaches the repair path.
func fuzzBlock(t testing.TB) testBlock {
	rng := rand.New(rand.NewPCG(99, 99))
	return makeBlock(t, rng, 10, 3, span(100, 10), 28, 300)
}

// fuzzSeeds are real parity payloads, by seed file name.
func fuzzSeeds(t testing.TB) map[string][]byte {
	rng := rand.New(rand.NewPCG(7, 7))
	b := fuzzBlock(t)
	seeds := map[string][]byte{
		"repairs":     b.parity[0],
		"last-parity": b.parity[2],
	}
	one := encodeAll(t, EncoderConfig{K: 1, M: 1}, fakeRecords(rng, []uint64{5}, 28, 28))
	seeds["one-record"] = one[0]
	gaps := encodeAll(t, EncoderConfig{K: 3, M: 2}, fakeRecords(rng, []uint64{1, 300, 70000}, 40, 90))
	seeds["gap-list"] = gaps[1]
	bitmap := encodeAll(t, EncoderConfig{K: 5, M: 1}, fakeRecords(rng, []uint64{100, 101, 103, 104, 106}, 28, 60))
	seeds["bitmap"] = bitmap[0]
	seeds["garbage"] = []byte{1, 0xff, 0xff, 0, 0, 0}
	return seeds
}

// TestFuzzSeeds checks that the seed files are the real encoder's output;
// go test -run TestFuzzSeeds -update rewrites them.
func TestFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzParity")
	for name, seed := range fuzzSeeds(t) {
		path := filepath.Join(dir, name)
		want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", seed)
		if *update {
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run with -update)", err)
		}
		if string(got) != want {
			t.Errorf("%s differs from the encoder's output (run with -update)", path)
		}
	}
}

// FuzzParity checks that no parity payload makes parsing or a Decoder
// panic, that every payload that parses re-encodes to the same bytes, and
// that whatever a Decoder repairs from it is shaped like the record it
// replaces.
func FuzzParity(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	b := fuzzBlock(f)
	f.Fuzz(func(t *testing.T, p []byte) {
		h, shard, err := parseParity(p, nil)
		if err != nil {
			if !errors.Is(err, ErrMalformed) || !strings.HasPrefix(err.Error(), "fec: ") {
				t.Fatalf("error %v", err)
			}
		} else {
			again := append(appendHeader(nil, &h), shard...)
			if !bytes.Equal(again, p) {
				t.Fatalf("re-encoding differs:\n%x\n%x", p, again)
			}
		}
		d := newDecoder(t, DecoderConfig{MaxBytes: 2 * MaxShard})
		for _, r := range b.recs[1:] {
			d.AddRecord(nil, r)
		}
		repaired, perr := d.AddParity(nil, p)
		if (perr == nil) != (err == nil) {
			t.Fatalf("parse: %v, AddParity: %v", err, perr)
		}
		for _, r := range repaired {
			seq, rerr := recordSeq(r)
			if rerr != nil || !containsSeq(h.seqs, seq) || len(r) > h.shardLen {
				t.Fatalf("repaired %x (seq %d, %v) for block %v", r, seq, rerr, h.seqs)
			}
		}
		if _, _, n := d.InFlight(); n > 2*MaxShard {
			t.Fatalf("%d bytes held", n)
		}
		// A real shard after the fuzzed one does not panic either.
		d.AddParity(nil, b.parity[1])
	})
}

func containsSeq(seqs []uint64, s uint64) bool {
	for _, x := range seqs {
		if x == s {
			return true
		}
	}
	return false
}
