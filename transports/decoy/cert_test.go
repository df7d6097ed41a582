package decoy

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestLoadOrCreateCert(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	names := []string{"blog.example.org", "192.0.2.7"}
	cert, err := LoadOrCreateCert(dir, names)
	if err != nil {
		t.Fatalf("first LoadOrCreateCert: %v", err)
	}
	for _, name := range []string{CertFile, KeyFile} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s has mode %v, want 0600", name, perm)
		}
	}
	key, ok := cert.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		t.Fatalf("private key is %T, want an ECDSA P-256 key", cert.PrivateKey)
	}
	leaf := cert.Leaf
	if leaf.Subject.CommonName != "blog.example.org" {
		t.Errorf("common name %q", leaf.Subject.CommonName)
	}
	if diff := cmp.Diff([]string{"blog.example.org"}, leaf.DNSNames); diff != "" {
		t.Errorf("DNS names (-want +got):\n%s", diff)
	}
	if len(leaf.IPAddresses) != 1 || leaf.IPAddresses[0].String() != "192.0.2.7" {
		t.Errorf("IP addresses %v", leaf.IPAddresses)
	}
	if err := leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	if err := leaf.VerifyHostname("blog.example.org"); err != nil {
		t.Errorf("VerifyHostname: %v", err)
	}

	t.Run("reload", func(t *testing.T) {
		again, err := LoadOrCreateCert(dir, []string{"192.0.2.7", "blog.example.org"})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again.Certificate[0], cert.Certificate[0]) {
			t.Error("certificate changed on reload with the same names")
		}
	})
	t.Run("reload without names", func(t *testing.T) {
		again, err := LoadOrCreateCert(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again.Certificate[0], cert.Certificate[0]) {
			t.Error("certificate changed on reload without names")
		}
	})
	t.Run("new names keep the key", func(t *testing.T) {
		again, err := LoadOrCreateCert(dir, []string{"www.example.net"})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"www.example.net"}, again.Leaf.DNSNames); diff != "" {
			t.Errorf("DNS names (-want +got):\n%s", diff)
		}
		if !bytes.Equal(again.Leaf.RawSubjectPublicKeyInfo, leaf.RawSubjectPublicKeyInfo) {
			t.Error("key changed with the names")
		}
	})
}

func TestLoadOrCreateCertRandomName(t *testing.T) {
	cert, err := LoadOrCreateCert(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^vps-[0-9a-f]{8}$`).MatchString(cert.Leaf.Subject.CommonName) {
		t.Errorf("common name %q, want vps-<8 hex digits>", cert.Leaf.Subject.CommonName)
	}
	if diff := cmp.Diff([]string{cert.Leaf.Subject.CommonName}, cert.Leaf.DNSNames, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("DNS names (-want +got):\n%s", diff)
	}
}

func TestLoadOrCreateCertRefuses(t *testing.T) {
	tests := []struct {
		name  string
		names []string
		setup func(t *testing.T, dir string)
		want  error
	}{
		{name: "certificate without key", setup: func(t *testing.T, dir string) {
			mustCreate(t, dir)
			os.Remove(filepath.Join(dir, KeyFile))
		}},
		{name: "key without certificate", setup: func(t *testing.T, dir string) {
			mustCreate(t, dir)
			os.Remove(filepath.Join(dir, CertFile))
		}},
		{name: "readable key", setup: func(t *testing.T, dir string) {
			mustCreate(t, dir)
			if err := os.Chmod(filepath.Join(dir, KeyFile), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "garbage certificate", setup: func(t *testing.T, dir string) {
			mustCreate(t, dir)
			if err := os.WriteFile(filepath.Join(dir, CertFile), []byte("not pem"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "foreign key", setup: func(t *testing.T, dir string) {
			mustCreate(t, dir)
			other := t.TempDir()
			mustCreate(t, other)
			b, err := os.ReadFile(filepath.Join(other, KeyFile))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, KeyFile), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "space in name", names: []string{"a b"}, want: ErrBadName},
		{name: "empty name", names: []string{""}, want: ErrBadName},
		{name: "label with hyphen", names: []string{"-a.example"}, want: ErrBadName},
		{name: "slash", names: []string{"a/b"}, want: ErrBadName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.setup != nil {
				tt.setup(t, dir)
			}
			_, err := LoadOrCreateCert(dir, tt.names)
			if err == nil {
				t.Fatal("LoadOrCreateCert succeeded")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error %v, want %v", err, tt.want)
			}
		})
	}
}

func mustCreate(t *testing.T, dir string) {
	t.Helper()
	if _, err := LoadOrCreateCert(dir, []string{"example.org"}); err != nil {
		t.Fatal(err)
	}
}

func TestLoadOrCreateCertRenews(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-300 * 24 * time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour), // expires tomorrow
		DNSNames:     []string{"old.example"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(dir, CertFile), "CERTIFICATE", der)
	writePEM(t, filepath.Join(dir, KeyFile), "PRIVATE KEY", keyDER)
	old, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := LoadOrCreateCert(dir, nil)
	if err != nil {
		t.Fatalf("LoadOrCreateCert: %v", err)
	}
	if !bytes.Equal(cert.Leaf.RawSubjectPublicKeyInfo, old.RawSubjectPublicKeyInfo) {
		t.Error("renewal changed the key")
	}
	if left := time.Until(cert.Leaf.NotAfter); left < renewBefore {
		t.Errorf("renewed certificate expires in %v", left)
	}
	if diff := cmp.Diff([]string{"old.example"}, cert.Leaf.DNSNames); diff != "" {
		t.Errorf("renewal changed the names (-want +got):\n%s", diff)
	}
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
