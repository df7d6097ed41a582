package frame

import (
	"bytes"
	"errors"
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSack(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    SackPayload
		wantErr bool
	}{
		{"nothing", []byte{3, 0, 0, 0}, SackPayload{}, false},
		{"cumulative and window", []byte{3, 0xac, 0x02, 0x80, 0x02, 0}, SackPayload{Cumulative: 300, Window: 256}, false},
		// 1..5 received, 6 missing, 7..9 received, 10 and 11 missing, 12.
		{"two ranges", []byte{3, 5, 64, 2, 0, 2, 1, 0},
			SackPayload{Cumulative: 5, Window: 64, Ranges: []SackRange{{7, 9}, {12, 12}}}, false},
		{"max ranges", sackRanges(MaxSackRanges).Append(nil), sackRanges(MaxSackRanges), false},
		{"max values", SackPayload{Cumulative: math.MaxUint64 - 2, Ranges: []SackRange{{math.MaxUint64, math.MaxUint64}}}.Append(nil),
			SackPayload{Cumulative: math.MaxUint64 - 2, Ranges: []SackRange{{math.MaxUint64, math.MaxUint64}}}, false},
		{"empty", nil, SackPayload{}, true},
		{"stored kind", []byte{1, 0, 0, 0}, SackPayload{}, true},
		{"no window", []byte{3, 0}, SackPayload{}, true},
		{"no count", []byte{3, 0, 0}, SackPayload{}, true},
		{"count not minimal", []byte{3, 0, 0, 0x80, 0}, SackPayload{}, true},
		{"too many ranges", sackRanges(MaxSackRanges + 1).Append(nil), SackPayload{}, true},
		{"huge count", []byte{3, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}, SackPayload{}, true},
		{"range cut", []byte{3, 5, 0, 1, 0}, SackPayload{}, true},
		{"trailing byte", []byte{3, 0, 0, 0, 0}, SackPayload{}, true},
		{"window overflows", append([]byte{3, 1}, uvarintBytes(math.MaxUint64)...), SackPayload{}, true},
		{"gap overflows", append(append(append([]byte{3}, uvarintBytes(math.MaxUint64-1)...), 0, 1), 0, 0), SackPayload{}, true},
		{"length overflows", append([]byte{3, 0, 0, 1, 0}, uvarintBytes(math.MaxUint64-1)...), SackPayload{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSack(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrPayload) {
					t.Fatalf("ParseSack = %+v, %v; want an error matching ErrPayload", got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSack: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseSack (-want +got):\n%s", diff)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
			if again := got.Append(nil); !bytes.Equal(again, tt.in) {
				t.Errorf("Append = %x, want %x", again, tt.in)
			}
		})
	}
}

func TestSackValidate(t *testing.T) {
	tests := []struct {
		name string
		s    SackPayload
	}{
		{"touches cumulative", SackPayload{Cumulative: 5, Ranges: []SackRange{{6, 7}}}},
		{"touching ranges", SackPayload{Ranges: []SackRange{{2, 3}, {4, 5}}}},
		{"descending", SackPayload{Ranges: []SackRange{{10, 11}, {2, 3}}}},
		{"inverted", SackPayload{Ranges: []SackRange{{5, 4}}}},
		{"too many", sackRanges(MaxSackRanges + 1)},
		{"window overflows", SackPayload{Cumulative: 2, Window: math.MaxUint64}},
		{"after the end", SackPayload{Cumulative: math.MaxUint64 - 1, Ranges: []SackRange{{math.MaxUint64, math.MaxUint64}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.s.Validate(); !errors.Is(err, ErrPayload) {
				t.Errorf("Validate(%+v) = %v, want an error matching ErrPayload", tt.s, err)
			}
		})
	}
}

func sackRanges(n int) SackPayload {
	s := SackPayload{Cumulative: 1000, Window: 4096}
	for i := range n {
		first := uint64(1002 + 10*i)
		s.Ranges = append(s.Ranges, SackRange{first, first + uint64(i%4)})
	}
	return s
}

func uvarintBytes(x uint64) []byte {
	var b []byte
	for x >= 0x80 {
		b = append(b, byte(x)|0x80)
		x >>= 7
	}
	return append(b, byte(x))
}

func FuzzSack(f *testing.F) {
	f.Add(SackPayload{}.Append(nil))
	f.Add(SackPayload{Cumulative: 5, Window: 64, Ranges: []SackRange{{7, 9}, {12, 12}}}.Append(nil))
	f.Add(sackRanges(MaxSackRanges).Append(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzPayload(t, Ack, b, ParseSack, SackPayload.Validate)
		if len(b) > 0 && b[0] == byte(AckRecords) {
			if _, err := ParseSack(b); err == nil && len(b) > Ack.MaxPayload() {
				t.Fatalf("parsed a %d-byte sack, over the ack limit", len(b))
			}
		}
	})
}

func BenchmarkSack(b *testing.B) {
	s := sackRanges(8)
	buf := s.Append(nil)
	b.ReportAllocs()
	for b.Loop() {
		buf = s.Append(buf[:0])
		if _, err := ParseSack(buf); err != nil {
			b.Fatal(err)
		}
	}
}
