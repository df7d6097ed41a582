package plugins

import (
	"context"
	"io"
	"net"
	"testing"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/transports/tcp"
)

// benchSides returns the tcp transport in-process and as a plugin, to be
// measured in the same run.
func benchSides(b *testing.B) []struct {
	name           string
	client, server transport.Transport
} {
	b.Helper()
	_, r := startHost(b, HostConfig{}, pluginDir(b, map[string]string{
		"tcp":  buildPlugin(b, "tcp", "./cmd/commucat-transport-tcp"),
		"good": buildPlugin(b, "faulty", "./plugins/plugintest/cmd/faulty"), // tcp, spliced
	}))
	pc, ps := serverAndClient(b, r, "tcp")
	sc, ss := serverAndClient(b, r, "good")
	return []struct {
		name           string
		client, server transport.Transport
	}{
		{"inprocess", tcp.New(), tcp.New()},
		{"plugin", pc, ps},         // sockets handed over
		{"plugin-spliced", sc, ss}, // every byte through the plugin process
	}
}

// benchPair returns a connected pair over client and server.
func benchPair(b *testing.B, client, server transport.Transport) (c, s net.Conn) {
	b.Helper()
	ctx := context.Background()
	ln, err := server.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		s, err := ln.Accept(ctx)
		if err != nil {
			b.Error(err)
		}
		acc <- s
	}()
	c, err = client.Dial(ctx, ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	s = <-acc
	if s == nil {
		b.FailNow()
	}
	b.Cleanup(func() {
		c.Close()
		s.Close()
	})
	return c, s
}

// BenchmarkGoodput moves one stream of 64 KiB writes: tcp in-process,
// tcp as a plugin (both ends through the host; the plugin hands the
// sockets over), and tcp spliced through a plugin process at both ends.
func BenchmarkGoodput(b *testing.B) {
	for _, side := range benchSides(b) {
		b.Run(side.name, func(b *testing.B) {
			c, s := benchPair(b, side.client, side.server)
			done := make(chan error, 1)
			go func() {
				_, err := io.Copy(io.Discard, s)
				done <- err
			}()
			buf := make([]byte, 64<<10)
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			c.(interface{ CloseWrite() error }).CloseWrite()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkRoundTrip measures one 64-byte request echoed back; the
// difference between the two is the latency a plugin adds per round trip.
func BenchmarkRoundTrip(b *testing.B) {
	for _, side := range benchSides(b) {
		b.Run(side.name, func(b *testing.B) {
			c, s := benchPair(b, side.client, side.server)
			done := make(chan struct{})
			go func() {
				defer close(done)
				io.Copy(s, s) //nolint:errcheck // ends with the connection
			}()
			buf := make([]byte, 64)
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			c.Close()
			s.Close()
			<-done
		})
	}
}

// BenchmarkDial measures a connection's set-up: dial, accept, close.
func BenchmarkDial(b *testing.B) {
	for _, side := range benchSides(b) {
		b.Run(side.name, func(b *testing.B) {
			ctx := context.Background()
			ln, err := side.server.Listen(ctx, "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			for range b.N {
				acc := make(chan net.Conn, 1)
				go func() {
					s, _ := ln.Accept(ctx)
					acc <- s
				}()
				c, err := side.client.Dial(ctx, ln.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				s := <-acc
				if s == nil {
					b.Fatal("accept failed")
				}
				c.Close()
				s.Close()
			}
		})
	}
}
