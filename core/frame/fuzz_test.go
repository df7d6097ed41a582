package frame

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
)

// seedFrames are real encodings that seed FuzzDecode and FuzzRead, beside
// the files in testdata/fuzz/.
func seedFrames() [][]byte {
	var seeds [][]byte
	for _, typ := range allTypes() {
		b, _ := Append(nil, Frame{Type: typ, Flags: FlagUrgent, Stream: 5, Seq: 300, Payload: []byte("payload")})
		seeds = append(seeds, b)
	}
	ack, _ := Append(nil, Frame{Type: Ack, Payload: AckPayload{Kind: AckStored, IDs: ids(2)}.Append(nil)})
	two := append(append([]byte(nil), ack...), ack...)
	return append(seeds, two, []byte{1, 1, 0, 0, 0, 0x80, 0x80, 0x04})
}

// checkDecodeErr fails unless err is one of the documented decode errors.
func checkDecodeErr(t *testing.T, err error) {
	t.Helper()
	var tl *TooLargeError
	switch {
	case errors.Is(err, ErrTruncated), errors.Is(err, ErrVersion), errors.Is(err, ErrType),
		errors.Is(err, ErrVarint), errors.As(err, &tl):
	default:
		t.Fatalf("undocumented error %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range seedFrames() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, n, err := Decode(b)
		rf, rerr := Read(bytes.NewReader(b))
		if err != nil {
			checkDecodeErr(t, err)
			switch {
			case errors.Is(err, ErrTruncated):
				if !errors.Is(rerr, ErrTruncated) && rerr != io.EOF {
					t.Fatalf("Decode: %v, Read: %v", err, rerr)
				}
			case rerr == nil || rerr.Error() != err.Error():
				t.Fatalf("Decode: %v, Read: %v", err, rerr)
			}
			return
		}
		if n <= 0 || n > len(b) || Size(fr) != n {
			t.Fatalf("Decode used %d of %d bytes, Size = %d", n, len(b), Size(fr))
		}
		again, err := Append(nil, fr)
		if err != nil {
			t.Fatalf("Append of a decoded frame: %v", err)
		}
		if !bytes.Equal(again, b[:n]) {
			t.Fatalf("Append(Decode(b)) = %x, want %x", again, b[:n])
		}
		if rerr != nil {
			t.Fatalf("Decode ok, Read: %v", rerr)
		}
		if d := diffFrame(fr, rf); d != "" {
			t.Fatalf("Decode and Read differ:\n%s", d)
		}
	})
}

func FuzzRead(f *testing.F) {
	for _, s := range seedFrames() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(b), 16)
		rest := b
		for {
			fr, err := Read(br)
			if err == io.EOF {
				if len(rest) != 0 {
					t.Fatalf("Read returned io.EOF with %d bytes left", len(rest))
				}
				return
			}
			if err != nil {
				checkDecodeErr(t, err)
				if _, _, derr := Decode(rest); derr == nil {
					t.Fatalf("Read: %v, Decode ok", err)
				}
				return
			}
			again, err := Append(nil, fr)
			if err != nil {
				t.Fatalf("Append of a read frame: %v", err)
			}
			if !bytes.HasPrefix(rest, again) {
				t.Fatalf("Append(Read(b)) = %x, not a prefix of %x", again, rest)
			}
			rest = rest[len(again):]
		}
	})
}

// fuzzPayload runs the checks every payload fuzz target shares: no panic;
// a parsed payload validates, re-encodes to the input and survives a trip
// through its frame.
func fuzzPayload[P interface{ Append([]byte) []byte }](t *testing.T, typ Type, b []byte, parse func([]byte) (P, error), validate func(P) error) {
	t.Helper()
	p, err := parse(b)
	if err != nil {
		if !errors.Is(err, ErrPayload) {
			t.Fatalf("error %v does not match ErrPayload", err)
		}
		return
	}
	if err := validate(p); err != nil {
		t.Fatalf("Validate of a parsed payload: %v", err)
	}
	again := p.Append(nil)
	if !bytes.Equal(again, b) {
		t.Fatalf("Append(Parse(b)) = %x, want %x", again, b)
	}
	fb, err := Append(nil, Frame{Type: typ, Payload: again})
	if err != nil {
		t.Fatalf("a valid payload does not fit its frame: %v", err)
	}
	fr, _, err := Decode(fb)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if _, err := parse(fr.Payload); err != nil {
		t.Fatalf("parse after a frame trip: %v", err)
	}
}

func FuzzAck(f *testing.F) {
	f.Add(AckPayload{Kind: AckStored, IDs: ids(1)}.Append(nil))
	f.Add(AckPayload{Kind: AckDelivered}.Append(nil))
	f.Add(AckPayload{Kind: AckRecords, IDs: ids(255)}.Append(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzPayload(t, Ack, b, ParseAck, AckPayload.Validate)
	})
}

func FuzzPing(f *testing.F) {
	f.Add(PingPayload{ID: 1, SentUnixNano: 1_700_000_000_000_000_000}.Append(nil))
	f.Add(PingPayload{ID: ^uint64(0), SentUnixNano: -1}.Append(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzPayload(t, Ping, b, ParsePing, func(PingPayload) error { return nil })
	})
}

func FuzzError(f *testing.F) {
	ref := id(1)
	f.Add(ErrorPayload{Code: ProblemUnknownRecipient, Ref: ref[:], Detail: "no such user"}.Append(nil))
	f.Add(ErrorPayload{Code: ProblemInternal}.Append(nil))
	f.Add(ErrorPayload{Code: 0xffff, Detail: "später"}.Append(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzPayload(t, Error, b, ParseError, ErrorPayload.Validate)
	})
}

func FuzzClose(f *testing.F) {
	f.Add(ClosePayload{}.Append(nil))
	f.Add(ClosePayload{Code: 300, Reason: "shutting down"}.Append(nil))
	f.Add(ClosePayload{Code: 0xffff, Reason: "ü"}.Append(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzPayload(t, Close, b, ParseClose, ClosePayload.Validate)
	})
}
