package handshake

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func mustSigning(t testing.TB, seed string) *SigningKey {
	t.Helper()
	k, err := generateSigning(detRand(seed))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func testCert(t testing.TB) *Certificate {
	t.Helper()
	return &Certificate{
		Version:    CertificateVersion,
		Serial:     [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		User:       "alice",
		DeviceID:   [16]byte{0xd0, 0xd1},
		DeviceKey:  mustStatic(t, "cert device").Public(),
		GatewayKey: mustStatic(t, "cert gateway").Public(),
		NotBefore:  time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:   time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC),
	}
}

func reasonOf(err error) CertificateReason {
	var ce *CertificateError
	if errors.As(err, &ce) {
		return ce.Reason
	}
	return 0
}

func TestCertificateRoundTrip(t *testing.T) {
	k := mustSigning(t, "cert signer")
	users := []string{"a", "alice", "Ålice ünïcode 名前", strings.Repeat("x", MaxUserLength)}
	for _, u := range users {
		t.Run(u, func(t *testing.T) {
			c := testCert(t)
			c.User = u
			b, err := c.Sign(k)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) != certFixed+len(u)+ed25519.SignatureSize {
				t.Errorf("encoded length %d", len(b))
			}
			got, err := ParseCertificate(b, k.Public(), fixedNow)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(c, got); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
			if err := got.CheckKeys(c.DeviceKey, c.GatewayKey); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestCertificateLayout(t *testing.T) {
	// The encoding is exactly the documented layout.
	k := mustSigning(t, "cert layout")
	c := testCert(t)
	b, err := c.Sign(k)
	if err != nil {
		t.Fatal(err)
	}
	var want []byte
	want = append(want, 1)
	want = append(want, c.Serial[:]...)
	want = append(want, c.DeviceID[:]...)
	want = append(want, c.DeviceKey[:]...)
	want = append(want, c.GatewayKey[:]...)
	want = binary.BigEndian.AppendUint64(want, uint64(c.NotBefore.Unix()))
	want = binary.BigEndian.AppendUint64(want, uint64(c.NotAfter.Unix()))
	want = append(want, byte(len(c.User)))
	want = append(want, c.User...)
	if !bytes.Equal(b[:len(want)], want) {
		t.Fatalf("body differs from the documented layout")
	}
	msg := append([]byte("CommuCat device certificate v1\x00"), want...)
	if !ed25519.Verify(k.Public(), msg, b[len(want):]) {
		t.Fatal("signature is not over domain || body")
	}
	if ed25519.Verify(k.Public(), want, b[len(want):]) {
		t.Fatal("signature verifies without the domain string")
	}
}

func TestCertificateValidity(t *testing.T) {
	k := mustSigning(t, "cert validity")
	c := testCert(t)
	b, err := c.Sign(k)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		now  time.Time
		want CertificateReason
	}{
		{"inside", c.NotBefore.Add(time.Hour), 0},
		{"at not before", c.NotBefore, 0},
		{"at not after", c.NotAfter, 0},
		{"before", c.NotBefore.Add(-time.Second), CertNotYetValid},
		{"after", c.NotAfter.Add(time.Nanosecond), CertExpired},
		{"long expired", c.NotAfter.Add(100 * 24 * time.Hour), CertExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseCertificate(b, k.Public(), tt.now)
			if got := reasonOf(err); got != tt.want {
				t.Fatalf("reason %v (%v), want %v", got, err, tt.want)
			}
			if tt.want != 0 && !errors.Is(err, ErrCertificate) {
				t.Errorf("%v does not wrap ErrCertificate", err)
			}
		})
	}
}

func TestCertificateRefused(t *testing.T) {
	k := mustSigning(t, "cert refused")
	other := mustSigning(t, "cert other")
	b, err := testCert(t).Sign(k)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("wrong signer", func(t *testing.T) {
		if _, err := ParseCertificate(b, other.Public(), fixedNow); reasonOf(err) != CertSignature {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("bad signer length", func(t *testing.T) {
		for _, signer := range []ed25519.PublicKey{nil, make([]byte, 31), make([]byte, 64)} {
			if _, err := ParseCertificate(b, signer, fixedNow); reasonOf(err) != CertSignature {
				t.Fatalf("len %d: got %v", len(signer), err)
			}
		}
	})
	t.Run("every byte tampered", func(t *testing.T) {
		for i := range b {
			for _, x := range []byte{0x01, 0x80} {
				bad := bytes.Clone(b)
				bad[i] ^= x
				if c, err := ParseCertificate(bad, k.Public(), fixedNow); err == nil || c != nil || !errors.Is(err, ErrCertificate) {
					t.Fatalf("byte %d ^ %#x: accepted (%v)", i, x, err)
				}
			}
		}
	})
	t.Run("truncated and extended", func(t *testing.T) {
		for n := range len(b) {
			if _, err := ParseCertificate(b[:n], k.Public(), fixedNow); !errors.Is(err, ErrCertificate) {
				t.Fatalf("length %d: %v", n, err)
			}
		}
		if _, err := ParseCertificate(append(bytes.Clone(b), 0), k.Public(), fixedNow); reasonOf(err) != CertMalformed {
			t.Fatalf("extended: %v", err)
		}
	})
	t.Run("key mismatch", func(t *testing.T) {
		c := testCert(t)
		other := mustStatic(t, "other").Public()
		if err := c.CheckKeys(other, c.GatewayKey); reasonOf(err) != CertMismatch {
			t.Errorf("device: %v", err)
		}
		if err := c.CheckKeys(c.DeviceKey, other); reasonOf(err) != CertMismatch {
			t.Errorf("gateway: %v", err)
		}
	})
}

func TestCertificateSignRefuses(t *testing.T) {
	k := mustSigning(t, "cert sign")
	tests := []struct {
		name string
		edit func(*Certificate)
		want CertificateReason
	}{
		{"version 0", func(c *Certificate) { c.Version = 0 }, CertVersion},
		{"version 2", func(c *Certificate) { c.Version = 2 }, CertVersion},
		{"empty user", func(c *Certificate) { c.User = "" }, CertMalformed},
		{"long user", func(c *Certificate) { c.User = strings.Repeat("x", MaxUserLength+1) }, CertMalformed},
		{"invalid UTF-8", func(c *Certificate) { c.User = "a\xffb" }, CertMalformed},
		{"control character", func(c *Certificate) { c.User = "a\nb" }, CertMalformed},
		{"C1 control character", func(c *Certificate) { c.User = "a\u0085b" }, CertMalformed},
		{"no not before", func(c *Certificate) { c.NotBefore = time.Time{} }, CertMalformed},
		{"no not after", func(c *Certificate) { c.NotAfter = time.Time{} }, CertMalformed},
		{"inverted period", func(c *Certificate) { c.NotAfter = c.NotBefore.Add(-time.Second) }, CertMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testCert(t)
			tt.edit(c)
			if _, err := c.Sign(k); reasonOf(err) != tt.want {
				t.Fatalf("got %v, want reason %v", err, tt.want)
			}
		})
	}
	t.Run("wiped key", func(t *testing.T) {
		k2 := mustSigning(t, "wiped")
		k2.Wipe()
		if _, err := testCert(t).Sign(k2); err == nil {
			t.Fatal("signed with a wiped key")
		}
		if k2.Public() != nil {
			t.Error("wiped key has a public key")
		}
		if got := k2.String(); got != "ed25519:wiped" {
			t.Errorf("String() = %q", got)
		}
	})
	t.Run("fractional seconds are dropped", func(t *testing.T) {
		c := testCert(t)
		c.NotBefore = c.NotBefore.Add(500 * time.Millisecond)
		b, err := c.Sign(k)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseCertificate(b, k.Public(), fixedNow)
		if err != nil || !got.NotBefore.Equal(c.NotBefore.Truncate(time.Second)) {
			t.Fatalf("got %v %v", got, err)
		}
	})
}

func TestCertificateErrorText(t *testing.T) {
	err := &CertificateError{Reason: CertExpired, Detail: "not after 2027-01-01T00:00:00Z"}
	if got, want := err.Error(), "handshake: certificate expired: not after 2027-01-01T00:00:00Z"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if got := CertificateReason(99).String(); got != "reason(99)" {
		t.Errorf("unknown reason: %q", got)
	}
}
