package web

import (
	"bytes"
	"net/http"
	"regexp"
	"strings"
	"unicode/utf8"
)

// Page is what a fetch got: the status, the headers and the start of the
// body.
type Page struct {
	Status int
	Header http.Header
	Body   []byte
	// Length is how many body bytes were read in all (Body may hold
	// fewer).
	Length int64
}

// Diff compares a page fetched over the network under test with a control
// fetch of the same URL, as OONI's web_connectivity does.
type Diff struct {
	StatusMatch bool
	// BodyProportion is the shorter body's length over the longer's (1
	// for two empty bodies); BodyLengthMatch is BodyProportion > 0.7.
	BodyProportion  float64
	BodyLengthMatch bool
	// HeadersMatch: the uncommon header names of the two pages overlap,
	// or neither has any.
	HeadersMatch bool
	// TitleMatch: the titles share their first word of five letters or
	// more, or are both empty.
	TitleMatch bool
}

// Consistent reports whether the pages are the same as OONI judges it: the
// same status and one of body length, headers or title matching.
func (d Diff) Consistent() bool {
	return d.StatusMatch && (d.BodyLengthMatch || d.HeadersMatch || d.TitleMatch)
}

// Compare compares target with control.
func Compare(target, control Page) Diff {
	d := Diff{StatusMatch: target.Status == control.Status}
	a, b := target.Length, control.Length
	if a == 0 && b == 0 {
		d.BodyProportion = 1
	} else {
		d.BodyProportion = float64(min(a, b)) / float64(max(a, b))
	}
	d.BodyLengthMatch = d.BodyProportion > 0.7
	ta, tb := uncommonHeaders(target.Header), uncommonHeaders(control.Header)
	if len(ta) == 0 && len(tb) == 0 {
		d.HeadersMatch = true
	}
	for h := range ta {
		if tb[h] {
			d.HeadersMatch = true
			break
		}
	}
	wa, wb := titleWord(Title(target.Body)), titleWord(Title(control.Body))
	d.TitleMatch = wa == wb
	return d
}

// commonHeaders are the header names OONI ignores when it compares
// headers, since nearly every server sends them.
var commonHeaders = map[string]bool{
	"Date": true, "Content-Type": true, "Server": true, "Cache-Control": true, "Vary": true,
	"Set-Cookie": true, "Location": true, "Expires": true, "X-Powered-By": true,
	"Content-Encoding": true, "Last-Modified": true, "Accept-Ranges": true, "Pragma": true,
	"X-Frame-Options": true, "Etag": true, "X-Content-Type-Options": true, "Age": true,
	"Via": true, "P3p": true, "X-Xss-Protection": true, "Content-Language": true,
	"Cf-Ray": true, "Strict-Transport-Security": true, "Link": true, "X-Varnish": true,
	"Content-Length": true, "Connection": true, "Transfer-Encoding": true,
}

func uncommonHeaders(h http.Header) map[string]bool {
	out := map[string]bool{}
	for k := range h {
		k = http.CanonicalHeaderKey(k)
		if !commonHeaders[k] {
			out[k] = true
		}
	}
	return out
}

var titleRe = regexp.MustCompile(`(?is)<title[^>]*>(.*?)</title>`)

// maxTitleScan bounds how much of a body Title looks at.
const maxTitleScan = 64 << 10

// Title returns the text of the first <title> element in the first 64 KiB
// of body, with runs of spaces collapsed; "" if there is none or it is
// not valid UTF-8.
func Title(body []byte) string {
	if len(body) > maxTitleScan {
		body = body[:maxTitleScan]
	}
	m := titleRe.FindSubmatch(body)
	if m == nil || !utf8.Valid(m[1]) {
		return ""
	}
	t := strings.Join(strings.Fields(string(m[1])), " ")
	if len(t) > 256 {
		t = t[:256]
		for !utf8.ValidString(t) {
			t = t[:len(t)-1]
		}
	}
	return t
}

// titleWord returns the first word of five or more letters of t, lower
// case.
func titleWord(t string) string {
	for _, w := range strings.Fields(t) {
		if utf8.RuneCountInString(w) >= 5 {
			return strings.ToLower(w)
		}
	}
	return ""
}

// MatchBlockPage returns the first of patterns found in body (compared
// without regard to case), or "".
func MatchBlockPage(body []byte, patterns []string) string {
	lower := bytes.ToLower(body)
	for _, p := range patterns {
		if p != "" && bytes.Contains(lower, bytes.ToLower([]byte(p))) {
			return p
		}
	}
	return ""
}
