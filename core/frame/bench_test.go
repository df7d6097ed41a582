package frame

import (
	"bytes"
	"testing"
)

var benchSizes = []struct {
	name string
	n    int
}{
	{"64B", 64},
	{"1KiB", 1 << 10},
	{"16KiB", 16 << 10},
}

func benchFrame(n int) Frame {
	return Frame{Type: Message, Flags: FlagAckRequested, Stream: 3, Seq: 1 << 20, Payload: bytes.Repeat([]byte{0xa5}, n)}
}

func BenchmarkAppend(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			f := benchFrame(s.n)
			buf := make([]byte, 0, Size(f))
			b.SetBytes(int64(Size(f)))
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if buf, err = Append(buf[:0], f); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			enc, err := Append(nil, benchFrame(s.n))
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(enc)))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := Decode(enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkRead(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			enc, err := Append(nil, benchFrame(s.n))
			if err != nil {
				b.Fatal(err)
			}
			r := bytes.NewReader(enc)
			b.SetBytes(int64(len(enc)))
			b.ReportAllocs()
			for b.Loop() {
				r.Reset(enc)
				if _, err := Read(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkParseAck(b *testing.B) {
	enc := AckPayload{Kind: AckStored, IDs: ids(MaxAckIDs)}.Append(nil)
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseAck(enc); err != nil {
			b.Fatal(err)
		}
	}
}

// TestZeroAllocs pins what the benchmarks report: Append into a buffer with
// room and Decode allocate nothing.
func TestZeroAllocs(t *testing.T) {
	if testing.CoverMode() != "" {
		t.Skip("coverage instrumentation changes allocation counts")
	}
	for _, s := range benchSizes {
		f := benchFrame(s.n)
		buf := make([]byte, 0, Size(f))
		enc, err := Append(nil, f)
		if err != nil {
			t.Fatal(err)
		}
		if n := testing.AllocsPerRun(100, func() { buf, _ = Append(buf[:0], f) }); n != 0 {
			t.Errorf("Append %s: %v allocations, want 0", s.name, n)
		}
		if n := testing.AllocsPerRun(100, func() { _, _, _ = Decode(enc) }); n != 0 {
			t.Errorf("Decode %s: %v allocations, want 0", s.name, n)
		}
	}
}
