package probes

import (
	"context"
	stdtls "crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"sync"

	"github.com/commucat/commucat/probes/ooni"
)

// Stage records how far an HTTP fetch got, for OONI's failed_operation:
// the operation under way and the failure string of the dial step that
// failed, if one did. It is safe for concurrent use; the zero value means
// "http_round_trip, no dial failure".
type Stage struct {
	mu      sync.Mutex
	op      string
	failure string
}

// Set records the operation under way and its failure ("" while it runs).
func (s *Stage) Set(op, failure string) {
	s.mu.Lock()
	s.op, s.failure = op, failure
	s.mu.Unlock()
}

// Get returns the operation and the dial failure recorded last.
func (s *Stage) Get() (op, failure string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.op == "" {
		return ooni.OpHTTPRoundTrip, s.failure
	}
	return s.op, s.failure
}

// MaxResponseHeader bounds the response headers a TracedHTTPTransport
// reads, as browsers bound them; a response with more fails. The headers
// are written whole into the report, unlike the body, of which only a
// snapshot is.
const MaxResponseHeader = 256 << 10

// TracedHTTPTransport returns an HTTP/1.1 transport without keep-alives
// that reads at most MaxResponseHeader bytes of response headers and
// whose resolves, connects and TLS handshakes go through env and are
// recorded in env's trace under transaction tx with tag, and whose progress
// is recorded in st. rootCAs verifies HTTPS servers (nil: the system's);
// wrap, if not nil, wraps each connected TCP conn (to count its bytes, say).
func TracedHTTPTransport(env *Env, tx int64, tag string, rootCAs *x509.CertPool, st *Stage, wrap func(net.Conn) net.Conn) *http.Transport {
	tr := env.Trace()
	dial := func(ctx context.Context, addr string) (net.Conn, string, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, "", err
		}
		st.Set(ooni.OpResolve, "")
		ip, err := env.Resolve(ctx, host)
		if err != nil {
			st.Set(ooni.OpResolve, ooni.Classify(err))
			return nil, "", err
		}
		a := net.JoinHostPort(ip, port)
		st.Set(ooni.OpConnect, "")
		t0 := env.Now()
		conn, err := env.Dial(ctx, "tcp", a)
		if f := tr.TCPConnect(tx, a, t0, err, tag); f != "" {
			st.Set(ooni.OpConnect, f)
			return nil, "", err
		}
		st.Set(ooni.OpHTTPRoundTrip, "")
		if wrap != nil {
			conn = wrap(conn)
		}
		return conn, a, nil
	}
	return &http.Transport{
		Proxy:                  nil,
		DisableKeepAlives:      true,
		MaxResponseHeaderBytes: MaxResponseHeader,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			c, _, err := dial(ctx, addr)
			return c, err
		},
		DialTLSContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			conn, a, err := dial(ctx, addr)
			if err != nil {
				return nil, err
			}
			host, _, _ := net.SplitHostPort(addr)
			st.Set(ooni.OpTLSHandshake, "")
			tc := stdtls.Client(conn, &stdtls.Config{ServerName: host, RootCAs: rootCAs, NextProtos: []string{"http/1.1"}, MinVersion: stdtls.VersionTLS12})
			h := ooni.Handshake{Address: a, ServerName: host, ALPN: []string{"http/1.1"}, Start: env.Now(), Tags: []string{tag}}
			h.Err = tc.HandshakeContext(ctx)
			if h.Err == nil {
				cs := tc.ConnectionState()
				h.State = &cs
			}
			if f := tr.TLSHandshake(tx, h); f != "" {
				conn.Close()
				st.Set(ooni.OpTLSHandshake, f)
				return nil, h.Err
			}
			st.Set(ooni.OpHTTPRoundTrip, "")
			return tc, nil
		},
	}
}
