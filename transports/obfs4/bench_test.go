package obfs4

import (
	"context"
	"io"
	"testing"
	"time"
)

// BenchmarkGoodput measures one stream's goodput on loopback in iat-mode
// 0: 64 KiB writes, counted once the receiver has read them.
func BenchmarkGoodput(b *testing.B) {
	client, server := newServer(b, nil)
	c, s := pair(b, client, server)
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, s)
		done <- err
	}()
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	c.Close()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkDial measures connection set-up on loopback: TCP connect, the
// client's session key, the obfs4 handshake and Accept.
func BenchmarkDial(b *testing.B) {
	client, server := newServer(b, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ln := listen(b, server)
	addr := ln.Addr().String()
	b.ReportAllocs()
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
