package frame

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// equateFrames compares frames treating nil and empty payloads as equal.
var equateFrames = cmpopts.EquateEmpty()

// diffFrame is cmp.Diff for frames with large payloads, which cmp walks
// byte by byte: it compares payloads with bytes.Equal.
func diffFrame(want, got Frame) string {
	if !bytes.Equal(want.Payload, got.Payload) {
		return fmt.Sprintf("payloads differ: %d bytes wanted, %d got", len(want.Payload), len(got.Payload))
	}
	want.Payload, got.Payload = nil, nil
	return cmp.Diff(want, got)
}

// allTypes lists every known frame type.
func allTypes() []Type {
	var ts []Type
	for t := range Type(255) {
		if t.Known() {
			ts = append(ts, t)
		}
	}
	return ts
}

func mustAppend(t *testing.T, f Frame) []byte {
	t.Helper()
	b, err := Append(nil, f)
	if err != nil {
		t.Fatalf("Append(%+v): %v", f, err)
	}
	return b
}

func TestTypes(t *testing.T) {
	want := map[Type]int{
		Message: 64 << 10, Ack: 4 << 10, Ping: 64, Pong: 64, PathJoin: 256,
		Close: 1 << 10, Error: 2 << 10, CallSignal: 8 << 10, Media: 64 << 10,
		StreamOpen: 1 << 10, StreamData: 64 << 10, StreamClose: 256,
		ProbeReport: 64 << 10, FECParity: 66 << 10, Register: 4 << 10,
		Certificate: 4 << 10, Padding: 16 << 10,
	}
	got := map[Type]int{}
	for _, typ := range allTypes() {
		got[typ] = typ.MaxPayload()
		if s := typ.String(); s == "" || strings.HasPrefix(s, "type(") {
			t.Errorf("Type(0x%02x).String() = %q, want a name", uint8(typ), s)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("per-type limits differ from docs/PROTOCOL.md (-doc +code):\n%s", diff)
	}
	for _, typ := range []Type{0, 0x12, 0xff} {
		if typ.Known() || typ.MaxPayload() != 0 {
			t.Errorf("Type(0x%02x) is known", uint8(typ))
		}
		if got := typ.String(); !strings.HasPrefix(got, "type(0x") {
			t.Errorf("Type(0x%02x).String() = %q", uint8(typ), got)
		}
	}
}

func TestAppendDecode(t *testing.T) {
	tests := []struct {
		name string
		f    Frame
		want []byte
	}{
		{"empty ping", Frame{Type: Ping}, []byte{1, 3, 0, 0, 0, 0}},
		{"message", Frame{Type: Message, Flags: FlagFin | FlagAckRequested, Stream: 1, Seq: 300, Payload: []byte("hi")},
			[]byte{1, 1, 6, 1, 0xac, 0x02, 2, 'h', 'i'}},
		{"max varints", Frame{Type: Padding, Stream: math.MaxUint64, Seq: math.MaxUint64},
			append([]byte{1, 0x11, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
				0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, 0)},
		{"reserved flags kept", Frame{Type: Media, Flags: 0xff, Payload: []byte{0}}, []byte{1, 9, 0xff, 0, 0, 1, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := mustAppend(t, tt.f)
			if diff := cmp.Diff(tt.want, b); diff != "" {
				t.Fatalf("Append (-want +got):\n%s", diff)
			}
			if got := Size(tt.f); got != len(b) {
				t.Errorf("Size = %d, want %d", got, len(b))
			}
			got, n, err := Decode(append(b, 0xee)) // a trailing byte stays unread
			if err != nil || n != len(b) {
				t.Fatalf("Decode = %d, %v; want %d, nil", n, err, len(b))
			}
			if diff := cmp.Diff(tt.f, got, equateFrames); diff != "" {
				t.Errorf("Decode (-want +got):\n%s", diff)
			}
			got, err = Read(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if diff := cmp.Diff(tt.f, got, equateFrames); diff != "" {
				t.Errorf("Read (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAppendErrors(t *testing.T) {
	tests := []struct {
		name    string
		f       Frame
		wantErr error
	}{
		{"type zero", Frame{}, ErrType},
		{"unknown type", Frame{Type: 0x12}, ErrType},
		{"ping too long", Frame{Type: Ping, Payload: make([]byte, 65)}, &TooLargeError{Type: Ping, Len: 65, Max: 64}},
		{"message too long", Frame{Type: Message, Payload: make([]byte, 64<<10+1)}, &TooLargeError{Type: Message, Len: 64<<10 + 1, Max: 64 << 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := []byte("keep")
			got, err := Append(dst, tt.f)
			checkErr(t, err, tt.wantErr)
			if string(got) != "keep" {
				t.Errorf("Append changed dst to %q", got)
			}
		})
	}
}

// checkErr fails unless err matches want: a sentinel by errors.Is, a
// *TooLargeError by value.
func checkErr(t *testing.T, err, want error) {
	t.Helper()
	if tl, ok := want.(*TooLargeError); ok {
		var got *TooLargeError
		if !errors.As(err, &got) {
			t.Fatalf("error = %v, want %v", err, want)
		}
		if diff := cmp.Diff(tl, got); diff != "" {
			t.Fatalf("TooLargeError (-want +got):\n%s", diff)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Fatalf("error = %v, want %v", err, want)
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name     string
		in       []byte
		wantErr  error // from Decode
		wantRead error // from Read, if different
	}{
		{"empty", nil, ErrTruncated, io.EOF},
		{"version 0", []byte{0}, ErrVersion, nil},
		{"version 2", []byte{2, 1, 0, 0, 0, 0}, ErrVersion, nil},
		{"version only", []byte{1}, ErrTruncated, io.ErrUnexpectedEOF},
		{"type 0", []byte{1, 0}, ErrType, nil},
		{"type 0x12", []byte{1, 0x12, 0, 0, 0, 0}, ErrType, nil},
		{"type 0xff", []byte{1, 0xff}, ErrType, nil},
		{"no flags", []byte{1, 1}, ErrTruncated, io.ErrUnexpectedEOF},
		{"no stream", []byte{1, 1, 0}, ErrTruncated, io.ErrUnexpectedEOF},
		{"stream cut", []byte{1, 1, 0, 0x80}, ErrTruncated, io.ErrUnexpectedEOF},
		{"stream 11 bytes", append([]byte{1, 1, 0}, bytes.Repeat([]byte{0x80}, 11)...), ErrVarint, nil},
		{"stream overflow", append(append([]byte{1, 1, 0}, bytes.Repeat([]byte{0xff}, 9)...), 2), ErrVarint, nil},
		{"stream not minimal", []byte{1, 1, 0, 0x80, 0x00, 0, 0}, ErrVarint, nil},
		{"seq not minimal", []byte{1, 1, 0, 0, 0x81, 0x80, 0x00, 0}, ErrVarint, nil},
		{"length not minimal", []byte{1, 1, 0, 0, 0, 0x80, 0}, ErrVarint, nil},
		{"length 10 bytes", append([]byte{1, 1, 0, 0, 0}, append(bytes.Repeat([]byte{0xff}, 9), 1)...),
			&TooLargeError{Type: Message, Len: math.MaxUint64, Max: 64 << 10}, nil},
		{"payload cut", []byte{1, 1, 0, 0, 0, 3, 'a', 'b'}, ErrTruncated, io.ErrUnexpectedEOF},
	}
	for _, typ := range allTypes() {
		max := typ.MaxPayload()
		hdr := mustAppend(t, Frame{Type: typ})
		hdr = append(hdr[:len(hdr)-1], appendVarint(nil, uint64(max)+1)...)
		tests = append(tests, struct {
			name     string
			in       []byte
			wantErr  error
			wantRead error
		}{typ.String() + " over limit without payload", hdr, &TooLargeError{Type: typ, Len: uint64(max) + 1, Max: max}, nil})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, n, err := Decode(tt.in)
			checkErr(t, err, tt.wantErr)
			if n != 0 || !cmp.Equal(f, Frame{}) {
				t.Errorf("Decode returned %+v, %d with error", f, n)
			}
			want := tt.wantRead
			if want == nil {
				want = tt.wantErr
			}
			f, err = Read(bytes.NewReader(tt.in))
			checkErr(t, err, want)
			if errors.Is(want, io.ErrUnexpectedEOF) && !errors.Is(err, ErrTruncated) {
				t.Errorf("Read error %v does not match ErrTruncated", err)
			}
			if !cmp.Equal(f, Frame{}) {
				t.Errorf("Read returned %+v with error", f)
			}
		})
	}
}

func appendVarint(dst []byte, x uint64) []byte {
	for x >= 0x80 {
		dst = append(dst, byte(x)|0x80)
		x >>= 7
	}
	return append(dst, byte(x))
}

// TestTruncatedEverywhere cuts valid frames of every type at every byte.
func TestTruncatedEverywhere(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, typ := range allTypes() {
		t.Run(typ.String(), func(t *testing.T) {
			f := randFrame(r, typ, 40)
			b := mustAppend(t, f)
			for i := range len(b) {
				if _, _, err := Decode(b[:i]); !errors.Is(err, ErrTruncated) {
					t.Fatalf("Decode(first %d of %d bytes) error = %v, want ErrTruncated", i, len(b), err)
				}
				_, err := Read(bytes.NewReader(b[:i]))
				want := io.ErrUnexpectedEOF
				if i == 0 {
					want = io.EOF
				}
				if !errors.Is(err, want) {
					t.Fatalf("Read(first %d of %d bytes) error = %v, want %v", i, len(b), err, want)
				}
			}
		})
	}
}

// failReader returns its bytes, then err.
type failReader struct {
	b   []byte
	err error
}

func (r *failReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, r.err
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

func (r *failReader) ReadByte() (byte, error) {
	if len(r.b) == 0 {
		return 0, r.err
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c, nil
}

// TestReadPassesReaderErrors checks that a failing reader is reported as
// such, never as malformed input, wherever it fails.
func TestReadPassesReaderErrors(t *testing.T) {
	errNet := errors.New("network down")
	b := mustAppend(t, Frame{Type: Message, Stream: 300, Seq: 70000, Payload: []byte("hello")})
	for i := range len(b) {
		_, err := Read(&failReader{b: b[:i], err: errNet})
		if !errors.Is(err, errNet) {
			t.Fatalf("Read failing after %d bytes: error = %v, want %v", i, err, errNet)
		}
		for _, bad := range []error{ErrVarint, ErrTruncated, ErrType, ErrVersion} {
			if errors.Is(err, bad) {
				t.Fatalf("Read failing after %d bytes: error %v matches %v", i, err, bad)
			}
		}
	}
}

// TestReadHugeLength checks the limit is enforced before allocating: a
// frame declaring 2^63 bytes must fail at once.
func TestReadHugeLength(t *testing.T) {
	in := append([]byte{1, byte(Message), 0, 0, 0}, appendVarint(nil, 1<<63)...)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := Read(bytes.NewReader(in)); err == nil {
			t.Fatal("Read accepted a 2^63-byte frame")
		}
	})
	// One allocation for the *TooLargeError, one for the reader.
	if allocs > 2 {
		t.Errorf("Read of an oversized frame made %v allocations, want <= 2", allocs)
	}
}

// randFrame makes a frame of type typ with random header fields and a
// payload of up to min(maxLen, limit) random bytes.
func randFrame(r *rand.Rand, typ Type, maxLen int) Frame {
	n := min(maxLen, typ.MaxPayload())
	p := make([]byte, r.IntN(n+1))
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return Frame{
		Type:    typ,
		Flags:   Flags(r.Uint32()),
		Stream:  r.Uint64() >> r.UintN(64),
		Seq:     r.Uint64() >> r.UintN(64),
		Payload: p,
	}
}

// TestRoundTripProperty encodes seeded random frames of every type, one
// after another in one buffer, and decodes them back with Decode and Read.
func TestRoundTripProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(0xc0ffee, 1))
	types := allTypes()
	var frames []Frame
	var buf []byte
	for i := range 2000 {
		typ := types[i%len(types)]
		maxLen := 64
		if i%50 == 0 {
			maxLen = typ.MaxPayload() // now and then a frame at or near the limit
		}
		f := randFrame(r, typ, maxLen)
		if i%100 == 0 {
			f.Payload = make([]byte, typ.MaxPayload())
		}
		before := len(buf)
		var err error
		if buf, err = Append(buf, f); err != nil {
			t.Fatalf("Append(%v): %v", f.Type, err)
		}
		if got := len(buf) - before; got != Size(f) {
			t.Fatalf("Size = %d, encoded %d", Size(f), got)
		}
		frames = append(frames, f)
	}
	rest := buf
	br := bufio.NewReaderSize(bytes.NewReader(buf), 4096)
	for i, want := range frames {
		got, n, err := Decode(rest)
		if err != nil {
			t.Fatalf("frame %d: Decode: %v", i, err)
		}
		rest = rest[n:]
		if diff := diffFrame(want, got); diff != "" {
			t.Fatalf("frame %d: Decode (-want +got):\n%s", i, diff)
		}
		got, err = Read(br)
		if err != nil {
			t.Fatalf("frame %d: Read: %v", i, err)
		}
		if diff := diffFrame(want, got); diff != "" {
			t.Fatalf("frame %d: Read (-want +got):\n%s", i, diff)
		}
	}
	if len(rest) != 0 {
		t.Errorf("%d bytes left after the last frame", len(rest))
	}
	if _, err := Read(br); err != io.EOF {
		t.Errorf("Read after the last frame = %v, want io.EOF", err)
	}
}

func TestDecodeAliasesPayload(t *testing.T) {
	b := mustAppend(t, Frame{Type: Message, Payload: []byte("abc")})
	f, _, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if cap(f.Payload) != len(f.Payload) {
		t.Errorf("payload capacity %d exceeds its length %d: an append would overwrite the next frame", cap(f.Payload), len(f.Payload))
	}
}

// TestDocVectors pins the examples in docs/PROTOCOL.md.
func TestDocVectors(t *testing.T) {
	var id [16]byte
	for i := range id {
		id[i] = byte(0xa0 + i)
	}
	tests := []struct {
		name string
		f    Frame
		want string
	}{
		{"message", Frame{Type: Message, Flags: FlagAckRequested, Seq: 300, Payload: []byte("hi")},
			"01 01 04 00 ac 02 02 68 69"},
		{"ack", Frame{Type: Ack, Seq: 301, Payload: AckPayload{Kind: AckStored, IDs: [][16]byte{id}}.Append(nil)},
			"01 02 00 00 ad 02 12 01 01 a0 a1 a2 a3 a4 a5 a6 a7 a8 a9 aa ab ac ad ae af"},
		{"ping", Frame{Type: Ping, Seq: 5, Payload: PingPayload{ID: 1, SentUnixNano: 1_700_000_000_000_000_000}.Append(nil)},
			"01 03 00 00 05 10 00 00 00 00 00 00 00 01 17 97 9c fe 36 2a 00 00"},
		{"error", Frame{Type: Error, Seq: 7, Payload: ErrorPayload{Code: ProblemUnknownRecipient, Ref: id[:], Detail: "no such user"}.Append(nil)},
			"01 07 00 00 07 1e 03 10 a0 a1 a2 a3 a4 a5 a6 a7 a8 a9 aa ab ac ad ae af 6e 6f 20 73 75 63 68 20 75 73 65 72"},
		{"close", Frame{Type: Close, Seq: 8, Payload: ClosePayload{Code: 300, Reason: "bye"}.Append(nil)},
			"01 06 00 00 08 05 ac 02 62 79 65"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := mustAppend(t, tt.f)
			if got := fmt.Sprintf("% x", b); got != tt.want {
				t.Errorf("encoding:\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}
