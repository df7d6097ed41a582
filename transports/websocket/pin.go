package websocket

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
)

// PinOf returns the pin of a certificate, the value of the "pin"
// parameter: base64url (no padding) of the SHA-256 of its
// SubjectPublicKeyInfo. It is the same pin transports/quic uses, and it
// survives a renewal of the certificate for the same key.
func PinOf(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// errBadPin is the error of a pin that is not 43 characters of base64url.
var errBadPin = errors.New("websocket: pin must be 43 characters of base64url (the SHA-256 of a public key)")

// decodePin parses a pin string into its 32-byte hash. Only the canonical
// encoding is accepted.
func decodePin(s string) ([sha256.Size]byte, error) {
	var h [sha256.Size]byte
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	// The decoder skips CR and LF: only a string that re-encodes to
	// itself is canonical.
	if err != nil || len(b) != len(h) || base64.RawURLEncoding.EncodeToString(b) != s {
		return h, errBadPin
	}
	copy(h[:], b)
	return h, nil
}

// verifyPin checks that the first certificate the server presented (DER)
// carries the pinned public key.
func verifyPin(pin [sha256.Size]byte, rawCerts [][]byte) error {
	if len(rawCerts) == 0 {
		return ErrPinMismatch
	}
	leaf, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return fmt.Errorf("%w: %w", ErrPinMismatch, err)
	}
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	if subtle.ConstantTimeCompare(sum[:], pin[:]) != 1 {
		return ErrPinMismatch
	}
	return nil
}
