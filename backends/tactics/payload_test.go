package tactics

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestPayloadRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		p    Payload
	}{
		{name: "report", p: Payload{Verdicts: []Verdict{{"quic", StateBlocked}, {"reality", StateOK}, {"kcp", StateThrottled}}}},
		{name: "tactics", p: Payload{Order: []string{"reality", "tcp"}}},
		{name: "empty tactics", p: Payload{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.p.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			got, err := Parse(b)
			if err != nil {
				t.Fatalf("Parse(%s): %v", b, err)
			}
			tt.p.V = Version
			if diff := cmp.Diff(tt.p, got); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	many := `{"v":1,"order":[` + strings.Repeat(`"a",`, MaxVerdicts) + `"a"]}`
	tests := []struct{ name, in string }{
		{"empty", ``},
		{"not json", `hello`},
		{"wrong version", `{"v":2,"order":["tcp"]}`},
		{"no version", `{"order":["tcp"]}`},
		{"unknown field", `{"v":1,"order":["tcp"],"addr":"1.2.3.4"}`},
		{"trailing", `{"v":1}{"v":1}`},
		{"bad state", `{"v":1,"verdicts":[{"transport":"tcp","state":"meh"}]}`},
		{"address as name", `{"v":1,"verdicts":[{"transport":"1.2.3.4:80","state":"ok"}]}`},
		{"upper case name", `{"v":1,"order":["TCP"]}`},
		{"empty name", `{"v":1,"order":[""]}`},
		{"too many", many},
		{"too big", `{"v":1,"order":["` + strings.Repeat("a", MaxPayload) + `"]}`},
		{"transport twice in verdicts", `{"v":1,"verdicts":[{"transport":"tcp","state":"blocked"},{"transport":"tcp","state":"blocked"}]}`},
		{"transport twice in order", `{"v":1,"order":["tcp","quic","tcp"]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse([]byte(tt.in)); !errors.Is(err, ErrPayload) {
				t.Errorf("Parse(%.40q) = %v, want ErrPayload", tt.in, err)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, p := range []Payload{
		{Verdicts: []Verdict{{"quic", StateBlocked}, {"reality", StateOK}}},
		{Order: []string{"reality", "tcp", "obfs4"}},
		{},
	} {
		b, err := p.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			return
		}
		enc, err := p.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed payload: %v", err)
		}
		q, err := Parse(enc)
		if err != nil {
			t.Fatalf("Parse(Marshal(p)): %v", err)
		}
		if diff := cmp.Diff(p, q, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("round trip (-want +got):\n%s", diff)
		}
	})
}
