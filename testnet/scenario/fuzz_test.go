package scenario

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzParse checks that Parse never panics on any input, and that a
// scenario it accepts survives Encode and Parse unchanged.
func FuzzParse(f *testing.F) {
	f.Add([]byte(full))
	for _, n := range Names() {
		s, err := Shipped(n)
		if err != nil {
			f.Fatal(err)
		}
		b, err := Encode(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("name: x\nhosts: [{name: a}]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Parse(b)
		if err != nil {
			return
		}
		enc, err := Encode(s)
		if err != nil {
			t.Fatalf("encode of a parsed scenario: %v", err)
		}
		back, err := Parse(enc)
		if err != nil {
			t.Fatalf("parse of an encoded scenario: %v\n%s", err, enc)
		}
		if diff := cmp.Diff(s, back); diff != "" {
			t.Fatalf("round trip (-parsed +reparsed):\n%s", diff)
		}
	})
}

// FuzzParseTag checks that ParseTag never panics and reads back what
// MessageBody wrote.
func FuzzParseTag(f *testing.F) {
	f.Add(string(MessageBody("run3", 17, 64)), "run3", 17)
	f.Add("[cc/x/1] ", "setup0", 0)
	f.Add("[cc/", "a", 1)
	f.Fuzz(func(t *testing.T, body, step string, n int) {
		ParseTag(body)
		if n < 0 || step == "" || len(step) > 32 {
			return
		}
		for _, c := range step {
			if c == '/' || c == ']' {
				return
			}
		}
		s, m, ok := ParseTag(string(MessageBody(step, n, 0)))
		if !ok || s != step || m != n {
			t.Fatalf("ParseTag(MessageBody(%q, %d)) = %q, %d, %t", step, n, s, m, ok)
		}
	})
}
