package censor

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"
)

// captureQUICInitials dials a loopback UDP socket with quic-go and returns
// the client's datagrams up to the one that completes its ClientHello
// (quic-go, like Chrome, splits a post-quantum hello over two Initials).
func captureQUICInitials(t testing.TB, serverName string) [][]byte {
	t.Helper()
	srv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quicgo.Transport{Conn: cli}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tr.Dial(ctx, srv.LocalAddr(), &tls.Config{ServerName: serverName, NextProtos: []string{"h3"}}, &quicgo.Config{})
	}()
	defer func() {
		cancel()
		<-done
		tr.Close()
		cli.Close()
	}()

	srv.SetReadDeadline(time.Now().Add(10 * time.Second))
	a := NewQUICHelloAssembler(0)
	var datagrams [][]byte
	buf := make([]byte, 2048)
	for {
		n, _, err := srv.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("reading quic-go's initials: %v (have %d datagrams)", err, len(datagrams))
		}
		d := append([]byte(nil), buf[:n]...)
		datagrams = append(datagrams, d)
		if err := a.AddDatagram(d); err != nil {
			t.Fatalf("datagram %d: %v", len(datagrams), err)
		}
		if _, err := a.ClientHello(); err == nil {
			return datagrams
		} else if !errors.Is(err, ErrNeedMore) {
			t.Fatal(err)
		}
	}
}

// TestQUICGoInitials decrypts the Initials of a real QUIC client.
func TestQUICGoInitials(t *testing.T) {
	datagrams := captureQUICInitials(t, "quic.blocked.example")
	h, err := QUICClientHello(datagrams...)
	if err != nil {
		t.Fatal(err)
	}
	if h.ServerName != "quic.blocked.example" {
		t.Errorf("ServerName = %q", h.ServerName)
	}
	t.Logf("quic-go hello over %d datagram(s), JA4 %s", len(datagrams), h.JA4(JA4QUIC))
	if len(datagrams) > 1 {
		// A censor that inspects single datagrams, as the GFW did in
		// 2024-2025, misses a hello split over two.
		if _, err := QUICClientHello(datagrams[0]); !errors.Is(err, ErrNeedMore) {
			t.Errorf("first datagram alone: err = %v, want ErrNeedMore", err)
		}
	}
}
