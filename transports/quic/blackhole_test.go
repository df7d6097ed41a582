package quic

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commucat/commucat/core/transport"
)

// udpRelay forwards UDP between one client and a server on loopback, and
// drops everything in both directions once drop is set: a path that
// turned into a black hole.
type udpRelay struct {
	pc     net.PacketConn
	server *net.UDPAddr
	drop   atomic.Bool
	wg     sync.WaitGroup
}

func newUDPRelay(t *testing.T, server string) *udpRelay {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sa, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		t.Fatal(err)
	}
	r := &udpRelay{pc: pc, server: sa}
	r.wg.Add(1)
	go r.run()
	t.Cleanup(func() {
		pc.Close()
		r.wg.Wait()
	})
	return r
}

// run forwards until the relay's socket is closed. The client's address
// is the first one heard from other than the server's.
func (r *udpRelay) run() {
	defer r.wg.Done()
	var client net.Addr
	buf := make([]byte, 64<<10)
	for {
		n, from, err := r.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if r.drop.Load() {
			continue
		}
		to := net.Addr(r.server)
		if from.String() == r.server.String() {
			if client == nil {
				continue
			}
			to = client
		} else if client == nil {
			client = from
		}
		r.pc.WriteTo(buf[:n], to) //nolint:errcheck // lost, as UDP may be
	}
}

// TestDatagramsIntoBlackHole: once a path carries nothing, SendDatagram
// waits for room (backpressure), but Close releases it at once, and
// neither Close nor the transport's Close waits for the datagrams: quic-go's
// own SendDatagram would block until the connection ends, which a
// black-holed, lingering connection does only after Config.Linger.
func TestDatagramsIntoBlackHole(t *testing.T) {
	client, server := pair(t, func(c *Config) { c.Linger = 20 * time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ln, err := server.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	relay := newUDPRelay(t, ln.Addr().String())
	c, err := client.Dial(ctx, relay.pc.LocalAddr().String())
	if err != nil {
		t.Fatalf("Dial through the relay: %v", err)
	}
	s, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cd, sd := c.(transport.DatagramConn), s.(transport.DatagramConn)

	// The path works: a datagram arrives.
	msg := bytes.Repeat([]byte{7}, 1000)
	got := make(chan error, 1)
	go func() {
		_, err := sd.ReceiveDatagram(ctx)
		got <- err
	}()
	for arrived := false; !arrived; {
		if err := cd.SendDatagram(msg); err != nil {
			t.Fatalf("SendDatagram: %v", err)
		}
		select {
		case err := <-got:
			if err != nil {
				t.Fatalf("ReceiveDatagram: %v", err)
			}
			arrived = true
		case <-time.After(20 * time.Millisecond):
		}
	}

	// Then it carries nothing: 2000 datagrams (2 MB, far beyond what
	// the queues and the congestion window hold) make SendDatagram wait,
	// until Close.
	relay.drop.Store(true)
	sent := make(chan error, 1)
	go func() {
		for range 2000 {
			if err := cd.SendDatagram(msg); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	select {
	case err := <-sent:
		t.Fatalf("2000 datagrams into a black hole taken without a wait (%v)", err)
	case <-time.After(500 * time.Millisecond): // waiting, as it should
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-sent:
		if !errors.Is(err, transport.ErrClosed) {
			t.Fatalf("SendDatagram released by Close: %v, want ErrClosed", err)
		}
	case <-ctx.Done():
		t.Fatal("Close did not release a SendDatagram waiting for room")
	}

	// Closing lingers for the peer (Config.Linger); the transport's Close
	// aborts what lingers and returns once every goroutine has ended.
	if err := cd.SendDatagram(msg); !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("SendDatagram after Close: %v, want ErrClosed", err)
	}
	closed := make(chan error, 1)
	go func() { closed <- client.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Transport.Close: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("Transport.Close waited for datagrams of a black-holed path")
	}
}
