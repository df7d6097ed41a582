package handshake

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/flynn/noise"
	"github.com/google/go-cmp/cmp"
)

// checkAgree checks that both sides derived matching keys.
func checkAgree(t *testing.T, tr transcript, c ClientConfig) {
	t.Helper()
	if tr.client.SendKey != tr.server.RecvKey {
		t.Error("client SendKey != gateway RecvKey")
	}
	if tr.client.RecvKey != tr.server.SendKey {
		t.Error("client RecvKey != gateway SendKey")
	}
	if tr.client.SendKey == tr.client.RecvKey {
		t.Error("SendKey == RecvKey")
	}
	if tr.client.SendKey == [32]byte{} || tr.client.RecvKey == [32]byte{} {
		t.Error("zero key")
	}
	if len(tr.client.Hash) != 32 || !bytes.Equal(tr.client.Hash, tr.server.Hash) {
		t.Errorf("hashes differ or are not 32 bytes: %x %x", tr.client.Hash, tr.server.Hash)
	}
	if tr.server.PeerStatic != c.Static.Public() {
		t.Error("gateway PeerStatic is not the client's static key")
	}
	if tr.client.PeerStatic != c.ServerPublic {
		t.Error("client PeerStatic is not the gateway's static key")
	}
	if tr.client.Payload != nil {
		t.Errorf("client Payload = %x, want nil", tr.client.Payload)
	}
}

func TestHandshake(t *testing.T) {
	maxPayload := bytes.Repeat([]byte{0xab}, MaxPayload)
	tests := []struct {
		name    string
		payload []byte
		pad     func(msg, n int) int
		lens    [3]int
	}{
		{name: "no padding, empty payload", lens: [3]int{1243, 1138, 68}},
		{name: "payload", payload: []byte("device certificate"), lens: [3]int{1243, 1138, 68 + 18}},
		{name: "max payload", payload: maxPayload, lens: [3]int{1243, 1138, MaxMessageSize}},
		{
			name: "padding", payload: []byte("x"),
			pad:  func(msg, n int) int { return msg * 100 },
			lens: [3]int{1243 + 100, 1138 + 200, 69 + 300},
		},
		{
			name: "padding clamped to the maximum size",
			pad:  func(msg, n int) int { return 1 << 20 },
			lens: [3]int{MaxMessageSize, MaxMessageSize, MaxMessageSize},
		},
		{
			name: "negative padding counts as zero",
			pad:  func(msg, n int) int { return -5 },
			lens: [3]int{1243, 1138, 68},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, s := newConfigs(t, tt.name)
			c.Payload, c.Pad, s.Pad = tt.payload, tt.pad, tt.pad
			tr, err := runHandshake(t, c, s)
			if err != nil {
				t.Fatal(err)
			}
			checkAgree(t, tr, c)
			got := [3]int{len(tr.m1), len(tr.m2), len(tr.m3)}
			if diff := cmp.Diff(tt.lens, got); diff != "" {
				t.Errorf("message lengths (-want +got):\n%s", diff)
			}
			if !bytes.Equal(tr.server.Payload, tt.payload) {
				t.Errorf("gateway Payload = %q, want %q", tr.server.Payload, tt.payload)
			}
		})
	}
}

func TestPadArguments(t *testing.T) {
	c, s := newConfigs(t, "pad args")
	c.Payload = []byte("abc")
	type call struct{ Msg, N int }
	var calls []call
	pad := func(msg, n int) int {
		calls = append(calls, call{msg, n})
		return 0
	}
	c.Pad, s.Pad = pad, pad
	if _, err := runHandshake(t, c, s); err != nil {
		t.Fatal(err)
	}
	want := []call{{1, 1243}, {2, 1138}, {3, 71}}
	if diff := cmp.Diff(want, calls); diff != "" {
		t.Errorf("Pad calls (-want +got):\n%s", diff)
	}
}

func TestPaddingIsRandom(t *testing.T) {
	// Same keys and clock, different padding bytes: the messages differ
	// beyond the padding, yet both runs agree on keys.
	c, s := newConfigs(t, "padding random")
	pad := func(msg, n int) int { return 64 }
	c.Pad, s.Pad = pad, pad
	tr, err := runHandshake(t, c, s)
	if err != nil {
		t.Fatal(err)
	}
	checkAgree(t, tr, c)
	c2, s2 := newConfigs(t, "padding random")
	tr2, err := runHandshake(t, c2, s2)
	if err != nil {
		t.Fatal(err)
	}
	if len(tr2.m1) != len(tr.m1)-64 || len(tr2.m2) != len(tr.m2)-64 || len(tr2.m3) != len(tr.m3)-64 {
		t.Errorf("padding did not change lengths by 64: %d/%d %d/%d %d/%d", len(tr.m1), len(tr2.m1), len(tr.m2), len(tr2.m2), len(tr.m3), len(tr2.m3))
	}
}

func TestWrongServerKey(t *testing.T) {
	c, s := newConfigs(t, "wrong key")
	c.ServerPublic = mustStatic(t, "someone else").Public()
	ini, err := NewInitiator(c)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := NewResponder(s)
	if err != nil {
		t.Fatal(err)
	}
	m1, err := ini.WriteMessage1()
	if err != nil {
		t.Fatal(err)
	}
	if err := resp.ReadMessage1(m1); !errors.Is(err, ErrAuth) {
		t.Fatalf("ReadMessage1 = %v, want ErrAuth", err)
	}
	if _, err := resp.WriteMessage2(); err == nil {
		t.Fatal("WriteMessage2 after a failed message 1 succeeded")
	}
	if s.Replay.Len() != 0 {
		t.Errorf("a message 1 that did not decrypt entered the replay cache")
	}
}

func TestWrongPrologueOrSuite(t *testing.T) {
	c, s := newConfigs(t, "other protocol")
	tests := []struct {
		name     string
		prologue string
		suite    noise.CipherSuite
		want     error
	}{
		{"control", Prologue, cipherSuite, nil},
		{"other prologue", "CommuCat handshake v2", cipherSuite, ErrAuth},
		{"empty prologue", "", cipherSuite, ErrAuth},
		{"BLAKE2s", Prologue, noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s), ErrAuth},
		{"AES-GCM", Prologue, noise.NewCipherSuite(noise.DH25519, noise.CipherAESGCM, noise.HashSHA256), ErrAuth},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.Replay = NewReplayCache(0)
			r := newRawClientProto(t, c.Static, c.ServerPublic, tt.prologue, tt.suite)
			resp, _ := NewResponder(s)
			err := resp.ReadMessage1(r.write(t, plain1(Version, fixedNow, r.ek, 0, nil)))
			checkErr(t, err, tt.want)
		})
	}
	// A message 1 made for one gateway does not decrypt at another.
	r := newRawClient(t, c.Static, c.ServerPublic)
	_, s2 := newConfigs(t, "another gateway")
	resp2, _ := NewResponder(s2)
	if err := resp2.ReadMessage1(r.write(t, plain1(Version, fixedNow, r.ek, 0, nil))); !errors.Is(err, ErrAuth) {
		t.Fatalf("other gateway: %v, want ErrAuth", err)
	}
}

func TestTamper(t *testing.T) {
	c, s := newConfigs(t, "tamper")
	c.Payload = []byte("payload")
	pad := func(msg, n int) int { return 7 }
	c.Pad, s.Pad = pad, pad
	tr, err := runHandshake(t, c, s)
	if err != nil {
		t.Fatal(err)
	}
	// fresh re-creates the deterministic state, so each tampered message
	// meets a state that would have accepted the original.
	fresh := func() (*Initiator, *Responder) {
		c2, s2 := newConfigs(t, "tamper")
		c2.Payload, c2.Pad, s2.Pad = c.Payload, pad, pad
		ini, _ := NewInitiator(c2)
		resp, _ := NewResponder(s2)
		return ini, resp
	}
	flip := func(m []byte, i int) []byte {
		b := bytes.Clone(m)
		b[i] ^= 0x01
		return b
	}
	t.Run("message 1", func(t *testing.T) {
		for i := range tr.m1 {
			_, resp := fresh()
			if err := resp.ReadMessage1(flip(tr.m1, i)); !errors.Is(err, ErrAuth) {
				t.Fatalf("byte %d: %v, want ErrAuth", i, err)
			}
		}
	})
	t.Run("message 2", func(t *testing.T) {
		for i := range tr.m2 {
			ini, _ := fresh()
			if _, err := ini.WriteMessage1(); err != nil {
				t.Fatal(err)
			}
			if err := ini.ReadMessage2(flip(tr.m2, i)); !errors.Is(err, ErrAuth) {
				t.Fatalf("byte %d: %v, want ErrAuth", i, err)
			}
			if _, _, err := ini.WriteMessage3(); err == nil {
				t.Fatalf("byte %d: client produced keys after a tampered message 2", i)
			}
		}
	})
	t.Run("message 3", func(t *testing.T) {
		for i := range tr.m3 {
			_, resp := fresh()
			if err := resp.ReadMessage1(tr.m1); err != nil {
				t.Fatal(err)
			}
			if _, err := resp.WriteMessage2(); err != nil {
				t.Fatal(err)
			}
			if res, err := resp.ReadMessage3(flip(tr.m3, i)); !errors.Is(err, ErrAuth) || res != nil {
				t.Fatalf("byte %d: %v, want ErrAuth", i, err)
			}
		}
	})
	t.Run("untampered control", func(t *testing.T) {
		ini, resp := fresh()
		m1, _ := ini.WriteMessage1()
		if !bytes.Equal(m1, tr.m1) {
			t.Fatal("deterministic rerun produced another message 1")
		}
		if err := resp.ReadMessage1(tr.m1); err != nil {
			t.Fatal(err)
		}
	})
}

func TestTruncateAndExtend(t *testing.T) {
	c, s := newConfigs(t, "truncate")
	tr, err := runHandshake(t, c, s)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		msg  int
		edit func([]byte) []byte
		want error
	}{
		{"m1 empty", 1, func(b []byte) []byte { return nil }, ErrMalformed},
		{"m1 short", 1, func(b []byte) []byte { return b[:len(b)-1] }, ErrMalformed},
		{"m1 extra byte", 1, func(b []byte) []byte { return append(bytes.Clone(b), 0) }, ErrAuth},
		{"m1 over max", 1, func(b []byte) []byte { return make([]byte, MaxMessageSize+1) }, ErrTooLarge},
		{"m2 short", 2, func(b []byte) []byte { return b[:len(b)-1] }, ErrMalformed},
		{"m2 extra byte", 2, func(b []byte) []byte { return append(bytes.Clone(b), 0) }, ErrAuth},
		{"m2 over max", 2, func(b []byte) []byte { return make([]byte, MaxMessageSize+1) }, ErrTooLarge},
		{"m3 short", 3, func(b []byte) []byte { return b[:len(b)-1] }, ErrMalformed},
		{"m3 extra byte", 3, func(b []byte) []byte { return append(bytes.Clone(b), 0) }, ErrAuth},
		{"m3 over max", 3, func(b []byte) []byte { return make([]byte, MaxMessageSize+1) }, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, s := newConfigs(t, "truncate")
			ini, _ := NewInitiator(c)
			resp, _ := NewResponder(s)
			var err error
			switch tt.msg {
			case 1:
				err = resp.ReadMessage1(tt.edit(tr.m1))
			case 2:
				ini.WriteMessage1()
				err = ini.ReadMessage2(tt.edit(tr.m2))
			case 3:
				resp.ReadMessage1(tr.m1)
				resp.WriteMessage2()
				_, err = resp.ReadMessage3(tt.edit(tr.m3))
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestMalformedPlaintext(t *testing.T) {
	c, s := newConfigs(t, "malformed")
	badEK := bytes.Repeat([]byte{0xff}, kemPublicLen) // coefficients over q
	tests := []struct {
		name  string
		plain func(ek []byte) []byte
		want  error
	}{
		{"control", func(ek []byte) []byte { return plain1(Version, fixedNow, ek, 0, nil) }, nil},
		{"control with padding", func(ek []byte) []byte { return plain1(Version, fixedNow, ek, 3, []byte{1, 2, 3}) }, nil},
		{"version 0", func(ek []byte) []byte { return plain1(0, fixedNow, ek, 0, nil) }, ErrMalformed},
		{"version 2", func(ek []byte) []byte { return plain1(2, fixedNow, ek, 0, nil) }, ErrMalformed},
		{"padding length too long", func(ek []byte) []byte { return plain1(Version, fixedNow, ek, 4, []byte{1, 2, 3}) }, ErrMalformed},
		{"padding length too short", func(ek []byte) []byte { return plain1(Version, fixedNow, ek, 2, []byte{1, 2, 3}) }, ErrMalformed},
		{"bad ML-KEM key", func(ek []byte) []byte { return plain1(Version, fixedNow, badEK, 0, nil) }, ErrMalformed},
		{"stale", func(ek []byte) []byte { return plain1(Version, fixedNow.Add(-time.Hour), ek, 0, nil) }, ErrStale},
		{"timestamp zero", func(ek []byte) []byte { return plain1(Version, time.Unix(0, 0), ek, 0, nil) }, ErrStale},
		{"timestamp max", func(ek []byte) []byte {
			p := plain1(Version, fixedNow, ek, 0, nil)
			binary.BigEndian.PutUint64(p[1:], 1<<63-1)
			return p
		}, ErrStale},
		{"timestamp min", func(ek []byte) []byte {
			p := plain1(Version, fixedNow, ek, 0, nil)
			binary.BigEndian.PutUint64(p[1:], 1<<63)
			return p
		}, ErrStale},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRawClient(t, c.Static, c.ServerPublic)
			s.Replay = NewReplayCache(0)
			resp, _ := NewResponder(s)
			err := resp.ReadMessage1(r.write(t, tt.plain(r.ek)))
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestMalformedMessage3(t *testing.T) {
	c, s := newConfigs(t, "malformed 3")
	tests := []struct {
		name  string
		plain []byte
		want  error
	}{
		{"control empty", []byte{0, 0, 0, 0}, nil},
		{"control payload and padding", []byte{0, 2, 'h', 'i', 0, 1, 9}, nil},
		{"payload length overruns", []byte{0, 9, 'h', 'i', 0, 0}, ErrMalformed},
		{"payload length max", []byte{0xff, 0xff, 0, 0}, ErrMalformed},
		{"no padding length", []byte{0, 2, 'h', 'i'}, ErrMalformed},
		{"padding length wrong", []byte{0, 0, 0, 5, 1}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.Replay = NewReplayCache(0)
			r := newRawClient(t, c.Static, c.ServerPublic)
			resp, _ := NewResponder(s)
			if err := resp.ReadMessage1(r.write(t, plain1(Version, fixedNow, r.ek, 0, nil))); err != nil {
				t.Fatal(err)
			}
			m2, err := resp.WriteMessage2()
			if err != nil {
				t.Fatal(err)
			}
			r.read2(t, m2)
			res, err := resp.ReadMessage3(r.write(t, tt.plain))
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if res.PeerStatic != c.Static.Public() {
					t.Error("wrong PeerStatic")
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestReplay(t *testing.T) {
	c, s := newConfigs(t, "replay")
	tr, err := runHandshake(t, c, s)
	if err != nil {
		t.Fatal(err)
	}
	now := fixedNow
	s.Now = func() time.Time { return now }
	replay := func() error {
		resp, err := NewResponder(s)
		if err != nil {
			t.Fatal(err)
		}
		return resp.ReadMessage1(tr.m1)
	}
	if err := replay(); !errors.Is(err, ErrReplay) {
		t.Fatalf("immediate replay: %v, want ErrReplay", err)
	}
	now = fixedNow.Add(DefaultMaxSkew)
	if err := replay(); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay at the edge of the skew window: %v, want ErrReplay", err)
	}
	now = fixedNow.Add(DefaultMaxSkew + time.Nanosecond)
	if err := replay(); !errors.Is(err, ErrStale) {
		t.Fatalf("replay after the skew window: %v, want ErrStale", err)
	}
	// A fresh message 1 of the same client is not a replay.
	c.rand = detRand("replay/other")
	s.Now = clock(fixedNow)
	if _, err := runHandshake(t, c, s); err != nil {
		t.Fatalf("fresh handshake: %v", err)
	}
}

// TestReplayClientAhead replays a message 1 whose timestamp was MaxSkew
// ahead of the gateway's clock when it was accepted: its timestamp passes
// the skew check up to and including 2*MaxSkew later, so the replay cache
// must still hold it then.
func TestReplayClientAhead(t *testing.T) {
	c, s := newConfigs(t, "replay ahead")
	c.Now = clock(fixedNow.Add(DefaultMaxSkew))
	tr, err := runHandshake(t, c, s)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		at   time.Duration
		want error
	}{
		{2*DefaultMaxSkew - time.Nanosecond, ErrReplay},
		{2 * DefaultMaxSkew, ErrReplay},
		{2*DefaultMaxSkew + time.Nanosecond, ErrStale},
	} {
		s.Now = clock(fixedNow.Add(tt.at))
		resp, err := NewResponder(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := resp.ReadMessage1(tr.m1); !errors.Is(err, tt.want) {
			t.Errorf("replay %v after acceptance: %v, want %v", tt.at, err, tt.want)
		}
	}
}

func TestSkew(t *testing.T) {
	tests := []struct {
		name    string
		maxSkew time.Duration
		offset  time.Duration // client clock minus gateway clock
		want    error
	}{
		{"in sync", 0, 0, nil},
		{"client behind within skew", 0, -119 * time.Second, nil},
		{"client ahead within skew", 0, 119 * time.Second, nil},
		{"client behind at the limit", 0, -DefaultMaxSkew, nil},
		{"client ahead at the limit", 0, DefaultMaxSkew, nil},
		{"stale", 0, -DefaultMaxSkew - time.Nanosecond, ErrStale},
		{"future", 0, DefaultMaxSkew + time.Nanosecond, ErrStale},
		{"stale by an hour", 0, -time.Hour, ErrStale},
		{"future by a day", 0, 24 * time.Hour, ErrStale},
		{"custom skew accepts", 10 * time.Minute, 9 * time.Minute, nil},
		{"custom skew refuses", 10 * time.Second, 11 * time.Second, ErrStale},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, s := newConfigs(t, tt.name)
			c.Now = clock(fixedNow.Add(tt.offset))
			s.MaxSkew = tt.maxSkew
			_, err := runHandshake(t, c, s)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if tt.want != nil && s.Replay.Len() != 0 {
				t.Error("a stale message 1 entered the replay cache")
			}
		})
	}
}

func TestReplayCacheFullRefuses(t *testing.T) {
	c, s := newConfigs(t, "full")
	s.Replay = NewReplayCache(2)
	for i := range 2 {
		c.rand = detRand("full/" + string(rune('a'+i)))
		if _, err := runHandshake(t, c, s); err != nil {
			t.Fatalf("handshake %d: %v", i, err)
		}
	}
	c.rand = detRand("full/c")
	if _, err := runHandshake(t, c, s); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("third handshake: %v, want ErrRateLimited", err)
	}
	s.Now = clock(fixedNow.Add(2*DefaultMaxSkew + time.Second))
	c.Now = s.Now
	c.rand = detRand("full/d")
	if _, err := runHandshake(t, c, s); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
}

// TestKEMSecretChangesKeys runs two handshakes with the same static keys,
// the same Noise ephemeral keys and the same clock, differing only in the
// ML-KEM randomness: the Noise part is identical (same ephemerals on the
// wire) but the session keys differ, so the ML-KEM secret is in them.
func TestKEMSecretChangesKeys(t *testing.T) {
	cEph := bytes.Repeat([]byte{0x11}, 32)
	sEph := bytes.Repeat([]byte{0x22}, 32)
	run := func(kemSeed, encSeed byte) transcript {
		t.Helper()
		c, s := newConfigs(t, "kem")
		// Client draws: ML-KEM seed (64) | e (32). Gateway: encapsulation seed (32) | e (32).
		c.rand = bytes.NewReader(append(bytes.Repeat([]byte{kemSeed}, 64), cEph...))
		s.rand = bytes.NewReader(append(bytes.Repeat([]byte{encSeed}, 32), sEph...))
		tr, err := runHandshake(t, c, s)
		if err != nil {
			t.Fatal(err)
		}
		checkAgree(t, tr, c)
		return tr
	}
	a := run(1, 1)
	b := run(2, 1) // other ML-KEM key pair
	d := run(1, 2) // other encapsulation
	same := run(1, 1)
	for _, o := range []transcript{b, d, same} {
		if !bytes.Equal(a.m1[:32], o.m1[:32]) || !bytes.Equal(a.m2[:32], o.m2[:32]) {
			t.Fatal("Noise ephemeral keys differ between runs; the test is not isolating ML-KEM")
		}
	}
	if a.client.SendKey != same.client.SendKey || !bytes.Equal(a.client.Hash, same.client.Hash) {
		t.Fatal("identical inputs gave different keys")
	}
	for name, o := range map[string]transcript{"other key pair": b, "other encapsulation": d} {
		if o.client.SendKey == a.client.SendKey || o.client.RecvKey == a.client.RecvKey || bytes.Equal(o.client.Hash, a.client.Hash) {
			t.Errorf("%s: session keys did not change with the ML-KEM secret", name)
		}
	}
}

func TestStepOrder(t *testing.T) {
	c, s := newConfigs(t, "order")
	ini, _ := NewInitiator(c)
	if err := ini.ReadMessage2(make([]byte, msg2Min)); err == nil {
		t.Error("ReadMessage2 before WriteMessage1 succeeded")
	}
	if _, _, err := ini.WriteMessage3(); err == nil {
		t.Error("WriteMessage3 before ReadMessage2 succeeded")
	}
	resp, _ := NewResponder(s)
	if _, err := resp.WriteMessage2(); err == nil {
		t.Error("WriteMessage2 before ReadMessage1 succeeded")
	}
	if _, err := resp.ReadMessage3(make([]byte, msg3Min)); err == nil {
		t.Error("ReadMessage3 before ReadMessage1 succeeded")
	}
	// A failed step is final: the good message is refused afterwards.
	c2, s2 := newConfigs(t, "order 2")
	ini2, _ := NewInitiator(c2)
	m1, _ := ini2.WriteMessage1()
	resp2, _ := NewResponder(s2)
	bad := bytes.Clone(m1)
	bad[40] ^= 1
	if err := resp2.ReadMessage1(bad); !errors.Is(err, ErrAuth) {
		t.Fatal(err)
	}
	if err := resp2.ReadMessage1(m1); err == nil {
		t.Error("Responder accepted message 1 after a failure")
	}
	// Wipe ends a handshake.
	ini3, _ := NewInitiator(c2)
	ini3.Wipe()
	if _, err := ini3.WriteMessage1(); err == nil {
		t.Error("WriteMessage1 after Wipe succeeded")
	}
}

func TestConfigValidate(t *testing.T) {
	k := mustStatic(t, "validate")
	wiped := mustStatic(t, "validate wiped")
	wiped.Wipe()
	clientTests := []struct {
		name string
		cfg  ClientConfig
		want error
	}{
		{"ok", ClientConfig{Static: k, ServerPublic: k.Public()}, nil},
		{"no static", ClientConfig{ServerPublic: k.Public()}, errAny},
		{"wiped static", ClientConfig{Static: wiped, ServerPublic: k.Public()}, errAny},
		{"no server key", ClientConfig{Static: k}, errAny},
		{"payload too large", ClientConfig{Static: k, ServerPublic: k.Public(), Payload: make([]byte, MaxPayload+1)}, ErrTooLarge},
	}
	for _, tt := range clientTests {
		t.Run("client "+tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			checkErr(t, err, tt.want)
			if _, err := NewInitiator(tt.cfg); (err == nil) != (tt.want == nil) {
				t.Errorf("NewInitiator error %v disagrees with Validate", err)
			}
		})
	}
	serverTests := []struct {
		name string
		cfg  ServerConfig
		want error
	}{
		{"ok", ServerConfig{Static: k, Replay: NewReplayCache(1)}, nil},
		{"no static", ServerConfig{Replay: NewReplayCache(1)}, errAny},
		{"wiped static", ServerConfig{Static: wiped, Replay: NewReplayCache(1)}, errAny},
		{"no replay cache", ServerConfig{Static: k}, errAny},
		{"negative skew", ServerConfig{Static: k, Replay: NewReplayCache(1), MaxSkew: -1}, errAny},
		{"skew past a day", ServerConfig{Static: k, Replay: NewReplayCache(1), MaxSkew: 25 * time.Hour}, errAny},
	}
	for _, tt := range serverTests {
		t.Run("server "+tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			checkErr(t, err, tt.want)
			if _, err := NewResponder(tt.cfg); (err == nil) != (tt.want == nil) {
				t.Errorf("NewResponder error %v disagrees with Validate", err)
			}
		})
	}
}

// errAny stands for "some error" in table tests.
var errAny = errors.New("any error")

func checkErr(t *testing.T, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Errorf("unexpected error: %v", err)
	case want == errAny && err == nil:
		t.Error("no error")
	case want != nil && want != errAny && !errors.Is(err, want):
		t.Errorf("got %v, want %v", err, want)
	}
}

func TestResultWipe(t *testing.T) {
	c, s := newConfigs(t, "wipe")
	c.Payload = []byte("secret-ish")
	tr, err := runHandshake(t, c, s)
	if err != nil {
		t.Fatal(err)
	}
	tr.server.Wipe()
	want := &Result{Hash: make([]byte, 32), Payload: make([]byte, len(c.Payload))}
	if diff := cmp.Diff(want, tr.server); diff != "" {
		t.Errorf("after Wipe (-want +got):\n%s", diff)
	}
	var nilResult *Result
	nilResult.Wipe() // must not panic
}
