package kcp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestReadFrame(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		typ     byte
		payload []byte
		wantErr error // if set, readFrame must fail with it
		fails   bool  // readFrame must fail with any error
	}{
		{"data", []byte{frameData, 0, 3, 'a', 'b', 'c'}, frameData, []byte("abc"), nil, false},
		{"fin", []byte{frameFin, 0, 0}, frameFin, nil, nil, false},
		{"ping", []byte{framePing, 0, 0}, framePing, nil, nil, false},
		{"empty data", []byte{frameData, 0, 0}, 0, nil, errProtocol, false},
		{"data too long", []byte{frameData, 0x80, 0x01}, 0, nil, errProtocol, false},
		{"fin with payload", []byte{frameFin, 0, 1, 0}, 0, nil, errProtocol, false},
		{"unknown type", []byte{0x7f, 0, 0}, 0, nil, errProtocol, false},
		{"short hello", []byte{frameHello, 0, 3, 1, 2, 3}, 0, nil, errProtocol, false},
		{"truncated payload", []byte{frameData, 0, 5, 'a'}, 0, nil, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			typ, payload, err := readFrame(bufio.NewReader(bytes.NewReader(tt.in)))
			if tt.fails {
				if err == nil {
					t.Fatal("readFrame succeeded")
				}
				return
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("readFrame = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("readFrame: %v", err)
			}
			if typ != tt.typ {
				t.Errorf("type = %#x, want %#x", typ, tt.typ)
			}
			if diff := cmp.Diff(tt.payload, payload); diff != "" {
				t.Errorf("payload (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHelloRoundTrip(t *testing.T) {
	h := hello{Time: 1_700_000_000}
	copy(h.Nonce[:], "0123456789abcdef")
	got, err := parseHello(h.encode())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(h, got); diff != "" {
		t.Errorf("parseHello(encode) (-want +got):\n%s", diff)
	}
	n, err := parseWelcome(encodeWelcome(h.Nonce))
	if err != nil || n != h.Nonce {
		t.Errorf("parseWelcome(encodeWelcome) = %x, %v; want %x", n, err, h.Nonce)
	}
}

// captureFirstPacket dials a UDP socket that never answers with a real
// client and returns the plaintext of the first packet it sends.
func captureFirstPacket(t testing.TB) []byte {
	t.Helper()
	tr, err := New(Config{Key: NewKey(), HandshakeTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
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
	plain, err := tr.aead.Open(nil, buf[:aeadNonceLen], buf[aeadNonceLen:n], nil)
	if err != nil {
		t.Fatal(err)
	}
	return plain
}

func TestParseFirstPacket(t *testing.T) {
	plain := captureFirstPacket(t)
	fp, err := parseFirstPlaintext(plain)
	if err != nil {
		t.Fatalf("parseFirstPlaintext of a real first packet: %v", err)
	}
	if !clockOK(fp.Hello.Time, time.Now()) {
		t.Errorf("hello time %d is not fresh", fp.Hello.Time)
	}
	tests := []struct {
		name   string
		mutate func(b []byte) []byte
	}{
		{"not a data shard", func(b []byte) []byte { b[4] = fecTypeOOB; return b }},
		{"not push", func(b []byte) []byte { b[fecHeaderLen+4] = 82; return b }},
		{"later segment", func(b []byte) []byte { b[fecHeaderLen+12] = 1; return b }},
		{"no hello", func(b []byte) []byte { b[fecHeaderLen+kcpOverhead] = frameData; return b }},
		{"truncated", func(b []byte) []byte { return b[:fecHeaderLen+kcpOverhead+2] }},
		{"segment longer than packet", func(b []byte) []byte { b[fecHeaderLen+23] = 0x7f; return b }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.mutate(bytes.Clone(plain))
			if _, err := parseFirstPlaintext(b); !errors.Is(err, errProtocol) {
				t.Errorf("parseFirstPlaintext = %v, want errProtocol", err)
			}
		})
	}
}

func TestClockOK(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name string
		ts   int64
		want bool
	}{
		{"now", now.Unix(), true},
		{"two minutes late", now.Add(-maxSkew).Unix(), true},
		{"too late", now.Add(-maxSkew - time.Second).Unix(), false},
		{"too early", now.Add(maxSkew + time.Second).Unix(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := clockOK(tt.ts, now); got != tt.want {
				t.Errorf("clockOK = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestReplayCache(t *testing.T) {
	r := replayCache{seen: make(map[[nonceLen]byte]struct{})}
	now := time.Unix(1_700_000_000, 0)
	a, b := [nonceLen]byte{1}, [nonceLen]byte{2}
	steps := []struct {
		name  string
		nonce [nonceLen]byte
		at    time.Duration
		want  bool
	}{
		{"first", a, 0, true},
		{"replay", a, time.Second, false},
		{"other", b, time.Second, true},
		{"replay before expiry", a, 2 * maxSkew, false},
		{"after expiry", a, 2*maxSkew + time.Second, true},
	}
	for _, s := range steps {
		if got := r.add(s.nonce, now.Add(s.at)); got != s.want {
			t.Errorf("%s: add = %v, want %v", s.name, got, s.want)
		}
	}
}
