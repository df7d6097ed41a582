package fec

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/commucat/commucat/core/session"
	"github.com/google/go-cmp/cmp"
)

func testKey() [32]byte {
	var k [32]byte
	for i := range k {
		k[i] = byte(i + 1)
	}
	return k
}

// sealAll seals each plaintext with a real session.Sealer.
func sealAll(t testing.TB, pts [][]byte) [][]byte {
	t.Helper()
	s := session.NewSealer(testKey())
	recs := make([][]byte, len(pts))
	for i, pt := range pts {
		r, _, err := s.Seal(nil, pt)
		if err != nil {
			t.Fatal(err)
		}
		recs[i] = r
	}
	return recs
}

func plaintexts(rng *rand.Rand, n int) [][]byte {
	pts := make([][]byte, n)
	for i := range pts {
		pts[i] = fmt.Appendf(nil, "message %d %s", i, make([]byte, rng.IntN(2000)))
	}
	return pts
}

// TestRepairedRecordsOpen seals real records, loses some, repairs them and
// opens everything with a real session.Opener: every plaintext comes back.
func TestRepairedRecordsOpen(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	pts := plaintexts(rng, 40)
	recs := sealAll(t, pts)
	parity := encodeAll(t, EncoderConfig{K: 10, M: 3}, recs)
	if len(parity) != 12 {
		t.Fatalf("%d parity payloads", len(parity))
	}
	lost := map[int]bool{0: true, 4: true, 9: true, 15: true, 22: true, 23: true, 39: true}
	d := newDecoder(t, DecoderConfig{})
	o := session.NewOpener(testKey())
	var got [][]byte
	open := func(r []byte) {
		t.Helper()
		pt, _, err := o.Open(nil, r)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		got = append(got, pt)
	}
	var repaired [][]byte
	for i, r := range recs {
		if !lost[i] {
			// The Decoder gets the sealed bytes before Open could touch
			// them.
			repaired = d.AddRecord(repaired, r)
			open(r)
		}
		if i%10 == 9 {
			for _, p := range parity[i/10*3 : i/10*3+3] {
				var err error
				if repaired, err = d.AddParity(repaired, p); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if len(repaired) != len(lost) {
		t.Fatalf("repaired %d records, lost %d", len(repaired), len(lost))
	}
	for _, r := range repaired {
		open(r)
	}
	slices.SortFunc(got, func(a, b []byte) int { return slices.Compare(a, b) })
	slices.SortFunc(pts, func(a, b []byte) int { return slices.Compare(a, b) })
	if diff := cmp.Diff(pts, got, equalBytes); diff != "" {
		t.Errorf("plaintexts (-sent +opened):\n%s", diff)
	}
}

// TestTamperedParityFailsOpen changes one parity byte that falls in a lost
// record's ciphertext: the Decoder cannot tell, the repaired record has the
// right length and seq, and Open refuses it.
func TestTamperedParityFailsOpen(t *testing.T) {
	rng := rand.New(rand.NewPCG(33, 34))
	recs := sealAll(t, plaintexts(rng, 10))
	parity := encodeAll(t, EncoderConfig{K: 10, M: 3}, recs)
	const victim = 6
	for _, off := range []int{session.HeaderSize, session.HeaderSize + 5, len(recs[victim]) - 1} {
		t.Run(fmt.Sprint("offset ", off), func(t *testing.T) {
			p := slices.Clone(parity[0])
			p[headerLen0(t, p)+off] ^= 0x01
			d := newDecoder(t, DecoderConfig{})
			var repaired [][]byte
			for i, r := range recs {
				if i != victim {
					repaired = d.AddRecord(repaired, r)
				}
			}
			repaired, err := d.AddParity(repaired, p)
			if err != nil {
				t.Fatal(err)
			}
			if len(repaired) != 1 || len(repaired[0]) != len(recs[victim]) {
				t.Fatalf("repaired %d records", len(repaired))
			}
			if slices.Equal(repaired[0], recs[victim]) {
				t.Fatal("tampering changed nothing")
			}
			o := session.NewOpener(testKey())
			if _, _, err := o.Open(nil, repaired[0]); !errors.Is(err, session.ErrAuth) {
				t.Fatalf("Open of a record repaired from a tampered shard = %v, want ErrAuth", err)
			}
		})
	}
}

// headerLen0 is the header length of parity payload p.
func headerLen0(t *testing.T, p []byte) int {
	t.Helper()
	_, shard, err := parseParity(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	return len(p) - len(shard)
}
