package padding

import (
	"testing"
)

func TestProfilesDifferPerGateway(t *testing.T) {
	a, b := New([SeedSize]byte{1}), New([SeedSize]byte{2})
	if a.handshake == b.handshake && a.records == b.records {
		t.Fatal("two seeds gave the same profile")
	}
	if again := New([SeedSize]byte{1}); again != a {
		t.Fatal("the same seed gave two profiles")
	}
}

func TestLengthsFallInRangeAndVary(t *testing.T) {
	seed, err := NewSeed()
	if err != nil {
		t.Fatal(err)
	}
	p := New(seed)
	for msg, unpadded := range map[int]int{1: 1250, 2: 1150, 3: 100} {
		sp := p.handshake[msg-1]
		seen := map[int]bool{}
		for range 200 {
			total := unpadded + p.Handshake(msg, unpadded)
			if total < sp.lo || total > sp.hi {
				t.Fatalf("message %d: length %d outside [%d, %d]", msg, total, sp.lo, sp.hi)
			}
			seen[total] = true
		}
		if len(seen) < 20 {
			t.Fatalf("message %d: only %d distinct lengths in 200 draws", msg, len(seen))
		}
	}
	if got := p.Handshake(1, 1<<20); got != 0 {
		t.Fatalf("pad for an oversized message = %d, want 0", got)
	}
	if got := p.Record(Records, 10); got != 0 {
		t.Fatalf("pad after the first %d records = %d, want 0", Records, got)
	}
	for r := range uint64(Records) {
		if got := 10 + p.Record(r, 10); got < p.records[r].lo || got > p.records[r].hi {
			t.Fatalf("record %d: length %d outside %v", r, got, p.records[r])
		}
	}
}

func TestParse(t *testing.T) {
	p := New([SeedSize]byte{9, 8, 7})
	got, err := Parse(p.String())
	if err != nil || got != p {
		t.Fatalf("Parse(String()) = %v, %v", got, err)
	}
	enc := p.String()
	for _, bad := range []string{"", "abc", "!!!!", enc + "AA", enc[:8] + "\n" + enc[8:], enc + "\r\n"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(New([SeedSize]byte{1}).String())
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err != nil {
			return
		}
		if p.String() != s {
			t.Fatalf("Parse(%q).String() = %q", s, p.String())
		}
	})
}
