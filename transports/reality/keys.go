package reality

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
)

// File names that LoadOrCreateKeys uses in its directory.
const (
	// KeyFile holds the gateway's reality X25519 private key: base64url
	// without padding, one line, mode 0600.
	KeyFile = "reality.key"
	// CertKeyFile holds the ECDSA P-256 key that signs the gateway's TLS
	// certificates: PEM PKCS #8, mode 0600.
	CertKeyFile = "reality-cert.key"
)

// Keys are the gateway's long-term secrets. The zero value is not usable;
// get one from LoadOrCreateKeys or GenerateKeys. Keys never print their
// secrets: LogValue and String redact them.
type Keys struct {
	// Static is the reality X25519 key; its public half is the "pbk"
	// parameter.
	Static *ecdh.PrivateKey
	// Cert signs the per-connection TLS certificates.
	Cert *ecdsa.PrivateKey
}

// String returns "[redacted]".
func (Keys) String() string { return "[redacted]" }

// LogValue implements slog.LogValuer: keys are logged as "[redacted]".
func (Keys) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// GenerateKeys returns fresh gateway keys.
func GenerateKeys() (Keys, error) {
	static, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return Keys{}, fmt.Errorf("reality: generate x25519 key: %w", err)
	}
	cert, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Keys{}, fmt.Errorf("reality: generate ecdsa key: %w", err)
	}
	return Keys{Static: static, Cert: cert}, nil
}

// EncodePublicKey returns the "pbk" form of a reality public key:
// base64url without padding (43 characters).
func EncodePublicKey(pub *ecdh.PublicKey) string {
	return base64.RawURLEncoding.EncodeToString(pub.Bytes())
}

// DecodePublicKey parses the "pbk" form of a reality public key. It
// rejects a low-order point, which would make every shared secret known.
func DecodePublicKey(s string) (*ecdh.PublicKey, error) {
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != x25519KeyLen {
		return nil, fmt.Errorf("reality: public key is not 43 base64url characters of a 32-byte x25519 key")
	}
	pub, err := ecdh.X25519().NewPublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("reality: public key: %w", err)
	}
	// A throwaway ECDH fails for the low-order points.
	probe, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("reality: public key check: %w", err)
	}
	if _, err := probe.ECDH(pub); err != nil {
		return nil, fmt.Errorf("reality: public key is a low-order point")
	}
	return pub, nil
}

// LoadOrCreateKeys returns the gateway keys kept in dir (KeyFile and
// CertKeyFile), creating them on first use. It refuses key files that
// other users may read, and a directory holding only one of the two.
func LoadOrCreateKeys(dir string) (Keys, error) {
	keyPath, certPath := filepath.Join(dir, KeyFile), filepath.Join(dir, CertKeyFile)
	_, kerr := os.Stat(keyPath)
	_, cerr := os.Stat(certPath)
	switch {
	case errors.Is(kerr, fs.ErrNotExist) && errors.Is(cerr, fs.ErrNotExist):
		k, err := GenerateKeys()
		if err != nil {
			return Keys{}, err
		}
		if err := saveKeys(k, keyPath, certPath); err != nil {
			return Keys{}, err
		}
		return k, nil
	case kerr != nil:
		return Keys{}, fmt.Errorf("reality: key: %w", kerr)
	case cerr != nil:
		return Keys{}, fmt.Errorf("reality: certificate key: %w", cerr)
	}
	return loadKeys(keyPath, certPath)
}

func saveKeys(k Keys, keyPath, certPath string) error {
	line := []byte(base64.RawURLEncoding.EncodeToString(k.Static.Bytes()) + "\n")
	defer clear(line)
	der, err := x509.MarshalPKCS8PrivateKey(k.Cert)
	if err != nil {
		return fmt.Errorf("reality: encode certificate key: %w", err)
	}
	defer clear(der)
	p := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	defer clear(p)
	if err := writeFileAtomic(keyPath, line); err != nil {
		return err
	}
	return writeFileAtomic(certPath, p)
}

// readSecret reads a key file that only its owner may read.
func readSecret(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("reality: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("reality: key file %s is readable by other users (mode %v); chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reality: %w", err)
	}
	return b, nil
}

func loadKeys(keyPath, certPath string) (Keys, error) {
	line, err := readSecret(keyPath)
	if err != nil {
		return Keys{}, err
	}
	defer clear(line)
	raw := make([]byte, base64.RawURLEncoding.DecodedLen(len(bytes.TrimSpace(line))))
	defer clear(raw)
	n, err := base64.RawURLEncoding.Strict().Decode(raw, bytes.TrimSpace(line))
	if err != nil || n != x25519KeyLen {
		return Keys{}, fmt.Errorf("reality: key file %s is not a base64url x25519 key", keyPath)
	}
	static, err := ecdh.X25519().NewPrivateKey(raw[:n])
	if err != nil {
		return Keys{}, fmt.Errorf("reality: key file %s: %w", keyPath, err)
	}
	p, err := readSecret(certPath)
	if err != nil {
		return Keys{}, err
	}
	defer clear(p)
	block, _ := pem.Decode(p)
	if block == nil || block.Type != "PRIVATE KEY" {
		return Keys{}, fmt.Errorf("reality: certificate key file %s is not a PEM private key", certPath)
	}
	defer clear(block.Bytes)
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return Keys{}, fmt.Errorf("reality: certificate key file %s: %w", certPath, err)
	}
	cert, ok := parsed.(*ecdsa.PrivateKey)
	if !ok || cert.Curve != elliptic.P256() {
		return Keys{}, fmt.Errorf("reality: certificate key file %s is not an ecdsa p-256 key", certPath)
	}
	return Keys{Static: static, Cert: cert}, nil
}

// writeFileAtomic writes b to path with mode 0600 through a temporary file
// in the same directory, so that a crash never leaves a half-written file.
func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("reality: write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // fails harmlessly after the rename
	err = f.Chmod(0o600)
	if err == nil {
		_, err = f.Write(b)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("reality: write %s: %w", path, err)
	}
	return nil
}
