package plugins

import (
	"context"
	"io"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/transports/kcp"
	"github.com/commucat/commucat/transports/obfs4"
	"github.com/commucat/commucat/transports/quic"
	"github.com/commucat/commucat/transports/reality"
	"github.com/commucat/commucat/transports/tcp"
	"github.com/commucat/commucat/transports/websocket"
)

// side is one way to run a transport: its client and its server.
type side struct {
	name           string
	client, server transport.Transport
}

// benchSides returns the tcp transport in-process and as a plugin, to be
// measured in the same run.
func benchSides(b *testing.B) []side {
	b.Helper()
	_, r := startHost(b, HostConfig{}, pluginDir(b, map[string]string{
		"tcp":  buildPlugin(b, "tcp", "./cmd/commucat-transport-tcp"),
		"good": buildPlugin(b, "faulty", "./plugins/plugintest/cmd/faulty"), // tcp, spliced
	}))
	pc, ps := serverAndClient(b, r, "tcp")
	sc, ss := serverAndClient(b, r, "good")
	return []side{
		{"inprocess", tcp.New(), tcp.New()},
		{"plugin", pc, ps},         // sockets handed over
		{"plugin-spliced", sc, ss}, // every byte through the plugin process
		// One plugin, on the client: what one end of a real link adds.
		{"plugin-spliced-client", sc, tcp.New()},
	}
}

// camouflage are the transports that carry their bytes through the plugin
// process (none hands a socket over).
var camouflage = []struct {
	name   string
	client transport.Factory
	server transport.ServerFactory
}{
	{websocket.Name, websocket.Factory, websocket.ServerFactory},
	{reality.Name, reality.Factory, reality.ServerFactory},
	{obfs4.Name, obfs4.Factory, obfs4.ServerFactory},
	{quic.Name, quic.Factory, quic.ServerFactory},
	{kcp.Name, kcp.Factory, kcp.ServerFactory},
}

// inprocessRegistry returns a registry of tcp and the camouflage
// transports in-process.
func inprocessRegistry() *transport.Registry {
	r := new(transport.Registry)
	r.Register(tcp.Name, tcp.Factory)
	r.RegisterServer(tcp.Name, tcp.ServerFactory)
	for _, c := range camouflage {
		r.Register(c.name, c.client)
		r.RegisterServer(c.name, c.server)
	}
	return r
}

// camouflageSides returns, for each camouflage transport, the transport
// in-process and as a plugin (both ends through one host), configured
// alike, to be measured in the same run. only, if not empty, keeps the
// transports it names.
func camouflageSides(b *testing.B, only ...string) map[string][]side {
	b.Helper()
	keep := func(name string) bool { return len(only) == 0 || slices.Contains(only, name) }
	inproc := inprocessRegistry()
	bins := map[string]string{}
	for _, c := range camouflage {
		if keep(c.name) {
			bins[c.name] = buildPlugin(b, c.name, "./cmd/commucat-transport-"+c.name)
		}
	}
	_, plug := startHost(b, HostConfig{}, pluginDir(b, bins))
	sides := map[string][]side{}
	for _, c := range camouflage {
		if !keep(c.name) {
			continue
		}
		// plugin-client: one plugin, on the client, talking to the
		// transport in-process: what one end of a real link adds.
		for _, r := range []struct {
			name       string
			creg, sreg *transport.Registry
		}{{"inprocess", inproc, inproc}, {"plugin", plug, plug}, {"plugin-client", plug, inproc}} {
			var client, server transport.Transport
			if c.name == reality.Name {
				client, server = realitySidesOver(b, r.creg, r.sreg)
			} else {
				client, server = serverAndClientOver(b, r.creg, r.sreg, c.name, nil)
			}
			for _, t := range []transport.Transport{client, server} {
				b.Cleanup(func() { transport.Close(t) })
			}
			sides[c.name] = append(sides[c.name], side{r.name, client, server})
		}
	}
	return sides
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

// benchGoodput moves one stream of 64 KiB writes from c to s and checks
// that every byte arrived.
func benchGoodput(b *testing.B, c, s net.Conn) {
	done := make(chan error, 1)
	var got int64
	go func() {
		n, err := io.Copy(io.Discard, s)
		got = n
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
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		c.Close() // the data written before goes first
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if want := int64(b.N) * int64(len(buf)); got != want {
		b.Fatalf("received %d bytes, want %d", got, want)
	}
}

// benchRoundTrip measures one 64-byte request echoed back: the mean, and
// the median and 99th percentile of the round trips.
func benchRoundTrip(b *testing.B, c, s net.Conn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(s, s) //nolint:errcheck // ends with the connection
	}()
	roundTrips(b, c)
	c.Close()
	s.Close()
	<-done
}

// roundTrips sends b.N 64-byte requests over c, each once the echo of the
// one before has come back, and reports the median and 99th percentile
// of the round trips besides the mean.
func roundTrips(b *testing.B, c net.Conn) {
	buf := make([]byte, 64)
	rtts := make([]time.Duration, b.N)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
		rtts[i] = time.Since(start)
	}
	b.StopTimer()
	// The mean (ns/op) takes in the machine's stalls; the median is the
	// typical round trip.
	slices.Sort(rtts)
	b.ReportMetric(float64(rtts[len(rtts)/2])/1e3, "p50-µs")
	b.ReportMetric(float64(rtts[len(rtts)*99/100])/1e3, "p99-µs")
}

// BenchmarkGoodput moves one stream of 64 KiB writes: tcp in-process,
// tcp as a plugin (both ends through the host; the plugin hands the
// sockets over), and tcp spliced through a plugin process at both ends.
func BenchmarkGoodput(b *testing.B) {
	for _, side := range benchSides(b) {
		b.Run(side.name, func(b *testing.B) {
			c, s := benchPair(b, side.client, side.server)
			benchGoodput(b, c, s)
		})
	}
}

// BenchmarkRoundTrip measures one 64-byte request echoed back; the
// difference between the two is the latency a plugin adds per round trip.
func BenchmarkRoundTrip(b *testing.B) {
	for _, side := range benchSides(b) {
		b.Run(side.name, func(b *testing.B) {
			c, s := benchPair(b, side.client, side.server)
			benchRoundTrip(b, c, s)
		})
	}
}

// BenchmarkTransportGoodput is BenchmarkGoodput for the camouflage
// transports, each in-process and as a plugin.
func BenchmarkTransportGoodput(b *testing.B) { benchCamouflage(b, benchGoodput) }

// BenchmarkTransportRoundTrip is BenchmarkRoundTrip for the camouflage
// transports, each in-process and as a plugin.
func BenchmarkTransportRoundTrip(b *testing.B) { benchCamouflage(b, benchRoundTrip) }

// benchCamouflage runs bench over a connected pair of every side of every
// camouflage transport.
func benchCamouflage(b *testing.B, bench func(b *testing.B, c, s net.Conn)) {
	sides := camouflageSides(b)
	for _, c := range camouflage {
		for _, side := range sides[c.name] {
			b.Run(c.name+"/"+side.name, func(b *testing.B) {
				cc, sc := benchPair(b, side.client, side.server)
				bench(b, cc, sc)
			})
		}
	}
}

// BenchmarkDatagrams sends datagrams of the largest size from client to
// server over quic, in-process and as a plugin, as fast as SendDatagram
// takes them. Datagrams may be lost: besides the rate at which they are
// sent (MB/s), it reports the delivered goodput (delivered-MB/s, from the
// first send to the last datagram received) and the share delivered.
func BenchmarkDatagrams(b *testing.B) {
	for _, side := range camouflageSides(b, quic.Name)[quic.Name] {
		b.Run("quic/"+side.name, func(b *testing.B) {
			c, s := benchPair(b, side.client, side.server)
			dc, ok1 := c.(transport.DatagramConn)
			ds, ok2 := s.(transport.DatagramConn)
			if !ok1 || !ok2 {
				b.Fatalf("connections %T and %T do not carry datagrams", c, s)
			}
			size := dc.MaxDatagramSize()
			var (
				received atomic.Int64
				last     atomic.Int64 // time of the last datagram received, unix ns
			)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					if _, err := ds.ReceiveDatagram(ctx); err != nil {
						return
					}
					received.Add(1)
					last.Store(time.Now().UnixNano())
				}
			}()
			buf := make([]byte, size)
			b.SetBytes(int64(size))
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				if err := dc.SendDatagram(buf); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			// Wait for the stragglers: until nothing arrived for a while.
			for n := int64(-1); n != received.Load(); {
				n = received.Load()
				time.Sleep(100 * time.Millisecond)
			}
			cancel()
			<-done
			got := received.Load()
			if got == 0 {
				b.Fatal("no datagram arrived")
			}
			elapsed := time.Duration(last.Load() - start.UnixNano())
			b.ReportMetric(float64(got*int64(size))/elapsed.Seconds()/1e6, "delivered-MB/s")
			b.ReportMetric(100*float64(got)/float64(b.N), "%delivered")
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
