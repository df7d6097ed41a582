package quic

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestLoadOrCreateCert(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	cert, pin, err := LoadOrCreateCert(dir)
	if err != nil {
		t.Fatalf("first LoadOrCreateCert: %v", err)
	}
	if len(pin) != 43 {
		t.Errorf("pin %q has %d characters, want 43", pin, len(pin))
	}
	if _, err := decodePin(pin); err != nil {
		t.Errorf("decodePin(%q): %v", pin, err)
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
	if _, ok := cert.PrivateKey.(*ecdsa.PrivateKey); !ok {
		t.Errorf("private key is %T, want *ecdsa.PrivateKey", cert.PrivateKey)
	}
	again, pin2, err := LoadOrCreateCert(dir)
	if err != nil {
		t.Fatalf("second LoadOrCreateCert: %v", err)
	}
	if pin2 != pin {
		t.Errorf("pin changed on reload: %q, then %q", pin, pin2)
	}
	if string(again.Certificate[0]) != string(cert.Certificate[0]) {
		t.Error("certificate changed on reload")
	}
}

func TestLoadOrCreateCertRefuses(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
	}{
		{"certificate without key", func(t *testing.T, dir string) {
			mustCreate(t, dir)
			os.Remove(filepath.Join(dir, KeyFile))
		}},
		{"key without certificate", func(t *testing.T, dir string) {
			mustCreate(t, dir)
			os.Remove(filepath.Join(dir, CertFile))
		}},
		{"readable key", func(t *testing.T, dir string) {
			mustCreate(t, dir)
			if err := os.Chmod(filepath.Join(dir, KeyFile), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"garbage certificate", func(t *testing.T, dir string) {
			mustCreate(t, dir)
			if err := os.WriteFile(filepath.Join(dir, CertFile), []byte("not pem"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"foreign key", func(t *testing.T, dir string) {
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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.setup(t, dir)
			if _, _, err := LoadOrCreateCert(dir); err == nil {
				t.Fatal("LoadOrCreateCert succeeded")
			}
		})
	}
}

func mustCreate(t *testing.T, dir string) {
	t.Helper()
	if _, _, err := LoadOrCreateCert(dir); err != nil {
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

	cert, pin, err := LoadOrCreateCert(dir)
	if err != nil {
		t.Fatalf("LoadOrCreateCert: %v", err)
	}
	if want := pinOf(old); pin != want {
		t.Errorf("pin after renewal = %q, want the old key's %q", pin, want)
	}
	if left := time.Until(cert.Leaf.NotAfter); left < renewBefore {
		t.Errorf("renewed certificate expires in %v", left)
	}
	// The renewal was written back.
	_, pin2, err := LoadOrCreateCert(dir)
	if err != nil || pin2 != pin {
		t.Errorf("reload after renewal = %q, %v; want %q", pin2, err, pin)
	}
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
