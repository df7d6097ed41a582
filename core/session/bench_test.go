package session

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"

	"github.com/commucat/commucat/core/frame"
	"golang.org/x/crypto/chacha20poly1305"
)

var benchSizes = []int{1 << 10, 16 << 10}

func sizeName(n int) string { return fmt.Sprintf("%dKiB", n>>10) }

func BenchmarkSeal(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(sizeName(size), func(b *testing.B) {
			s := NewSealer(testKey())
			pt := make([]byte, size)
			buf := make([]byte, 0, size+Overhead)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if buf, _, err = s.Seal(buf[:0], pt); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkOpen(b *testing.B) {
	const batch = 64
	for _, size := range benchSizes {
		b.Run(sizeName(size), func(b *testing.B) {
			s, o := NewSealer(testKey()), NewOpener(testKey())
			var recs [][]byte
			for range batch {
				recs = append(recs, sealAll(b, s, make([]byte, size))...)
			}
			dst := make([]byte, 0, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if i == batch {
					// Replay the same records: forget that they were seen.
					i, o.window = 0, window{}
				}
				if _, _, err := o.Open(dst, recs[i]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkRawChaCha20Poly1305 is the baseline for Seal and Open: the AEAD
// alone, into a reused buffer.
func BenchmarkRawChaCha20Poly1305(b *testing.B) {
	key := testKey()
	aead, err := chacha20poly1305.New(key[:])
	if err != nil {
		b.Fatal(err)
	}
	var nonce [chacha20poly1305.NonceSize]byte
	for _, size := range benchSizes {
		pt := make([]byte, size)
		buf := make([]byte, 0, size+chacha20poly1305.Overhead)
		b.Run("seal-"+sizeName(size), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				buf = aead.Seal(buf[:0], nonce[:], pt, nil)
			}
		})
		ct := aead.Seal(nil, nonce[:], pt, nil)
		b.Run("open-"+sizeName(size), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := aead.Open(buf[:0], nonce[:], ct, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSessionSend measures one direction of a session over net.Pipe:
// packing, sealing, writing, reading, opening and delivering 16 KiB frames.
func BenchmarkSessionSend(b *testing.B) {
	c1, c2 := net.Pipe()
	ka, kb := pairKeys()
	tx, rx := New(c1, ka, Config{}), New(c2, kb, Config{})
	var wg sync.WaitGroup
	wg.Go(func() { tx.Run(context.Background()) })
	wg.Go(func() { rx.Run(context.Background()) })
	wg.Go(func() {
		for {
			if _, err := rx.Recv(context.Background()); err != nil {
				return
			}
		}
	})
	f := frame.Frame{Type: frame.StreamData, Stream: 1, Payload: make([]byte, 16<<10)}
	b.SetBytes(int64(len(f.Payload)))
	b.ReportAllocs()
	for b.Loop() {
		if err := tx.Send(context.Background(), f); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	tx.Close()
	rx.Close()
	wg.Wait()
}
