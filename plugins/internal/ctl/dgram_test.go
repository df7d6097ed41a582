package ctl

import (
	"bytes"
	"errors"
	"testing"
)

func TestDatagramRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 1150, MaxDatagram} {
		p := bytes.Repeat([]byte{0xA5}, n)
		rec := AppendDatagram(nil, p)
		if len(rec) != 1+n || rec[0] != DatagramKind {
			t.Fatalf("%d bytes: record of %d bytes, kind %#x", n, len(rec), rec[0])
		}
		got, err := ParseDatagram(rec)
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if !bytes.Equal(got, p) {
			t.Errorf("%d bytes: parsed %d bytes that differ", n, len(got))
		}
	}
}

func TestParseDatagramMalformed(t *testing.T) {
	tests := []struct {
		name string
		rec  []byte
	}{
		{"empty", nil},
		{"kind 1", []byte{1, 'x'}},
		{"kind 0xff", []byte{0xff}},
		{"too long", make([]byte, MaxRecord+1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if p, err := ParseDatagram(tt.rec); !errors.Is(err, ErrMalformed) {
				t.Errorf("ParseDatagram = %d bytes, %v; want ErrMalformed", len(p), err)
			}
		})
	}
}

func FuzzParseDatagram(f *testing.F) {
	f.Add(AppendDatagram(nil, nil))
	f.Add(AppendDatagram(nil, []byte("a datagram")))
	f.Add(AppendDatagram(nil, make([]byte, 1150)))
	f.Add([]byte{0x01, 'x'})
	f.Fuzz(func(t *testing.T, rec []byte) {
		p, err := ParseDatagram(rec)
		if err != nil {
			return
		}
		if got := AppendDatagram(nil, p); !bytes.Equal(got, rec) {
			t.Fatalf("ParseDatagram(% x) = % x, which encodes as % x", rec, p, got)
		}
	})
}
