package quic

import (
	"context"
	"io"
	"testing"
	"time"
)

// BenchmarkGoodput measures one stream's goodput on loopback: 64 KiB
// writes, counted once the receiver has read them.
func BenchmarkGoodput(b *testing.B) {
	client, server := pair(b, nil)
	c, s := connect(b, client, server)
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, s)
		done <- err
	}()
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		b.Fatal(err)
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkDial measures connection set-up: handshake, stream, preamble and
// Accept, on loopback.
func BenchmarkDial(b *testing.B) {
	client, server := pair(b, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ln, err := server.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	for b.Loop() {
		c, err := client.Dial(ctx, addr)
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
