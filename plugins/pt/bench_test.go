package pt

import (
	"context"
	"io"
	"net"
	"testing"
)

// obfs4Pair returns a connected client and server connection through two
// obfs4proxy processes.
func obfs4Pair(b *testing.B) (c, s net.Conn, dial func() (net.Conn, net.Conn)) {
	b.Helper()
	cli, srv, _ := newObfs4(b)
	ctx := context.Background()
	ln, err := srv.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	dial = func() (net.Conn, net.Conn) {
		acc := make(chan net.Conn, 1)
		go func() {
			s, err := ln.Accept(ctx)
			if err != nil {
				acc <- nil
				return
			}
			acc <- s
		}()
		c, err := cli.Dial(ctx, ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		s := <-acc
		if s == nil {
			c.Close()
			b.Fatal("Accept failed")
		}
		return c, s
	}
	c, s = dial()
	b.Cleanup(func() { c.Close(); s.Close() })
	return c, s, dial
}

// BenchmarkGoodput measures one stream through obfs4proxy, client to
// server, in 64 KiB writes.
func BenchmarkGoodput(b *testing.B) {
	c, s, _ := obfs4Pair(b)
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

// BenchmarkDial measures a connection's set-up through running obfs4proxy
// processes: SOCKS5, the obfs4 handshake, and the server PT's connection
// to the ORPort listener.
func BenchmarkDial(b *testing.B) {
	_, _, dial := obfs4Pair(b)
	b.ReportAllocs()
	for b.Loop() {
		c, s := dial()
		c.Close()
		s.Close()
	}
}
