package reality

import (
	"context"
	"io"
	"testing"
	"time"
)

// BenchmarkGoodput measures one stream's goodput on loopback: 64 KiB
// writes, counted once the receiver has read them.
func BenchmarkGoodput(b *testing.B) {
	client, server, _ := setup(b, newCover(b), nil)
	c, s := connect(b, client, listen(b, server))
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

// BenchmarkDial measures connection set-up on loopback: TCP, the sealed
// hello, the gateway's checks and certificate, TLS 1.3, and Accept.
func BenchmarkDial(b *testing.B) {
	client, server, _ := setup(b, newCover(b), nil)
	ln := listen(b, server)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
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

// BenchmarkCheckHello measures the gateway's cost to check one hello
// (parse, X25519, HKDF, AES-GCM): what every connection, probe or not,
// costs before the relay or the handshake.
func BenchmarkCheckHello(b *testing.B) {
	keys, err := GenerateKeys()
	if err != nil {
		b.Fatal(err)
	}
	msg := sealedHello(b, &ClientConfig{PublicKey: keys.Static.PublicKey(), ServerNames: []string{"a.example"}})
	for b.Loop() {
		if _, err := open(keys.Static, [ShortIDLen]byte{}, msg); err != nil {
			b.Fatal(err)
		}
	}
}
