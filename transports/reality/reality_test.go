package reality

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	utls "github.com/refraction-networking/utls"
	"go.uber.org/goleak"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/core/transport/transporttest"
	"github.com/commucat/commucat/transports/fingerprint"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// coverName is the name the test cover's certificate holds (httptest's
// certificate is for example.com and 127.0.0.1).
const coverName = "example.com"

// coverPage is what the cover site serves.
const coverPage = "the cover site's page\n"

// cover is a local HTTPS site standing in for the cover.
type cover struct {
	*httptest.Server
	conns chan struct{} // one value per new TCP connection
}

func newCover(t testing.TB) *cover {
	t.Helper()
	c := &cover{conns: make(chan struct{}, 1024)}
	c.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, coverPage)
	}))
	c.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			select {
			case c.conns <- struct{}{}:
			default:
			}
		}
	}
	c.Config.ErrorLog = log.New(io.Discard, "", 0)
	c.StartTLS()
	t.Cleanup(c.Close)
	return c
}

// addr is the cover's host:port.
func (c *cover) addr() string { return c.Listener.Addr().String() }

// leaf is the DER of the cover's certificate.
func (c *cover) leaf() []byte { return c.Certificate().Raw }

// waitConn waits until the cover has seen one more connection.
func (c *cover) waitConn(t *testing.T) {
	t.Helper()
	select {
	case <-c.conns:
	case <-t.Context().Done():
		t.Fatal("the cover saw no connection")
	}
}

// drainConns forgets the connections the cover saw so far.
func (c *cover) drainConns() {
	for {
		select {
		case <-c.conns:
		default:
			return
		}
	}
}

// setup returns a gateway transport made by ServerFactory (relaying to cv)
// and a client made by Factory from the public parameters.
func setup(t testing.TB, cv *cover, extra transport.Params) (client, server *Transport, pub transport.Params) {
	t.Helper()
	p := transport.Params{"dest": cv.addr(), "sni": coverName + ",www." + coverName, "sid": "0123456789abcdef"}
	for k, v := range extra {
		p[k] = v
	}
	st, pub, err := ServerFactory(p, t.TempDir())
	if err != nil {
		t.Fatalf("ServerFactory: %v", err)
	}
	cpub := transport.Params{}
	for k, v := range pub {
		cpub[k] = v
	}
	cpub["sni"] = coverName // the cover's certificate names only this one
	ct, err := Factory(cpub)
	if err != nil {
		t.Fatalf("Factory(%v): %v", pub, err)
	}
	return ct.(*Transport), st.(*Transport), pub
}

// listen starts a gateway listener closed when the test ends.
func listen(t testing.TB, server *Transport) transport.Listener {
	t.Helper()
	ln, err := server.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// connect dials ln and accepts the connection.
func connect(t testing.TB, client *Transport, ln transport.Listener) (c, s net.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, ln.Addr().String())
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	s, err = ln.Accept(ctx)
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return c, s
}

// exchange checks that c and s carry a message each way.
func exchange(t *testing.T, c, s net.Conn) {
	t.Helper()
	go func() {
		buf := make([]byte, 5)
		if _, err := io.ReadFull(s, buf); err == nil {
			s.Write(bytes.ToUpper(buf))
		}
	}()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "HELLO" {
		t.Fatalf("exchange: %q, %v", buf, err)
	}
}

func TestConformance(t *testing.T) {
	cv := newCover(t)
	transporttest.Run(t, func(t *testing.T) (transport.Transport, transport.Transport, string) {
		client, server, _ := setup(t, cv, nil)
		return client, server, "127.0.0.1:0"
	})
}

// TestProbeGoTLS: an unauthenticated crypto/tls client reaches the cover
// through the gateway, sees its certificate and gets its page.
func TestProbeGoTLS(t *testing.T) {
	cv := newCover(t)
	_, server, _ := setup(t, cv, nil)
	ln := listen(t, server)
	pool := x509.NewCertPool()
	pool.AddCert(cv.Certificate())
	// One name the gateway serves and one it does not: both reach the cover.
	for _, name := range []string{coverName, "unknown.example"} {
		t.Run(name, func(t *testing.T) {
			cfg := &tls.Config{ServerName: name, RootCAs: pool}
			if name != coverName {
				cfg.InsecureSkipVerify = true // the cover's certificate names only coverName
			}
			c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
			if err != nil {
				t.Fatalf("handshake through the gateway: %v", err)
			}
			defer c.Close()
			if got := c.ConnectionState().PeerCertificates[0].Raw; !bytes.Equal(got, cv.leaf()) {
				t.Fatal("the certificate is not the cover's")
			}
			fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", coverName)
			resp, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if !bytes.HasSuffix(resp, []byte(coverPage)) {
				t.Errorf("response %q does not end with the cover page", resp)
			}
		})
	}
}

// TestProbeOpenSSL: openssl s_client through the gateway sees the
// cover's certificate and page.
func TestProbeOpenSSL(t *testing.T) {
	bin, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("COMMUCAT_REQUIRE_ALL") == "1" {
			t.Fatalf("openssl not installed and COMMUCAT_REQUIRE_ALL=1")
		}
		t.Log("openssl not installed; skipping the s_client probe")
		t.SkipNow()
	}
	cv := newCover(t)
	_, server, _ := setup(t, cv, nil)
	ln := listen(t, server)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "s_client", "-connect", ln.Addr().String(), "-servername", coverName, "-ign_eof")
	cmd.Stdin = strings.NewReader("GET / HTTP/1.1\r\nHost: " + coverName + "\r\nConnection: close\r\n\r\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openssl s_client: %v\n%s", err, out)
	}
	block, _ := pem.Decode(out[bytes.Index(out, []byte("-----BEGIN CERTIFICATE-----")):])
	if block == nil {
		t.Fatalf("no certificate in the output:\n%s", out)
	}
	if !bytes.Equal(block.Bytes, cv.leaf()) {
		t.Error("s_client saw a certificate that is not the cover's")
	}
	if !bytes.Contains(out, []byte(coverPage)) {
		t.Errorf("s_client did not get the cover page:\n%s", out)
	}
}

// talk sends msg to addr, half-closes and returns everything the server
// says until it closes.
func talk(t *testing.T, addr string, msg []byte) []byte {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		c.Write(msg)
		c.(*net.TCPConn).CloseWrite()
	}()
	resp, _ := io.ReadAll(c) // a reset after the response is fine
	return resp
}

// TestProbeBytes: whatever a prober sends, it gets what the cover itself
// would answer.
func TestProbeBytes(t *testing.T) {
	cv := newCover(t)
	_, server, _ := setup(t, cv, nil)
	ln := listen(t, server)
	rnd := mrand.New(mrand.NewPCG(7, 7))
	random := make([]byte, 3000)
	for i := range random {
		random[i] = byte(rnd.Uint32())
	}
	for _, tc := range []struct {
		name string
		msg  []byte
	}{
		{"random bytes", random},
		// Exactly the five bytes crypto/tls reads before it answers plain
		// HTTP: with more, the cover closes with unread data, the kernel
		// resets, and whether the answer survives the reset is a race, for
		// a direct prober as for one through the gateway.
		{"plain http", []byte("GET /")},
		{"tls record of garbage", append([]byte{0x16, 3, 1, 0, 40}, random[:40]...)},
		{"short hello", []byte{0x16, 3, 1, 0, 4, 1, 0, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			direct := talk(t, cv.addr(), tc.msg)
			cv.drainConns()
			via := talk(t, ln.Addr().String(), tc.msg)
			cv.waitConn(t)
			t.Logf("the cover answered %d bytes: %.40q", len(direct), direct)
			if !bytes.Equal(direct, via) {
				t.Errorf("through the gateway %q, directly %q", via, direct)
			}
		})
	}
}

// recorder is a TCP proxy in front of the gateway that captures each
// client's ClientHello as it passes.
type recorder struct {
	ln     net.Listener
	mu     sync.Mutex
	hellos [][]byte
	wg     sync.WaitGroup
}

func newRecorder(t *testing.T, upstream string) *recorder {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{ln: l}
	r.wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			r.wg.Go(func() {
				defer c.Close()
				raw, err := fingerprint.Capture(t.Context(), c)
				if err != nil {
					return
				}
				r.mu.Lock()
				r.hellos = append(r.hellos, raw)
				r.mu.Unlock()
				u, err := net.Dial("tcp", upstream)
				if err != nil {
					return
				}
				defer u.Close()
				u.Write(raw)
				var wg sync.WaitGroup
				wg.Go(func() { pipe(u, c) })
				pipe(c, u)
				wg.Wait()
			})
		}
	})
	t.Cleanup(func() {
		l.Close()
		r.wg.Wait()
	})
	return r
}

func (r *recorder) last(t *testing.T) []byte {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.hellos) == 0 {
		t.Fatal("no hello recorded")
	}
	return r.hellos[len(r.hellos)-1]
}

// TestReplay: a recorded authenticated hello, sent again, goes to the
// cover; the gateway accepts nothing for it.
func TestReplay(t *testing.T) {
	cv := newCover(t)
	client, server, _ := setup(t, cv, nil)
	ln := listen(t, server)
	rec := newRecorder(t, ln.Addr().String())
	ctx := t.Context()
	c, err := client.Dial(ctx, rec.ln.Addr().String())
	if err != nil {
		t.Fatalf("Dial through the recorder: %v", err)
	}
	s, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	exchange(t, c, s)
	c.Close()
	s.Close()
	hello := rec.last(t)

	cv.drainConns()
	r, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Write(hello); err != nil {
		t.Fatal(err)
	}
	cv.waitConn(t)
	// The cover answers the replayed hello with its own ServerHello.
	hdr := make([]byte, 6)
	if _, err := io.ReadFull(r, hdr); err != nil {
		t.Fatalf("no answer to the replay: %v", err)
	}
	if hdr[0] != 0x16 || hdr[5] != 2 {
		t.Errorf("answer to the replay starts %x, want a ServerHello", hdr)
	}
	// The next connection Accept returns is a fresh client's, not the replay.
	c2, s2 := connect(t, client, ln)
	exchange(t, c2, s2)
}

// TestShape: our client's hello on the wire has Chrome's shape, not
// crypto/tls's, and names the cover.
func TestShape(t *testing.T) {
	cv := newCover(t)
	client, server, _ := setup(t, cv, nil)
	ln := listen(t, server)
	rec := newRecorder(t, ln.Addr().String())
	c, err := client.Dial(t.Context(), rec.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if s, err := ln.Accept(t.Context()); err == nil {
		s.Close()
	}
	ours, err := fingerprint.Summarize(rec.last(t))
	if err != nil {
		t.Fatal(err)
	}
	if ours.ServerName != coverName {
		t.Errorf("server name %q, want %q", ours.ServerName, coverName)
	}
	chrome, err := fingerprint.Summarize(captureFrom(t, func(c net.Conn) error {
		uc, err := fingerprint.Hello{}.Client(c, &utls.Config{ServerName: coverName}, nil)
		if err != nil {
			return err
		}
		return uc.HandshakeContext(t.Context())
	}))
	if err != nil {
		t.Fatal(err)
	}
	if !ours.SameShape(chrome) {
		t.Errorf("our hello is not chrome's shape:\n%s", cmp.Diff(chrome, ours))
	}
	goTLS, err := fingerprint.Summarize(captureFrom(t, func(c net.Conn) error {
		return tls.Client(c, &tls.Config{ServerName: coverName}).HandshakeContext(t.Context())
	}))
	if err != nil {
		t.Fatal(err)
	}
	if ours.SameShape(goTLS) {
		t.Error("our hello has crypto/tls's shape")
	}
}

// captureFrom runs dial against a loopback listener and returns the hello
// it sent.
func captureFrom(t *testing.T, dial func(net.Conn) error) []byte {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			return
		}
		defer c.Close()
		dial(c) // fails when the listener hangs up
	}()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := fingerprint.Capture(t.Context(), c)
	c.Close()
	<-done
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestClientRejected: clients the gateway does not accept end up at the
// cover and fail with ErrServerAuth.
func TestClientRejected(t *testing.T) {
	cv := newCover(t)
	client, server, _ := setup(t, cv, nil)
	ln := listen(t, server)
	other, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	base := *client.client
	for _, tc := range []struct {
		name  string
		tweak func(c *ClientConfig)
		err   error
	}{
		{"accepted", func(*ClientConfig) {}, nil},
		{"wrong pbk", func(c *ClientConfig) { c.PublicKey = other.PublicKey() }, ErrServerAuth},
		{"wrong sid", func(c *ClientConfig) { c.ShortID[0] ^= 1 }, ErrServerAuth},
		{"clock 3 min fast", func(c *ClientConfig) { c.now = func() time.Time { return time.Now().Add(3 * time.Minute) } }, ErrServerAuth},
		{"clock 3 min slow", func(c *ClientConfig) { c.now = func() time.Time { return time.Now().Add(-3 * time.Minute) } }, ErrServerAuth},
		{"clock 1 min fast", func(c *ClientConfig) { c.now = func() time.Time { return time.Now().Add(time.Minute) } }, nil},
		{"firefox", func(c *ClientConfig) { c.Hello, _ = fingerprint.Preset("firefox") }, nil},
		{"safari", func(c *ClientConfig) { c.Hello, _ = fingerprint.Preset("safari") }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			tc.tweak(&cfg)
			ct := &Transport{client: &cfg}
			cv.drainConns()
			c, err := ct.Dial(t.Context(), ln.Addr().String())
			if !errors.Is(err, tc.err) {
				t.Fatalf("Dial: %v, want %v", err, tc.err)
			}
			if err != nil {
				t.Logf("Dial: %v", err)
				cv.waitConn(t)
				return
			}
			defer c.Close()
			s, err := ln.Accept(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			exchange(t, c, s)
		})
	}
}

// TestServerFactory covers parameters, key persistence and modes.
func TestServerFactory(t *testing.T) {
	dir := t.TempDir()
	good := transport.Params{"dest": "127.0.0.1:443", "sni": "example.com, www.example.com", "sid": "00aa"}
	_, pub1, err := ServerFactory(good, dir)
	if err != nil {
		t.Fatal(err)
	}
	want := transport.Params{"pbk": pub1["pbk"], "sni": "example.com,www.example.com", "sid": "00aa000000000000", "fp": "chrome"}
	if diff := cmp.Diff(want, pub1); diff != "" {
		t.Errorf("public params (-want +got):\n%s", diff)
	}
	_, pub2, err := ServerFactory(good, dir)
	if err != nil {
		t.Fatal(err)
	}
	if pub1["pbk"] != pub2["pbk"] {
		t.Error("the key changed across restarts")
	}
	for _, f := range []string{KeyFile, CertKeyFile} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v", f, fi.Mode().Perm())
		}
	}
	os.Chmod(filepath.Join(dir, KeyFile), 0o644)
	if _, _, err := ServerFactory(good, dir); err == nil {
		t.Error("a world-readable key file was accepted")
	}
	_, pub3, err := ServerFactory(transport.Params{"dest": "cover.example:443", "sni": "cover.example"}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := pub3["sid"]; ok {
		t.Errorf("sid published without one configured: %v", pub3)
	}
	for _, tc := range []struct {
		name  string
		p     transport.Params
		param string
	}{
		{"no dest", transport.Params{"sni": "a.example"}, "dest"},
		{"bad dest", transport.Params{"dest": "nohost", "sni": "a.example"}, "dest"},
		{"bad port", transport.Params{"dest": "a.example:0", "sni": "a.example"}, "dest"},
		{"no sni", transport.Params{"dest": "a.example:443"}, "sni"},
		{"ip sni", transport.Params{"dest": "a.example:443", "sni": "10.0.0.1"}, "sni"},
		{"bad sni", transport.Params{"dest": "a.example:443", "sni": "a b"}, "sni"},
		{"bad sid", transport.Params{"dest": "a.example:443", "sni": "a.example", "sid": "xyz"}, "sid"},
		{"long sid", transport.Params{"dest": "a.example:443", "sni": "a.example", "sid": "0011223344556677aa"}, "sid"},
		{"bad fp", transport.Params{"dest": "a.example:443", "sni": "a.example", "fp": "netscape"}, "fp"},
		{"unknown", transport.Params{"dest": "a.example:443", "sni": "a.example", "color": "red"}, "color"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ServerFactory(tc.p, t.TempDir())
			if !errors.Is(err, transport.ErrBadParams) || !strings.Contains(err.Error(), tc.param) {
				t.Errorf("ServerFactory: %v; want ErrBadParams naming %q", err, tc.param)
			}
		})
	}
}

func TestFactory(t *testing.T) {
	k, err := GenerateKeys()
	if err != nil {
		t.Fatal(err)
	}
	pbk := EncodePublicKey(k.Static.PublicKey())
	for _, tc := range []struct {
		name  string
		p     transport.Params
		param string // "" if valid
	}{
		{"minimal", transport.Params{"pbk": pbk, "sni": "a.example"}, ""},
		{"full", transport.Params{"pbk": pbk, "sni": "a.example,b.example", "sid": "0123456789abcdef", "fp": "firefox"}, ""},
		{"no pbk", transport.Params{"sni": "a.example"}, "pbk"},
		{"short pbk", transport.Params{"pbk": pbk[:40], "sni": "a.example"}, "pbk"},
		{"low-order pbk", transport.Params{"pbk": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "sni": "a.example"}, "pbk"},
		{"no sni", transport.Params{"pbk": pbk}, "sni"},
		{"file fp", transport.Params{"pbk": pbk, "sni": "a.example", "fp": "file:/etc/passwd"}, "fp"},
		{"unknown", transport.Params{"pbk": pbk, "sni": "a.example", "dest": "x:1"}, "dest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Factory(tc.p)
			switch {
			case tc.param == "" && err != nil:
				t.Errorf("Factory: %v", err)
			case tc.param != "" && (!errors.Is(err, transport.ErrBadParams) || !strings.Contains(err.Error(), tc.param)):
				t.Errorf("Factory: %v; want ErrBadParams naming %q", err, tc.param)
			}
		})
	}
}

// TestWrongSide: a client cannot listen and a gateway cannot dial.
func TestWrongSide(t *testing.T) {
	cv := newCover(t)
	client, server, _ := setup(t, cv, nil)
	if _, err := client.Listen(t.Context(), "127.0.0.1:0"); !errors.Is(err, transport.ErrUnsupported) {
		t.Errorf("client Listen: %v", err)
	}
	if _, err := server.Dial(t.Context(), "127.0.0.1:1"); !errors.Is(err, transport.ErrUnsupported) {
		t.Errorf("gateway Dial: %v", err)
	}
}

// TestListenerCloseStopsRelays: closing the listener ends relays to the
// cover and handshakes in progress (goleak checks the goroutines).
func TestListenerCloseStopsRelays(t *testing.T) {
	cv := newCover(t)
	_, server, _ := setup(t, cv, nil)
	ln := listen(t, server)
	// A relayed connection that stays open, and one stuck mid-hello.
	relayed, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer relayed.Close()
	cv.drainConns()
	relayed.Write([]byte("GET / HTTP/1.1\r\nHost: example.com\r\n"))
	cv.waitConn(t)
	stuck, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	stuck.Write([]byte{0x16, 3, 1, 0, 100})
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []net.Conn{relayed, stuck} {
		if _, err := io.ReadAll(c); err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
			t.Errorf("read after listener close: %v", err)
		}
	}
}

// TestFactoryWithHello: a local hello replaces the invite's preset, and
// the gateway accepts a client replaying a captured hello.
func TestFactoryWithHello(t *testing.T) {
	cv := newCover(t)
	_, server, pub := setup(t, cv, nil)
	ln := listen(t, server)
	raw := captureFrom(t, func(c net.Conn) error {
		h, _ := fingerprint.Preset("chrome")
		uc, err := h.Client(c, &utls.Config{ServerName: "localhost"}, nil)
		if err != nil {
			return err
		}
		return uc.HandshakeContext(t.Context())
	})
	path := filepath.Join(t.TempDir(), "browser.hello")
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := fingerprint.FromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p := transport.Params{"pbk": pub["pbk"], "sni": coverName, "sid": pub["sid"], "fp": "firefox"}
	ct, err := FactoryWithHello(h)(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := ct.(*Transport).client.Hello.String(); got != "file:"+path {
		t.Errorf("hello %q, want the capture", got)
	}
	c, s := connect(t, ct.(*Transport), ln)
	exchange(t, c, s)
	if _, err := FactoryWithHello(h)(transport.Params{"pbk": pub["pbk"], "sni": coverName, "fp": "netscape"}); !errors.Is(err, transport.ErrBadParams) {
		t.Errorf("bad fp with an override: %v", err)
	}
}

// TestSilentProberFreesRelay: a prober that reads the cover's answer to
// its end and then stays silent holds its relay slot only relayLinger
// longer, as the kernel holds a half-closed connection; before, it held
// it for ever, and 1024 of them made the gateway stop answering probes
// that the cover answers.
func TestSilentProberFreesRelay(t *testing.T) {
	old := relayLinger
	relayLinger = 200 * time.Millisecond
	t.Cleanup(func() { relayLinger = old })
	cv := newCover(t)
	_, server, _ := setup(t, cv, nil)
	ln := listen(t, server)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("GET /")) // crypto/tls answers plain HTTP with a 400, then closes
	if resp, _ := io.ReadAll(c); !bytes.Contains(resp, []byte("400")) {
		t.Fatalf("the cover answered %q", resp)
	}
	// Silent from here on. The relay must end and give its slot back.
	l := ln.(*listener)
	deadline := time.Now().Add(20 * time.Second)
	for len(l.relays) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d relays still held 20 s after the cover closed", len(l.relays))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWithoutAddrs(t *testing.T) {
	err := fmt.Errorf("%w: %w", errSpent, &net.OpError{Op: "write", Net: "tcp",
		Source: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 2},
		Err: syscall.ECONNRESET})
	got := withoutAddrs(err).Error()
	if strings.Contains(got, "127.0.0.2") || strings.Contains(got, "127.0.0.1") || !strings.Contains(got, "connection reset") {
		t.Fatalf("withoutAddrs = %q", got)
	}
}

// TestSlotsPerSource checks that one source holding silent connections
// open cannot take every handshake slot: once half are taken, its further
// connections go to the cover unread, and others are still served: a
// probe from another source sees the cover, a client connects.
func TestSlotsPerSource(t *testing.T) {
	oldHS, oldRelays, oldPer := maxHandshakes, maxRelays, perSource
	maxHandshakes, maxRelays, perSource = 8, 8, 2
	t.Cleanup(func() { maxHandshakes, maxRelays, perSource = oldHS, oldRelays, oldPer })
	cv := newCover(t)
	client, server, _ := setup(t, cv, nil)
	server.server.HandshakeTimeout = time.Minute // past the waits below
	ln := listen(t, server)
	from := func(src string) net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// As many as there are slots: the first four take handshake slots,
	// the other four go to the cover.
	cv.drainConns()
	for range 8 {
		from("127.0.0.2").Write([]byte{0x16}) //nolint:errcheck // held mid-hello
	}
	for range 4 {
		cv.waitConn(t)
	}

	pool := x509.NewCertPool()
	pool.AddCert(cv.Certificate())
	raw := from("127.0.0.3")
	raw.SetDeadline(time.Now().Add(30 * time.Second)) //nolint:errcheck // the read fails without
	probe := tls.Client(raw, &tls.Config{ServerName: coverName, RootCAs: pool})
	fmt.Fprintf(probe, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", coverName)
	if resp, err := io.ReadAll(probe); err != nil || !bytes.HasSuffix(resp, []byte(coverPage)) {
		t.Fatalf("a probe from another source: %q, %v; want the cover page", resp, err)
	}
	c, s := connect(t, client, ln)
	exchange(t, c, s)
}
