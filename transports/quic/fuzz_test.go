package quic

import (
	"crypto/sha256"
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"
)

// FuzzDecodePin checks that decodePin never panics and accepts exactly the
// canonical encodings of 32-byte hashes.
func FuzzDecodePin(f *testing.F) {
	sum := sha256.Sum256([]byte("seed"))
	f.Add(base64.RawURLEncoding.EncodeToString(sum[:]))
	f.Add("")
	f.Add("abc")
	f.Fuzz(func(t *testing.T, s string) {
		h, err := decodePin(s)
		if err != nil {
			return
		}
		if got := base64.RawURLEncoding.EncodeToString(h[:]); got != s {
			t.Fatalf("decodePin(%q) re-encodes as %q", s, got)
		}
	})
}

// FuzzParseCert checks that parsing certificate and key files never panics
// and that an accepted pair has a valid pin.
func FuzzParseCert(f *testing.F) {
	dir := f.TempDir()
	if _, _, err := LoadOrCreateCert(dir); err != nil {
		f.Fatal(err)
	}
	certPEM, err := os.ReadFile(filepath.Join(dir, CertFile))
	if err != nil {
		f.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, KeyFile))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(certPEM, keyPEM)
	f.Add(certPEM, certPEM)
	f.Add([]byte{}, keyPEM)
	f.Fuzz(func(t *testing.T, certPEM, keyPEM []byte) {
		_, pin, err := parseCert(certPEM, keyPEM)
		if err != nil {
			return
		}
		if _, err := decodePin(pin); err != nil {
			t.Fatalf("accepted pair has an invalid pin %q: %v", pin, err)
		}
	})
}
