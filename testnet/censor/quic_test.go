package censor

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var rfcDCID = []byte{0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08}

// TestDeriveInitialKeysRFC9001 checks RFC 9001 Appendix A.1.
func TestDeriveInitialKeysRFC9001(t *testing.T) {
	client, server, err := DeriveInitialKeys(rfcDCID)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{"client secret", client.Secret, "c00cf151ca5be075ed0ebfb5c80323c42d6b7db67881289af4008f1f6c357aea"},
		{"client key", client.Key, "1f369613dd76d5467730efcbe3b1a22d"},
		{"client iv", client.IV, "fa044b2f42a3fd3b46fb255c"},
		{"client hp", client.HP, "9f50449e04a0e810283a1e9933adedd2"},
		{"server secret", server.Secret, "3c199828fd139efd216c155ad844cc81fb82fa8d7446fa7d78be803acdda951b"},
		{"server key", server.Key, "cf3a5331653c364c88f0f379b6067e37"},
		{"server iv", server.IV, "0ac1493ca1905853b0bba03e"},
		{"server hp", server.HP, "c206b8d9b9f0f37644430b490eeaa314"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(mustHex(t, tt.want), tt.got); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s", diff)
			}
		})
	}
	var sb strings.Builder
	slog.New(slog.NewTextHandler(&sb, nil)).Info("keys", "client", client)
	if strings.Contains(sb.String(), "1f369613") || !strings.Contains(sb.String(), "[redacted]") {
		t.Errorf("keys leak into logs: %s", sb.String())
	}
}

// TestOpenInitialRFC9001 decrypts the protected client Initial of RFC 9001
// Appendix A.2 and checks every field against the appendix.
func TestOpenInitialRFC9001(t *testing.T) {
	pkt := readHex(t, "rfc9001-a2-protected.hex")
	frames := readHex(t, "rfc9001-a2-frames.hex")
	init, n, err := OpenInitial(pkt, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n != len(pkt) || n != 1200 {
		t.Errorf("consumed %d of %d bytes", n, len(pkt))
	}
	wantPayload := append(append([]byte(nil), frames...), make([]byte, 1162-len(frames))...)
	if diff := cmp.Diff(wantPayload, init.Payload); diff != "" {
		t.Errorf("payload mismatch (-want +got):\n%s", diff)
	}
	if init.PacketNumber != 2 || !bytes.Equal(init.DCID, rfcDCID) || len(init.SCID) != 0 || len(init.Token) != 0 || init.Version != QUICVersion1 {
		t.Errorf("header = %+v", init)
	}
	cf, err := CryptoFrames(init.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if len(cf) != 1 || cf[0].Offset != 0 || len(cf[0].Data) != 241 {
		t.Fatalf("crypto frames = %d, first at %d len %d", len(cf), cf[0].Offset, len(cf[0].Data))
	}
	h, err := QUICClientHello(pkt)
	if err != nil {
		t.Fatal(err)
	}
	if h.ServerName != "example.com" || !cmp.Equal(h.ALPN, []string{"alpn"}) {
		t.Errorf("ServerName = %q, ALPN = %q", h.ServerName, h.ALPN)
	}
	// The sealing helper the other tests use reproduces the appendix
	// byte for byte.
	if again := sealInitial(t, rfcDCID, rfcDCID, nil, 2, 4, wantPayload); !bytes.Equal(again, pkt) {
		t.Errorf("sealInitial does not reproduce RFC 9001 A.2")
	}
}

func TestOpenInitialErrors(t *testing.T) {
	pkt := readHex(t, "rfc9001-a2-protected.hex")
	edit := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), pkt...)) }
	tests := []struct {
		name string
		pkt  []byte
		dcid []byte
		want error
	}{
		{"empty", nil, nil, ErrNotInitial},
		{"short header", edit(func(b []byte) []byte { b[0] = 0x40; return b }), nil, ErrNotInitial},
		{"version 2", edit(func(b []byte) []byte { b[4] = 2; return b }), nil, ErrQUICVersion},
		{"handshake packet", edit(func(b []byte) []byte { b[0] = 0xe0; return b }), nil, ErrNotInitial},
		{"connection id too long", edit(func(b []byte) []byte { b[5] = 21; return b }), nil, ErrNotInitial},
		{"length beyond datagram", pkt[:1199], nil, ErrNotInitial},
		{"flipped ciphertext byte", edit(func(b []byte) []byte { b[500] ^= 1; return b }), nil, ErrDecrypt},
		{"flipped header byte", edit(func(b []byte) []byte { b[6] ^= 1; return b }), nil, ErrDecrypt},
		{"wrong key connection id", pkt, []byte{1, 2, 3, 4, 5, 6, 7, 8}, ErrDecrypt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := OpenInitial(tt.pkt, tt.dcid); !errors.Is(err, tt.want) {
				t.Errorf("OpenInitial = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestCryptoFrames(t *testing.T) {
	tests := []struct {
		name    string
		payload []byte
		want    []CryptoFrame
		wantErr error
	}{
		{"padding only", make([]byte, 10), nil, nil},
		{"ping ack crypto", append([]byte{0x01, 0x02, 5, 0, 1, 0, 2, 3}, cryptoFrame(7, []byte("hi"))...),
			[]CryptoFrame{{Offset: 7, Data: []byte("hi")}}, nil},
		{"ack with ecn", append([]byte{0x03, 5, 0, 0, 0, 1, 2, 3}, cryptoFrame(0, []byte("x"))...),
			[]CryptoFrame{{Offset: 0, Data: []byte("x")}}, nil},
		{"connection close", []byte{0x1c, 0x0a, 0x06, 2, 'n', 'o'}, nil, nil},
		{"stream frame not allowed", []byte{0x08, 0}, nil, ErrFrame},
		{"truncated crypto", []byte{0x06, 0, 5, 'a'}, nil, ErrFrame},
		{"truncated ack", []byte{0x02, 5}, nil, ErrFrame},
		{"too many ack ranges", []byte{0x02, 1, 0, 0x3f, 0}, nil, ErrFrame},
		{"truncated close reason", []byte{0x1c, 0, 0, 9}, nil, ErrFrame},
		{"truncated varint", []byte{0x40}, nil, ErrFrame},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CryptoFrames(tt.payload)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("frames mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// chromeLikeInitials splits the CRYPTO stream of hello into out-of-order
// frames interleaved with PING and PADDING, over two packets in two
// datagrams, as Chrome's Initials do.
func chromeLikeInitials(t testing.TB, hello []byte) (first, second []byte) {
	t.Helper()
	dcid := []byte{0xde, 0xad, 0xbe, 0xef, 0xca, 0xfe, 0xba, 0xbe}
	scid := []byte{1, 2, 3, 4}
	a, b, c := len(hello)/3, len(hello)/2, 2*len(hello)/3
	var p1 []byte
	p1 = append(p1, cryptoFrame(b, hello[b:c])...)
	p1 = append(p1, 0x01, 0, 0, 0)
	p1 = append(p1, cryptoFrame(0, hello[:a])...)
	p1 = append(p1, make([]byte, 1162-len(p1)-20)...)
	var p2 []byte
	p2 = append(p2, cryptoFrame(c, hello[c:])...)
	p2 = append(p2, cryptoFrame(a-5, hello[a-5:b])...) // overlaps the first frame
	p2 = append(p2, make([]byte, 40)...)
	first = sealInitial(t, dcid, dcid, scid, 0, 1, p1)
	second = sealInitial(t, dcid, dcid, scid, 1, 2, p2)
	return first, second
}

func TestQUICHelloAssembler(t *testing.T) {
	hello := mustReassemble(t, captureGoHello(t, "blocked.example", []string{"h3"}))
	first, second := chromeLikeInitials(t, hello)
	dcid := []byte{0xde, 0xad, 0xbe, 0xef, 0xca, 0xfe, 0xba, 0xbe}
	handshake := sealInitial(t, dcid, dcid, nil, 9, 1, make([]byte, 30))
	handshake[0] = handshake[0]&^0x30 | 0x20 // relabel as a Handshake packet
	tests := []struct {
		name      string
		datagrams [][]byte
		limit     int
		wantErr   error
	}{
		{"two datagrams in order", [][]byte{first, second}, 0, nil},
		{"two datagrams reversed", [][]byte{second, first}, 0, nil},
		{"both packets coalesced in one datagram", [][]byte{append(append([]byte(nil), first...), second...)}, 0, nil},
		{"coalesced handshake packet and padding skipped", [][]byte{first, append(append(append([]byte(nil), second...), handshake...), 0, 0, 0)}, 0, nil},
		{"first datagram only", [][]byte{first}, 0, ErrNeedMore},
		{"second datagram only", [][]byte{second}, 0, ErrNeedMore},
		{"limit below the crypto offsets", [][]byte{first, second}, 100, ErrTooLong},
		{"garbage datagram", [][]byte{[]byte("GET / HTTP/1.1\r\n")}, 0, ErrNotInitial},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := NewQUICHelloAssembler(tt.limit)
			var err error
			for _, d := range tt.datagrams {
				if err = a.AddDatagram(d); err != nil {
					break
				}
			}
			if err == nil {
				var msg []byte
				msg, err = a.ClientHello()
				if err == nil && !bytes.Equal(msg, hello) {
					t.Fatalf("reassembled hello differs from the original")
				}
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
	h, err := QUICClientHello(first, second)
	if err != nil || h.ServerName != "blocked.example" {
		t.Fatalf("QUICClientHello = %v, %v", h, err)
	}
	if got := h.JA4(JA4QUIC); got[0] != 'q' {
		t.Errorf("JA4(JA4QUIC) = %q", got)
	}
}

func TestMergeSpan(t *testing.T) {
	tests := []struct {
		name string
		in   []span
		add  span
		want []span
	}{
		{"into empty", nil, span{5, 9}, []span{{5, 9}}},
		{"before", []span{{10, 20}}, span{0, 5}, []span{{0, 5}, {10, 20}}},
		{"after", []span{{10, 20}}, span{25, 30}, []span{{10, 20}, {25, 30}}},
		{"touching joins", []span{{0, 5}, {10, 20}}, span{5, 10}, []span{{0, 20}}},
		{"overlap several", []span{{0, 5}, {7, 9}, {12, 20}, {30, 40}}, span{3, 13}, []span{{0, 20}, {30, 40}}},
		{"inside", []span{{0, 50}}, span{10, 20}, []span{{0, 50}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mergeSpan(tt.in, tt.add)
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(span{})); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// mustReassemble returns the handshake message of raw ClientHello records.
func mustReassemble(t testing.TB, raw []byte) []byte {
	t.Helper()
	msg, err := ReassembleClientHello(raw, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), msg...)
}
