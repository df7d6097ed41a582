package handshake

import (
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/cloudflare/circl/kem/mlkem/mlkem768"
	"github.com/flynn/noise"
)

// BenchmarkHandshake runs the full hybrid handshake in memory (both sides,
// real randomness), as a gateway and a client together would.
func BenchmarkHandshake(b *testing.B) {
	c, s := newConfigs(b, "bench")
	c.rand, s.rand, c.Now, s.Now = nil, nil, nil, nil
	s.Replay = NewReplayCache(1 << 22)
	b.ReportAllocs()
	for b.Loop() {
		tr, err := runHandshake(b, c, s)
		if err != nil {
			b.Fatal(err)
		}
		tr.client.Wipe()
		tr.server.Wipe()
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
}

// BenchmarkGatewaySide measures the gateway's share of a handshake
// (ReadMessage1, WriteMessage2, ReadMessage3): the client messages are
// prepared outside the timer.
func BenchmarkGatewaySide(b *testing.B) {
	c, s := newConfigs(b, "bench gateway")
	c.rand, s.rand, c.Now, s.Now = nil, nil, nil, nil
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		s.Replay = NewReplayCache(4)
		ini, _ := NewInitiator(c)
		resp, _ := NewResponder(s)
		m1, _ := ini.WriteMessage1()
		b.StartTimer()
		if err := resp.ReadMessage1(m1); err != nil {
			b.Fatal(err)
		}
		m2, err := resp.WriteMessage2()
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		ini.ReadMessage2(m2)
		m3, _, _ := ini.WriteMessage3()
		b.StartTimer()
		if _, err := resp.ReadMessage3(m3); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
}

// BenchmarkMLKEM measures the ML-KEM-768 operations one handshake does.
func BenchmarkMLKEM(b *testing.B) {
	pk, sk, err := mlkem768.GenerateKeyPair(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	ct, ss := make([]byte, mlkem768.CiphertextSize), make([]byte, mlkem768.SharedKeySize)
	pk.EncapsulateTo(ct, ss, nil)
	packed := make([]byte, mlkem768.PublicKeySize)
	pk.Pack(packed)
	b.Run("keygen", func(b *testing.B) {
		for b.Loop() {
			mlkem768.GenerateKeyPair(rand.Reader)
		}
	})
	b.Run("unpack+encapsulate", func(b *testing.B) {
		for b.Loop() {
			var p mlkem768.PublicKey
			if err := p.Unpack(packed); err != nil {
				b.Fatal(err)
			}
			p.EncapsulateTo(ct, ss, nil)
		}
	})
	b.Run("decapsulate", func(b *testing.B) {
		for b.Loop() {
			sk.DecapsulateTo(ss, ct)
		}
	})
	b.Run("all", func(b *testing.B) {
		for b.Loop() {
			pk, sk, _ := mlkem768.GenerateKeyPair(rand.Reader)
			pk.Pack(packed)
			var p mlkem768.PublicKey
			p.Unpack(packed)
			p.EncapsulateTo(ct, ss, nil)
			sk.DecapsulateTo(ss, ct)
		}
	})
}

// BenchmarkNoiseOnly runs the same Noise XKpsk3 handshake with a fixed
// PSK and empty payloads: the classical part without ML-KEM.
func BenchmarkNoiseOnly(b *testing.B) {
	cs := mustStatic(b, "noise client")
	ss := mustStatic(b, "noise server")
	psk := make([]byte, 32)
	spub := ss.Public()
	b.ReportAllocs()
	for b.Loop() {
		ini, err := noise.NewHandshakeState(noise.Config{
			CipherSuite: cipherSuite, Pattern: noise.HandshakeXK, Initiator: true,
			Prologue: []byte(Prologue), PresharedKeyPlacement: 3,
			StaticKeypair: cs.dhKey(), PeerStatic: spub[:],
		})
		if err != nil {
			b.Fatal(err)
		}
		resp, err := noise.NewHandshakeState(noise.Config{
			CipherSuite: cipherSuite, Pattern: noise.HandshakeXK,
			Prologue: []byte(Prologue), PresharedKeyPlacement: 3,
			StaticKeypair: ss.dhKey(),
		})
		if err != nil {
			b.Fatal(err)
		}
		m1, _, _, _ := ini.WriteMessage(nil, nil)
		if _, _, _, err := resp.ReadMessage(nil, m1); err != nil {
			b.Fatal(err)
		}
		m2, _, _, _ := resp.WriteMessage(nil, nil)
		if _, _, _, err := ini.ReadMessage(nil, m2); err != nil {
			b.Fatal(err)
		}
		ini.SetPresharedKey(psk)
		resp.SetPresharedKey(psk)
		m3, _, _, _ := ini.WriteMessage(nil, nil)
		if _, _, _, err := resp.ReadMessage(nil, m3); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
}

// BenchmarkReplayCache measures one check on a cache of 64k live entries.
func BenchmarkReplayCache(b *testing.B) {
	c := NewReplayCache(1 << 30)
	for i := range 1 << 16 {
		c.check([32]byte{byte(i), byte(i >> 8), 1}, fixedNow, time.Hour)
	}
	var k [32]byte
	i := uint64(0)
	for b.Loop() {
		i++
		k[0], k[1], k[2], k[3], k[4] = byte(i), byte(i>>8), byte(i>>16), byte(i>>24), 2
		c.check(k, fixedNow, time.Hour)
	}
}

// BenchmarkRateLimiter measures Allow over 10k sources in a full table.
func BenchmarkRateLimiter(b *testing.B) {
	l := NewRateLimiter(10, 5, 10000)
	srcs := make([]string, 20000)
	for i := range srcs {
		srcs[i] = fmt.Sprintf("192.0.2.%d:%d", i%256, i)
	}
	i := 0
	now := fixedNow
	for b.Loop() {
		i++
		l.Allow(srcs[i%len(srcs)], now)
	}
}
