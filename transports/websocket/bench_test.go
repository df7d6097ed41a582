package websocket

import (
	"context"
	"io"
	"testing"
	"time"
)

// BenchmarkGoodput measures one connection's goodput on loopback, client
// to server: 64 KiB writes, counted once the receiver has read them.
func BenchmarkGoodput(b *testing.B) {
	client, server, _ := pair(b)
	c, s := connect(b, client, server)
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, s)
		done <- err
	}()
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.Close(); err != nil {
		b.Fatal(err)
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkGoodputDown is BenchmarkGoodput from server to client: the
// server's frames are not masked.
func BenchmarkGoodputDown(b *testing.B) {
	client, server, _ := pair(b)
	c, s := connect(b, client, server)
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, c)
		done <- err
	}()
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkDial measures connection set-up on loopback: TCP, the TLS
// handshake with the browser ClientHello, the WebSocket handshake and
// Accept.
func BenchmarkDial(b *testing.B) {
	client, server, _ := pair(b)
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
