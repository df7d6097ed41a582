package handshake

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"
	"unicode"
	"unicode/utf8"
)

// Device certificate constants (see the package doc for the layout).
const (
	// CertificateVersion is the certificate format version.
	CertificateVersion = 1
	// MaxUserLength is the longest user name, in bytes.
	MaxUserLength = 64
	// certDomain prefixes the signed bytes so a certificate signature can
	// never be taken for a signature over anything else.
	certDomain = "CommuCat device certificate v1\x00"
	// certFixed is the body without the user name: version(1) serial(16)
	// device id(16) device key(32) gateway key(32) not before(8) not
	// after(8) user length(1).
	certFixed = 1 + 16 + 16 + 32 + 32 + 8 + 8 + 1
	// MaxCertificateSize is the longest encoded certificate.
	MaxCertificateSize = certFixed + MaxUserLength + ed25519.SignatureSize
)

// ErrCertificate is wrapped by every *CertificateError, so callers can
// test errors.Is(err, ErrCertificate).
var ErrCertificate = errors.New("handshake: invalid certificate")

// CertificateReason says why a certificate was refused.
type CertificateReason uint8

// Reasons for CertificateError.
const (
	// CertMalformed: the bytes or fields do not have the documented layout
	// or limits.
	CertMalformed CertificateReason = iota + 1
	// CertVersion: an unknown certificate version.
	CertVersion
	// CertSignature: the signature does not verify under the given key.
	CertSignature
	// CertNotYetValid: now is before NotBefore.
	CertNotYetValid
	// CertExpired: now is after NotAfter.
	CertExpired
	// CertMismatch: the certificate is for another device or gateway key.
	CertMismatch
)

var reasonText = map[CertificateReason]string{
	CertMalformed:   "malformed",
	CertVersion:     "unsupported version",
	CertSignature:   "bad signature",
	CertNotYetValid: "not yet valid",
	CertExpired:     "expired",
	CertMismatch:    "key mismatch",
}

// String returns a short lowercase description.
func (r CertificateReason) String() string {
	if s, ok := reasonText[r]; ok {
		return s
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// CertificateError reports a refused certificate; it wraps ErrCertificate.
type CertificateError struct {
	Reason CertificateReason
	Detail string
}

// Error implements error.
func (e *CertificateError) Error() string {
	if e.Detail == "" {
		return "handshake: certificate " + e.Reason.String()
	}
	return "handshake: certificate " + e.Reason.String() + ": " + e.Detail
}

// Unwrap returns ErrCertificate.
func (e *CertificateError) Unwrap() error { return ErrCertificate }

func certErr(r CertificateReason, format string, args ...any) error {
	return &CertificateError{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// SigningKey is the gateway's Ed25519 key that signs device certificates.
// It never prints or logs its private half. It is read-only after creation
// and safe for concurrent use until wiped.
type SigningKey struct {
	priv ed25519.PrivateKey
}

// GenerateSigning returns a new random signing key.
func GenerateSigning() (*SigningKey, error) { return generateSigning(rand.Reader) }

func signingFromSeed(seed []byte) *SigningKey {
	return &SigningKey{priv: ed25519.NewKeyFromSeed(seed)}
}

// LoadOrCreateSigning loads the signing key in path, or creates it if the
// file does not exist. The rules are LoadOrCreateStatic's; the header line
// is "commucat ed25519 signing key v1" and the body the 32-byte Ed25519
// seed in standard base64.
func LoadOrCreateSigning(path string) (k *SigningKey, created bool, err error) {
	seed, created, err := loadOrCreateKey(path, signingFileHeader, ed25519.SeedSize)
	if err != nil {
		return nil, false, err
	}
	defer clear(seed)
	return signingFromSeed(seed), created, nil
}

// Public returns a copy of the public key.
func (k *SigningKey) Public() ed25519.PublicKey {
	if len(k.priv) != ed25519.PrivateKeySize {
		return nil
	}
	return append(ed25519.PublicKey(nil), k.priv[ed25519.SeedSize:]...)
}

// Wipe zeroes the key; Sign fails afterwards.
func (k *SigningKey) Wipe() {
	if k == nil {
		return
	}
	clear(k.priv)
	k.priv = nil
}

// String returns "ed25519:" and a fingerprint of the public key (first 8
// bytes of its SHA-256, in hex).
func (k SigningKey) String() string {
	if len(k.priv) != ed25519.PrivateKeySize {
		return "ed25519:wiped"
	}
	return "ed25519:" + fingerprint(k.priv[ed25519.SeedSize:])
}

// GoString is String, so %#v does not reveal the private key.
func (k SigningKey) GoString() string { return k.String() }

// Format implements fmt.Formatter: every verb formats String, so no verb
// prints the private key.
func (k SigningKey) Format(f fmt.State, verb rune) { formatRedacted(f, verb, k.String()) }

// LogValue implements slog.LogValuer.
func (k SigningKey) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// Certificate binds a device's static X25519 key to a user, for one
// gateway, for a period. The gateway signs it with its SigningKey; the
// device shows it (for example as the message 3 payload) and the gateway
// checks it with ParseCertificate and CheckKeys. Times have one-second
// resolution: Sign drops fractions of a second.
type Certificate struct {
	// Version is the format version; must be CertificateVersion.
	Version uint8
	// Serial identifies the certificate, for revocation.
	Serial [16]byte
	// User is the user name: 1 to MaxUserLength bytes of UTF-8 without
	// control characters.
	User string
	// DeviceID identifies the device.
	DeviceID [16]byte
	// DeviceKey is the device's X25519 static public key.
	DeviceKey [32]byte
	// GatewayKey is the gateway's Noise static public key.
	GatewayKey [32]byte
	// NotBefore and NotAfter bound the validity period, inclusive.
	NotBefore, NotAfter time.Time
}

// Sign encodes c and signs it with k. The result is the body (see the
// package doc) followed by a 64-byte Ed25519 signature over the domain
// string "CommuCat device certificate v1\x00" and the body.
func (c *Certificate) Sign(k *SigningKey) ([]byte, error) {
	if k == nil || len(k.priv) != ed25519.PrivateKeySize {
		return nil, errors.New("handshake: sign certificate: signing key is missing or wiped")
	}
	body, err := c.appendBody(make([]byte, 0, MaxCertificateSize))
	if err != nil {
		return nil, err
	}
	sig := ed25519.Sign(k.priv, signedBytes(body))
	return append(body, sig...), nil
}

func (c *Certificate) appendBody(b []byte) ([]byte, error) {
	if c.Version != CertificateVersion {
		return nil, certErr(CertVersion, "version %d (want %d)", c.Version, CertificateVersion)
	}
	if err := checkUser(c.User); err != nil {
		return nil, err
	}
	if c.NotBefore.IsZero() || c.NotAfter.IsZero() {
		return nil, certErr(CertMalformed, "validity period not set")
	}
	nb, na := c.NotBefore.Unix(), c.NotAfter.Unix()
	if na < nb {
		return nil, certErr(CertMalformed, "not after %s is before not before %s", c.NotAfter.UTC().Format(time.RFC3339), c.NotBefore.UTC().Format(time.RFC3339))
	}
	b = append(b, c.Version)
	b = append(b, c.Serial[:]...)
	b = append(b, c.DeviceID[:]...)
	b = append(b, c.DeviceKey[:]...)
	b = append(b, c.GatewayKey[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(nb))
	b = binary.BigEndian.AppendUint64(b, uint64(na))
	b = append(b, byte(len(c.User)))
	return append(b, c.User...), nil
}

func signedBytes(body []byte) []byte {
	return append([]byte(certDomain), body...)
}

func checkUser(u string) error {
	if len(u) < 1 || len(u) > MaxUserLength {
		return certErr(CertMalformed, "user name is %d bytes (want 1 to %d)", len(u), MaxUserLength)
	}
	if !utf8.ValidString(u) {
		return certErr(CertMalformed, "user name is not valid UTF-8")
	}
	for _, r := range u {
		if unicode.IsControl(r) {
			return certErr(CertMalformed, "user name has a control character")
		}
	}
	return nil
}

// ParseCertificate decodes a certificate, verifies its signature under
// signer and checks that now is within its validity period. Every refusal
// is a *CertificateError (wrapping ErrCertificate). The caller must still
// check that the certificate is for the peer and for this gateway
// (CheckKeys) and that its serial is not revoked.
func ParseCertificate(b []byte, signer ed25519.PublicKey, now time.Time) (*Certificate, error) {
	if len(signer) != ed25519.PublicKeySize {
		return nil, certErr(CertSignature, "signer key is %d bytes (want %d)", len(signer), ed25519.PublicKeySize)
	}
	c, body, sig, err := decodeCertificate(b)
	if err != nil {
		return nil, err
	}
	if !ed25519.Verify(signer, signedBytes(body), sig) {
		return nil, certErr(CertSignature, "")
	}
	if now.Before(c.NotBefore) {
		return nil, certErr(CertNotYetValid, "not before %s", c.NotBefore.Format(time.RFC3339))
	}
	if now.After(c.NotAfter) {
		return nil, certErr(CertExpired, "not after %s", c.NotAfter.Format(time.RFC3339))
	}
	return c, nil
}

// decodeCertificate parses the layout without verifying anything else.
func decodeCertificate(b []byte) (c *Certificate, body, sig []byte, err error) {
	if len(b) > MaxCertificateSize {
		return nil, nil, nil, certErr(CertMalformed, "%d bytes (max %d)", len(b), MaxCertificateSize)
	}
	if len(b) < 1 {
		return nil, nil, nil, certErr(CertMalformed, "empty")
	}
	if b[0] != CertificateVersion {
		return nil, nil, nil, certErr(CertVersion, "version %d (want %d)", b[0], CertificateVersion)
	}
	if len(b) < certFixed+1+ed25519.SignatureSize {
		return nil, nil, nil, certErr(CertMalformed, "%d bytes (min %d)", len(b), certFixed+1+ed25519.SignatureSize)
	}
	n := int(b[certFixed-1])
	if len(b) != certFixed+n+ed25519.SignatureSize {
		return nil, nil, nil, certErr(CertMalformed, "%d bytes, but the user name length says %d", len(b), certFixed+n+ed25519.SignatureSize)
	}
	c = &Certificate{Version: b[0]}
	off := 1
	off += copy(c.Serial[:], b[off:])
	off += copy(c.DeviceID[:], b[off:])
	off += copy(c.DeviceKey[:], b[off:])
	off += copy(c.GatewayKey[:], b[off:])
	nb := int64(binary.BigEndian.Uint64(b[off:]))
	na := int64(binary.BigEndian.Uint64(b[off+8:]))
	c.NotBefore = time.Unix(nb, 0).UTC()
	c.NotAfter = time.Unix(na, 0).UTC()
	c.User = string(b[certFixed : certFixed+n])
	if err := checkUser(c.User); err != nil {
		return nil, nil, nil, err
	}
	if c.NotBefore.IsZero() || c.NotAfter.IsZero() || na < nb {
		return nil, nil, nil, certErr(CertMalformed, "bad validity period")
	}
	body = b[:certFixed+n]
	return c, body, b[certFixed+n:], nil
}

// CheckKeys returns a *CertificateError with reason CertMismatch unless
// the certificate is for device key device (the handshake's
// Result.PeerStatic) and gateway key gateway.
func (c *Certificate) CheckKeys(device, gateway [32]byte) error {
	if c.DeviceKey != device {
		return certErr(CertMismatch, "issued for another device key")
	}
	if c.GatewayKey != gateway {
		return certErr(CertMismatch, "issued for another gateway key")
	}
	return nil
}

// generateSigning is GenerateSigning with a chosen random source (tests).
func generateSigning(r io.Reader) (*SigningKey, error) {
	_, priv, err := ed25519.GenerateKey(r)
	if err != nil {
		return nil, fmt.Errorf("handshake: generate signing key: %w", err)
	}
	return &SigningKey{priv: priv}, nil
}
