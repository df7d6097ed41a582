package quic

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// File names that LoadOrCreateCert uses in its directory.
const (
	CertFile = "quic.crt"
	KeyFile  = "quic.key"
)

// certLifetime is the validity of a generated certificate, and renewBefore
// how long before its expiry LoadOrCreateCert issues a new one for the same
// key. Clients pin the key, not the certificate, so a renewal keeps every
// invite valid.
const (
	certLifetime = 365 * 24 * time.Hour
	renewBefore  = 30 * 24 * time.Hour
)

// ErrPinMismatch is wrapped by Dial's error when the server's certificate
// does not carry the pinned public key.
var ErrPinMismatch = errors.New("quic: server certificate does not match the pin")

// LoadOrCreateCert returns the server certificate kept in dir as quic.crt
// and quic.key (PEM, mode 0600), creating a self-signed ECDSA P-256 one on
// first use, and its pin: the value clients pass as the "pin" parameter.
// The pin is base64url (no padding) of the SHA-256 of the certificate's
// SubjectPublicKeyInfo, so it stays the same when the certificate is renewed
// for the same key, which LoadOrCreateCert does within 30 days of expiry.
//
// It refuses a key file that other users may read, and a directory holding
// only one of the two files. It is not safe to call concurrently for the
// same dir from several processes.
func LoadOrCreateCert(dir string) (cert tls.Certificate, pin string, err error) {
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	_, certErr := os.Stat(certPath)
	_, keyErr := os.Stat(keyPath)
	switch {
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
		return createCert(dir, certPath, keyPath)
	case certErr != nil:
		return tls.Certificate{}, "", fmt.Errorf("quic: certificate: %w", certErr)
	case keyErr != nil:
		return tls.Certificate{}, "", fmt.Errorf("quic: certificate key: %w", keyErr)
	}
	return loadCert(certPath, keyPath)
}

func createCert(dir, certPath, keyPath string) (tls.Certificate, string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, "", fmt.Errorf("quic: certificate directory: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("quic: generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("quic: encode key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	clear(der)
	defer clear(keyPEM)
	certDER, err := selfSign(key)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER})
	// The key goes first: a certificate without its key is refused on the
	// next start instead of silently replaced.
	if err := writeFileAtomic(keyPath, keyPEM); err != nil {
		return tls.Certificate{}, "", err
	}
	if err := writeFileAtomic(certPath, certPEM); err != nil {
		return tls.Certificate{}, "", err
	}
	return parseCert(certPEM, keyPEM)
}

func loadCert(certPath, keyPath string) (tls.Certificate, string, error) {
	fi, err := os.Stat(keyPath)
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("quic: certificate key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return tls.Certificate{}, "", fmt.Errorf("quic: certificate key %s is readable by other users (mode %v); chmod 600 it", keyPath, fi.Mode().Perm())
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("quic: certificate key: %w", err)
	}
	defer clear(keyPEM)
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("quic: certificate: %w", err)
	}
	cert, pin, err := parseCert(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	if time.Until(cert.Leaf.NotAfter) > renewBefore {
		return cert, pin, nil
	}
	// Renew for the same key: the pin does not change.
	key, ok := cert.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return cert, pin, nil // not ours to renew; the pin ignores expiry
	}
	certDER, err := selfSign(key)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER})
	if err := writeFileAtomic(certPath, certPEM); err != nil {
		return tls.Certificate{}, "", err
	}
	return parseCert(certPEM, keyPEM)
}

// parseCert decodes a PEM certificate and key pair and computes its pin.
func parseCert(certPEM, keyPEM []byte) (tls.Certificate, string, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("quic: certificate: %w", err)
	}
	if cert.Leaf == nil {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return tls.Certificate{}, "", fmt.Errorf("quic: certificate: %w", err)
		}
		cert.Leaf = leaf
	}
	return cert, pinOf(cert.Leaf), nil
}

// selfSign issues a certificate for key, valid from an hour ago for
// certLifetime. It names no host: clients pin the key and ignore names.
func selfSign(key *ecdsa.PrivateKey) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("quic: certificate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certLifetime),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("quic: sign certificate: %w", err)
	}
	return der, nil
}

// writeFileAtomic writes b to path with mode 0600 through a temporary file
// in the same directory, so that a crash never leaves a half-written file.
func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("quic: write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // fails harmlessly after the rename
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("quic: write %s: %w", path, err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("quic: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("quic: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("quic: write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("quic: write %s: %w", path, err)
	}
	return nil
}

// pinOf returns the pin of a certificate: base64url (no padding) of the
// SHA-256 of its SubjectPublicKeyInfo.
func pinOf(leaf *x509.Certificate) string {
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// decodePin parses a pin string into its 32-byte hash.
func decodePin(s string) ([sha256.Size]byte, error) {
	var h [sha256.Size]byte
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	// The decoder skips CR and LF: compare the canonical form too, so a pin
	// has exactly one spelling.
	if err != nil || len(b) != len(h) || base64.RawURLEncoding.EncodeToString(b) != s {
		return h, fmt.Errorf("quic: pin must be 43 characters of base64url (the SHA-256 of a public key)")
	}
	copy(h[:], b)
	return h, nil
}

// verifyPin checks that the first certificate the server presented carries
// the pinned public key.
func verifyPin(pin [sha256.Size]byte, cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return ErrPinMismatch
	}
	sum := sha256.Sum256(cs.PeerCertificates[0].RawSubjectPublicKeyInfo)
	if subtle.ConstantTimeCompare(sum[:], pin[:]) != 1 {
		return ErrPinMismatch
	}
	return nil
}
