package ctl

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestMsgRoundTrip(t *testing.T) {
	for _, m := range []Msg{{TypeFlow, 1}, {TypeEOF, 1 << 40}, {TypeClose, ^uint64(0)}, {TypeHandOver, 3}, {TypeDgramEOF, 5}} {
		b := m.Append(nil)
		if len(b) != Size {
			t.Fatalf("%v: %d bytes", m, len(b))
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("Decode(% x): %v", b, err)
		}
		if diff := cmp.Diff(m, got); diff != "" {
			t.Errorf("round trip (-want +got):\n%s", diff)
		}
	}
}

func TestDecodeMalformed(t *testing.T) {
	good := Msg{TypeEOF, 7}.Append(nil)
	mod := func(i int, v byte) []byte {
		b := append([]byte(nil), good...)
		b[i] = v
		return b
	}
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"short", good[:11]},
		{"long", append(append([]byte(nil), good...), 0)},
		{"magic", mod(0, 0xCD)},
		{"version", mod(1, 2)},
		{"type 0", mod(2, 0)},
		{"type 6", mod(2, 6)},
		{"reserved", mod(3, 1)},
		{"flow 0", Msg{TypeEOF, 0}.Append(nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if m, err := Decode(tt.b); !errors.Is(err, ErrMalformed) {
				t.Errorf("Decode(% x) = %v, %v; want ErrMalformed", tt.b, m, err)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(Msg{TypeFlow, 1}.Append(nil))
	f.Add(Msg{TypeEOF, 42}.Append(nil))
	f.Add(Msg{TypeClose, 1 << 63}.Append(nil))
	f.Add(Msg{TypeDgramEOF, 7}.Append(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		if got := m.Append(nil); string(got) != string(b) {
			t.Fatalf("Decode(% x) = %v, which encodes as % x", b, m, got)
		}
	})
}
