package kcp

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"
)

// captureRaw returns the first UDP payload, still encrypted, that a client
// of tr sends when it dials.
func captureRaw(t *testing.T, tr *Transport) []byte {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	dialed := make(chan struct{})
	go func() {
		defer close(dialed)
		if c, err := tr.Dial(ctx, pc.LocalAddr().String()); err == nil {
			c.Close()
		}
	}()
	defer func() { cancel(); <-dialed }()
	buf := make([]byte, maxUDP)
	pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

// TestProbesIgnored checks that the listener opens no connection for a
// replayed first packet or for garbage: it answers neither.
func TestProbesIgnored(t *testing.T) {
	key := NewKey()
	server := newTransport(t, key, nil)
	client := newTransport(t, key, nil)
	raw := captureRaw(t, client)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lnI, err := server.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lnI.Close()
	ln := lnI.(*listener)
	send := func(b []byte) netip.AddrPort {
		t.Helper()
		pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		if _, err := pc.WriteTo(b, ln.Addr()); err != nil {
			t.Fatal(err)
		}
		return pc.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	original := send(raw)
	replay := send(raw)
	garbage := send([]byte("GET / HTTP/1.1\r\n\r\n"))

	// The listener reads in order: once a later dial is answered, the
	// three packets above have been handled.
	c, err := client.Dial(ctx, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	ln.mu.Lock()
	_, gotOriginal := ln.sessions[original]
	_, gotReplay := ln.sessions[replay]
	_, gotGarbage := ln.sessions[garbage]
	ln.mu.Unlock()
	if !gotOriginal {
		t.Error("the original first packet opened no connection")
	}
	if gotReplay {
		t.Error("the replayed first packet opened a connection")
	}
	if gotGarbage {
		t.Error("garbage opened a connection")
	}
}

// TestAddressReuse checks that a new client from the address of a client
// that vanished replaces its connection instead of being ignored.
func TestAddressReuse(t *testing.T) {
	key := NewKey()
	server := newTransport(t, key, nil)
	client := newTransport(t, key, nil)
	first, second := captureRaw(t, client), captureRaw(t, client)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lnI, err := server.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lnI.Close()
	ln := lnI.(*listener)
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	from := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	convOf := func() uint32 {
		t.Helper()
		// A dial answered after the packets sent so far means the listener
		// has handled them.
		c, err := client.Dial(ctx, ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		ln.mu.Lock()
		defer ln.mu.Unlock()
		vc, ok := ln.sessions[from]
		if !ok {
			t.Fatal("no connection from the sending address")
		}
		return vc.conv
	}
	if _, err := pc.WriteTo(first, ln.Addr()); err != nil {
		t.Fatal(err)
	}
	conv1 := convOf()
	if _, err := pc.WriteTo(second, ln.Addr()); err != nil {
		t.Fatal(err)
	}
	if conv2 := convOf(); conv2 == conv1 {
		t.Errorf("the second client's first packet did not replace the connection (conv %#x)", conv1)
	}
}
