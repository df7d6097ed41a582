package decoy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// File names that LoadOrCreateCert uses in its directory.
const (
	CertFile = "decoy.crt"
	KeyFile  = "decoy.key"
)

// certLifetime is the validity of a generated certificate: ten years, as
// the "snakeoil" certificates web servers install by default have, and
// renewBefore how long before expiry LoadOrCreateCert issues a new one for
// the same key.
const (
	certLifetime = 3650 * 24 * time.Hour
	renewBefore  = 30 * 24 * time.Hour
)

// ErrBadName is wrapped by LoadOrCreateCert's error for a name that is
// neither a host name nor an IP address.
var ErrBadName = errors.New("decoy: not a host name or IP address")

// LoadOrCreateCert returns the server certificate kept in dir as decoy.crt
// and decoy.key (PEM, mode 0600), creating a self-signed ECDSA P-256 one on
// first use. names are the certificate's host names and IP addresses (the
// first is also its common name). If the stored certificate carries other
// names, or expires within 30 days, a new one is issued for the same key,
// so that pins of the key stay valid. If names is empty, a stored
// certificate is kept whatever its names, and a new one is issued for a
// random host name shaped like a rented server's (such as vps-3f9a2c1d), as
// the self-signed certificate of a default web server install would be.
//
// It refuses a key file that other users may read, and a directory holding
// only one of the two files. It is not safe to call concurrently for the
// same dir from several processes.
func LoadOrCreateCert(dir string, names []string) (tls.Certificate, error) {
	var uniq []string
	for _, n := range names {
		if err := checkName(n); err != nil {
			return tls.Certificate{}, err
		}
		if !slices.Contains(uniq, n) {
			uniq = append(uniq, n)
		}
	}
	names = uniq
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	_, certErr := os.Stat(certPath)
	_, keyErr := os.Stat(keyPath)
	switch {
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
		return createCert(dir, certPath, keyPath, names)
	case certErr != nil:
		return tls.Certificate{}, fmt.Errorf("decoy: certificate: %w", certErr)
	case keyErr != nil:
		return tls.Certificate{}, fmt.Errorf("decoy: certificate key: %w", keyErr)
	}
	return loadCert(certPath, keyPath, names)
}

// checkName accepts an IP address or a host name of letters, digits,
// hyphens, dots and a leading wildcard label.
func checkName(n string) error {
	if net.ParseIP(n) != nil {
		return nil
	}
	if n == "" || len(n) > 253 {
		return fmt.Errorf("%w: %q", ErrBadName, n)
	}
	for i, label := range strings.Split(n, ".") {
		if label == "*" && i == 0 {
			continue
		}
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%w: %q", ErrBadName, n)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("%w: %q", ErrBadName, n)
			}
		}
	}
	return nil
}

func createCert(dir, certPath, keyPath string, names []string) (tls.Certificate, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, fmt.Errorf("decoy: certificate directory: %w", err)
	}
	if len(names) == 0 {
		n, err := randomHostName()
		if err != nil {
			return tls.Certificate{}, err
		}
		names = []string{n}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("decoy: generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("decoy: encode key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	clear(der)
	defer clear(keyPEM)
	certDER, err := selfSign(key, names)
	if err != nil {
		return tls.Certificate{}, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER})
	// The key goes first: a certificate without its key is refused on the
	// next start instead of silently replaced.
	if err := writeFileAtomic(keyPath, keyPEM); err != nil {
		return tls.Certificate{}, err
	}
	if err := writeFileAtomic(certPath, certPEM); err != nil {
		return tls.Certificate{}, err
	}
	return parseCert(certPEM, keyPEM)
}

func loadCert(certPath, keyPath string, names []string) (tls.Certificate, error) {
	fi, err := os.Stat(keyPath)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("decoy: certificate key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return tls.Certificate{}, fmt.Errorf("decoy: certificate key %s is readable by other users (mode %v); chmod 600 it", keyPath, fi.Mode().Perm())
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("decoy: certificate key: %w", err)
	}
	defer clear(keyPEM)
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("decoy: certificate: %w", err)
	}
	cert, err := parseCert(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, err
	}
	sameNames := len(names) == 0 || sameSet(certNames(cert.Leaf), names)
	if sameNames && time.Until(cert.Leaf.NotAfter) > renewBefore {
		return cert, nil
	}
	// Reissue for the same key: pins of the key stay valid.
	key, ok := cert.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return tls.Certificate{}, fmt.Errorf("decoy: certificate key is %T, not ECDSA; remove %s and %s to start over", cert.PrivateKey, certPath, keyPath)
	}
	if len(names) == 0 {
		names = certNames(cert.Leaf)
	}
	certDER, err := selfSign(key, names)
	if err != nil {
		return tls.Certificate{}, err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER})
	if err := writeFileAtomic(certPath, certPEM); err != nil {
		return tls.Certificate{}, err
	}
	return parseCert(certPEM, keyPEM)
}

// certNames lists a certificate's names in the order selfSign put them:
// the common name first, then the other host names and addresses.
func certNames(leaf *x509.Certificate) []string {
	var names []string
	if cn := leaf.Subject.CommonName; cn != "" {
		names = append(names, cn)
	}
	for _, n := range leaf.DNSNames {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	for _, ip := range leaf.IPAddresses {
		if s := ip.String(); !slices.Contains(names, s) {
			names = append(names, s)
		}
	}
	return names
}

// sameSet reports whether a and b hold the same strings, ignoring order
// and repetition.
func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

// parseCert decodes a PEM certificate and key pair.
func parseCert(certPEM, keyPEM []byte) (tls.Certificate, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("decoy: certificate: %w", err)
	}
	if cert.Leaf == nil {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("decoy: certificate: %w", err)
		}
		cert.Leaf = leaf
	}
	return cert, nil
}

// selfSign issues a certificate for key and names, valid from an hour ago
// for certLifetime.
func selfSign(key *ecdsa.PrivateKey, names []string) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("decoy: certificate serial: %w", err)
	}
	now := time.Now().Truncate(time.Second)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: names[0]},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certLifetime),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("decoy: sign certificate: %w", err)
	}
	return der, nil
}

// randomHostName returns a name such as vps-3f9a2c1d.
func randomHostName() (string, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("decoy: host name: %w", err)
	}
	return "vps-" + hex.EncodeToString(b[:]), nil
}

// writeFileAtomic writes b to path with mode 0600 through a temporary file
// in the same directory, so that a crash never leaves a half-written file.
func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("decoy: write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // fails harmlessly after the rename
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("decoy: write %s: %w", path, err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("decoy: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("decoy: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("decoy: write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("decoy: write %s: %w", path, err)
	}
	return nil
}
