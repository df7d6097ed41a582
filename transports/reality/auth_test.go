package reality

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	utls "github.com/refraction-networking/utls"

	"github.com/commucat/commucat/transports/fingerprint"
)

// sealedHello returns a ClientHello handshake message sealed by cfg, as
// Dial would send it, without any I/O.
func sealedHello(t testing.TB, cfg *ClientConfig) []byte {
	t.Helper()
	uc, err := cfg.Hello.Client(nil, &utls.Config{ServerName: cfg.ServerNames[0]}, nil)
	if err != nil {
		t.Fatal(err)
	}
	k, _, err := cfg.seal(uc)
	if err != nil {
		t.Fatalf("seal: %v", err)
	}
	k.wipe()
	// Handshake marshals again before sending; so does this.
	if err := uc.BuildHandshakeState(); err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(uc.HandshakeState.Hello.Raw)
}

// open runs the gateway's checks on a hello, short of the replay cache.
func open(static *ecdh.PrivateKey, sid [ShortIDLen]byte, msg []byte) (time.Time, error) {
	h, err := parseHello(msg)
	if err != nil {
		return time.Time{}, err
	}
	pub, err := ecdh.X25519().NewPublicKey(h.x25519)
	if err != nil {
		return time.Time{}, err
	}
	k, err := deriveKeys(static, pub, h.random)
	if err != nil {
		return time.Time{}, err
	}
	defer k.wipe()
	return k.openSessionID(h.random, h.sessionID, sid, h.aad)
}

func TestSealOpen(t *testing.T) {
	keys, err := GenerateKeys()
	if err != nil {
		t.Fatal(err)
	}
	sid := [ShortIDLen]byte{1, 2, 3, 4, 5, 6, 7, 8}
	for _, preset := range fingerprint.PresetNames() {
		t.Run(preset, func(t *testing.T) {
			h, err := fingerprint.Preset(preset)
			if err != nil {
				t.Fatal(err)
			}
			at := time.Unix(1_800_000_000, 0)
			cfg := &ClientConfig{PublicKey: keys.Static.PublicKey(), ServerNames: []string{"a.example"}, ShortID: sid, Hello: h, now: func() time.Time { return at }}
			msg := sealedHello(t, cfg)
			ts, err := open(keys.Static, sid, msg)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			if !ts.Equal(at) {
				t.Errorf("timestamp %v, want %v", ts, at)
			}
			other, _ := GenerateKeys()
			for _, tc := range []struct {
				name   string
				static *ecdh.PrivateKey
				sid    [ShortIDLen]byte
				mutate func([]byte)
			}{
				{"other gateway key", other.Static, sid, nil},
				{"other short id", keys.Static, [ShortIDLen]byte{9}, nil},
				{"random changed", keys.Static, sid, func(m []byte) { m[4+2+5] ^= 1 }},
				{"session id changed", keys.Static, sid, func(m []byte) { m[4+2+32+1+3] ^= 1 }},
				{"last byte changed", keys.Static, sid, func(m []byte) { m[len(m)-1] ^= 0x40 }},
			} {
				t.Run(tc.name, func(t *testing.T) {
					m := bytes.Clone(msg)
					if tc.mutate != nil {
						tc.mutate(m)
					}
					if _, err := open(tc.static, tc.sid, m); err == nil {
						t.Error("opened")
					} else if !errors.Is(err, errAuth) && !errors.Is(err, errHello) {
						t.Errorf("error %v is neither errAuth nor errHello", err)
					}
				})
			}
		})
	}
}

// TestReplayCache runs the cache on a fake clock.
func TestReplayCache(t *testing.T) {
	id := func(b byte) []byte { return bytes.Repeat([]byte{b}, sessionIDLen) }
	t.Run("window and duplicates", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			r := newReplayCache(100, 2*time.Minute)
			t0 := time.Now()
			if !r.check(id(1), t0, time.Now()) {
				t.Fatal("fresh hello refused")
			}
			if r.check(id(1), t0, time.Now()) {
				t.Fatal("replay accepted")
			}
			if !r.check(id(2), t0.Add(-119*time.Second), time.Now()) {
				t.Error("hello 119 s old refused")
			}
			if r.check(id(3), t0.Add(-121*time.Second), time.Now()) {
				t.Error("hello 121 s old accepted")
			}
			if r.check(id(4), t0.Add(121*time.Second), time.Now()) {
				t.Error("hello 121 s ahead accepted")
			}
			time.Sleep(3 * time.Minute)
			if r.check(id(1), t0, time.Now()) {
				t.Error("replay accepted after the window moved")
			}
			if n := r.len(); n != 0 {
				t.Errorf("%d entries kept past the window", n)
			}
			if !r.check(id(1), time.Now(), time.Now()) {
				t.Error("a new hello with an old id and a fresh time refused")
			}
		})
	})
	t.Run("eviction raises the floor", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			r := newReplayCache(2, 2*time.Minute)
			now := time.Now()
			for i, ok := range []bool{
				r.check(id(1), now.Add(-3*time.Second), now),
				r.check(id(2), now.Add(-2*time.Second), now),
				r.check(id(3), now.Add(-1*time.Second), now), // evicts 1
				r.check(id(1), now.Add(-3*time.Second), now), // below the floor
				r.check(id(4), now.Add(-3*time.Second), now), // below the floor
				r.check(id(5), now, now),
			} {
				if want := i != 3 && i != 4; ok != want {
					t.Errorf("check %d = %v, want %v", i, ok, want)
				}
			}
			if n := r.len(); n > 2 {
				t.Errorf("%d entries, want at most 2", n)
			}
		})
	})
	t.Run("a flood stamped ahead does not lock clients out", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			r := newReplayCache(100, 2*time.Minute)
			now := time.Now()
			honest := now.Add(-5 * time.Second)
			if !r.check(id(200), honest, now) {
				t.Fatal("honest hello refused")
			}
			// 300 hellos stamped at the far end of the window (someone
			// holding an invite): they evict everything, the honest hello
			// too, and one another.
			for i := range 300 {
				k := bytes.Repeat([]byte{byte(i), byte(i >> 8), 7}, sessionIDLen/3+1)[:sessionIDLen]
				if !r.check(k, now.Add(2*time.Minute), now) {
					t.Fatalf("flood hello %d refused", i)
				}
			}
			if !r.check(id(201), now, now) {
				t.Error("an honest hello stamped now refused after the flood")
			}
			if r.check(id(200), honest, now) {
				t.Error("the evicted honest hello replayed")
			}
		})
	})
}

// TestDecodePublicKey covers the pbk encoding.
func TestDecodePublicKey(t *testing.T) {
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s := EncodePublicKey(k.PublicKey())
	got, err := DecodePublicKey(s)
	if err != nil || !got.Equal(k.PublicKey()) {
		t.Fatalf("round trip: %v", err)
	}
	for _, bad := range []string{"", s[:42], s + "A", s[:42] + "=", "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"} {
		if _, err := DecodePublicKey(bad); err == nil {
			t.Errorf("DecodePublicKey(%q) accepted", bad)
		}
	}
}

// TestKeysRedacted checks secrets do not print.
func TestKeysRedacted(t *testing.T) {
	k, err := GenerateKeys()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{k.String(), k.LogValue().String(), ServerConfig{Keys: k}.LogValue().String(), (&Transport{}).LogValue().String()} {
		if s != "[redacted]" {
			t.Errorf("printed %q", s)
		}
	}
}
