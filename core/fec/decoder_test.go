package fec

import (
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestDecoderConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  DecoderConfig
		ok   bool
	}{
		{"zero is the default", DecoderConfig{}, true},
		{"negative timeout", DecoderConfig{Timeout: -1}, false},
		{"negative blocks", DecoderConfig{MaxBlocks: -1}, false},
		{"negative records", DecoderConfig{MaxRecords: -1}, false},
		{"bytes below one shard", DecoderConfig{MaxBytes: MaxShard - 1}, false},
		{"bytes of one shard", DecoderConfig{MaxBytes: MaxShard}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate = %v, want ok %v", err, tt.ok)
			}
			if _, err := NewDecoder(tt.cfg); (err == nil) != tt.ok {
				t.Fatalf("NewDecoder = %v", err)
			}
		})
	}
}

// testBlock is one encoded block: its data records and parity payloads.
type testBlock struct {
	recs, parity [][]byte
}

// shards returns the block's shards in index order (data, then parity).
func (b testBlock) shards() []shard {
	var s []shard
	for _, r := range b.recs {
		s = append(s, shard{b: r})
	}
	for _, p := range b.parity {
		s = append(s, shard{parity: true, b: p})
	}
	return s
}

func makeBlock(t testing.TB, rng *rand.Rand, k, m int, seqs []uint64, minSize, maxSize int) testBlock {
	t.Helper()
	recs := fakeRecords(rng, seqs, minSize, maxSize)
	parity := encodeAll(t, EncoderConfig{K: k, M: m}, recs)
	if len(parity) != m {
		t.Fatalf("%d parity payloads, want %d", len(parity), m)
	}
	return testBlock{recs, parity}
}

// arrive returns the shards of b not in lost (a bit mask over shard
// indices), shuffled, with one of them duplicated.
func arrive(rng *rand.Rand, b testBlock, lost uint64) (got []shard, dropped [][]byte) {
	for i, s := range b.shards() {
		if lost&(1<<i) != 0 {
			if !s.parity {
				dropped = append(dropped, s.b)
			}
			continue
		}
		got = append(got, s)
	}
	rng.Shuffle(len(got), func(i, j int) { got[i], got[j] = got[j], got[i] })
	if len(got) > 0 {
		got = slices.Insert(got, rng.IntN(len(got)+1), got[rng.IntN(len(got))])
	}
	return got, dropped
}

// TestRepairEveryPattern drops every set of up to m shards (data and
// parity) of a block, delivers the rest shuffled with a duplicate, and
// checks that exactly the lost data records come back, byte for byte.
func TestRepairEveryPattern(t *testing.T) {
	tests := []struct {
		name             string
		k, m             int
		seqs             []uint64
		minSize, maxSize int
	}{
		{"k=10 m=3 consecutive", 10, 3, span(1000, 10), 28, 1500},
		{"k=10 m=3 interleaved", 10, 3, []uint64{5, 7, 8, 20, 21, 22, 40, 41, 1000, 5000}, 100, 100},
		{"k=4 m=2", 4, 2, span(0, 4), 28, 16 << 10},
		{"k=1 m=1", 1, 1, span(9, 1), 28, 28},
		{"k=1 m=3", 1, 3, span(9, 1), 60, 60},
		{"k=5 m=5 max shard", 5, 5, span(77, 5), MaxShard - 10, MaxShard},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(tt.k), uint64(tt.m)))
			b := makeBlock(t, rng, tt.k, tt.m, tt.seqs, tt.minSize, tt.maxSize)
			n := tt.k + tt.m
			patterns := 0
			for lost := range uint64(1) << n {
				if bits.OnesCount64(lost) > tt.m {
					continue
				}
				patterns++
				got, dropped := arrive(rng, b, lost)
				d := newDecoder(t, DecoderConfig{})
				repaired := feedChecked(t, d, got, b.recs)
				if miss := missingFrom(repaired, dropped); len(miss) > 0 {
					t.Fatalf("lost %0*b: %d lost records not repaired", n, lost, len(miss))
				}
				if st := d.Stats(); st.Repaired != uint64(len(repaired)) || st.Unrecoverable != 0 || st.Corrupt != 0 {
					t.Fatalf("lost %0*b: stats %+v", n, lost, st)
				}
				// In order, data first, only the lost records come back.
				d = newDecoder(t, DecoderConfig{})
				var inOrder []shard
				for i, s := range b.shards() {
					if lost&(1<<i) == 0 {
						inOrder = append(inOrder, s)
					}
				}
				if diff := cmp.Diff(bySeq(dropped), bySeq(feed(t, d, inOrder)), equalBytes); diff != "" {
					t.Fatalf("lost %0*b, in order: repaired (-want +got):\n%s", n, lost, diff)
				}
			}
			t.Logf("%d loss patterns", patterns)
		})
	}
}

// TestRepairLargeBlocks drops m random shards of blocks with k = MaxK,
// m = MaxM.
func TestRepairLargeBlocks(t *testing.T) {
	rng := rand.New(rand.NewPCG(64, 32))
	b := makeBlock(t, rng, MaxK, MaxM, span(1<<30, MaxK), 28, 1200)
	for range 20 {
		perm := rng.Perm(MaxK + MaxM)[:MaxM]
		var dropped [][]byte
		var got []shard
		for i, s := range b.shards() {
			if slices.Contains(perm, i) {
				if !s.parity {
					dropped = append(dropped, s.b)
				}
				continue
			}
			got = append(got, s)
		}
		rng.Shuffle(len(got), func(i, j int) { got[i], got[j] = got[j], got[i] })
		d := newDecoder(t, DecoderConfig{})
		if miss := missingFrom(feedChecked(t, d, got, b.recs), dropped); len(miss) > 0 {
			t.Fatalf("%d lost records not repaired", len(miss))
		}
	}
}

// TestUnrecoverable drops m+1 shards, data among them: nothing is
// repaired, nothing panics, and the block is reported when it expires.
func TestUnrecoverable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(11, 12))
		b := makeBlock(t, rng, 10, 3, span(50, 10), 28, 500)
		d := newDecoder(t, DecoderConfig{Timeout: 200 * time.Millisecond})
		got, dropped := arrive(rng, b, 0b1100_0000_0011) // data 0, 1, parity 10, 11
		if len(dropped) != 2 {
			t.Fatalf("dropped %d data records", len(dropped))
		}
		if repaired := feed(t, d, got); len(repaired) != 0 {
			t.Fatalf("repaired %d records from too few shards", len(repaired))
		}
		time.Sleep(199 * time.Millisecond) // synctest: fake clock
		d.Expire()
		if st := d.Stats(); st.Unrecoverable != 0 {
			t.Fatalf("block expired early: %+v", st)
		}
		time.Sleep(time.Millisecond)
		d.Expire()
		want := DecoderStats{Blocks: 1, Unrecoverable: 1, Lost: 2}
		if diff := cmp.Diff(want, d.Stats(), cmpopts.IgnoreFields(DecoderStats{}, "Parity")); diff != "" {
			t.Errorf("stats (-want +got):\n%s", diff)
		}
		if blocks, records, n := d.InFlight(); blocks != 0 || records != 0 || n != 0 {
			t.Errorf("in flight after expiry: %d blocks, %d records, %d bytes", blocks, records, n)
		}
		// A late data record of the forgotten block is kept, then dropped.
		d.AddRecord(nil, dropped[0])
		time.Sleep(200 * time.Millisecond)
		d.Expire()
		if st := d.Stats(); st.Dropped != 1 {
			t.Errorf("Dropped = %d, want 1", st.Dropped)
		}
	})
}

// TestStream sends 300 records in blocks of k=10, m=3 with up to m random
// losses per block, reorders the whole stream within a window, duplicates
// some shards, and checks that every lost record is repaired exactly once
// and no delivered record is returned.
func TestStream(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	const k, m, n = 10, 3, 300
	// Parity records take seqs too: records of block i are 13i..13i+9.
	var all []shard
	var lost, sent [][]byte
	for blk := range n / k {
		seqs := span(uint64(blk*(k+m)), k)
		b := makeBlock(t, rng, k, m, seqs, 28, 1300)
		sent = append(sent, b.recs...)
		var mask uint64
		for _, i := range rng.Perm(k + m)[:rng.IntN(m+1)] {
			mask |= 1 << i
		}
		for i, s := range b.shards() {
			if mask&(1<<i) != 0 {
				if !s.parity {
					lost = append(lost, s.b)
				}
				continue
			}
			all = append(all, s)
			if rng.IntN(10) == 0 {
				all = append(all, s)
			}
		}
	}
	// Reorder: each shard moves back by up to 40 places.
	for i := range all {
		j := max(0, i-rng.IntN(40))
		all[i], all[j] = all[j], all[i]
	}
	d := newDecoder(t, DecoderConfig{})
	repaired := feedChecked(t, d, all, sent)
	// Checked after the whole stream: the Decoder reuses its buffers, never
	// the ones it returned.
	if miss := missingFrom(repaired, lost); len(miss) > 0 {
		t.Fatalf("%d of %d lost records not repaired", len(miss), len(lost))
	}
	st := d.Stats()
	if st.Blocks != n/k || st.Complete+st.RepairedBlocks != n/k || st.Unrecoverable != 0 {
		t.Errorf("stats %+v", st)
	}
	t.Logf("%d records lost, %d repaired (the rest were late); stats %+v", len(lost), len(repaired), st)
}

func TestDecoderConflict(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	a := makeBlock(t, rng, 4, 2, span(100, 4), 28, 200)
	other := makeBlock(t, rng, 3, 2, span(100, 3), 28, 200)   // same first seq, other k
	overlap := makeBlock(t, rng, 3, 2, span(102, 3), 28, 200) // seqs inside a
	d := newDecoder(t, DecoderConfig{})
	if _, err := d.AddParity(nil, a.parity[0]); err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string][]byte{"same first seq": other.parity[0], "overlapping": overlap.parity[1]} {
		if _, err := d.AddParity(nil, p); !errors.Is(err, ErrConflict) {
			t.Errorf("%s: AddParity = %v, want ErrConflict", name, err)
		}
	}
	if _, err := d.AddParity(nil, []byte{9}); !errors.Is(err, ErrMalformed) {
		t.Errorf("garbage: AddParity = %v, want ErrMalformed", err)
	}
	if st := d.Stats(); st.Malformed != 3 || st.Parity != 1 {
		t.Errorf("stats %+v", st)
	}
	// The block still repairs.
	got := feed(t, d, []shard{{b: a.recs[0]}, {b: a.recs[1]}, {b: a.recs[3]}})
	if diff := cmp.Diff([][]byte{a.recs[2]}, got, equalBytes); diff != "" {
		t.Errorf("repaired (-want +got):\n%s", diff)
	}
	// Late shards of the finished block are ignored quietly.
	if got := feed(t, d, []shard{{b: a.recs[2]}, {parity: true, b: a.parity[1]}}); len(got) != 0 {
		t.Errorf("late shards repaired %d records", len(got))
	}
}

// TestDecoderBadRecords feeds records that cannot belong to a block.
func TestDecoderBadRecords(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 18))
	b := makeBlock(t, rng, 3, 1, span(10, 3), 100, 100)
	d := newDecoder(t, DecoderConfig{})
	if _, err := d.AddParity(nil, b.parity[0]); err != nil {
		t.Fatal(err)
	}
	long := fakeRecord(rng, 10, 101) // longer than the block's shards
	for _, r := range [][]byte{nil, {1, 2, 3}, long, fakeRecord(rng, 5000, MaxShard+1)} {
		if got := d.AddRecord(nil, r); len(got) != 0 {
			t.Fatalf("repaired from a bad record")
		}
	}
	if _, records, _ := d.InFlight(); records != 0 {
		t.Errorf("%d bad records kept", records)
	}
	got := feed(t, d, []shard{{b: b.recs[1]}, {b: b.recs[2]}})
	if diff := cmp.Diff([][]byte{b.recs[0]}, got, equalBytes); diff != "" {
		t.Errorf("repaired (-want +got):\n%s", diff)
	}
}

// TestDecoderTamperedHeader changes a parity byte under a lost record's
// header: the repair's seq or length is wrong and it is dropped as corrupt.
func TestDecoderTamperedHeader(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 20))
	for _, tt := range []struct {
		name string
		off  int // offset in the shard
	}{{"length", 1}, {"seq", 8}, {"padding", 150}} {
		t.Run(tt.name, func(t *testing.T) {
			b := makeBlock(t, rng, 2, 1, span(10, 2), 100, 100)
			b.recs[1] = fakeRecord(rng, 11, 200)
			b.parity = encodeAll(t, EncoderConfig{K: 2, M: 1}, b.recs)
			p := slices.Clone(b.parity[0])
			p[len(p)-200+tt.off] ^= 0x40
			d := newDecoder(t, DecoderConfig{})
			got := feed(t, d, []shard{{b: b.recs[1]}, {parity: true, b: p}})
			if len(got) != 0 || d.Stats().Corrupt != 1 {
				t.Errorf("repaired %d, stats %+v", len(got), d.Stats())
			}
		})
	}
}

// TestDecoderBounds checks the block, record and byte limits and the
// window.
func TestDecoderBounds(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	t.Run("blocks", func(t *testing.T) {
		d := newDecoder(t, DecoderConfig{MaxBlocks: 4})
		for i := range 10 {
			b := makeBlock(t, rng, 2, 1, span(uint64(i*10), 2), 50, 50)
			feed(t, d, []shard{{parity: true, b: b.parity[0]}})
			if blocks, _, _ := d.InFlight(); blocks > 4 {
				t.Fatalf("%d blocks in flight", blocks)
			}
		}
		if st := d.Stats(); st.Unrecoverable != 6 || st.Lost != 12 {
			t.Errorf("stats %+v", st)
		}
	})
	t.Run("records", func(t *testing.T) {
		d := newDecoder(t, DecoderConfig{MaxRecords: 8})
		for seq := range uint64(20) {
			d.AddRecord(nil, fakeRecord(rng, seq, 40))
		}
		if _, records, n := d.InFlight(); records != 8 || n != 8*40 {
			t.Errorf("%d records, %d bytes in flight", records, n)
		}
		if st := d.Stats(); st.Dropped != 12 {
			t.Errorf("Dropped = %d", st.Dropped)
		}
	})
	t.Run("bytes", func(t *testing.T) {
		d := newDecoder(t, DecoderConfig{MaxBytes: MaxShard})
		for i := range 20 {
			b := makeBlock(t, rng, 4, 2, span(uint64(i*10), 4), 10000, 10000)
			feed(t, d, []shard{{b: b.recs[0]}, {parity: true, b: b.parity[0]}})
			if _, _, n := d.InFlight(); n > MaxShard {
				t.Fatalf("%d bytes in flight", n)
			}
		}
		// The newest block still repairs.
		b := makeBlock(t, rng, 4, 2, span(1000, 4), 10000, 10000)
		got := feed(t, d, []shard{{b: b.recs[0]}, {b: b.recs[1]}, {parity: true, b: b.parity[0]}, {parity: true, b: b.parity[1]}})
		if diff := cmp.Diff(b.recs[2:], bySeq(got), equalBytes); diff != "" {
			t.Errorf("repaired (-want +got):\n%s", diff)
		}
	})
	t.Run("window", func(t *testing.T) {
		d := newDecoder(t, DecoderConfig{Window: 100})
		old := makeBlock(t, rng, 2, 1, span(10, 2), 50, 50)
		feed(t, d, []shard{{parity: true, b: old.parity[0]}})
		d.AddRecord(nil, fakeRecord(rng, 50, 40))
		newer := makeBlock(t, rng, 2, 1, span(500, 2), 50, 50)
		feed(t, d, []shard{{parity: true, b: newer.parity[0]}})
		if blocks, records, _ := d.InFlight(); blocks != 1 || records != 0 {
			t.Errorf("%d blocks, %d records in flight; want the newer block only", blocks, records)
		}
		// Shards behind the window are ignored.
		if got := feed(t, d, []shard{{b: old.recs[0]}}); len(got) != 0 {
			t.Error("repaired behind the window")
		}
		if _, err := d.AddParity(nil, old.parity[0]); err != nil {
			t.Error(err)
		}
		if blocks, records, _ := d.InFlight(); blocks != 1 || records != 0 {
			t.Errorf("%d blocks, %d records in flight after old shards", blocks, records)
		}
	})
}

// TestDecoderExpiresRecords checks that data records whose parity never
// comes leave after the timeout.
func TestDecoderExpiresRecords(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(23, 24))
		d := newDecoder(t, DecoderConfig{Timeout: time.Second})
		for seq := range uint64(5) {
			d.AddRecord(nil, fakeRecord(rng, seq, 40))
			time.Sleep(100 * time.Millisecond) // synctest: fake clock
		}
		time.Sleep(500 * time.Millisecond) // the first is now exactly 1s old
		d.Expire()
		if _, records, _ := d.InFlight(); records != 4 {
			t.Errorf("%d records in flight, want 4", records)
		}
		time.Sleep(time.Second)
		d.Expire()
		if _, records, n := d.InFlight(); records != 0 || n != 0 {
			t.Errorf("%d records, %d bytes in flight", records, n)
		}
		if st := d.Stats(); st.Dropped != 5 {
			t.Errorf("Dropped = %d", st.Dropped)
		}
	})
}

func ExampleDecoder() {
	// The sender seals records and gives each to its Encoder; the receiver
	// gives each record that arrives, and each FECParity payload, to its
	// Decoder, then opens what the Decoder repaired.
	enc, _ := NewEncoder(EncoderConfig{K: 4, M: 2, MaxDelay: time.Hour})
	dec, _ := NewDecoder(DecoderConfig{Timeout: time.Hour})
	rng := rand.New(rand.NewPCG(1, 1))
	var parity [][]byte
	var records [][]byte
	for seq := range uint64(4) {
		r := fakeRecord(rng, seq, 100)
		records = append(records, r)
		parity, _ = enc.Add(parity, r)
	}
	var repaired [][]byte
	for i, r := range records {
		if i == 1 || i == 2 {
			continue // lost
		}
		repaired = dec.AddRecord(repaired, r)
	}
	for _, p := range parity {
		repaired, _ = dec.AddParity(repaired, p)
	}
	for _, r := range repaired {
		seq, _ := recordSeq(r)
		fmt.Println("repaired seq", seq)
	}
	// Output:
	// repaired seq 1
	// repaired seq 2
}
