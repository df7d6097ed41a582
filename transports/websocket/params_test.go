package websocket

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/transports/decoy"
)

func TestFactory(t *testing.T) {
	_, _, pub := pair(t)
	pin, path := pub["pin"], pub["path"]
	tests := []struct {
		name    string
		params  transport.Params
		wantErr bool
	}{
		{"published", transport.Params{"pin": pin, "path": path}, false},
		{"all", transport.Params{"pin": pin, "path": path, "sni": "example.org", "host": "example.org:8443", "fp": "firefox"}, false},
		{"host ip", transport.Params{"pin": pin, "path": path, "host": "192.0.2.1"}, false},
		{"no pin", transport.Params{"path": path}, true},
		{"no path", transport.Params{"pin": pin}, true},
		{"bad pin", transport.Params{"pin": "abc", "path": path}, true},
		{"padded pin", transport.Params{"pin": pin + "=", "path": path}, true},
		{"relative path", transport.Params{"pin": pin, "path": "ws"}, true},
		{"root path", transport.Params{"pin": pin, "path": "/"}, true},
		{"query in path", transport.Params{"pin": pin, "path": "/a?b"}, true},
		{"unknown key", transport.Params{"pin": pin, "path": path, "port": "443"}, true},
		{"bad sni", transport.Params{"pin": pin, "path": path, "sni": "a b"}, true},
		{"ip sni", transport.Params{"pin": pin, "path": path, "sni": "192.0.2.1"}, true},
		{"bad host", transport.Params{"pin": pin, "path": path, "host": "a:b:c"}, true},
		{"bad port", transport.Params{"pin": pin, "path": path, "host": "a:99999x"}, true},
		{"unknown fingerprint", transport.Params{"pin": pin, "path": path, "fp": "netscape"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := Factory(tt.params)
			if tt.wantErr {
				if !errors.Is(err, transport.ErrBadParams) {
					t.Fatalf("Factory(%v) = %v, want transport.ErrBadParams", tt.params, err)
				}
				if strings.Contains(err.Error(), path) {
					t.Errorf("error names the secret path: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Factory(%v): %v", tt.params, err)
			}
			if tr.Name() != Name {
				t.Errorf("Name() = %q, want %q", tr.Name(), Name)
			}
		})
	}
	var r transport.Registry
	r.Register(Name, Factory)
	if _, err := r.New(Name, transport.Params{"pin": pin}); !errors.Is(err, transport.ErrBadParams) {
		t.Errorf("Registry.New without a path: %v, want ErrBadParams", err)
	}
}

func TestServerFactory(t *testing.T) {
	dir := t.TempDir()
	st, pub, err := ServerFactory(nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := pub["path"]; !regexp.MustCompile(`^/[A-Za-z0-9_-]{22}$`).MatchString(got) {
		t.Errorf("generated path %q is not / and 22 base64url characters", got)
	}
	if len(pub["pin"]) != 43 || pub["pin"] != st.(*Transport).Pin() {
		t.Errorf("pin %q, transport's %q", pub["pin"], st.(*Transport).Pin())
	}
	if _, ok := pub["sni"]; ok {
		t.Errorf("sni published without being configured: %v", pub)
	}
	for _, name := range []string{PathFile, decoy.CertFile, decoy.KeyFile} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s has mode %v, want 0600", name, perm)
		}
	}

	t.Run("restart", func(t *testing.T) {
		_, again, err := ServerFactory(nil, dir)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(pub, again); diff != "" {
			t.Errorf("public parameters changed on restart (-first +second):\n%s", diff)
		}
	})
	t.Run("sni", func(t *testing.T) {
		st, named, err := ServerFactory(transport.Params{"sni": "blog.example.org"}, dir)
		if err != nil {
			t.Fatal(err)
		}
		want := transport.Params{"pin": pub["pin"], "path": pub["path"], "sni": "blog.example.org"}
		if diff := cmp.Diff(want, named); diff != "" {
			t.Errorf("public parameters (-want +got):\n%s", diff)
		}
		if got := st.(*Transport).cfg.Certificate.Leaf.DNSNames; !cmp.Equal(got, []string{"blog.example.org"}) {
			t.Errorf("certificate names %v", got)
		}
	})
	t.Run("fixed path", func(t *testing.T) {
		_, fixed, err := ServerFactory(transport.Params{"path": "/api/v2/stream"}, dir)
		if err != nil {
			t.Fatal(err)
		}
		if fixed["path"] != "/api/v2/stream" {
			t.Errorf("path %q", fixed["path"])
		}
	})

	t.Run("own site", func(t *testing.T) {
		site := t.TempDir()
		for name, body := range map[string]string{"index.html": "<h1>bakery</h1>", "404.html": "gone"} {
			if err := os.WriteFile(filepath.Join(site, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		st, public, err := ServerFactory(transport.Params{"site": site}, dir)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := public["site"]; ok {
			t.Errorf("the site directory is published: %v", public)
		}
		rec := httptest.NewRecorder()
		st.(*Transport).cfg.Site.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		if rec.Body.String() != "<h1>bakery</h1>" {
			t.Errorf("GET / shows %q, want the operator's site", rec.Body.String())
		}
	})

	bad := []struct {
		name   string
		params transport.Params
		setup  func(t *testing.T, dir string)
	}{
		{name: "unknown key", params: transport.Params{"pin": "x"}},
		{name: "site without index", params: transport.Params{"site": os.TempDir() + "/commucat-no-such-site"}},
		{name: "bad sni", params: transport.Params{"sni": "a b"}},
		{name: "bad path", params: transport.Params{"path": "nope"}},
		{name: "garbage path file", setup: func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, PathFile), []byte("not a path"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "readable path file", setup: func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, PathFile), []byte("/abc\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.setup != nil {
				tt.setup(t, dir)
			}
			if _, _, err := ServerFactory(tt.params, dir); err == nil {
				t.Fatal("ServerFactory succeeded")
			}
		})
	}
}

func TestConfig(t *testing.T) {
	cert, err := decoy.LoadOrCreateCert(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	pin := PinOf(cert.Leaf)
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"server", Config{Certificate: &cert, Path: "/x"}, true},
		{"client", Config{Pin: pin, Path: "/x"}, true},
		{"empty", Config{}, false},
		{"no path", Config{Pin: pin}, false},
		{"empty certificate", Config{Certificate: &tls.Certificate{}, Path: "/x"}, false},
		{"negative timeout", Config{Pin: pin, Path: "/x", HandshakeTimeout: -time.Second}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.ok != (err == nil) {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, transport.ErrBadParams) {
				t.Errorf("Validate() = %v, want it to wrap transport.ErrBadParams", err)
			}
		})
	}
	// A Config holds a private key and the secret path.
	var sb strings.Builder
	slog.New(slog.NewTextHandler(&sb, nil)).Info("config", "cfg", Config{Certificate: &cert, Path: "/secret"})
	if strings.Contains(sb.String(), "/secret") || !strings.Contains(sb.String(), "[redacted]") {
		t.Errorf("Config logs as %s", sb.String())
	}
	tr, err := New(Config{Certificate: &cert, Path: "/secret"})
	if err != nil {
		t.Fatal(err)
	}
	sb.Reset()
	slog.New(slog.NewTextHandler(&sb, nil)).Info("transport", "t", tr)
	if strings.Contains(sb.String(), "/secret") || !strings.Contains(sb.String(), "[redacted]") {
		t.Errorf("Transport logs as %s", sb.String())
	}
}

func TestMissingSide(t *testing.T) {
	client, server, _ := pair(t)
	if _, err := server.Dial(context.Background(), "127.0.0.1:1"); !errors.Is(err, transport.ErrBadParams) {
		t.Errorf("Dial without a pin = %v, want transport.ErrBadParams", err)
	}
	if _, err := client.Listen(context.Background(), "127.0.0.1:0"); !errors.Is(err, transport.ErrBadParams) {
		t.Errorf("Listen without a certificate = %v, want transport.ErrBadParams", err)
	}
	if _, err := client.Dial(context.Background(), "no port"); !errors.Is(err, transport.ErrBadParams) {
		t.Errorf("Dial of an address without a port = %v, want transport.ErrBadParams", err)
	}
	if client.Pin() != server.Pin() {
		t.Errorf("client pin %q, server pin %q", client.Pin(), server.Pin())
	}
}

func ExampleServerFactory() {
	dir, err := os.MkdirTemp("", "gateway-state")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	_, public, err := ServerFactory(transport.Params{"sni": "blog.example.org"}, dir)
	if err != nil {
		panic(err)
	}
	client, err := Factory(public)
	if err != nil {
		panic(err)
	}
	fmt.Println(client.Name(), len(public["pin"]), len(public["path"]), public["sni"])
	// Output: websocket 43 23 blog.example.org
}
