package fingerprint

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	utls "github.com/refraction-networking/utls"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// listen opens a loopback TCP listener closed at cleanup.
func listen(t testing.TB) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// captureFrom dials l with dial (which sends a ClientHello and may fail
// once the server hangs up) and returns the raw hello the server side
// captured.
func captureFrom(t testing.TB, dial func(c net.Conn) error) []byte {
	t.Helper()
	l := listen(t)
	done := make(chan error, 1)
	go func() {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		dial(c) // fails when the server hangs up: expected
		done <- nil
	}()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	raw, err := Capture(ctx, c)
	c.Close()
	if derr := <-done; derr != nil {
		t.Fatal(derr)
	}
	if err != nil {
		t.Fatalf("Capture: %v", err)
	}
	return raw
}

// utlsDial returns a dial func that sends h's hello for server name sni.
func utlsDial(t testing.TB, h Hello, alpn []string) func(net.Conn) error {
	t.Helper()
	return func(c net.Conn) error {
		uc, err := h.Client(c, &utls.Config{ServerName: "cover.example", InsecureSkipVerify: true}, alpn)
		if err != nil {
			t.Errorf("Client: %v", err)
			return err
		}
		return uc.HandshakeContext(context.Background())
	}
}

func summarize(t *testing.T, raw []byte) Summary {
	t.Helper()
	s, err := Summarize(raw)
	if err != nil {
		t.Fatalf("Summarize: %v", err)
	}
	return s
}

func TestPreset(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      error
	}{
		{"", "chrome", nil},
		{"chrome", "chrome", nil},
		{"firefox", "firefox", nil},
		{"safari", "safari", nil},
		{"edge", "edge", nil},
		{"ios", "ios", nil},
		{"netscape", "", ErrUnknownPreset},
		{"file:/nonexistent/x.hello", "", os.ErrNotExist},
	} {
		t.Run(tc.in, func(t *testing.T) {
			h, err := Parse(tc.in)
			if !errors.Is(err, tc.err) {
				t.Fatalf("Parse(%q) error %v, want %v", tc.in, err, tc.err)
			}
			if err == nil && h.String() != tc.want {
				t.Errorf("String() = %q, want %q", h.String(), tc.want)
			}
		})
	}
	if got := (Hello{}).String(); got != "chrome" {
		t.Errorf("zero Hello is %q, want chrome", got)
	}
	_, err := Preset("netscape")
	for _, n := range PresetNames() {
		if !bytes.Contains([]byte(err.Error()), []byte(n)) {
			t.Errorf("error %q does not list %q", err, n)
		}
	}
}

// selfSigned makes an ECDSA P-256 certificate for name.
func selfSigned(t *testing.T, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestPresetsHandshake checks that every preset completes a handshake
// with a crypto/tls server and negotiates the ALPN it was told to.
func TestPresetsHandshake(t *testing.T) {
	cert := selfSigned(t, "cover.example")
	for _, name := range PresetNames() {
		t.Run(name, func(t *testing.T) {
			h, err := Preset(name)
			if err != nil {
				t.Fatal(err)
			}
			l := listen(t)
			srvErr := make(chan error, 1)
			go func() {
				c, err := l.Accept()
				if err != nil {
					srvErr <- err
					return
				}
				defer c.Close()
				s := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}})
				if err := s.HandshakeContext(context.Background()); err != nil {
					srvErr <- err
					return
				}
				_, err = io.Copy(s, s)
				srvErr <- err
			}()
			c, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			uc, err := h.Client(c, &utls.Config{ServerName: "cover.example", InsecureSkipVerify: true}, []string{"http/1.1"})
			if err != nil {
				t.Fatal(err)
			}
			if err := uc.HandshakeContext(context.Background()); err != nil {
				t.Fatalf("handshake: %v", err)
			}
			if got := uc.ConnectionState().NegotiatedProtocol; got != "http/1.1" {
				t.Errorf("ALPN %q, want http/1.1", got)
			}
			if _, err := uc.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4)
			if _, err := io.ReadFull(uc, buf); err != nil || string(buf) != "ping" {
				t.Fatalf("echo: %q, %v", buf, err)
			}
			uc.Close()
			if err := <-srvErr; err != nil {
				t.Fatalf("server: %v", err)
			}
		})
	}
}

// TestCaptureReplay captures a Chrome preset's hello, saves and reloads
// it, replays it, captures again and compares the shapes.
func TestCaptureReplay(t *testing.T) {
	chrome, err := Preset("chrome")
	if err != nil {
		t.Fatal(err)
	}
	raw1 := captureFrom(t, utlsDial(t, chrome, nil))
	s1 := summarize(t, raw1)
	if s1.ServerName != "cover.example" {
		t.Errorf("ServerName %q", s1.ServerName)
	}
	path := filepath.Join(t.TempDir(), "chrome.hello")
	if err := os.WriteFile(path, raw1, 0o644); err != nil {
		t.Fatal(err)
	}
	replay, err := FromFile(path)
	if err != nil {
		t.Fatalf("FromFile: %v", err)
	}
	if replay.String() != "file:"+path {
		t.Errorf("String() = %q", replay.String())
	}
	raw2 := captureFrom(t, utlsDial(t, replay, nil))
	s2 := summarize(t, raw2)
	if !s1.SameShape(s2) {
		t.Errorf("replayed hello has another shape (-captured +replayed):\n%s", cmp.Diff(s1, s2))
	}
	// A second preset hello has the same shape too, with GREASE values and
	// extension order most likely different on the wire.
	s3 := summarize(t, captureFrom(t, utlsDial(t, chrome, nil)))
	if !s1.SameShape(s3) {
		t.Errorf("two chrome hellos differ:\n%s", cmp.Diff(s1, s3))
	}
	if bytes.Equal(raw1, raw2) {
		t.Error("two hellos are byte-identical: randoms and keys must differ")
	}
}

// TestGoTLSIsNotChrome shows crypto/tls's hello has another shape.
func TestGoTLSIsNotChrome(t *testing.T) {
	chrome := summarize(t, captureFrom(t, utlsDial(t, Hello{}, nil)))
	goTLS := summarize(t, captureFrom(t, func(c net.Conn) error {
		return tls.Client(c, &tls.Config{ServerName: "cover.example", InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}}).Handshake()
	}))
	if chrome.SameShape(goTLS) {
		t.Fatalf("crypto/tls hello has the chrome shape: %+v", goTLS)
	}
	if slices.Equal(chrome.CipherSuites, goTLS.CipherSuites) {
		t.Errorf("same cipher suites: %v", goTLS.CipherSuites)
	}
}

// TestALPNOverride checks that alpn replaces the ALPN protocols and drops
// the h2-only ALPS extension.
func TestALPNOverride(t *testing.T) {
	s := summarize(t, captureFrom(t, utlsDial(t, Hello{}, []string{"http/1.1"})))
	if diff := cmp.Diff([]string{"http/1.1"}, s.ALPN); diff != "" {
		t.Errorf("ALPN (-want +got):\n%s", diff)
	}
	if slices.Contains(s.Extensions, 17613) || slices.Contains(s.Extensions, 17513) {
		t.Errorf("ALPS still present: %v", s.Extensions)
	}
	def := summarize(t, captureFrom(t, utlsDial(t, Hello{}, nil)))
	if diff := cmp.Diff([]string{"h2", "http/1.1"}, def.ALPN); diff != "" {
		t.Errorf("default ALPN (-want +got):\n%s", diff)
	}
	none := summarize(t, captureFrom(t, utlsDial(t, Hello{}, []string{})))
	if slices.Contains(none.Extensions, extALPN) {
		t.Errorf("empty alpn kept the extension: %v", none.Extensions)
	}
}

// fragment re-splits the handshake message in raw into records of at most
// n payload bytes.
func fragment(t *testing.T, raw []byte, n int) []byte {
	t.Helper()
	msg, err := handshakeMessage(raw)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for len(msg) > 0 {
		k := min(n, len(msg))
		out = append(out, recordTypeHandshake, 3, 1, byte(k>>8), byte(k))
		out = append(out, msg[:k]...)
		msg = msg[k:]
	}
	return out
}

// TestCaptureFragmented sends a hello split over many records and many
// TCP writes and checks Capture returns it whole, and nothing after it.
func TestCaptureFragmented(t *testing.T) {
	raw := captureFrom(t, utlsDial(t, Hello{}, nil))
	want := summarize(t, raw)
	for _, tc := range []struct {
		name        string
		record, seg int
	}{
		{"one record, 1-byte segments", 1 << 14, 1},
		{"3-byte records, 7-byte segments", 3, 7},
		{"100-byte records, 64-byte segments", 100, 64},
		{"1-byte records, 1000-byte segments", 1, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			frag := fragment(t, raw, tc.record)
			trailer := []byte("after the hello")
			got := captureFrom(t, func(c net.Conn) error {
				b := append(slices.Clone(frag), trailer...)
				for len(b) > 0 {
					k := min(tc.seg, len(b))
					if _, err := c.Write(b[:k]); err != nil {
						return err
					}
					b = b[k:]
				}
				io.Copy(io.Discard, c)
				return nil
			})
			if !bytes.Equal(got, frag) {
				t.Fatalf("captured %d bytes, want the %d bytes of the records", len(got), len(frag))
			}
			if diff := cmp.Diff(want, summarize(t, got)); diff != "" {
				t.Errorf("summary (-want +got):\n%s", diff)
			}
		})
	}
}

// TestCaptureErrors checks what Capture returns for bad input, including
// the bytes read so far.
func TestCaptureErrors(t *testing.T) {
	good := captureFrom(t, utlsDial(t, Hello{}, nil))
	// A header announcing a 60000-byte message, then 1-byte records: the
	// record headers push the bytes read past MaxHelloSize.
	var bigRecords []byte
	for _, b := range append([]byte{1, 0, 0xea, 0x60}, make([]byte, 20000)...) {
		bigRecords = append(bigRecords, recordTypeHandshake, 3, 1, 0, 1, b)
	}
	for _, tc := range []struct {
		name  string
		in    []byte
		err   error
		nread int
	}{
		{"http", []byte("GET / HTTP/1.1\r\n\r\n"), ErrNotClientHello, 5},
		{"truncated", good[:len(good)-1], io.ErrUnexpectedEOF, len(good) - 1},
		{"server hello", append([]byte{0x16, 3, 3, 0, 4, 2, 0, 0, 0}, good...), ErrNotClientHello, 9},
		{"trailing in record", append(slices.Clone(good[:3]), append([]byte{byte((len(good) - 4) >> 8), byte(len(good) - 4)}, append(slices.Clone(good[5:]), 0)...)...), ErrNotClientHello, len(good) + 1},
		{"too many records", bigRecords, ErrTooLarge, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := listen(t)
			go func() {
				c, err := net.Dial("tcp", l.Addr().String())
				if err != nil {
					return
				}
				c.Write(tc.in)
				c.Close()
			}()
			c, err := l.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			got, err := Capture(context.Background(), c)
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if tc.nread >= 0 && len(got) != tc.nread {
				t.Errorf("returned %d bytes read, want %d", len(got), tc.nread)
			}
			if !bytes.HasPrefix(tc.in, got) {
				t.Error("returned bytes are not a prefix of the input")
			}
		})
	}
}

// TestCaptureContext checks that Capture returns when ctx ends.
func TestCaptureContext(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := Capture(ctx, a)
		done <- err
	}()
	b.Write([]byte{0x16, 3, 1}) // part of a header, then silence
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
}

// TestCaptureServer runs the capture server against a utls client, the
// way `commucat fingerprint capture` runs it against a browser.
func TestCaptureServer(t *testing.T) {
	l := listen(t)
	out := filepath.Join(t.TempDir(), "browser.hello")
	srv := make(chan error, 1)
	go func() { srv <- CaptureServer(context.Background(), l, out) }()

	// A plain-HTTP visitor first: ignored.
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	io.Copy(io.Discard, c)
	c.Close()

	c, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	uc, err := Hello{}.Client(c, &utls.Config{ServerName: "localhost"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	herr := uc.HandshakeContext(context.Background())
	c.Close()
	var oe *net.OpError
	if !errors.As(herr, &oe) || oe.Op != "remote error" {
		t.Errorf("handshake error %v, want a TLS alert", herr)
	}
	if err := <-srv; err != nil {
		t.Fatalf("CaptureServer: %v", err)
	}
	h, err := FromFile(out)
	if err != nil {
		t.Fatalf("FromFile: %v", err)
	}
	if h.String() != "file:"+out {
		t.Errorf("String() %q", h.String())
	}
	if !h.shuffle {
		t.Error("a chrome capture is not replayed with shuffling")
	}
	if _, err := net.Dial("tcp", l.Addr().String()); err == nil {
		t.Error("listener still open after CaptureServer returned")
	}

	// A cancelled context stops a waiting server.
	ctx, cancel := context.WithCancel(context.Background())
	go func() { srv <- CaptureServer(ctx, listen(t), out) }()
	cancel()
	if err := <-srv; !errors.Is(err, context.Canceled) {
		t.Errorf("CaptureServer after cancel: %v", err)
	}
}

// TestFromFileErrors covers files that are not captures.
func TestFromFileErrors(t *testing.T) {
	dir := t.TempDir()
	good := captureFrom(t, utlsDial(t, Hello{}, nil))
	for _, tc := range []struct {
		name string
		data []byte
		err  error
	}{
		{"empty", nil, ErrNotClientHello},
		{"text", []byte("hello\n"), ErrNotClientHello},
		{"truncated", good[:100], ErrNotClientHello},
		{"huge", make([]byte, MaxHelloSize+10), ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name)
			if err := os.WriteFile(p, tc.data, 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := FromFile(p); !errors.Is(err, tc.err) {
				t.Errorf("FromFile: %v, want %v", err, tc.err)
			}
		})
	}
	t.Run("bare message", func(t *testing.T) {
		msg, err := handshakeMessage(good)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "bare")
		if err := os.WriteFile(p, msg, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := FromFile(p); err != nil {
			t.Errorf("FromFile: %v", err)
		}
	})
}

func TestSameShape(t *testing.T) {
	base := Summary{
		Version:             0x0303,
		CipherSuites:        []uint16{GREASE, 0x1301},
		Extensions:          []uint16{GREASE, 0, 10, 16, 51, GREASE, 21},
		ALPN:                []string{"h2"},
		SupportedGroups:     []uint16{GREASE, 29},
		KeyShareGroups:      []uint16{GREASE, 29},
		SignatureAlgorithms: []uint16{0x0403},
		SupportedVersions:   []uint16{GREASE, 0x0304},
		ServerName:          "a.example",
	}
	mod := func(f func(s *Summary)) Summary {
		s := base
		s.Extensions = slices.Clone(base.Extensions)
		f(&s)
		return s
	}
	for _, tc := range []struct {
		name             string
		o                Summary
		shape, sameOrder bool
	}{
		{"identical", base, true, true},
		{"other server name", mod(func(s *Summary) { s.ServerName = "b.example" }), true, true},
		{"shuffled", mod(func(s *Summary) { s.Extensions = []uint16{GREASE, 51, 16, 0, 10, GREASE, 21} }), true, false},
		{"grease moved", mod(func(s *Summary) { s.Extensions = []uint16{0, GREASE, 10, 16, 51, GREASE, 21} }), false, false},
		{"padding moved", mod(func(s *Summary) { s.Extensions = []uint16{GREASE, 0, 10, 16, 21, GREASE, 51} }), false, false},
		{"extension missing", mod(func(s *Summary) { s.Extensions = []uint16{GREASE, 0, 10, 16, 52, GREASE, 21} }), false, false},
		{"suites", mod(func(s *Summary) { s.CipherSuites = []uint16{0x1301} }), false, false},
		{"alpn", mod(func(s *Summary) { s.ALPN = []string{"http/1.1"} }), false, false},
		{"key shares", mod(func(s *Summary) { s.KeyShareGroups = []uint16{29} }), false, false},
		{"version", mod(func(s *Summary) { s.Version = 0x0301 }), false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := base.SameShape(tc.o); got != tc.shape {
				t.Errorf("SameShape = %v, want %v", got, tc.shape)
			}
			if got := tc.o.SameShape(base); got != tc.shape {
				t.Errorf("SameShape (reversed) = %v, want %v", got, tc.shape)
			}
			if got := base.SameOrder(tc.o); got != tc.sameOrder {
				t.Errorf("SameOrder = %v, want %v", got, tc.sameOrder)
			}
		})
	}
}

func TestIsGREASE(t *testing.T) {
	for v := 0; v <= 0xffff; v++ {
		want := v&0xff == v>>8 && v&0x0f == 0x0a
		if got := IsGREASE(uint16(v)); got != want {
			t.Fatalf("IsGREASE(%#04x) = %v", v, got)
		}
	}
}

// TestSummarizeForms checks that the record form, the fragmented form and
// the bare message summarise alike, and that broken forms fail.
func TestSummarizeForms(t *testing.T) {
	good := captureFrom(t, utlsDial(t, Hello{}, nil))
	want := summarize(t, good)
	msg, err := handshakeMessage(good)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		in   []byte
		err  error
	}{
		{"record", good, nil},
		{"fragmented", fragment(t, good, 50), nil},
		{"message", msg, nil},
		{"message plus byte", append(slices.Clone(msg), 0), ErrNotClientHello},
		{"records plus byte", append(slices.Clone(good), 0), ErrNotClientHello},
		{"record of zero length", append([]byte{0x16, 3, 1, 0, 0}, good...), ErrNotClientHello},
		{"alert", []byte{0x15, 3, 3, 0, 2, 2, 40}, ErrNotClientHello},
		{"empty", nil, ErrNotClientHello},
		{"too large", make([]byte, MaxHelloSize+1), ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Summarize(tc.in)
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if err == nil {
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("(-want +got):\n%s", diff)
				}
			}
		})
	}
}
