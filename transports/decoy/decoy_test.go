package decoy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func siteFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := siteFS.ReadFile("site/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestHandler(t *testing.T) {
	index := siteFile(t, "index.html")
	notFound := siteFile(t, "404.html")
	tests := []struct {
		name       string
		method     string
		target     string
		header     map[string]string
		wantStatus int
		wantBody   []byte // nil: not checked
		wantType   string
		wantHeader map[string]string
	}{
		{name: "root", method: "GET", target: "/", wantStatus: 200, wantBody: index, wantType: "text/html",
			wantHeader: map[string]string{"Accept-Ranges": "bytes", "Last-Modified": "Sat, 30 Aug 2025 18:42:07 GMT", "Connection": "keep-alive"}},
		{name: "index by name", method: "GET", target: "/index.html", wantStatus: 200, wantBody: index, wantType: "text/html"},
		{name: "head root", method: "HEAD", target: "/", wantStatus: 200, wantBody: []byte{}, wantType: "text/html"},
		{name: "about", method: "GET", target: "/about.html", wantStatus: 200, wantBody: siteFile(t, "about.html"), wantType: "text/html"},
		{name: "post", method: "GET", target: "/posts/home-lab-power.html", wantStatus: 200, wantType: "text/html"},
		{name: "css", method: "GET", target: "/style.css", wantStatus: 200, wantType: "text/css"},
		{name: "favicon", method: "GET", target: "/favicon.ico", wantStatus: 200, wantType: "image/x-icon"},
		{name: "robots", method: "GET", target: "/robots.txt", wantStatus: 200, wantType: "text/plain"},
		{name: "query ignored", method: "GET", target: "/?utm_source=x", wantStatus: 200, wantBody: index},
		{name: "unknown", method: "GET", target: "/wp-login.php", wantStatus: 404, wantBody: notFound, wantType: "text/html"},
		{name: "unknown deep", method: "GET", target: "/a/b/c", wantStatus: 404, wantBody: notFound},
		{name: "unknown dir", method: "GET", target: "/admin/", wantStatus: 404, wantBody: notFound},
		{name: "head unknown", method: "HEAD", target: "/nope", wantStatus: 404, wantBody: []byte{}},
		{name: "websocket upgrade on a page", method: "GET", target: "/",
			header:     map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="},
			wantStatus: 200, wantBody: index},
		{name: "websocket upgrade elsewhere", method: "GET", target: "/ws",
			header:     map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="},
			wantStatus: 404, wantBody: notFound},
		{name: "directory without slash", method: "GET", target: "/posts", wantStatus: 301,
			wantHeader: map[string]string{"Location": "http://example.com/posts/"}},
		{name: "directory without index", method: "GET", target: "/posts/", wantStatus: 403, wantBody: errorPage(403)},
		{name: "post to a page", method: "POST", target: "/", wantStatus: 405, wantBody: errorPage(405)},
		{name: "post elsewhere", method: "POST", target: "/api", wantStatus: 404, wantBody: notFound},
		{name: "put", method: "PUT", target: "/x", wantStatus: 405, wantBody: errorPage(405)},
		{name: "escape root", method: "GET", target: "/../etc/passwd", wantStatus: 400, wantBody: errorPage(400)},
		{name: "dot segments inside", method: "GET", target: "/posts/../about.html", wantStatus: 200},
		{name: "etag match", method: "GET", target: "/", header: map[string]string{"If-None-Match": loaded.files["index.html"].etag},
			wantStatus: 304, wantBody: []byte{}},
		{name: "modified since", method: "GET", target: "/", header: map[string]string{"If-Modified-Since": "Sat, 30 Aug 2025 18:42:07 GMT"},
			wantStatus: 304, wantBody: []byte{}},
		{name: "modified since before", method: "GET", target: "/", header: map[string]string{"If-Modified-Since": "Sat, 30 Aug 2025 18:42:06 GMT"},
			wantStatus: 200, wantBody: index},
		{name: "range", method: "GET", target: "/", header: map[string]string{"Range": "bytes=0-14"},
			wantStatus: 206, wantBody: index[:15], wantHeader: map[string]string{"Content-Range": "bytes 0-14/" + strconv.Itoa(len(index))}},
		{name: "range unsatisfiable", method: "GET", target: "/", header: map[string]string{"Range": "bytes=999999-"},
			wantStatus: 416, wantBody: errorPage(416)},
		{name: "range other unit", method: "GET", target: "/", header: map[string]string{"Range": "lines=1-2"},
			wantStatus: 200, wantBody: index},
		{name: "if-match fails", method: "GET", target: "/", header: map[string]string{"If-Match": `"nope"`},
			wantStatus: 412, wantBody: errorPage(412)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, "http://example.com"+tt.target, nil)
			for k, v := range tt.header {
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			Handler().ServeHTTP(w, r)
			res := w.Result()
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d", res.StatusCode, tt.wantStatus)
			}
			if tt.wantBody != nil {
				if diff := cmp.Diff(string(tt.wantBody), string(body)); diff != "" {
					t.Errorf("body (-want +got):\n%s", diff)
				}
			}
			if tt.wantType != "" {
				if got := res.Header.Get("Content-Type"); got != tt.wantType {
					t.Errorf("Content-Type %q, want %q", got, tt.wantType)
				}
			}
			if got := res.Header.Get("Server"); got != ServerHeader {
				t.Errorf("Server %q, want %q", got, ServerHeader)
			}
			for k, v := range tt.wantHeader {
				if got := res.Header.Get(k); got != v {
					t.Errorf("%s %q, want %q", k, got, v)
				}
			}
			checkNoGoTells(t, res.Header, body)
		})
	}
}

// goTells are strings that give away Go's net/http.
var goTells = []string{
	"404 page not found", "Go-http", "golang", "text/plain; charset=utf-8",
	"nosniff", "invalid range", "failed to overlap", "Content-Type: text/html; charset=utf-8",
}

func checkNoGoTells(t *testing.T, h http.Header, body []byte) {
	t.Helper()
	var buf bytes.Buffer
	h.Write(&buf) //nolint:errcheck // a bytes.Buffer does not fail
	buf.Write(body)
	for _, tell := range goTells {
		if bytes.Contains(bytes.ToLower(buf.Bytes()), bytes.ToLower([]byte(tell))) {
			t.Errorf("response contains %q:\n%s", tell, buf.Bytes())
		}
	}
	if h.Get("Content-Type") == "" && len(body) > 0 {
		t.Error("response without Content-Type")
	}
}

// TestWire checks the raw bytes a real net/http server sends for the
// decoy: nginx's header spelling and no Go tells.
func TestWire(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	etagRE := regexp.MustCompile(`(?m)^ETag: "[0-9a-f]+-[0-9a-f]+"\r$`)
	tests := []struct {
		name    string
		request string
		want    []string // substrings of the raw response
		wantRE  *regexp.Regexp
	}{
		{"get", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", []string{"HTTP/1.1 200 OK\r\n", "Server: nginx\r\n", "Content-Type: text/html\r\n", "Connection: keep-alive\r\n", "Accept-Ranges: bytes\r\n"}, etagRE},
		{"head", "HEAD /style.css HTTP/1.1\r\nHost: x\r\n\r\n", []string{"HTTP/1.1 200 OK\r\n", "Content-Type: text/css\r\n", "Content-Length: "}, etagRE},
		{"not found", "GET /.env HTTP/1.1\r\nHost: x\r\n\r\n", []string{"HTTP/1.1 404 Not Found\r\n", "Server: nginx\r\n", "Nothing here"}, nil},
		{"not allowed", "DELETE / HTTP/1.1\r\nHost: x\r\n\r\n", []string{"HTTP/1.1 405 Method Not Allowed\r\n", "<center><h1>405 Not Allowed</h1></center>", "<hr><center>nginx</center>"}, nil},
		{"http/1.0", "GET / HTTP/1.0\r\n\r\n", []string{"HTTP/1.0 200 OK\r\n", "Server: nginx\r\n"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second)) //nolint:errcheck // a fresh conn
			if _, err := io.WriteString(c, tt.request); err != nil {
				t.Fatal(err)
			}
			var raw bytes.Buffer
			res, err := http.ReadResponse(bufio.NewReader(io.TeeReader(c, &raw)), &http.Request{Method: strings.Fields(tt.request)[0]})
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(res.Body)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !bytes.Contains(raw.Bytes(), []byte(w)) {
					t.Errorf("response lacks %q:\n%s", w, raw.Bytes())
				}
			}
			if tt.wantRE != nil && !tt.wantRE.Match(raw.Bytes()) {
				t.Errorf("response does not match %v:\n%s", tt.wantRE, raw.Bytes())
			}
			checkNoGoTells(t, res.Header, body)
			if bytes.Contains(raw.Bytes(), []byte("Etag:")) {
				t.Errorf("ETag sent with Go's spelling:\n%s", raw.Bytes())
			}
		})
	}
}

func TestPlainHTTPResponse(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	raw := PlainHTTPResponse(now)
	res, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 400 || res.Header.Get("Date") != "Fri, 02 Jan 2026 03:04:05 GMT" || res.Header.Get("Server") != "nginx" {
		t.Errorf("unexpected response:\n%s", raw)
	}
	if !bytes.Contains(body, []byte("The plain HTTP request was sent to HTTPS port")) {
		t.Errorf("body %q", body)
	}
	checkNoGoTells(t, res.Header, body)
}

func TestEscapesRoot(t *testing.T) {
	tests := []struct {
		path string
		want bool
	}{
		{"/", false},
		{"/a/../b", false},
		{"/..", true},
		{"/a/../../b", true},
		{"/./a/./..", false},
		{"//..//", true},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			if got := escapesRoot(tt.path); got != tt.want {
				t.Errorf("escapesRoot(%q) = %v, want %v", tt.path, got, tt.want)
			}
		})
	}
}
