package websocket

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/commucat/commucat/core/transport"
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

// FuzzFactory checks that the client's parameters, as an invite carries
// them, never make Factory panic, that every rejection wraps
// transport.ErrBadParams, and that an accepted set is kept as given.
func FuzzFactory(f *testing.F) {
	sum := sha256.Sum256([]byte("seed"))
	pin := base64.RawURLEncoding.EncodeToString(sum[:])
	f.Add(pin, "/Zm9vYmFyYmF6cXV4cXV1eA", "", "", "")
	f.Add(pin, "/ws", "example.org", "example.org:8443", "firefox")
	f.Add("", "ws", "a b", "[::1]", "file:/nonexistent")
	f.Fuzz(func(t *testing.T, pin, path, sni, host, fp string) {
		p := transport.Params{"pin": pin, "path": path}
		for k, v := range map[string]string{"sni": sni, "host": host, "fp": fp} {
			if v != "" {
				p[k] = v
			}
		}
		tr, err := Factory(p)
		if err != nil {
			if !errors.Is(err, transport.ErrBadParams) {
				t.Fatalf("Factory(%v) = %v, not transport.ErrBadParams", p, err)
			}
			return
		}
		cfg := tr.(*Transport).cfg
		if cfg.Pin != pin || cfg.Path != path || cfg.SNI != sni || cfg.Host != host || cfg.Fingerprint != fp {
			t.Fatalf("Factory(%v) kept %+v", p, cfg)
		}
	})
}

// FuzzLoadPath checks that a secret path file of any content never makes
// loadOrCreatePath panic, and that what it accepts is a valid path.
func FuzzLoadPath(f *testing.F) {
	f.Add([]byte("/Zm9vYmFyYmF6cXV4cXV1eA\n"))
	f.Add([]byte(""))
	f.Add([]byte("/a b\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, PathFile), b, 0o600); err != nil {
			t.Fatal(err)
		}
		p, err := loadOrCreatePath(dir)
		if err != nil {
			return
		}
		if err := checkPath(p); err != nil {
			t.Fatalf("accepted path %q: %v", p, err)
		}
	})
}

// FuzzIsUpgrade checks that the upgrade test never panics on any header
// values and accepts only requests coder/websocket's Accept accepts too.
func FuzzIsUpgrade(f *testing.F) {
	f.Add("GET", "Upgrade", "websocket", "13", "dGhlIHNhbXBsZSBub25jZQ==")
	f.Add("GET", "keep-alive, Upgrade", "WebSocket", "13", "dGhlIHNhbXBsZSBub25jZQ")
	f.Add("POST", "", "h2c", "8", "")
	f.Fuzz(func(t *testing.T, method, connection, upgrade, version, key string) {
		r := &http.Request{Method: method, ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{
			"Connection":            {connection},
			"Upgrade":               {upgrade},
			"Sec-Websocket-Version": {version},
			"Sec-Websocket-Key":     {key},
		}}
		if !isUpgrade(r) {
			return
		}
		if method != http.MethodGet || version != "13" {
			t.Fatalf("accepted %s with version %q", method, version)
		}
		if b, err := base64.StdEncoding.DecodeString(key); err != nil || len(b) != 16 {
			t.Fatalf("accepted key %q", key)
		}
	})
}
