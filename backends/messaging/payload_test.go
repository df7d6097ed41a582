package messaging_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/commucat/commucat/backends/messaging"
	"github.com/google/go-cmp/cmp"
)

var sent = time.Date(2031, 3, 14, 15, 9, 26, 535_000_000, time.UTC)

func TestEnvelopeRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		env  messaging.Envelope
	}{
		{"small", messaging.Envelope{ID: [16]byte{1, 2, 3}, Peer: "alice", Sent: sent, Body: []byte("hello")}},
		{"empty body", messaging.Envelope{ID: [16]byte{0xff}, Peer: "b", Sent: sent, Body: []byte{}}},
		{"largest", messaging.Envelope{Peer: strings.Repeat("z", messaging.MaxNameLen), Sent: sent, Body: bytes.Repeat([]byte{7}, messaging.MaxBody)}},
		{"before 1970", messaging.Envelope{Peer: "old.timer", Sent: time.Date(1969, 7, 20, 20, 17, 0, 0, time.UTC), Body: []byte("x")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.env.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			b := tt.env.Append(nil)
			got, err := messaging.ParseEnvelope(b)
			if err != nil {
				t.Fatalf("ParseEnvelope: %v", err)
			}
			if diff := cmp.Diff(tt.env, got); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEnvelopeLayout(t *testing.T) {
	env := messaging.Envelope{ID: [16]byte{0: 0xaa, 15: 0xbb}, Peer: "bob", Sent: time.UnixMilli(0x0102030405), Body: []byte("hi")}
	want := []byte{
		0xaa, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xbb, // id
		0, 0, 0, 0x01, 0x02, 0x03, 0x04, 0x05, // sent, ms
		3, 'b', 'o', 'b', // peer
		2, 'h', 'i', // body
	}
	if diff := cmp.Diff(want, env.Append(nil)); diff != "" {
		t.Errorf("encoding (-want +got):\n%s", diff)
	}
}

func TestParseEnvelopeRejects(t *testing.T) {
	good := messaging.Envelope{ID: [16]byte{1}, Peer: "bob", Sent: sent, Body: []byte("hi")}.Append(nil)
	big := messaging.Envelope{Peer: "bob", Body: make([]byte, messaging.MaxBody+1)}.Append(nil)
	nonMinimal := append(good[:len(good)-3:len(good)-3], 0x82, 0x00, 'h', 'i')
	tests := []struct {
		name     string
		b        []byte
		tooLarge bool
	}{
		{"empty", nil, false},
		{"short", good[:20], false},
		{"peer truncated", good[:27], false},
		{"no body length", good[:28], false},
		{"body truncated", good[:len(good)-1], false},
		{"trailing byte", append(bytes.Clone(good), 0), false},
		{"empty peer", messaging.Envelope{Body: []byte("x")}.Append(nil), false},
		{"upper-case peer", messaging.Envelope{Peer: "Bob"}.Append(nil), false},
		{"peer with a slash", messaging.Envelope{Peer: "a/b"}.Append(nil), false},
		{"peer starts with a dot", messaging.Envelope{Peer: ".a"}.Append(nil), false},
		{"non-minimal length", nonMinimal, false},
		{"body too large", big, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := messaging.ParseEnvelope(tt.b)
			if !errors.Is(err, messaging.ErrPayload) {
				t.Fatalf("ParseEnvelope = %v, want ErrPayload", err)
			}
			if got := errors.Is(err, messaging.ErrTooLarge); got != tt.tooLarge {
				t.Errorf("errors.Is(err, ErrTooLarge) = %v, want %v (%v)", got, tt.tooLarge, err)
			}
		})
	}
}

func TestRegisterRequestRoundTrip(t *testing.T) {
	for _, r := range []messaging.RegisterRequest{
		{Code: "s3cret-code_XYZ", Name: "alice"},
		{Code: strings.Repeat("A", messaging.MaxCodeLen), Name: strings.Repeat("0", messaging.MaxNameLen)},
	} {
		t.Run(r.Name, func(t *testing.T) {
			if err := r.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			got, err := messaging.ParseRegisterRequest(r.Append(nil))
			if err != nil {
				t.Fatalf("ParseRegisterRequest: %v", err)
			}
			if diff := cmp.Diff(r, got); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseRegisterRequestRejects(t *testing.T) {
	const code = "c0de-SECRET"
	good := messaging.RegisterRequest{Code: code, Name: "alice"}.Append(nil)
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"code truncated", good[:3]},
		{"name missing", good[:1+len(code)]},
		{"name truncated", good[:len(good)-1]},
		{"trailing byte", append(bytes.Clone(good), 'x')},
		{"empty code", messaging.RegisterRequest{Name: "alice"}.Append(nil)},
		{"code with a space", messaging.RegisterRequest{Code: "c0de SECRET", Name: "alice"}.Append(nil)},
		{"code too long", messaging.RegisterRequest{Code: strings.Repeat("SECRET", 30), Name: "alice"}.Append(nil)},
		{"empty name", messaging.RegisterRequest{Code: code}.Append(nil)},
		{"bad name", messaging.RegisterRequest{Code: code, Name: "Alice"}.Append(nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := messaging.ParseRegisterRequest(tt.b)
			if !errors.Is(err, messaging.ErrPayload) {
				t.Fatalf("ParseRegisterRequest = %v, want ErrPayload", err)
			}
			if strings.Contains(err.Error(), "SECRET") {
				t.Errorf("error reveals the code: %v", err)
			}
		})
	}
}

func TestRegisterRequestRedacts(t *testing.T) {
	r := messaging.RegisterRequest{Code: "SECRET", Name: "alice"}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "req", r)
	for _, s := range []string{fmt.Sprint(r), fmt.Sprintf("%v %s", r, r), buf.String()} {
		if strings.Contains(s, "SECRET") || !strings.Contains(s, "alice") {
			t.Errorf("%q reveals the code or hides the name", s)
		}
	}
}

func TestValidName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"alice.smith_2-x", true},
		{"0day", true},
		{strings.Repeat("a", 64), true},
		{"", false},
		{strings.Repeat("a", 65), false},
		{"Alice", false},
		{"-alice", false},
		{"_a", false},
		{"a b", false},
		{"ä", false},
		{"a\x00", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := messaging.ValidName(tt.name)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
			}
			if err != nil && !errors.Is(err, messaging.ErrBadName) {
				t.Errorf("error %v does not match ErrBadName", err)
			}
		})
	}
}

func FuzzEnvelope(f *testing.F) {
	f.Add(messaging.Envelope{ID: [16]byte{1}, Peer: "alice", Sent: sent, Body: []byte("hello")}.Append(nil))
	f.Add(messaging.Envelope{Peer: "b", Body: []byte{}}.Append(nil))
	f.Add(messaging.Envelope{Peer: "b", Body: make([]byte, 300)}.Append(nil))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		env, err := messaging.ParseEnvelope(b)
		if err != nil {
			if !errors.Is(err, messaging.ErrPayload) {
				t.Fatalf("error %v does not match ErrPayload", err)
			}
			return
		}
		if err := env.Validate(); err != nil {
			t.Fatalf("parsed envelope does not validate: %v", err)
		}
		if again := env.Append(nil); !bytes.Equal(again, b) {
			t.Fatalf("encode(decode(b)) = %x, want %x", again, b)
		}
	})
}

func FuzzRegisterRequest(f *testing.F) {
	f.Add(messaging.RegisterRequest{Code: "s3cret-code_XYZ", Name: "alice"}.Append(nil))
	f.Add(messaging.RegisterRequest{Code: "A", Name: "0"}.Append(nil))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := messaging.ParseRegisterRequest(b)
		if err != nil {
			if !errors.Is(err, messaging.ErrPayload) {
				t.Fatalf("error %v does not match ErrPayload", err)
			}
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("parsed request does not validate: %v", err)
		}
		if again := r.Append(nil); !bytes.Equal(again, b) {
			t.Fatalf("encode(decode(b)) = %x, want %x", again, b)
		}
	})
}
