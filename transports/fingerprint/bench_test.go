package fingerprint

import (
	"testing"

	utls "github.com/refraction-networking/utls"
)

// BenchmarkSummarize measures parsing a Chrome ClientHello.
func BenchmarkSummarize(b *testing.B) {
	raw := captureFrom(b, utlsDial(b, Hello{}, nil))
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := Summarize(raw); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkClientHello measures building a ClientHello, preset and
// replayed capture: spec, key shares (ML-KEM included) and marshalling,
// without I/O.
func BenchmarkClientHello(b *testing.B) {
	raw := captureFrom(b, utlsDial(b, Hello{}, nil))
	replay, err := fromBytes(raw)
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		h    Hello
	}{{"preset", Hello{}}, {"capture", replay}} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				uc, err := tc.h.Client(nil, &utls.Config{ServerName: "cover.example"}, nil)
				if err != nil {
					b.Fatal(err)
				}
				if err := uc.BuildHandshakeState(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
