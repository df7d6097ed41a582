package censor

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// MaxHTTPHead is how many bytes of a request ParseHTTPRequest reads at
// most: the request line and headers a censor inspects in the first
// packets.
const MaxHTTPHead = 8 << 10

// ErrNotHTTP is wrapped by ParseHTTPRequest's errors: the bytes do not
// start with an HTTP/1.x request line.
var ErrNotHTTP = errors.New("censor: not an http request")

// HTTPRequest is the part of an HTTP/1.x request a censor inspects.
type HTTPRequest struct {
	// Method, Target and Version are the request line's three fields.
	Method, Target, Version string
	// Host is the Host header's value, lower-cased, without port or
	// trailing dot; "" if absent.
	Host string
	// Complete reports whether the header section ended (an empty line)
	// within the bytes given; when false, a Host header may still follow.
	Complete bool
}

func notHTTP(format string, args ...any) error {
	return fmt.Errorf("censor: http: %s: %w", fmt.Sprintf(format, args...), ErrNotHTTP)
}

// ParseHTTPRequest reads the request line and headers at the start of a
// client's first bytes (at most MaxHTTPHead of them). It returns
// ErrNeedMore until the request line has ended, and an error wrapping
// ErrNotHTTP if the request line is not "METHOD SP target SP HTTP/x.y".
// Header lines without a colon are skipped, as lenient servers do. It
// never panics.
func ParseHTTPRequest(b []byte) (HTTPRequest, error) {
	var r HTTPRequest
	if len(b) > MaxHTTPHead {
		b = b[:MaxHTTPHead]
	}
	line, rest, ok := cutLine(b)
	if !ok {
		if len(b) == MaxHTTPHead {
			return r, notHTTP("request line longer than %d bytes", MaxHTTPHead)
		}
		if err := checkMethodPrefix(b); err != nil {
			return r, err
		}
		return r, ErrNeedMore
	}
	method, after, ok1 := bytes.Cut(line, []byte{' '})
	target, version, ok2 := bytes.Cut(after, []byte{' '})
	if !ok1 || !ok2 || len(method) == 0 || len(target) == 0 || !isToken(method) ||
		!bytes.HasPrefix(version, []byte("HTTP/1.")) || len(version) != 8 {
		return r, notHTTP("request line %q", truncateForError(line))
	}
	r.Method, r.Target, r.Version = string(method), string(target), string(version)
	for {
		line, rest, ok = cutLine(rest)
		if !ok {
			return r, nil
		}
		if len(line) == 0 {
			r.Complete = true
			return r, nil
		}
		name, value, ok := bytes.Cut(line, []byte{':'})
		if !ok || r.Host != "" || !strings.EqualFold(string(bytes.TrimSpace(name)), "host") {
			continue
		}
		r.Host = normalizeHost(string(bytes.TrimSpace(value)))
	}
}

// checkMethodPrefix rejects early a first line whose method is not a
// token or that has a control byte, so binary protocols are refused before
// a line ends.
func checkMethodPrefix(b []byte) error {
	method, _, _ := bytes.Cut(b, []byte{' '})
	if !isToken(method) && len(method) > 0 {
		return notHTTP("method %q", truncateForError(method))
	}
	for _, c := range b {
		if c < 0x20 && c != '\r' && c != '\t' || c == 0x7f {
			return notHTTP("control byte %#x in the request line", c)
		}
	}
	return nil
}

// cutLine splits b after the first LF, dropping the CR before it.
func cutLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return nil, b, false
	}
	line = b[:i]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, b[i+1:], true
}

// isToken reports whether b is an RFC 9110 token.
func isToken(b []byte) bool {
	for _, c := range b {
		if c <= 0x20 || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

func truncateForError(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// normalizeHost lower-cases a host name and strips a port and a trailing
// dot. IPv6 literals keep their brackets.
func normalizeHost(h string) string {
	h = strings.ToLower(h)
	if strings.HasPrefix(h, "[") {
		if i := strings.IndexByte(h, ']'); i >= 0 {
			return h[:i+1]
		}
		return h
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 {
		h = h[:i]
	}
	return strings.TrimSuffix(h, ".")
}

// DomainList is a list of blocked domains a host name (an SNI or an HTTP
// Host) is matched against, case-insensitively and ignoring a trailing
// dot. An entry "example.com" matches that name and every subdomain
// ("www.example.com", not "badexample.com"); an entry starting with "*"
// matches any name ending in the rest ("*example.com" matches
// "badexample.com" too), the way the GFW's suffix rules over-block.
type DomainList []string

// Match returns the first entry that matches host.
func (l DomainList) Match(host string) (string, bool) {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "" {
		return "", false
	}
	for _, e := range l {
		d := strings.TrimSuffix(strings.ToLower(e), ".")
		if suffix, ok := strings.CutPrefix(d, "*"); ok {
			if suffix != "" && strings.HasSuffix(host, suffix) {
				return e, true
			}
			continue
		}
		if host == d || strings.HasSuffix(host, "."+d) {
			return e, true
		}
	}
	return "", false
}

// HTTPRule holds the parameters of HTTP request censorship: the GFW
// inspects the request target (after %-decoding) and the Host header of
// the first request for blocked keywords and hosts (Rambert et al.,
// "Chinese Wall or Swiss Cheese? Keyword filtering in the Great Firewall
// of China", WWW 2021). A value, safe for concurrent use.
type HTTPRule struct {
	// Hosts are blocked hosts, matched against the Host header.
	Hosts DomainList `yaml:"hosts"`
	// Keywords are blocked substrings of the %-decoded target or of the
	// Host header, matched case-insensitively.
	Keywords []string `yaml:"keywords"`
}

// HTTPMatch says why a request matched an HTTPRule.
type HTTPMatch struct {
	// Field is "host" or "target".
	Field string
	// Entry is the matching Hosts entry or keyword.
	Entry string
}

// Match reports whether req is blocked by the rule, and why.
func (r HTTPRule) Match(req HTTPRequest) (HTTPMatch, bool) {
	if e, ok := r.Hosts.Match(req.Host); ok {
		return HTTPMatch{Field: "host", Entry: e}, true
	}
	target := req.Target
	if u, err := url.PathUnescape(target); err == nil {
		target = u
	}
	target = strings.ToLower(target)
	for _, k := range r.Keywords {
		if k == "" {
			continue
		}
		lk := strings.ToLower(k)
		if strings.Contains(target, lk) {
			return HTTPMatch{Field: "target", Entry: k}, true
		}
		if strings.Contains(req.Host, lk) {
			return HTTPMatch{Field: "host", Entry: k}, true
		}
	}
	return HTTPMatch{}, false
}
