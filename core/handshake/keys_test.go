package handshake

import (
	"bytes"
	"crypto/ecdh"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStaticKey(t *testing.T) {
	k, err := GenerateStatic()
	if err != nil {
		t.Fatal(err)
	}
	// The public half matches the standard library's X25519.
	priv, err := ecdh.X25519().NewPrivateKey(k.priv[:])
	if err != nil {
		t.Fatal(err)
	}
	if pub := k.Public(); !bytes.Equal(pub[:], priv.PublicKey().Bytes()) {
		t.Error("public key does not match X25519(priv)")
	}
	k2, _ := GenerateStatic()
	if k.Public() == k2.Public() {
		t.Error("two generated keys are equal")
	}
	k.Wipe()
	if k.priv != [32]byte{} || k.pub != [32]byte{} {
		t.Error("Wipe left key bytes")
	}
	var nilKey *StaticKey
	nilKey.Wipe()
}

func TestPublicEncoding(t *testing.T) {
	k := mustStatic(t, "public encoding").Public()
	s := FormatPublic(k)
	if len(s) != 43 || strings.ContainsAny(s, "+/=") {
		t.Errorf("FormatPublic = %q, want 43 base64url characters", s)
	}
	got, err := ParsePublic(s)
	if err != nil || got != k {
		t.Fatalf("round trip: %v", err)
	}
	// Non-canonical: the last character carries 4 unused bits.
	last := strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", s[42])
	nonCanonical := s[:42] + string("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last^1])
	tests := []struct {
		name string
		in   string
	}{
		{"empty", ""},
		{"short", s[:42]},
		{"long", s + "A"},
		{"padded", s + "="},
		{"standard alphabet", strings.NewReplacer("-", "+", "_", "/").Replace(s)},
		{"space", " " + s[1:]},
		{"non-canonical trailing bits", nonCanonical},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.in == s {
				t.Skip("input happens to equal the valid encoding")
			}
			if _, err := ParsePublic(tt.in); !errors.Is(err, ErrMalformed) {
				t.Errorf("ParsePublic(%q) = %v, want ErrMalformed", tt.in, err)
			}
		})
	}
}

func TestLoadOrCreateStatic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "new", "sub", "static.key")
	k, created, err := LoadOrCreateStatic(path)
	if err != nil || !created {
		t.Fatalf("create: %v created=%v", err, created)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %04o, want 0600", fi.Mode().Perm())
	}
	for _, d := range []string{filepath.Join(dir, "new"), filepath.Join(dir, "new", "sub")} {
		di, err := os.Stat(d)
		if err != nil || di.Mode().Perm() != 0o700 {
			t.Errorf("dir %s: mode %v err %v, want 0700", d, di.Mode().Perm(), err)
		}
	}
	content, _ := os.ReadFile(path)
	want := staticFileHeader + "\n" + base64.StdEncoding.EncodeToString(k.priv[:]) + "\n"
	if string(content) != want {
		t.Errorf("file content is not the documented format")
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries (temporary file left?)", len(entries))
	}

	k2, created, err := LoadOrCreateStatic(path)
	if err != nil || created {
		t.Fatalf("load: %v created=%v", err, created)
	}
	if k2.Public() != k.Public() || k2.priv != k.priv {
		t.Error("loaded key differs from the created one")
	}
}

func TestKeyFileModeRefused(t *testing.T) {
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660, 0o602} {
		t.Run(fmt.Sprintf("%04o", mode), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "k")
			if _, _, err := LoadOrCreateStatic(path); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
			_, _, err := LoadOrCreateStatic(path)
			if !errors.Is(err, ErrKeyFileMode) {
				t.Fatalf("got %v, want ErrKeyFileMode", err)
			}
			if !strings.Contains(err.Error(), "chmod 600") || !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not say what to do", err)
			}
			if _, _, err := LoadOrCreateSigning(path); !errors.Is(err, ErrKeyFileMode) {
				t.Fatalf("signing: got %v, want ErrKeyFileMode", err)
			}
		})
	}
	t.Run("0400 is fine", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "k")
		LoadOrCreateStatic(path)
		os.Chmod(path, 0o400)
		if _, created, err := LoadOrCreateStatic(path); err != nil || created {
			t.Fatalf("got %v created=%v", err, created)
		}
	})
}

func TestKeyFileBadContent(t *testing.T) {
	good := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	tests := []struct {
		name    string
		content string
		want    error
	}{
		{"good", staticFileHeader + "\n" + good + "\n", nil},
		{"crlf and no final newline", staticFileHeader + "\r\n" + good, nil},
		{"empty", "", ErrMalformed},
		{"header only", staticFileHeader + "\n", ErrMalformed},
		{"wrong header", signingFileHeader + "\n" + good + "\n", ErrMalformed},
		{"short body", staticFileHeader + "\n" + good[:40] + "\n", ErrMalformed},
		{"long body", staticFileHeader + "\n" + good + "AAAA\n", ErrMalformed},
		{"unpadded body of 33 bytes", staticFileHeader + "\n" + strings.Repeat("0", 44) + "\n", ErrMalformed},
		{"not base64", staticFileHeader + "\n" + strings.Repeat("!", len(good)) + "\n", ErrMalformed},
		{"extra line", staticFileHeader + "\n" + good + "\nmore\n", ErrMalformed},
		{"huge", strings.Repeat("x", 10000), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "k")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, created, err := LoadOrCreateStatic(path)
			checkErr(t, err, tt.want)
			if created {
				t.Error("an existing file was replaced")
			}
			if err != nil && strings.Contains(err.Error(), good) {
				t.Error("error quotes the file's secret")
			}
		})
	}
	t.Run("directory", func(t *testing.T) {
		if _, _, err := LoadOrCreateStatic(t.TempDir()); err == nil {
			t.Error("loaded a directory")
		}
	})
}

func TestLoadOrCreateSigning(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "signing.key")
	k, created, err := LoadOrCreateSigning(path)
	if err != nil || !created {
		t.Fatalf("create: %v %v", err, created)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %04o", fi.Mode().Perm())
	}
	content, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(content), signingFileHeader+"\n") {
		t.Error("wrong header")
	}
	k2, created, err := LoadOrCreateSigning(path)
	if err != nil || created {
		t.Fatalf("load: %v %v", err, created)
	}
	if !k.Public().Equal(k2.Public()) {
		t.Error("loaded key differs")
	}
	// A static key file is not a signing key file.
	spath := filepath.Join(t.TempDir(), "static.key")
	LoadOrCreateStatic(spath)
	if _, _, err := LoadOrCreateSigning(spath); !errors.Is(err, ErrMalformed) {
		t.Errorf("signing from a static key file: %v", err)
	}
}

// TestNoSecretsInLogs logs and prints every secret-holding type in every
// common way and looks for the secret bytes in any common encoding.
func TestNoSecretsInLogs(t *testing.T) {
	c, s := newConfigs(t, "logs")
	tr, err := runHandshake(t, c, s)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := GenerateSigning()
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[string][]byte{
		"client static private": c.Static.priv[:],
		"server static private": s.Static.priv[:],
		"client send key":       tr.client.SendKey[:],
		"client recv key":       tr.client.RecvKey[:],
		"signing seed":          sk.priv.Seed(),
		"signing private":       sk.priv,
	}
	var out bytes.Buffer
	for _, h := range []slog.Handler{slog.NewJSONHandler(&out, nil), slog.NewTextHandler(&out, nil)} {
		log := slog.New(h)
		log.Info("keys", "static", c.Static, "static value", *c.Static,
			"result", tr.client, "result value", *tr.server, "signing", sk, "signing value", *sk)
		log.Info("any", slog.Any("static", c.Static), slog.Any("result", tr.server), slog.Any("signing", sk))
	}
	for _, v := range []any{c.Static, *c.Static, tr.client, *tr.client, sk, *sk} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%q", "%d", "%o", "%b", "%c", "%U", "%e", "% x", "%T"} {
			fmt.Fprintf(&out, verb+"\n", v)
		}
	}
	leaks := func(out string) []string {
		var found []string
		for name, b := range secrets {
			for _, enc := range []string{
				hex.EncodeToString(b), strings.ToUpper(hex.EncodeToString(b)),
				base64.StdEncoding.EncodeToString(b), base64.RawStdEncoding.EncodeToString(b),
				base64.URLEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(b),
				fmt.Sprint(b), fmt.Sprintf("%v", [32]byte(b[:32])),
			} {
				if strings.Contains(out, enc[:16]) {
					found = append(found, name)
				}
			}
		}
		return found
	}
	if got := leaks(out.String()); len(got) > 0 {
		t.Errorf("secrets in the output: %v", got)
	}
	// Control: the check does find a leaked key.
	if got := leaks(fmt.Sprintf("%x", tr.client.SendKey)); len(got) == 0 {
		t.Error("leak check is blind")
	}
	if !strings.Contains(out.String(), "[redacted]") {
		t.Error("no [redacted] in the log output")
	}
	// The public key appears only as a fingerprint in String.
	pub := c.Static.Public()
	if strings.Contains(out.String(), FormatPublic(pub)) || strings.Contains(out.String(), hex.EncodeToString(pub[:])) {
		t.Error("the full public key appears in the output")
	}
	if got := c.Static.String(); !strings.HasPrefix(got, "x25519:") || len(got) != len("x25519:")+16 {
		t.Errorf("String() = %q", got)
	}
}
