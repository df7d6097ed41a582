package censor

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// midBytes are non-printable bytes with exactly four set bits: filler that
// triggers no exemption by itself (popcount 4.0 per byte, nothing
// printable).
var midBytes = []byte{0x0f, 0x87, 0x96, 0xa5, 0xc3, 0xf0, 0x1e, 0x99}

// filler returns n bytes cycling through midBytes.
func filler(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = midBytes[i%len(midBytes)]
	}
	return b
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// randomPayload is a fixed pseudo-random payload, like the first packet
// of Shadowsocks or obfs4, that no exemption covers.
func randomPayload(t testing.TB, n int) []byte {
	t.Helper()
	r := rand.New(rand.NewChaCha8([32]byte{'c', 'o', 'm', 'm', 'u', 'c', 'a', 't'}))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	if FET(b).Exempt() {
		t.Fatalf("the seeded random payload is exempt: %+v", FET(b))
	}
	return b
}

// TestFETExemptions crafts one payload per exemption of Algorithm 1 (and
// the payload next to each boundary that is blocked), Wu et al. 2023
// §4.1-§4.3.
func TestFETExemptions(t *testing.T) {
	alt := func(n int, p, q byte) []byte { // p q p q ...
		b := make([]byte, n)
		for i := range b {
			if i%2 == 0 {
				b[i] = p
			} else {
				b[i] = q
			}
		}
		return b
	}
	tests := []struct {
		name       string
		payload    []byte
		wantReason string // "" means blocked
	}{
		{"random payload is blocked", randomPayload(t, 200), ""},
		{"four bits per byte, nothing printable, is blocked", filler(100), ""},
		{"empty payload is not judged", nil, "empty"},

		// Ex1: popcount per byte <= 3.4 or >= 4.6.
		{"ex1 all zero", make([]byte, 50), "ex1"},
		{"ex1 all ones", bytes.Repeat([]byte{0xff}, 50), "ex1"},
		{"ex1 exactly 3.4", []byte{0x0f, 0x0f, 0x07, 0x07, 0x07}, "ex1"},
		{"ex1 3.6 is blocked", []byte{0x0f, 0x0f, 0x0f, 0x07, 0x07}, ""},
		{"ex1 exactly 4.6", []byte{0xf8, 0xf8, 0xf8, 0xf0, 0xf0}, "ex1"},
		{"ex1 4.4 is blocked", []byte{0xf8, 0xf8, 0xf0, 0xf0, 0xf0}, ""},
		{"ex1 low-entropy random", func() []byte {
			b := randomPayload(t, 300)
			for i := range b {
				b[i] &= b[(i+1)%len(b)] | 0x81 // clears bits: about 3 per byte
			}
			return b
		}(), "ex1"},

		// Ex2: the first six bytes are printable.
		{"ex2 six printable then random", cat([]byte("Ab3$x~"), randomPayload(t, 200)), "ex2"},
		{"ex2 five printable is blocked", cat([]byte("Ab3$x"), filler(200)), ""},
		{"ex2 short all-printable packet", []byte("hello"), "ex3"}, // fewer than six bytes: Ex3 covers it

		// Ex3: more than half printable.
		{"ex3 two of three printable", bytes.Repeat([]byte{'Z', 'Z', 0x99}, 40), "ex3"},
		{"ex3 exactly half is blocked", alt(100, 0x99, 'Z'), ""},
		{"ex3 51 of 100 printable", cat([]byte{'Z'}, alt(98, 0x99, 'Z'), []byte{0x99}), ""},

		// Ex4: more than 20 contiguous printable bytes.
		{"ex4 run of 21", cat(filler(100), bytes.Repeat([]byte{'Z'}, 21), filler(100)), "ex4"},
		{"ex4 run of 20 is blocked", cat(filler(100), bytes.Repeat([]byte{'Z'}, 20), filler(100)), ""},

		// Ex5: TLS and HTTP fingerprints.
		{"ex5 tls handshake 1.0", cat([]byte{0x16, 0x03, 0x01}, filler(200)), "ex5"},
		{"ex5 tls application data", cat([]byte{0x17, 0x03, 0x03}, filler(200)), "ex5"},
		{"ex5 tls minor 9", cat([]byte{0x16, 0x03, 0x09}, filler(200)), "ex5"},
		{"ex5 tls minor 10 is blocked", cat([]byte{0x16, 0x03, 0x0a}, filler(200)), ""},
		{"ex5 tls alert is blocked", cat([]byte{0x15, 0x03, 0x03}, filler(200)), ""},
		{"ex5 GET", cat([]byte("GET "), filler(200)), "ex5"},
		{"ex5 PUT", cat([]byte("PUT "), filler(200)), "ex5"},
		{"ex5 POST", cat([]byte("POST "), filler(200)), "ex5"},
		{"ex5 HEAD", cat([]byte("HEAD "), filler(200)), "ex5"},
		{"ex5 GET without space is blocked", cat([]byte("GET"), filler(200)), ""},
		{"ex5 lower-case get is blocked", cat([]byte("get "), filler(200)), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := FET(tt.payload)
			if got := r.Reason(); got != tt.wantReason {
				t.Errorf("Reason = %q, want %q (%+v, %.3f bits/byte)", got, tt.wantReason, r, r.PopcountPerByte())
			}
			if r.Exempt() != (tt.wantReason != "") {
				t.Errorf("Exempt = %v with reason %q", r.Exempt(), r.Reason())
			}
		})
	}
}

func TestFETMeasurements(t *testing.T) {
	got := FET([]byte("GET /\x00\xffabc"))
	// G E T space / 00 ff a b c: 4+3+3+1+5+0+8+3+3+4 = 34 set bits, 3.4 per
	// byte, on the Ex1 boundary.
	want := FETResult{Len: 10, SetBits: 34, PrintablePrefix: 5, LongestRun: 5, Printable: 8,
		Ex1: true, Ex3: true, Ex5: true}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s", diff)
	}
	if p := got.PopcountPerByte(); p != 3.4 {
		t.Errorf("PopcountPerByte = %v", p)
	}
}

// TestFETRealProtocols runs the test on first packets of real encoders.
func TestFETRealProtocols(t *testing.T) {
	tests := []struct {
		name    string
		payload []byte
		exempt  bool
	}{
		{"crypto/tls clienthello", captureGoHello(t, "www.example.com", nil), true},
		{"utls chrome clienthello", captureChromeHello(t, "www.example.com"), true},
		{"http request", []byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"), true},
		{"ssh banner", []byte("SSH-2.0-OpenSSH_9.6\r\n"), true},
		{"fully encrypted first packet", randomPayload(t, 517), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if r := FET(tt.payload); r.Exempt() != tt.exempt {
				t.Errorf("Exempt = %v, want %v (%+v)", r.Exempt(), tt.exempt, r)
			}
		})
	}
}

// fixedRandom returns its values in turn; it fails the test when drawn
// more often than it holds.
type fixedRandom struct {
	t    *testing.T
	vals []float64
}

func (f *fixedRandom) Float64() float64 {
	if len(f.vals) == 0 {
		f.t.Fatal("Random drawn when it should not be")
	}
	v := f.vals[0]
	f.vals = f.vals[1:]
	return v
}

func TestFETRuleDecide(t *testing.T) {
	random := randomPayload(t, 100)
	tests := []struct {
		name  string
		rule  FETRule
		pkt   []byte
		draws []float64
		want  FETDecision
	}{
		{"default probability blocks under 0.26", FETRule{}, random, []float64{0.2599},
			FETDecision{Block: true, Residual: 180 * time.Second}},
		{"default probability spares 0.26", FETRule{}, random, []float64{0.26}, FETDecision{}},
		{"probability one always blocks", FETRule{BlockProbability: 1, Residual: time.Minute}, random, []float64{0.9999},
			FETDecision{Block: true, Residual: time.Minute}},
		{"exempt traffic draws nothing", FETRule{BlockProbability: 1}, []byte("GET / HTTP/1.1\r\n"), nil, FETDecision{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.rule.Decide(tt.pkt, &fixedRandom{t: t, vals: tt.draws})
			tt.want.Result = FET(tt.pkt)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestFETRuleRate checks, with a seeded PRNG, that the default rule blocks
// about a quarter of flagged connections (the count is deterministic for
// the seed).
func TestFETRuleRate(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	random := randomPayload(t, 64)
	blocked := 0
	const n = 10000
	for range n {
		if (FETRule{}).Decide(random, rnd).Block {
			blocked++
		}
	}
	if blocked < 2400 || blocked > 2800 {
		t.Errorf("blocked %d of %d, want about 26%%", blocked, n)
	}
}

func TestFETRuleValidate(t *testing.T) {
	tests := []struct {
		name string
		rule FETRule
		want error
	}{
		{"zero value", FETRule{}, nil},
		{"probability one", FETRule{BlockProbability: 1}, nil},
		{"negative probability", FETRule{BlockProbability: -0.1}, ErrConfig},
		{"probability above one", FETRule{BlockProbability: 1.5}, ErrConfig},
		{"negative residual", FETRule{Residual: -time.Second}, ErrConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.rule.Validate(); !errors.Is(err, tt.want) {
				t.Errorf("Validate = %v, want %v", err, tt.want)
			}
		})
	}
}
