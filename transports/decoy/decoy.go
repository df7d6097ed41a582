// Package decoy is the ordinary website that CommuCat's TLS transports show
// to everyone who is not a CommuCat client: a small personal blog, embedded
// in the binary, served the way a stock nginx serves a directory of static
// files. A browser, a crawler or a censor's active prober that connects to a
// gateway sees this site and nothing else.
//
// Handler serves the site. Its responses mimic nginx rather than Go's
// net/http: a "Server: nginx" header, nginx's content types (text/html
// without a charset), nginx's ETag format ("<mtime hex>-<size hex>"), a
// fixed Last-Modified, "Connection: keep-alive", the site's own 404 page,
// 403 for a directory without an index, a 301 to add the slash of a
// directory, 405 for methods a static server refuses, and nginx's own
// error pages in place of the plain-text bodies net/http would write (such
// as "404 page not found"). HEAD, conditional and range requests work as
// they do on any static server.
//
// LoadOrCreateCert keeps the self-signed certificate such a server presents
// when nobody bought it a real one, and PlainHTTPResponse is nginx's answer
// to plain HTTP sent to its HTTPS port.
//
// What stays visibly Go: the HTTP/1.1 parser's answers to malformed
// requests (written by net/http before any handler runs) and the order of
// response headers (net/http sorts them; nginx does not).
package decoy

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"time"
)

// ServerHeader is the Server header of every response: nginx with
// server_tokens off, as many production sites run it.
const ServerHeader = "nginx"

//go:embed site
var siteFS embed.FS

// deployed is the Last-Modified time of every file: the moment the static
// site generator last wrote them all, as on a real deployment.
var deployed = time.Date(2025, time.August, 30, 18, 42, 7, 0, time.UTC)

// contentTypes are nginx's mime.types entries for the site's files.
var contentTypes = map[string]string{
	".html": "text/html",
	".css":  "text/css",
	".ico":  "image/x-icon",
	".txt":  "text/plain",
	".xml":  "text/xml",
	".png":  "image/png",
	".svg":  "image/svg+xml",
	// For sites operators bring (LoadDir).
	".htm":   "text/html",
	".js":    "application/javascript",
	".json":  "application/json",
	".jpg":   "image/jpeg",
	".jpeg":  "image/jpeg",
	".gif":   "image/gif",
	".webp":  "image/webp",
	".woff":  "font/woff",
	".woff2": "font/woff2",
	".pdf":   "application/pdf",
	".rss":   "application/rss+xml",
	".atom":  "application/atom+xml",
	".mp4":   "video/mp4",
	".webm":  "video/webm",
}

// file is one file of the site, loaded in memory.
type file struct {
	data    []byte
	ctype   string
	etag    string
	modTime time.Time
}

// site is the loaded site. It is read-only after load.
type site struct {
	files    map[string]*file    // by path relative to the root, such as "posts/a.html"
	dirs     map[string]struct{} // directories, "" for the root
	notFound *file               // 404.html
}

// loaded is the site, read once from the embedded files.
var loaded = mustLoad()

func mustLoad() *site {
	s, err := load(siteFS, "site")
	if err != nil {
		// The embedded files are part of the binary: a failure here is a
		// build mistake, not an input error.
		panic(err)
	}
	return s
}

func load(fsys fs.FS, root string) (*site, error) {
	sub, err := fs.Sub(fsys, root)
	if err != nil {
		return nil, fmt.Errorf("decoy: %w", err)
	}
	return loadFS(sub, func(fs.FileInfo) time.Time { return deployed })
}

// Limits of a site loaded from a directory: it is held in memory.
const (
	// MaxSiteFiles is the most files (and directories) a site may have.
	MaxSiteFiles = 4096
	// MaxSiteBytes is the most bytes its files may hold together.
	MaxSiteBytes = 64 << 20
)

// LoadDir returns a handler serving the static site in dir, as Handler
// serves the embedded one: every gateway that serves the embedded blog
// serves the same bytes, which a censor can look for, so a public gateway
// should serve a site of its own. dir must hold index.html and 404.html;
// its files are read once, into memory (at most MaxSiteFiles files and
// MaxSiteBytes bytes). Last-Modified and ETag come from each file's
// modification time, as nginx's do. Only regular files and directories
// are served; a symbolic link that leads out of dir is an error, others
// are followed. The handler is safe for concurrent use.
func LoadDir(dir string) (http.Handler, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("decoy: site: %w", err)
	}
	defer root.Close()
	s, err := loadFS(root.FS(), func(fi fs.FileInfo) time.Time { return fi.ModTime().UTC().Truncate(time.Second) })
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, dir)
	}
	return s, nil
}

// loadFS reads the site in fsys; modTime gives a file's Last-Modified.
func loadFS(fsys fs.FS, modTime func(fs.FileInfo) time.Time) (*site, error) {
	s := &site{files: make(map[string]*file), dirs: make(map[string]struct{})}
	total := 0
	err := fs.WalkDir(fsys, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if len(s.files)+len(s.dirs) >= MaxSiteFiles {
			return fmt.Errorf("more than %d files", MaxSiteFiles)
		}
		if d.IsDir() {
			if name == "." {
				name = ""
			}
			s.dirs[name] = struct{}{}
			return nil
		}
		fi, err := fs.Stat(fsys, name) // follows a link, within the root
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file (%v)", name, fi.Mode().Type())
		}
		if total += int(fi.Size()); total > MaxSiteBytes {
			return fmt.Errorf("site over %d MiB", MaxSiteBytes>>20)
		}
		data, err := fs.ReadFile(fsys, name)
		if err != nil {
			return err
		}
		ctype, ok := contentTypes[path.Ext(name)]
		if !ok {
			ctype = "application/octet-stream"
		}
		mt := modTime(fi)
		s.files[name] = &file{
			data:    data,
			ctype:   ctype,
			etag:    fmt.Sprintf(`"%x-%x"`, mt.Unix(), len(data)),
			modTime: mt,
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("decoy: load site: %w", err)
	}
	s.notFound = s.files["404.html"]
	if s.notFound == nil || s.files["index.html"] == nil {
		return nil, fmt.Errorf("decoy: site lacks index.html or 404.html")
	}
	return s, nil
}

// Handler returns the handler of the decoy site. It serves every path and
// every method, as nginx serving the site's root directory would; it is
// safe for concurrent use, and all handlers share the same read-only files.
func Handler() http.Handler { return loaded }

// ServeHTTP serves r from the site.
func (s *site) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Server", ServerHeader)
	nw := &nginxWriter{ResponseWriter: w, head: r.Method == http.MethodHead}
	p := r.URL.Path
	if !strings.HasPrefix(p, "/") || escapesRoot(p) {
		nw.WriteHeader(http.StatusBadRequest)
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodPost:
	default:
		nw.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	clean := path.Clean(p)[1:] // "" for the root
	var name string
	switch {
	case strings.HasSuffix(p, "/"):
		if _, ok := s.dirs[clean]; !ok {
			s.serveNotFound(nw, r)
			return
		}
		name = path.Join(clean, "index.html")
		if _, ok := s.files[name]; !ok {
			nw.WriteHeader(http.StatusForbidden) // a directory without an index
			return
		}
	default:
		if _, ok := s.dirs[clean]; ok {
			s.redirectDir(nw, r, "/"+clean+"/")
			return
		}
		name = clean
	}
	f, ok := s.files[name]
	if !ok {
		s.serveNotFound(nw, r)
		return
	}
	if r.Method == http.MethodPost {
		nw.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	if rg := r.Header.Get("Range"); rg != "" && !strings.HasPrefix(rg, "bytes=") {
		r.Header.Del("Range") // nginx ignores ranges of other units
	}
	h.Set("Content-Type", f.ctype)
	h.Set("Etag", f.etag) // canonical here for ServeContent; sent as "ETag"
	h.Set("Connection", "keep-alive")
	http.ServeContent(nw, r, name, f.modTime, bytes.NewReader(f.data))
}

// escapesRoot reports whether p has a ".." segment that would climb above
// the root, which nginx refuses with 400.
func escapesRoot(p string) bool {
	depth := 0
	for seg := range strings.SplitSeq(p, "/") {
		switch seg {
		case "", ".":
		case "..":
			if depth == 0 {
				return true
			}
			depth--
		default:
			depth++
		}
	}
	return false
}

// serveNotFound answers with the site's own 404 page.
func (s *site) serveNotFound(w *nginxWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", s.notFound.ctype)
	h.Set("Content-Length", strconv.Itoa(len(s.notFound.data)))
	h.Set("Connection", "keep-alive")
	w.ResponseWriter.WriteHeader(http.StatusNotFound)
	w.wrote = true
	if r.Method != http.MethodHead {
		w.ResponseWriter.Write(s.notFound.data) //nolint:errcheck // the client went away
	}
}

// redirectDir answers with nginx's 301 to a directory's slashed path.
func (s *site) redirectDir(w *nginxWriter, r *http.Request, to string) {
	if r.URL.RawQuery != "" {
		to += "?" + r.URL.RawQuery
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if r.Host != "" {
		to = scheme + "://" + r.Host + to
	}
	w.Header().Set("Location", to)
	w.WriteHeader(http.StatusMovedPermanently)
}

// nginxWriter makes net/http's responses look like nginx's: it sends the
// ETag header with nginx's spelling and replaces the body of every error
// response (including the plain-text ones of http.ServeContent) with
// nginx's error page.
type nginxWriter struct {
	http.ResponseWriter
	head    bool // a HEAD request: no body
	wrote   bool // the header was written
	swallow bool // an error page was written: drop the caller's body
}

// WriteHeader writes the response header; for an error status it also
// writes nginx's error page.
func (w *nginxWriter) WriteHeader(code int) {
	if w.wrote {
		return
	}
	w.wrote = true
	h := w.Header()
	if et, ok := h["Etag"]; ok {
		delete(h, "Etag")
		h["ETag"] = et
	}
	if code < 300 || code == http.StatusNotModified {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	body := errorPage(code)
	for _, k := range []string{"X-Content-Type-Options", "ETag", "Last-Modified", "Accept-Ranges"} {
		delete(h, k)
	}
	h.Set("Content-Type", "text/html")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if code != http.StatusBadRequest {
		h.Set("Connection", "keep-alive")
	} else {
		h.Set("Connection", "close")
	}
	w.ResponseWriter.WriteHeader(code)
	w.swallow = true
	if !w.head {
		w.ResponseWriter.Write(body) //nolint:errcheck // the client went away
	}
}

// Write writes body bytes, unless an error page replaced them.
func (w *nginxWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.swallow {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap returns the underlying ResponseWriter, for http.ResponseController.
func (w *nginxWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// statusTexts are nginx's reason phrases where they differ from Go's.
var statusTexts = map[int]string{
	http.StatusMethodNotAllowed:             "Not Allowed",
	http.StatusRequestEntityTooLarge:        "Request Entity Too Large",
	http.StatusRequestURITooLong:            "Request-URI Too Large",
	http.StatusRequestedRangeNotSatisfiable: "Requested Range Not Satisfiable",
	http.StatusServiceUnavailable:           "Service Temporarily Unavailable",
	http.StatusMovedPermanently:             "Moved Permanently",
}

func statusText(code int) string {
	if t, ok := statusTexts[code]; ok {
		return t
	}
	return http.StatusText(code)
}

// errorPage is nginx's built-in page for an error or redirect status.
func errorPage(code int) []byte {
	title := strconv.Itoa(code) + " " + statusText(code)
	return []byte("<html>\r\n<head><title>" + title + "</title></head>\r\n<body>\r\n<center><h1>" +
		title + "</h1></center>\r\n<hr><center>" + ServerHeader + "</center>\r\n</body>\r\n</html>\r\n")
}

// PlainHTTPResponse returns the complete response nginx sends, before
// closing the connection, to a client that speaks plain HTTP to its HTTPS
// port; now is the time for its Date header. A TLS server that recognises
// such a client (crypto/tls reports a tls.RecordHeaderError) can write it
// instead of closing silently or answering as Go's net/http would.
func PlainHTTPResponse(now time.Time) []byte {
	const title = "400 The plain HTTP request was sent to HTTPS port"
	body := "<html>\r\n<head><title>" + title + "</title></head>\r\n<body>\r\n" +
		"<center><h1>400 Bad Request</h1></center>\r\n" +
		"<center>The plain HTTP request was sent to HTTPS port</center>\r\n" +
		"<hr><center>" + ServerHeader + "</center>\r\n</body>\r\n</html>\r\n"
	return []byte("HTTP/1.1 400 Bad Request\r\n" +
		"Server: " + ServerHeader + "\r\n" +
		"Date: " + now.UTC().Format(http.TimeFormat) + "\r\n" +
		"Content-Type: text/html\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n" +
		"Connection: close\r\n\r\n" + body)
}
