package frame

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func id(b byte) [16]byte {
	var x [16]byte
	for i := range x {
		x[i] = b + byte(i)
	}
	return x
}

func ids(n int) [][16]byte {
	out := make([][16]byte, n)
	for i := range out {
		out[i] = id(byte(i))
	}
	return out
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestAck(t *testing.T) {
	id1 := id(1)
	tests := []struct {
		name    string
		in      []byte
		want    AckPayload
		wantErr bool
	}{
		{"stored one", cat([]byte{1, 1}, id1[:]), AckPayload{Kind: AckStored, IDs: [][16]byte{id1}}, false},
		{"delivered none", []byte{2, 0}, AckPayload{Kind: AckDelivered}, false},
		{"records", cat([]byte{3, 2}, id1[:], id1[:]), AckPayload{Kind: AckRecords, IDs: [][16]byte{id1, id1}}, false},
		{"255 ids", AckPayload{Kind: AckStored, IDs: ids(255)}.Append(nil), AckPayload{Kind: AckStored, IDs: ids(255)}, false},
		{"empty", nil, AckPayload{}, true},
		{"kind 0", []byte{0, 0}, AckPayload{}, true},
		{"kind 5", []byte{5, 0}, AckPayload{}, true},
		{"no count", []byte{1}, AckPayload{}, true},
		{"count cut", []byte{1, 0x80}, AckPayload{}, true},
		{"count not minimal", []byte{1, 0x80, 0}, AckPayload{}, true},
		{"count 11 bytes", cat([]byte{1}, bytes.Repeat([]byte{0xff}, 11)), AckPayload{}, true},
		{"256 ids", AckPayload{Kind: AckStored, IDs: ids(256)}.Append(nil), AckPayload{}, true},
		{"huge count", []byte{1, 0xff, 0xff, 0xff, 0xff, 0x0f}, AckPayload{}, true},
		{"id cut", cat([]byte{1, 1}, id1[:15]), AckPayload{}, true},
		{"trailing byte", cat([]byte{1, 1}, id1[:], []byte{0}), AckPayload{}, true},
		{"trailing after none", []byte{1, 0, 0}, AckPayload{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAck(tt.in)
			checkPayloadErr(t, err, tt.wantErr)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("ParseAck (-want +got):\n%s", diff)
			}
			if !tt.wantErr {
				checkCanonical(t, tt.in, got.Append(nil), got.Validate())
			}
		})
	}
}

// checkPayloadErr fails unless err is a *PayloadError matching ErrPayload
// exactly when wantErr.
func checkPayloadErr(t *testing.T, err error, wantErr bool) {
	t.Helper()
	if !wantErr {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	var pe *PayloadError
	if !errors.Is(err, ErrPayload) || !errors.As(err, &pe) {
		t.Fatalf("error = %v, want a *PayloadError", err)
	}
	if !strings.HasPrefix(err.Error(), "frame: bad ") {
		t.Errorf("error %q does not start with the package name", err)
	}
}

// checkCanonical checks that a parsed payload validates and re-encodes to
// the exact input.
func checkCanonical(t *testing.T, in, again []byte, validate error) {
	t.Helper()
	if validate != nil {
		t.Errorf("Validate of a parsed payload: %v", validate)
	}
	if !bytes.Equal(in, again) {
		t.Errorf("Append(Parse(b)) = %x, want %x", again, in)
	}
}

func TestPing(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    PingPayload
		wantErr bool
	}{
		{"zero", make([]byte, 16), PingPayload{}, false},
		{"values", []byte{0, 0, 0, 0, 0, 0, 1, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe}, PingPayload{ID: 0x102, SentUnixNano: -2}, false},
		{"empty", nil, PingPayload{}, true},
		{"15 bytes", make([]byte, 15), PingPayload{}, true},
		{"17 bytes", make([]byte, 17), PingPayload{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePing(tt.in)
			checkPayloadErr(t, err, tt.wantErr)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("ParsePing (-want +got):\n%s", diff)
			}
			if !tt.wantErr {
				checkCanonical(t, tt.in, got.Append(nil), nil)
			}
		})
	}
}

func TestError(t *testing.T) {
	ref := id(7)
	tests := []struct {
		name    string
		in      []byte
		want    ErrorPayload
		wantErr bool
	}{
		{"code only", []byte{1, 0}, ErrorPayload{Code: ProblemBadRequest}, false},
		{"ref and detail", cat([]byte{3, 16}, ref[:], []byte("no such user")),
			ErrorPayload{Code: ProblemUnknownRecipient, Ref: ref[:], Detail: "no such user"}, false},
		{"unknown code kept", []byte{0xff, 0xff, 0x03, 0, 'x'}, ErrorPayload{Code: 0xffff, Detail: "x"}, false},
		{"ref 64", cat([]byte{8, 64}, bytes.Repeat([]byte{9}, 64)), ErrorPayload{Code: ProblemInternal, Ref: bytes.Repeat([]byte{9}, 64)}, false},
		{"utf-8 detail", cat([]byte{6, 0}, []byte("später")), ErrorPayload{Code: ProblemRateLimited, Detail: "später"}, false},
		{"largest", cat([]byte{9, 0}, bytes.Repeat([]byte{'a'}, 2046)), ErrorPayload{Code: ProblemUnavailable, Detail: strings.Repeat("a", 2046)}, false},
		{"empty", nil, ErrorPayload{}, true},
		{"code 0", []byte{0, 0}, ErrorPayload{}, true},
		{"code 65536", []byte{0x80, 0x80, 0x04, 0}, ErrorPayload{}, true},
		{"code not minimal", []byte{0x81, 0x00, 0}, ErrorPayload{}, true},
		{"code cut", []byte{0x81}, ErrorPayload{}, true},
		{"no ref len", []byte{1}, ErrorPayload{}, true},
		{"ref len not minimal", []byte{1, 0x80, 0}, ErrorPayload{}, true},
		{"ref 65", cat([]byte{1, 65}, bytes.Repeat([]byte{9}, 65)), ErrorPayload{}, true},
		{"ref cut", cat([]byte{1, 16}, ref[:15]), ErrorPayload{}, true},
		{"detail not utf-8", []byte{1, 0, 0xff}, ErrorPayload{}, true},
		{"detail cut in a rune", cat([]byte{1, 0}, []byte("ä")[:1]), ErrorPayload{}, true},
		{"too long", cat([]byte{9, 0}, bytes.Repeat([]byte{'a'}, 2047)), ErrorPayload{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseError(tt.in)
			checkPayloadErr(t, err, tt.wantErr)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("ParseError (-want +got):\n%s", diff)
			}
			if !tt.wantErr {
				checkCanonical(t, tt.in, got.Append(nil), got.Validate())
			}
		})
	}
}

func TestErrorRefIsCopied(t *testing.T) {
	in := []byte{1, 2, 'a', 'b'}
	e, err := ParseError(in)
	if err != nil {
		t.Fatal(err)
	}
	in[2] = 'z'
	if string(e.Ref) != "ab" {
		t.Errorf("Ref = %q after the input changed, want %q", e.Ref, "ab")
	}
}

func TestClose(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    ClosePayload
		wantErr bool
	}{
		{"code 0", []byte{0}, ClosePayload{}, false},
		{"reason", cat([]byte{0xac, 0x02}, []byte("bye")), ClosePayload{Code: 300, Reason: "bye"}, false},
		{"max code", []byte{0xff, 0xff, 0x03}, ClosePayload{Code: 0xffff}, false},
		{"512 bytes", cat([]byte{1}, bytes.Repeat([]byte{'r'}, 512)), ClosePayload{Code: 1, Reason: strings.Repeat("r", 512)}, false},
		{"empty", nil, ClosePayload{}, true},
		{"code cut", []byte{0x80}, ClosePayload{}, true},
		{"code not minimal", []byte{0x80, 0x00}, ClosePayload{}, true},
		{"code 65536", []byte{0x80, 0x80, 0x04}, ClosePayload{}, true},
		{"code 11 bytes", bytes.Repeat([]byte{0xff}, 11), ClosePayload{}, true},
		{"513 bytes", cat([]byte{1}, bytes.Repeat([]byte{'r'}, 513)), ClosePayload{}, true},
		{"not utf-8", []byte{1, 'a', 0xc3}, ClosePayload{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseClose(tt.in)
			checkPayloadErr(t, err, tt.wantErr)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("ParseClose (-want +got):\n%s", diff)
			}
			if !tt.wantErr {
				checkCanonical(t, tt.in, got.Append(nil), got.Validate())
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		err  error
		ok   bool
	}{
		{"ack ok", AckPayload{Kind: AckDelivered, IDs: ids(255)}.Validate(), true},
		{"ack kind 0", AckPayload{}.Validate(), false},
		{"ack 256 ids", AckPayload{Kind: AckStored, IDs: ids(256)}.Validate(), false},
		{"error ok", ErrorPayload{Code: ProblemTooLarge, Ref: make([]byte, 64), Detail: "x"}.Validate(), true},
		{"error code 0", ErrorPayload{}.Validate(), false},
		{"error ref 65", ErrorPayload{Code: 1, Ref: make([]byte, 65)}.Validate(), false},
		{"error detail not utf-8", ErrorPayload{Code: 1, Detail: "\xff"}.Validate(), false},
		{"error too long", ErrorPayload{Code: 1, Detail: strings.Repeat("a", 2047)}.Validate(), false},
		{"close ok", ClosePayload{Code: 1, Reason: strings.Repeat("a", 512)}.Validate(), true},
		{"close reason 513", ClosePayload{Reason: strings.Repeat("a", 513)}.Validate(), false},
		{"close not utf-8", ClosePayload{Reason: "\xc3"}.Validate(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkPayloadErr(t, tt.err, !tt.ok)
		})
	}
}

// TestPayloadTruncated cuts each payload's fixed part at every byte: every
// cut must fail cleanly. (Error and Close end in free text, so a cut inside
// the text is a shorter valid payload and is not tested here.)
func TestPayloadTruncated(t *testing.T) {
	ref := id(3)
	tests := []struct {
		name  string
		in    []byte
		fixed int // bytes that may not be cut
		parse func([]byte) error
	}{
		{"ack", AckPayload{Kind: AckStored, IDs: ids(3)}.Append(nil), -1, func(b []byte) error { _, err := ParseAck(b); return err }},
		{"ping", PingPayload{ID: 1, SentUnixNano: 2}.Append(nil), -1, func(b []byte) error { _, err := ParsePing(b); return err }},
		{"error", ErrorPayload{Code: 300, Ref: ref[:], Detail: "d"}.Append(nil), 2 + 1 + 16, func(b []byte) error { _, err := ParseError(b); return err }},
		{"close", ClosePayload{Code: 300, Reason: "r"}.Append(nil), 2, func(b []byte) error { _, err := ParseClose(b); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fixed := tt.fixed
			if fixed < 0 {
				fixed = len(tt.in)
			}
			for i := range fixed {
				err := tt.parse(tt.in[:i])
				if !errors.Is(err, ErrPayload) {
					t.Fatalf("parse(first %d of %d bytes) error = %v, want ErrPayload", i, len(tt.in), err)
				}
			}
		})
	}
}

func TestStrings(t *testing.T) {
	got := map[string]string{
		"stored": AckStored.String(), "delivered": AckDelivered.String(), "records": AckRecords.String(),
		"ack-kind(9)": AckKind(9).String(),
		"bad-request": ProblemBadRequest.String(), "unauthorized": ProblemUnauthorized.String(),
		"unknown-recipient": ProblemUnknownRecipient.String(), "quota-exceeded": ProblemQuotaExceeded.String(),
		"registration-refused": ProblemRegistrationRefused.String(), "rate-limited": ProblemRateLimited.String(),
		"too-large": ProblemTooLarge.String(), "internal": ProblemInternal.String(),
		"unavailable": ProblemUnavailable.String(), "problem(0)": Problem(0).String(),
		"problem(10)": Problem(10).String(), "problem(65535)": Problem(65535).String(),
	}
	for want, s := range got {
		if s != want {
			t.Errorf("String() = %q, want %q", s, want)
		}
	}
}

// TestPayloadRoundTripProperty encodes seeded random valid payloads, wraps
// each in its frame and parses it back.
func TestPayloadRoundTripProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	randBytes := func(n int) []byte {
		if n == 0 {
			return nil // as the parser returns it
		}
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	randText := func(n int) string {
		var sb strings.Builder
		for sb.Len() < n {
			sb.WriteRune([]rune("aZ ä€😺\n")[r.IntN(7)])
		}
		return strings.ToValidUTF8(sb.String()[:n], "") // a cut rune is dropped
	}
	opts := cmpopts.EquateEmpty()
	for i := range 2000 {
		var typ Type
		var payload []byte
		var check func([]byte) string
		switch i % 4 {
		case 0:
			a := AckPayload{Kind: AckKind(1 + r.IntN(3))}
			if n := r.IntN(MaxAckIDs + 1); n > 0 {
				a.IDs = make([][16]byte, n)
			}
			for j := range a.IDs {
				copy(a.IDs[j][:], randBytes(16))
			}
			typ, payload = Ack, a.Append(nil)
			check = func(b []byte) string { got, err := ParseAck(b); return diffOrErr(a, got, err, opts) }
		case 1:
			p := PingPayload{ID: r.Uint64(), SentUnixNano: r.Int64() - r.Int64()}
			typ, payload = Pong, p.Append(nil)
			check = func(b []byte) string { got, err := ParsePing(b); return diffOrErr(p, got, err, opts) }
		case 2:
			e := ErrorPayload{Code: Problem(1 + r.IntN(0xffff)), Ref: randBytes(r.IntN(MaxErrorRef + 1)), Detail: randText(r.IntN(1900))}
			typ, payload = Error, e.Append(nil)
			check = func(b []byte) string { got, err := ParseError(b); return diffOrErr(e, got, err, opts) }
		case 3:
			c := ClosePayload{Code: uint16(r.Uint32()), Reason: randText(r.IntN(MaxCloseReason + 1))}
			typ, payload = Close, c.Append(nil)
			check = func(b []byte) string { got, err := ParseClose(b); return diffOrErr(c, got, err, opts) }
		}
		b, err := Append(nil, Frame{Type: typ, Payload: payload})
		if err != nil {
			t.Fatalf("case %d: Append %v frame: %v", i, typ, err)
		}
		f, _, err := Decode(b)
		if err != nil {
			t.Fatalf("case %d: Decode: %v", i, err)
		}
		if diff := check(f.Payload); diff != "" {
			t.Fatalf("case %d (%v):\n%s", i, typ, diff)
		}
	}
}

// diffOrErr reports a parse error or a difference; it tries the fast
// reflect.DeepEqual first, as cmp walks large id lists slowly.
func diffOrErr(want, got any, err error, opts ...cmp.Option) string {
	if err != nil {
		return "parse: " + err.Error()
	}
	if reflect.DeepEqual(want, got) {
		return ""
	}
	return cmp.Diff(want, got, opts...)
}
