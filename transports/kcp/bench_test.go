package kcp

import (
	"context"
	"io"
	"testing"
	"time"
)

// BenchmarkGoodput measures one connection's goodput on loopback, FEC and
// encryption included: 64 KiB writes, counted once the receiver has read
// them.
func BenchmarkGoodput(b *testing.B) {
	tr := newTransport(b, NewKey(), nil)
	c, s := connect(b, tr, tr)
	buf := make([]byte, 64<<10)
	total := int64(0)
	done := make(chan error, 1)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	go func() {
		_, err := io.Copy(io.Discard, s)
		done <- err
	}()
	for b.Loop() {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
		total += int64(len(buf))
	}
	// Close sends FIN after the data: the receiver's io.EOF marks the end.
	if err := c.Close(); err != nil {
		b.Fatal(err)
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkDial measures connection set-up (HELLO and WELCOME, then Accept)
// on loopback.
func BenchmarkDial(b *testing.B) {
	tr := newTransport(b, NewKey(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ln, err := tr.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	for b.Loop() {
		c, err := tr.Dial(ctx, addr)
		if err != nil {
			b.Fatal(err)
		}
		s, err := ln.Accept(ctx)
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
		s.Close()
	}
}
