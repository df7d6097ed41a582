package dns

import (
	"context"
	stdtls "crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/commucat/commucat/probes"
	"github.com/commucat/commucat/probes/probestest"
)

// TestDefaultDoHClientKeepsNoConnection checks that the default
// DNS-over-HTTPS client closes its connection when the lookup ends: an
// idle connection kept in the probe's pool would hold a socket and the
// transport's goroutines for as long as the probe exists.
func TestDefaultDoHClientKeepsNoConnection(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		name := "http1"
		if h2 {
			name = "http2"
		}
		t.Run(name, func(t *testing.T) {
			closed := make(chan struct{}, 8)
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(io.LimitReader(r.Body, 4096))
				var p dnsmessage.Parser
				h, err := p.Start(b)
				if err != nil {
					http.Error(w, "bad query", http.StatusBadRequest)
					return
				}
				q, err := p.Question()
				if err != nil {
					http.Error(w, "bad query", http.StatusBadRequest)
					return
				}
				resp, err := probestest.DNSResponse(h.ID, q, dnsmessage.RCodeSuccess, []netip.Addr{netip.MustParseAddr("93.184.215.14")})
				if err != nil {
					http.Error(w, err.Error(), http.StatusInternalServerError)
					return
				}
				w.Header().Set("Content-Type", "application/dns-message")
				w.Write(resp)
			}))
			srv.EnableHTTP2 = h2
			srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				if s == http.StateClosed {
					closed <- struct{}{}
				}
			}
			srv.StartTLS()
			defer srv.Close()

			p, err := New(Config{Domain: "ok.test", Control: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			// The default client verifies with the system's roots; trust
			// the test server's certificate instead.
			roots := x509.NewCertPool()
			roots.AddCert(srv.Certificate())
			p.cfg.HTTPClient.Transport.(*http.Transport).TLSClientConfig = &stdtls.Config{RootCAs: roots}

			l := p.doh(t.Context(), probes.NewEnv(time.Now(), nil, nil), srv.URL)
			if l.failure != "" || len(l.addrs) != 1 {
				t.Fatalf("lookup: failure %q, addrs %v", l.failure, l.addrs)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			select {
			case <-closed:
			case <-ctx.Done():
				t.Fatal("the DoH connection is still open after the lookup ended")
			}
		})
	}
}
