package kcp

import (
	"bufio"
	"bytes"
	"testing"
)

// FuzzReadFrame reads frames from arbitrary bytes: it must never panic, every
// frame it returns must respect its type's limits, and re-encoding the
// frames must give back the bytes they were read from.
func FuzzReadFrame(f *testing.F) {
	f.Add(appendFrameHeader(nil, frameData, 3), []byte("abc"))
	h := hello{Time: 1_700_000_000}
	f.Add(appendFrameHeader(nil, frameHello, helloLen), h.encode())
	f.Add(appendFrameHeader(nil, frameFin, 0), []byte{frameFinAck, 0, 0, framePing, 0, 0})
	f.Add(appendFrameHeader(nil, frameWelcome, welcomeLen), encodeWelcome(h.Nonce))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		in := append(bytes.Clone(a), b...)
		br := bufio.NewReader(bytes.NewReader(in))
		var out []byte
		for {
			typ, payload, err := readFrame(br)
			if err != nil {
				break
			}
			lo, hi, ok := frameLimit(typ)
			if !ok || len(payload) < lo || len(payload) > hi {
				t.Fatalf("frame %#x with %d bytes passed the limits", typ, len(payload))
			}
			out = appendFrameHeader(out, typ, len(payload))
			out = append(out, payload...)
		}
		if !bytes.HasPrefix(in, out) {
			t.Fatalf("re-encoded frames %x are not a prefix of the input %x", out, in)
		}
	})
}

// FuzzParseFirstPacket parses arbitrary decrypted packets, seeded with a
// real client's first packet: it must never panic, and what it accepts must
// hold a valid hello.
func FuzzParseFirstPacket(f *testing.F) {
	f.Add(captureFirstPacket(f))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, plain []byte) {
		fp, err := parseFirstPlaintext(plain)
		if err != nil {
			return
		}
		if _, err := parseHello(fp.Hello.encode()); err != nil {
			t.Fatalf("accepted hello does not round-trip: %v", err)
		}
	})
}

// FuzzHello checks that parseHello inverts encode and never panics.
func FuzzHello(f *testing.F) {
	f.Add((hello{Time: 1_700_000_000}).encode())
	f.Add([]byte{2})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseHello(b)
		if err != nil {
			return
		}
		if !bytes.Equal(h.encode(), b) {
			t.Fatalf("parseHello(%x) re-encodes as %x", b, h.encode())
		}
	})
}
