package decoy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"
)

// FuzzHandler checks that the site answers any method, path and Range
// header without panicking, with a status nginx would send and without Go
// tells.
func FuzzHandler(f *testing.F) {
	f.Add("GET", "/", "")
	f.Add("HEAD", "/posts/", "")
	f.Add("GET", "/../x", "")
	f.Add("GET", "/style.css", "bytes=0-1,5-")
	f.Add("POST", "/a//b/./../c", "bytes=-5")
	f.Add("GET", "", "bytes=99999-")
	allowed := map[int]bool{200: true, 206: true, 301: true, 304: true, 400: true, 403: true, 404: true, 405: true, 412: true, 416: true}
	f.Fuzz(func(t *testing.T, method, p, rangeHeader string) {
		r := &http.Request{
			Method:     method,
			URL:        &url.URL{Path: p},
			Proto:      "HTTP/1.1",
			ProtoMajor: 1,
			ProtoMinor: 1,
			Header:     http.Header{},
			Host:       "example.com",
			Body:       http.NoBody,
		}
		if rangeHeader != "" {
			r.Header.Set("Range", rangeHeader)
		}
		w := httptest.NewRecorder()
		Handler().ServeHTTP(w, r)
		res := w.Result()
		body, _ := io.ReadAll(res.Body)
		if !allowed[res.StatusCode] {
			t.Fatalf("%s %q (Range %q): status %d", method, p, rangeHeader, res.StatusCode)
		}
		if res.Header.Get("Server") != ServerHeader {
			t.Fatalf("no Server header")
		}
		checkNoGoTells(t, res.Header, body)
	})
}

// FuzzParseCert checks that parsing certificate and key files never
// panics.
func FuzzParseCert(f *testing.F) {
	dir := f.TempDir()
	if _, err := LoadOrCreateCert(dir, []string{"example.org"}); err != nil {
		f.Fatal(err)
	}
	certPEM, err := os.ReadFile(filepath.Join(dir, CertFile))
	if err != nil {
		f.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, KeyFile))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(certPEM, keyPEM)
	f.Add(certPEM, certPEM)
	f.Add([]byte{}, keyPEM)
	f.Fuzz(func(t *testing.T, certPEM, keyPEM []byte) {
		cert, err := parseCert(certPEM, keyPEM)
		if err != nil {
			return
		}
		if cert.Leaf == nil {
			t.Fatal("accepted pair without a leaf")
		}
		certNames(cert.Leaf)
	})
}
