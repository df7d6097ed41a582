package probes_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/commucat/commucat/probes"
)

// TestTracedHTTPTransportHeaderLimit checks that a response whose headers
// exceed MaxResponseHeader is refused: the headers go whole into the
// report, so a server or middlebox could otherwise make a fetch hold and
// write up to net/http's 10 MiB default.
func TestTracedHTTPTransportHeaderLimit(t *testing.T) {
	tests := []struct {
		name    string
		size    int
		wantErr bool
	}{
		{"within", probes.MaxResponseHeader / 2, false},
		{"over", probes.MaxResponseHeader + 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("X-Filler", strings.Repeat("a", tt.size))
				w.Write([]byte("ok"))
			}))
			defer srv.Close()
			env := probes.NewEnv(time.Now(), nil, nil)
			var st probes.Stage
			tr := probes.TracedHTTPTransport(env, env.Trace().NewTransaction(), "test", nil, &st, nil)
			defer tr.CloseIdleConnections()
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err == nil {
				resp.Body.Close()
			}
			if (err != nil) != tt.wantErr {
				t.Fatalf("%d bytes of headers: error %v, want an error: %v", tt.size, err, tt.wantErr)
			}
		})
	}
}
