package web_test

import (
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/commucat/commucat/probes/web"
)

// FuzzCompare checks that no pair of bodies panics the comparison, that
// the comparison is symmetric and that titles are one line of UTF-8.
func FuzzCompare(f *testing.F) {
	f.Add([]byte("<title>Welcome to Example</title><p>x"), []byte("<title>Access denied</title>"))
	f.Add([]byte("<TITLE>\n  a  </TITLE>"), []byte(""))
	f.Add([]byte("<title><title></title></title>"), []byte("\xff<title>\xfe</title>"))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		pa := web.Page{Status: 200, Header: http.Header{"X-A": {"1"}}, Body: a, Length: int64(len(a))}
		pb := web.Page{Status: 200, Header: http.Header{"X-A": {"1"}}, Body: b, Length: int64(len(b))}
		if web.Compare(pa, pb) != web.Compare(pb, pa) {
			t.Fatal("Compare is not symmetric")
		}
		for _, body := range [][]byte{a, b} {
			title := web.Title(body)
			if !utf8.ValidString(title) || strings.ContainsAny(title, "\n\r\t") || len(title) > 256 {
				t.Fatalf("Title = %q", title)
			}
		}
		web.MatchBlockPage(a, []string{string(b)})
	})
}
