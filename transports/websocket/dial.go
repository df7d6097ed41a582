package websocket

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	ws "github.com/coder/websocket"
	utls "github.com/refraction-networking/utls"

	"github.com/commucat/commucat/core/transport"
)

// userAgents are the User-Agent headers sent with each preset's
// ClientHello, so that the two tell the same story to a CDN in front of
// the gateway. A capture replayed from a file is taken to be Chrome's.
var userAgents = map[string]string{
	"chrome":  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/133.0.0.0 Safari/537.36",
	"edge":    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/85.0.4183.102 Safari/537.36 Edg/85.0.564.51",
	"firefox": "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:120.0) Gecko/20100101 Firefox/120.0",
	"safari":  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.0 Safari/605.1.15",
	"ios":     "Mozilla/5.0 (iPhone; CPU iPhone OS 14_8 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/14.1.2 Mobile/15E148 Safari/604.1",
}

// Dial connects to addr ("host:port"), runs the TLS handshake with the
// configured ClientHello and checks the server's certificate against the
// pin, then the WebSocket handshake on the secret path. ctx and
// Config.HandshakeTimeout bound all of it.
func (t *Transport) Dial(ctx context.Context, addr string) (net.Conn, error) {
	if !t.hasPin {
		return nil, fmt.Errorf("websocket: dial %s: transport has no pin: %w", addr, transport.ErrBadParams)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("websocket: dial %s: %w: %w", addr, err, transport.ErrBadParams)
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.HandshakeTimeout)
	defer cancel()
	var d net.Dialer
	tcp, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, dialErr(ctx, addr, err)
	}
	sni := t.cfg.SNI
	if sni == "" && net.ParseIP(host) == nil {
		sni = host
	}
	pin := t.pin
	ucfg := &utls.Config{
		ServerName: sni,
		// The pin replaces CA verification: VerifyPeerCertificate checks
		// the server's public key against it on every handshake, so
		// skipping the CA chain and host name checks loses nothing. The
		// certificate is self-signed, so a CA check could only fail.
		InsecureSkipVerify: true, //nolint:gosec // see above
		VerifyPeerCertificate: func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
			return verifyPin(pin, rawCerts)
		},
	}
	below := &batchConn{Conn: tcp}
	uc, err := t.hello.Client(below, ucfg, []string{"http/1.1"})
	if err != nil {
		tcp.Close()
		return nil, fmt.Errorf("websocket: dial %s: %w", addr, err)
	}
	if err := uc.HandshakeContext(ctx); err != nil {
		tcp.Close()
		return nil, dialErr(ctx, addr, err)
	}
	hostHeader := t.cfg.Host
	switch {
	case hostHeader != "":
	case t.cfg.SNI != "":
		hostHeader = t.cfg.SNI
	default:
		hostHeader = strings.TrimSuffix(addr, ":443")
	}
	above := &batchConn{Conn: uc}
	wc, err := t.upgrade(ctx, above, hostHeader)
	if err != nil {
		uc.Close()
		return nil, dialErr(ctx, addr, err)
	}
	return newConn(wc, above, batch{above: above, below: below}), nil
}

// upgrade runs the WebSocket handshake over the established TLS connection
// uc (the utls connection, or a wrapper of it). net/http writes the request and reads the response; its Transport
// gets uc as its only connection and speaks HTTP/1.1 on it.
func (t *Transport) upgrade(ctx context.Context, uc net.Conn, host string) (*ws.Conn, error) {
	used := false
	rt := &http.Transport{
		DialTLSContext: func(context.Context, string, string) (net.Conn, error) {
			if used {
				return nil, errors.New("websocket: the connection was used already")
			}
			used = true
			return uc, nil
		},
		// No h2: uc is not a *tls.Conn, so net/http would not try it, and
		// an empty TLSNextProto says so.
		TLSNextProto:           map[string]func(string, *tls.Conn) http.RoundTripper{},
		DisableKeepAlives:      true, // a refused upgrade closes uc; a 101 hands it over
		MaxResponseHeaderBytes: 64 << 10,
	}
	defer rt.CloseIdleConnections()
	client := &http.Client{
		Transport:     rt,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	ua, ok := userAgents[t.hello.String()]
	if !ok {
		ua = userAgents["chrome"]
	}
	header := http.Header{
		"User-Agent":               {ua},
		"Origin":                   {"https://" + host},
		"Cache-Control":            {"no-cache"},
		"Pragma":                   {"no-cache"},
		"Accept-Encoding":          {"gzip, deflate, br, zstd"},
		"Accept-Language":          {"en-US,en;q=0.9"},
		"Sec-WebSocket-Extensions": {"permessage-deflate; client_max_window_bits"}, // offered as browsers do; the server declines
	}
	wc, resp, err := ws.Dial(ctx, "https://"+host+t.cfg.Path, &ws.DialOptions{
		HTTPClient:      client,
		HTTPHeader:      header,
		Host:            host,
		CompressionMode: ws.CompressionDisabled,
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			if resp.Body != nil {
				io.Copy(io.Discard, resp.Body) //nolint:errcheck // at most 1 KiB, kept by coder/websocket
				resp.Body.Close()
			}
			return nil, fmt.Errorf("%w: %s", ErrRejected, resp.Status)
		}
		return nil, err
	}
	return wc, nil
}

// dialErr wraps a dial failure, preferring the context's reason.
func dialErr(ctx context.Context, addr string, err error) error {
	if ctx.Err() != nil && !errors.Is(err, ErrPinMismatch) {
		return ctxErr("dial "+addr, ctx)
	}
	return wrapErr("dial "+addr, err)
}
