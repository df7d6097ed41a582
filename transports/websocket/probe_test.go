package websocket

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	ws "github.com/coder/websocket"
	"github.com/google/go-cmp/cmp"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/transports/decoy"
)

// decoyResponse is what decoy.Handler answers to a request, for
// comparison with what the gateway answers on the wire.
func decoyResponse(t *testing.T, method, path string) (int, []byte) {
	t.Helper()
	w := httptest.NewRecorder()
	decoy.Handler().ServeHTTP(w, httptest.NewRequest(method, "https://example.com"+path, nil))
	return w.Code, w.Body.Bytes()
}

// browser is an HTTPS client with crypto/tls that trusts any certificate,
// as a prober that only wants to see the site would be.
func browser(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // a prober
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func randomPath(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b) //nolint:errcheck // never fails
	return "/" + base64.RawURLEncoding.EncodeToString(b)
}

// TestProbing checks that everyone but a client that knows the secret
// path sees the decoy site, byte for byte.
func TestProbing(t *testing.T) {
	client, server, pub := pair(t)
	ln := listen(t, server)
	base := "https://" + ln.Addr().String()
	hc := browser(t)

	type probe struct {
		name   string
		method string
		path   string
		header http.Header
		// want is the path whose decoy answer is expected.
		want string
	}
	probes := []probe{
		{name: "home", method: "GET", path: "/", want: "/"},
		{name: "head home", method: "HEAD", path: "/", want: "/"},
		{name: "style", method: "GET", path: "/style.css", want: "/style.css"},
		{name: "secret path without upgrade", method: "GET", path: pub["path"], want: pub["path"]},
		{name: "secret path, post", method: "POST", path: pub["path"], want: pub["path"]},
		{name: "secret path, bad version", method: "GET", path: pub["path"], want: pub["path"], header: http.Header{
			"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"12"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="},
		}},
		{name: "secret path, bad key", method: "GET", path: pub["path"], want: pub["path"], header: http.Header{
			"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"}, "Sec-Websocket-Key": {"short"},
		}},
		{name: "secret path with a suffix", method: "GET", path: pub["path"] + "x", want: pub["path"] + "x"},
	}
	for i, n := range []int{16, 16, 8, 3, 24} {
		p := randomPath(t, n)
		probes = append(probes, probe{name: "random " + string(rune('a'+i)), method: "GET", path: p, want: p})
	}
	for _, p := range probes {
		t.Run(p.name, func(t *testing.T) {
			req, err := http.NewRequest(p.method, base+p.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range p.header {
				req.Header[k] = v
			}
			res, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			wantCode, wantBody := decoyResponse(t, p.method, p.want)
			if res.StatusCode != wantCode {
				t.Errorf("status %d, want the site's %d", res.StatusCode, wantCode)
			}
			if !bytes.Equal(body, wantBody) {
				t.Errorf("body differs from the site's (%d bytes, want %d)", len(body), len(wantBody))
			}
			if got := res.Header.Get("Server"); got != decoy.ServerHeader {
				t.Errorf("Server %q", got)
			}
			if res.Proto != "HTTP/1.1" {
				t.Errorf("protocol %s, want HTTP/1.1", res.Proto)
			}
		})
	}

	t.Run("upgrade on a wrong path", func(t *testing.T) {
		for _, p := range []string{"/", randomPath(t, 16), "/ws"} {
			wantCode, wantBody := decoyResponse(t, "GET", p)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, res, err := ws.Dial(ctx, base+p, &ws.DialOptions{HTTPClient: hc})
			if err == nil {
				c.CloseNow()
				t.Fatalf("%s: WebSocket upgrade succeeded", p)
			}
			if res == nil {
				t.Fatalf("%s: no response: %v", p, err)
			}
			body, _ := io.ReadAll(res.Body) // coder/websocket keeps the first 1 KiB
			if res.StatusCode != wantCode {
				t.Errorf("%s: status %d, want the site's %d", p, res.StatusCode, wantCode)
			}
			if len(body) == 0 || !bytes.HasPrefix(wantBody, body) {
				t.Errorf("%s: body is not the site's", p)
			}
		}
	})

	t.Run("our client on a wrong path", func(t *testing.T) {
		wrong := transport.Params{"pin": pub["pin"], "path": randomPath(t, 16)}
		tr, err := Factory(wrong)
		if err != nil {
			t.Fatal(err)
		}
		c, err := tr.Dial(context.Background(), ln.Addr().String())
		if err == nil {
			c.Close()
			t.Fatal("Dial on a wrong path succeeded")
		}
		if !errors.Is(err, ErrRejected) || !errors.Is(err, transport.ErrRefused) {
			t.Errorf("Dial on a wrong path: %v; want ErrRejected and transport.ErrRefused", err)
		}
	})

	t.Run("secret path upgrades", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := client.Dial(ctx, ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := ln.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		go s.Write([]byte("hello")) //nolint:errcheck // checked by the read
		got := make([]byte, 5)
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "hello" {
			t.Fatalf("read %q, %v", got, err)
		}
	})

	t.Run("no compression", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, res, err := ws.Dial(ctx, base+pub["path"], &ws.DialOptions{HTTPClient: hc, CompressionMode: ws.CompressionContextTakeover})
		if err != nil {
			t.Fatal(err)
		}
		if ext := res.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
			t.Errorf("server accepted extensions %q", ext)
		}
		if got := res.Header.Get("Server"); got != decoy.ServerHeader {
			t.Errorf("101 response has Server %q", got)
		}
		s, err := ln.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c.CloseNow() // this client never reads: it could not answer a close handshake
		s.Close()
	})
}

// TestPlainHTTP checks that plain HTTP on the TLS port gets nginx's answer,
// not net/http's.
func TestPlainHTTP(t *testing.T) {
	_, server, _ := pair(t)
	ln := listen(t, server)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second)) //nolint:errcheck // a fresh conn
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	want := decoy.PlainHTTPResponse(time.Now())
	// The Date header may differ by a second: compare the rest.
	strip := func(b []byte) string {
		var out []string
		for l := range strings.SplitSeq(string(b), "\r\n") {
			if !strings.HasPrefix(l, "Date: ") {
				out = append(out, l)
			}
		}
		return strings.Join(out, "\r\n")
	}
	if diff := cmp.Diff(strip(want), strip(got)); diff != "" {
		t.Errorf("answer to plain HTTP (-want +got):\n%s", diff)
	}
}

// TestGarbage checks that bytes that are neither TLS nor HTTP get the
// connection closed without an answer, and that the listener goes on.
func TestGarbage(t *testing.T) {
	client, server, _ := pair(t)
	ln := listen(t, server)
	for _, junk := range [][]byte{{0x16, 0x03, 0x01, 0x00, 0x01, 0x00}, []byte("SSH-2.0-OpenSSH_9.6\r\n"), bytes.Repeat([]byte{0xff}, 600)} {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second)) //nolint:errcheck // a fresh conn
		c.Write(junk)                                   //nolint:errcheck // the server may close first
		c.(*net.TCPConn).CloseWrite()                   //nolint:errcheck // as above; an incomplete record would wait for more
		got, _ := io.ReadAll(c)
		c.Close()
		if bytes.Contains(got, []byte("HTTP/")) || bytes.Contains(got, []byte("Client sent")) {
			t.Errorf("answer to %q: %q", junk, got)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, ln.Addr().String())
	if err != nil {
		t.Fatalf("Dial after garbage: %v", err)
	}
	c.Close()
	if s, err := ln.Accept(ctx); err == nil {
		s.Close()
	}
}

func TestWrongPin(t *testing.T) {
	client, server, pub := pair(t)
	_, _, other := pair(t)
	ln := listen(t, server)
	bad, err := Factory(transport.Params{"pin": other["pin"], "path": pub["path"]})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := bad.Dial(ctx, ln.Addr().String())
	if err == nil {
		c.Close()
		t.Fatal("Dial with the wrong pin succeeded")
	}
	if !errors.Is(err, ErrPinMismatch) {
		t.Errorf("Dial with the wrong pin: %v; want ErrPinMismatch", err)
	}
	if strings.Contains(err.Error(), pub["path"]) {
		t.Error("error names the secret path")
	}
	// The listener goes on serving.
	c, err = client.Dial(ctx, ln.Addr().String())
	if err != nil {
		t.Fatalf("Dial with the right pin after a wrong one: %v", err)
	}
	defer c.Close()
	s, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}
