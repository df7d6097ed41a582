package fec

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestEncoderConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  EncoderConfig
		ok   bool
	}{
		{"zero is the default", EncoderConfig{}, true},
		{"max", EncoderConfig{K: MaxK, M: MaxM}, true},
		{"k too big", EncoderConfig{K: MaxK + 1}, false},
		{"k negative", EncoderConfig{K: -1}, false},
		{"m too big", EncoderConfig{M: MaxM + 1}, false},
		{"negative delay", EncoderConfig{MaxDelay: -time.Second}, false},
		{"negative size", EncoderConfig{MaxBlockBytes: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate = %v, want ok %v", err, tt.ok)
			}
			if _, nerr := NewEncoder(tt.cfg); (nerr == nil) != tt.ok {
				t.Fatalf("NewEncoder = %v", nerr)
			}
		})
	}
}

// parityInfo is what a test checks of each parity payload.
type parityInfo struct {
	Block    uint64
	K, M     int
	Index    int
	ShardLen int
	Seqs     []uint64
}

func infos(t *testing.T, parity [][]byte) []parityInfo {
	t.Helper()
	var out []parityInfo
	for _, p := range parity {
		h, _, err := parseParity(p, nil)
		if err != nil {
			t.Fatalf("encoder made a payload that does not parse: %v", err)
		}
		out = append(out, parityInfo{h.block, h.k, h.m, h.index, h.shardLen, h.seqs})
	}
	return out
}

func TestEncoderBlocks(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	rec := func(seq uint64, size int) []byte { return fakeRecord(rng, seq, size) }
	type step struct {
		rec   []byte // nil: Flush
		want  []parityInfo
		stats *EncoderStats // checked after the step if set
	}
	tests := []struct {
		name  string
		cfg   EncoderConfig
		steps []step
	}{
		{
			name: "full block of three, then a flushed partial block",
			cfg:  EncoderConfig{K: 3, M: 2},
			steps: []step{
				{rec: rec(10, 100)},
				{rec: rec(11, 300)},
				{rec: rec(13, 200), want: []parityInfo{
					{0, 3, 2, 3, 300, []uint64{10, 11, 13}},
					{0, 3, 2, 4, 300, []uint64{10, 11, 13}},
				}},
				{rec: rec(14, 50)},
				{want: []parityInfo{
					{1, 1, 2, 1, 50, []uint64{14}},
					{1, 1, 2, 2, 50, []uint64{14}},
				}, stats: &EncoderStats{Records: 4, DataBytes: 650, Blocks: 2, PartialBlocks: 1, Parity: 4, ParityBytes: 2*(300+10) + 2*(50+7)}},
				{}, // Flush with nothing open
			},
		},
		{
			name: "a seq not above the block's last closes the block",
			cfg:  EncoderConfig{K: 4, M: 1},
			steps: []step{
				{rec: rec(5, 40)},
				{rec: rec(6, 40)},
				{rec: rec(6, 40), want: []parityInfo{{0, 2, 1, 2, 40, []uint64{5, 6}}}},
				{want: []parityInfo{{1, 1, 1, 1, 40, []uint64{6}}}},
			},
		},
		{
			name: "the size limit closes the block",
			cfg:  EncoderConfig{K: 10, M: 1, MaxBlockBytes: 1000},
			steps: []step{
				{rec: rec(1, 300)},
				{rec: rec(2, 300)},
				{rec: rec(3, 300)},
				{rec: rec(4, 300), want: []parityInfo{{0, 3, 1, 3, 300, []uint64{1, 2, 3}}}},
				{rec: rec(5, 600), want: []parityInfo{{1, 1, 1, 1, 300, []uint64{4}}}},
				{want: []parityInfo{{2, 1, 1, 1, 600, []uint64{5}}}},
			},
		},
		{
			name: "records too long for a shard go unprotected",
			cfg:  EncoderConfig{K: 2, M: 1},
			steps: []step{
				{rec: rec(1, 100)},
				{rec: rec(2, MaxShard+1)},
				{rec: rec(3, MaxShard), want: []parityInfo{{0, 2, 1, 2, MaxShard, []uint64{1, 3}}}},
				{stats: &EncoderStats{Records: 3, Unprotected: 1, DataBytes: 100 + MaxShard, Blocks: 1, Parity: 1, ParityBytes: MaxShard + 10}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.MaxDelay = time.Hour // only the fake clock tests the delay
			e, err := NewEncoder(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range tt.steps {
				var parity [][]byte
				if s.rec != nil {
					if parity, err = e.Add(nil, s.rec); err != nil {
						t.Fatalf("step %d: %v", i, err)
					}
				} else {
					parity = e.Flush(nil)
				}
				if diff := cmp.Diff(s.want, infos(t, parity)); diff != "" {
					t.Errorf("step %d parity (-want +got):\n%s", i, diff)
				}
				if s.stats != nil {
					if diff := cmp.Diff(*s.stats, e.Stats()); diff != "" {
						t.Errorf("step %d stats (-want +got):\n%s", i, diff)
					}
				}
			}
		})
	}
}

func TestEncoderParams(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	e, err := NewEncoder(EncoderConfig{K: 2, M: 1, MaxDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][2]int{{0, 1}, {MaxK + 1, 1}, {2, -1}, {2, MaxM + 1}} {
		if err := e.SetParams(bad[0], bad[1]); err == nil {
			t.Errorf("SetParams(%d, %d) accepted", bad[0], bad[1])
		}
	}
	if _, err := e.Add(nil, fakeRecord(rng, 1, 50)); err != nil {
		t.Fatal(err)
	}
	// New parameters apply from the next block: this one still closes at 2.
	if err := e.SetParams(3, 2); err != nil {
		t.Fatal(err)
	}
	if k, m := e.Params(); k != 3 || m != 2 {
		t.Errorf("Params = %d, %d", k, m)
	}
	p, _ := e.Add(nil, fakeRecord(rng, 2, 50))
	if got := infos(t, p); len(got) != 1 || got[0].K != 2 {
		t.Fatalf("old block closed as %+v", got)
	}
	for seq := uint64(3); seq < 5; seq++ {
		if p, _ = e.Add(nil, fakeRecord(rng, seq, 50)); p != nil {
			t.Fatalf("block closed early")
		}
	}
	if p, _ = e.Add(nil, fakeRecord(rng, 5, 50)); len(p) != 2 {
		t.Fatalf("got %d parity payloads for k=3 m=2, want 2", len(p))
	}
	// m = 0: no blocks, no parity.
	if err := e.SetParams(3, 0); err != nil {
		t.Fatal(err)
	}
	before := e.Stats()
	for seq := uint64(6); seq < 10; seq++ {
		if p, _ = e.Add(nil, fakeRecord(rng, seq, 50)); p != nil || e.Pending() != 0 {
			t.Fatal("parity made with m = 0")
		}
	}
	if got := e.Stats().Unprotected - before.Unprotected; got != 4 {
		t.Errorf("Unprotected grew by %d, want 4", got)
	}
}

func TestEncoderRejects(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	good := fakeRecord(rng, 1, 40)
	bad := func(f func(r []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	tests := []struct {
		name string
		rec  []byte
	}{
		{"empty", nil},
		{"short", good[:27]},
		{"length field too big", bad(func(r []byte) []byte { r[2]++; return r })},
		{"length field too small", bad(func(r []byte) []byte { r[2]--; return r })},
		{"reserved seq", bad(func(r []byte) []byte {
			copy(r[4:12], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
			return r
		})},
	}
	e, err := NewEncoder(EncoderConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := e.Add(nil, tt.rec); !errors.Is(err, ErrNotRecord) {
				t.Fatalf("Add = %v, want ErrNotRecord", err)
			}
		})
	}
	if e.Pending() != 0 || e.Stats().Records != 0 {
		t.Error("a rejected record was taken")
	}
}

// TestEncoderDeadline checks the flush deadline on the fake clock: Deadline
// is MaxDelay after the block opened, and an Add after it closes the old
// block first.
func TestEncoderDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(7, 8))
		e, err := NewEncoder(EncoderConfig{K: 10, M: 1, MaxDelay: 30 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := e.Deadline(); ok {
			t.Fatal("deadline with no block open")
		}
		start := time.Now()
		e.Add(nil, fakeRecord(rng, 1, 40))
		time.Sleep(10 * time.Millisecond) // synctest: fake clock
		e.Add(nil, fakeRecord(rng, 2, 40))
		if d, ok := e.Deadline(); !ok || !d.Equal(start.Add(30*time.Millisecond)) {
			t.Fatalf("Deadline = %v, %v; want open time + 30ms", d, ok)
		}
		time.Sleep(20 * time.Millisecond) // exactly at the deadline
		p, _ := e.Add(nil, fakeRecord(rng, 3, 40))
		if diff := cmp.Diff([]parityInfo{{0, 2, 1, 2, 40, []uint64{1, 2}}}, infos(t, p)); diff != "" {
			t.Errorf("parity (-want +got):\n%s", diff)
		}
		if d, _ := e.Deadline(); !d.Equal(time.Now().Add(30 * time.Millisecond)) {
			t.Errorf("new block's deadline %v", d.Sub(start))
		}
	})
}

// TestEncoderFlushTimer runs the loop the router is expected to run: a
// timer armed from Deadline calls Flush. On the fake clock, a lone record's
// parity leaves exactly MaxDelay after the record.
func TestEncoderFlushTimer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const delay = 25 * time.Millisecond
		rng := rand.New(rand.NewPCG(9, 10))
		e, err := NewEncoder(EncoderConfig{K: 10, M: 2, MaxDelay: delay})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		records := make(chan []byte)
		parity := make(chan [][]byte, 4)
		var wg sync.WaitGroup
		wg.Go(func() { // the sender loop: owns e
			timer := time.NewTimer(time.Hour)
			timer.Stop()
			for {
				select {
				case <-ctx.Done():
					timer.Stop()
					return
				case r := <-records:
					p, err := e.Add(nil, r)
					if err != nil {
						t.Error(err)
					}
					if len(p) > 0 {
						parity <- p
					}
				case <-timer.C:
					parity <- e.Flush(nil)
				}
				if d, ok := e.Deadline(); ok {
					timer.Reset(time.Until(d))
				} else {
					timer.Stop()
				}
			}
		})
		for seq := range uint64(3) {
			start := time.Now()
			records <- fakeRecord(rng, 100+seq, 60)
			p := <-parity
			if got := time.Since(start); got != delay {
				t.Errorf("record %d: parity after %v, want %v", seq, got, delay)
			}
			if got := infos(t, p); len(got) != 2 || got[0].K != 1 || got[0].Seqs[0] != 100+seq {
				t.Errorf("record %d: parity %+v", seq, got)
			}
		}
		cancel()
		wg.Wait()
	})
}
