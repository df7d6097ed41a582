package decoy

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeSite writes files (name -> content) under a new directory.
func writeSite(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoadDir(t *testing.T) {
	dir := writeSite(t, map[string]string{
		"index.html":      "<h1>my bakery</h1>",
		"404.html":        "<p>no such bread</p>",
		"menu/index.html": "<p>rye</p>",
		"app.js":          "console.log(1)",
	})
	mt := time.Date(2024, time.March, 3, 10, 20, 30, 0, time.UTC)
	if err := os.Chtimes(filepath.Join(dir, "index.html"), mt, mt); err != nil {
		t.Fatal(err)
	}
	h, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	get := func(p string) *http.Response {
		t.Helper()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, p, nil))
		return rec.Result()
	}
	for _, tt := range []struct {
		path, body, ctype string
		code              int
	}{
		{"/", "<h1>my bakery</h1>", "text/html", 200},
		{"/menu/", "<p>rye</p>", "text/html", 200},
		{"/app.js", "console.log(1)", "application/javascript", 200},
		{"/nope", "<p>no such bread</p>", "text/html", 404},
	} {
		res := get(tt.path)
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != tt.code || string(b) != tt.body || res.Header.Get("Content-Type") != tt.ctype || res.Header.Get("Server") != ServerHeader {
			t.Errorf("GET %s: %d %q %q (server %q); want %d %q %q", tt.path, res.StatusCode, b, res.Header.Get("Content-Type"), res.Header.Get("Server"), tt.code, tt.body, tt.ctype)
		}
	}
	res := get("/")
	if lm := res.Header.Get("Last-Modified"); lm != mt.Format(http.TimeFormat) {
		t.Errorf("Last-Modified %q, want the file's %q", lm, mt.Format(http.TimeFormat))
	}
	// nginxWriter keeps nginx's spelling, "ETag", which is not Go's
	// canonical key: look for it by name.
	var etag string
	for k, v := range res.Header {
		if strings.EqualFold(k, "etag") {
			etag = strings.Join(v, "")
		}
	}
	if want := fmt.Sprintf(`"%x-%x"`, mt.Unix(), len("<h1>my bakery</h1>")); etag != want {
		t.Errorf("ETag %q, want %q", etag, want)
	}
	if res := get("/menu"); res.StatusCode != http.StatusMovedPermanently {
		t.Errorf("GET /menu: %d, want a redirect to the directory", res.StatusCode)
	}
}

func TestLoadDirRefuses(t *testing.T) {
	outside := writeSite(t, map[string]string{"secret.txt": "key"})
	escape := writeSite(t, map[string]string{"index.html": "i", "404.html": "n"})
	if err := os.Symlink(filepath.Join(outside, "secret.txt"), filepath.Join(escape, "leak.txt")); err != nil {
		t.Fatal(err)
	}
	many := map[string]string{"index.html": "i", "404.html": "n"}
	for i := range MaxSiteFiles {
		many[fmt.Sprintf("f/%d.html", i)] = "x"
	}
	for name, dir := range map[string]string{
		"missing dir":      filepath.Join(t.TempDir(), "none"),
		"no index":         writeSite(t, map[string]string{"404.html": "n"}),
		"no 404":           writeSite(t, map[string]string{"index.html": "i"}),
		"link out of root": escape,
		"too many files":   writeSite(t, many),
	} {
		if h, err := LoadDir(dir); err == nil || h != nil {
			t.Errorf("%s: LoadDir = %v, %v; want an error", name, h, err)
		} else if !strings.HasPrefix(err.Error(), "decoy: ") {
			t.Errorf("%s: error %q does not name the package", name, err)
		}
	}
	// A link that stays inside the site is followed.
	inside := writeSite(t, map[string]string{"index.html": "i", "404.html": "n", "a.txt": "a"})
	if err := os.Symlink("a.txt", filepath.Join(inside, "b.txt")); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadDir(inside); err != nil {
		t.Errorf("a link inside the site: %v", err)
	}
}
