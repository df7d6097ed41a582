package fec

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/commucat/commucat/core/session"
)

// Benchmarks at the k=10, m=3, for records of 1200 bytes (a
// datagram) and 16 KiB (session's packing limit). Each reports ns/B, the
// CPU cost per byte of protected records (everything runs on the calling
// goroutine, so time is CPU time), and x-seal, that cost divided by
// session.Sealer's Seal cost per byte of the same record size, measured
// in the same run.
const benchK, benchM = 10, 3

var benchSizes = []int{1200, 16 << 10}

func sizeName(n int) string {
	if n%1024 == 0 {
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

// benchSealPlaintext is the plaintext length whose record is size bytes.
func benchSealPlaintext(size int) int { return size - session.Overhead }

func benchSeal(b *testing.B, size int) {
	s := session.NewSealer(testKey())
	pt := make([]byte, benchSealPlaintext(size))
	buf := make([]byte, 0, size)
	b.SetBytes(int64(size))
	for b.Loop() {
		var err error
		if buf, _, err = s.Seal(buf[:0], pt); err != nil {
			b.Fatal(err)
		}
	}
}

// sealNsPerByte times Seal of n records of size bytes. The benchmarks call
// it right after their own loop over the same number of bytes, so that the
// ratio compares two measurements taken in the same run under the same
// load. (testing.Benchmark cannot run inside a benchmark.)
func sealNsPerByte(size, n int) float64 {
	s := session.NewSealer(testKey())
	pt := make([]byte, benchSealPlaintext(size))
	buf := make([]byte, 0, size)
	start := time.Now()
	for range n {
		buf, _, _ = s.Seal(buf[:0], pt)
	}
	return float64(time.Since(start).Nanoseconds()) / float64(n) / float64(size)
}

// report adds ns/B and x-seal to b: records is the records of size bytes
// per op.
func report(b *testing.B, size, records int) {
	if b.N == 0 || b.Elapsed() == 0 {
		return
	}
	nsPerByte := float64(b.Elapsed().Nanoseconds()) / float64(b.N) / float64(records*size)
	b.ReportMetric(nsPerByte, "ns/B")
	b.ReportMetric(nsPerByte/sealNsPerByte(size, b.N*records), "x-seal")
}

// BenchmarkSeal is session's Seal at the same record sizes, for reference.
func BenchmarkSeal(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(sizeName(size), func(b *testing.B) {
			b.ReportAllocs()
			benchSeal(b, size)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(size), "ns/B")
		})
	}
}

// BenchmarkEncode times Add for one block of k records (the last Add
// makes the m parity payloads).
func BenchmarkEncode(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(sizeName(size), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 1))
			rec := fakeRecord(rng, 0, size)
			e, err := NewEncoder(EncoderConfig{K: benchK, M: benchM, MaxDelay: time.Hour})
			if err != nil {
				b.Fatal(err)
			}
			parity := make([][]byte, 0, benchM)
			seq := uint64(0)
			b.SetBytes(int64(benchK * size))
			b.ReportAllocs()
			for b.Loop() {
				for range benchK {
					binary.BigEndian.PutUint64(rec[4:12], seq)
					seq++
					if parity, err = e.Add(parity[:0], rec); err != nil {
						b.Fatal(err)
					}
				}
				if len(parity) != benchM {
					b.Fatalf("%d parity payloads", len(parity))
				}
			}
			report(b, size, benchK)
		})
	}
}

// BenchmarkDecode times a Decoder taking one block: its k data records
// (less the lost ones) and then its m parity payloads, repairing the lost
// records. A pool of distinct blocks is replayed through fresh Decoders.
func BenchmarkDecode(b *testing.B) {
	const pool = 32
	for _, size := range benchSizes {
		rng := rand.New(rand.NewPCG(2, 2))
		blocks := make([]testBlock, pool)
		for i := range blocks {
			blocks[i] = makeBlock(b, rng, benchK, benchM, span(uint64(i*(benchK+benchM)), benchK), size, size)
		}
		for _, lost := range []int{0, 1, benchM} {
			b.Run(fmt.Sprintf("%s/lost=%d", sizeName(size), lost), func(b *testing.B) {
				var d *Decoder
				i := 0
				out := make([][]byte, 0, benchM)
				b.SetBytes(int64(benchK * size))
				b.ReportAllocs()
				for b.Loop() {
					if i%pool == 0 {
						d = newDecoder(b, DecoderConfig{})
					}
					blk := blocks[i%pool]
					i++
					out = out[:0]
					for _, r := range blk.recs[lost:] {
						out = d.AddRecord(out, r)
					}
					for _, p := range blk.parity {
						var err error
						if out, err = d.AddParity(out, p); err != nil {
							b.Fatal(err)
						}
					}
					if len(out) != lost {
						b.Fatalf("repaired %d of %d", len(out), lost)
					}
				}
				report(b, size, benchK)
			})
		}
	}
}
