package obfs4

import (
	"bytes"
	"context"
	cryptorand "crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	obfs4lib "gitlab.com/yawning/obfs4.git/transports/obfs4"
	pt "gitlab.torproject.org/tpo/anti-censorship/pluggable-transports/goptlib"
	"go.uber.org/goleak"
	"golang.org/x/crypto/curve25519"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/core/transport/transporttest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newServer builds a server Transport with its state in a new temporary
// directory, and the client Transport for it.
func newServer(t testing.TB, p transport.Params) (client, server *Transport) {
	t.Helper()
	return newServerIn(t, t.TempDir(), p)
}

// newServerIn is newServer with the state in dir.
func newServerIn(t testing.TB, dir string, p transport.Params) (client, server *Transport) {
	t.Helper()
	srv, pub, err := ServerFactory(p, dir)
	if err != nil {
		t.Fatalf("ServerFactory: %v", err)
	}
	cli, err := Factory(pub)
	if err != nil {
		t.Fatalf("Factory(%v): %v", pub, err)
	}
	return cli.(*Transport), srv.(*Transport)
}

func TestConformance(t *testing.T) {
	transporttest.Run(t, func(t *testing.T) (transport.Transport, transport.Transport, string) {
		client, server := newServer(t, nil)
		return client, server, "127.0.0.1:0"
	})
}

// listen opens a listener on loopback that is closed when t ends.
func listen(t testing.TB, tr *Transport) transport.Listener {
	t.Helper()
	ln, err := tr.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// pair returns a connected client and server connection over loopback.
func pair(t testing.TB, client, server *Transport) (c, s net.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ln := listen(t, server)
	c, err := client.Dial(ctx, ln.Addr().String())
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	s, err = ln.Accept(ctx)
	if err != nil {
		c.Close()
		t.Fatalf("Accept: %v", err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

// validCert is a cert of the right form: 52 bytes in unpadded base64.
var validCert = strings.Repeat("A", 70)

func TestFactory(t *testing.T) {
	tests := []struct {
		name    string
		params  transport.Params
		wantErr error
		inMsg   string // a word the error must name
	}{
		{"valid", transport.Params{"cert": validCert, "iat-mode": "0"}, nil, ""},
		{"iat 1", transport.Params{"cert": validCert, "iat-mode": "1"}, nil, ""},
		{"iat 2", transport.Params{"cert": validCert, "iat-mode": "2"}, nil, ""},
		{"nil", nil, transport.ErrBadParams, "cert"},
		{"no cert", transport.Params{"iat-mode": "0"}, transport.ErrBadParams, "cert"},
		{"no iat-mode", transport.Params{"cert": validCert}, transport.ErrBadParams, "iat-mode"},
		{"iat 3", transport.Params{"cert": validCert, "iat-mode": "3"}, transport.ErrBadParams, "iat-mode"},
		{"iat 01", transport.Params{"cert": validCert, "iat-mode": "01"}, transport.ErrBadParams, "iat-mode"},
		{"iat +1", transport.Params{"cert": validCert, "iat-mode": "+1"}, transport.ErrBadParams, "iat-mode"},
		{"iat empty", transport.Params{"cert": validCert, "iat-mode": ""}, transport.ErrBadParams, "iat-mode"},
		{"cert padded", transport.Params{"cert": validCert + "==", "iat-mode": "0"}, transport.ErrBadParams, "cert"},
		{"cert short", transport.Params{"cert": validCert[:66], "iat-mode": "0"}, transport.ErrBadParams, "cert"},
		{"cert long", transport.Params{"cert": validCert + "AAAA", "iat-mode": "0"}, transport.ErrBadParams, "cert"},
		{"cert not base64", transport.Params{"cert": strings.Repeat("!", 70), "iat-mode": "0"}, transport.ErrBadParams, "cert"},
		{"cert url alphabet", transport.Params{"cert": strings.Repeat("-", 70), "iat-mode": "0"}, transport.ErrBadParams, "cert"},
		{"old style", transport.Params{"node-id": "00", "public-key": "00", "iat-mode": "0"}, transport.ErrBadParams, "node-id"},
		{"unknown", transport.Params{"cert": validCert, "iat-mode": "0", "sni": "x"}, transport.ErrBadParams, "sni"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := Factory(tt.params)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Factory(%v) error = %v, want %v", tt.params, err, tt.wantErr)
			}
			if err != nil {
				if !strings.HasPrefix(err.Error(), "obfs4: ") || !strings.Contains(err.Error(), tt.inMsg) {
					t.Errorf("error %q does not start with obfs4: or does not name %q", err, tt.inMsg)
				}
				return
			}
			if got := tr.Name(); got != Name {
				t.Errorf("Name() = %q, want %q", got, Name)
			}
			if diff := cmp.Diff(tt.params, tr.(*Transport).Params()); diff != "" {
				t.Errorf("Params() differ from the parameters given (-given +got):\n%s", diff)
			}
			if _, err := tr.Listen(context.Background(), "127.0.0.1:0"); !errors.Is(err, transport.ErrUnsupported) {
				t.Errorf("client Listen: %v, want ErrUnsupported", err)
			}
		})
	}
}

func TestServerFactory(t *testing.T) {
	tests := []struct {
		name     string
		params   transport.Params
		wantErr  error
		wantMode string
	}{
		{"default", nil, nil, "0"},
		{"iat 0", transport.Params{"iat-mode": "0"}, nil, "0"},
		{"iat 1", transport.Params{"iat-mode": "1"}, nil, "1"},
		{"iat 2", transport.Params{"iat-mode": "2"}, nil, "2"},
		{"iat 3", transport.Params{"iat-mode": "3"}, transport.ErrBadParams, ""},
		{"cert", transport.Params{"cert": validCert}, transport.ErrBadParams, ""},
		{"private key", transport.Params{"private-key": "00"}, transport.ErrBadParams, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tr, pub, err := ServerFactory(tt.params, dir)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ServerFactory(%v) error = %v, want %v", tt.params, err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if got := pub["iat-mode"]; got != tt.wantMode {
				t.Errorf("public iat-mode = %q, want %q", got, tt.wantMode)
			}
			if err := checkCert(pub["cert"]); err != nil {
				t.Errorf("public cert: %v", err)
			}
			if len(pub) != 2 {
				t.Errorf("public parameters %v, want cert and iat-mode only", pub)
			}
			if diff := cmp.Diff(pub, tr.(*Transport).Params()); diff != "" {
				t.Errorf("Params() differ from the public parameters (-public +Params):\n%s", diff)
			}
			for _, name := range []string{StateFile, BridgeLineFile} {
				fi, err := os.Stat(filepath.Join(dir, name))
				if err != nil {
					t.Fatal(err)
				}
				if mode := fi.Mode().Perm(); mode != 0o600 {
					t.Errorf("%s has mode %v, want 0600", name, mode)
				}
			}
			line, err := os.ReadFile(filepath.Join(dir, BridgeLineFile))
			if err != nil {
				t.Fatal(err)
			}
			want := "cert=" + pub["cert"] + " iat-mode=" + tt.wantMode
			if !strings.Contains(string(line), want) {
				t.Errorf("%s does not hold %q:\n%s", BridgeLineFile, want, line)
			}
		})
	}
	if _, _, err := ServerFactory(nil, ""); !errors.Is(err, transport.ErrBadParams) {
		t.Errorf("ServerFactory without a directory: %v, want ErrBadParams", err)
	}
}

// TestStatePersists checks that a server keeps its identity across
// restarts, and that iat-mode from the config overrides the stored one and
// is stored.
func TestStatePersists(t *testing.T) {
	dir := t.TempDir()
	steps := []struct {
		params   transport.Params
		wantMode string
	}{
		{nil, "0"},
		{transport.Params{"iat-mode": "1"}, "1"},
		{nil, "1"},
		{transport.Params{"iat-mode": "0"}, "0"},
		{nil, "0"},
	}
	var cert string
	for i, s := range steps {
		_, pub, err := ServerFactory(s.params, dir)
		if err != nil {
			t.Fatalf("start %d: %v", i, err)
		}
		if i == 0 {
			cert = pub["cert"]
		}
		want := transport.Params{"cert": cert, "iat-mode": s.wantMode}
		if diff := cmp.Diff(want, pub); diff != "" {
			t.Errorf("start %d with %v: public parameters (-want +got):\n%s", i, s.params, diff)
		}
	}
	// A client with the cert of the first start reaches the last.
	client, server := newServerIn(t, dir, nil)
	c, s := pair(t, client, server)
	echoOnce(t, c, s, []byte("same identity"))
}

// TestObfs4proxyState checks that a state file as obfs4proxy writes it is
// used as is: the cert is computed here from the file's node ID and
// private key, independently of the library.
func TestObfs4proxyState(t *testing.T) {
	dir := t.TempDir()
	golden, err := os.ReadFile(filepath.Join("testdata", StateFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, StateFile), golden, 0o600); err != nil {
		t.Fatal(err)
	}
	var st stateJSON
	if err := json.Unmarshal(golden, &st); err != nil {
		t.Fatal(err)
	}
	want := transport.Params{
		"cert":     certOfState(t, st),
		"iat-mode": strconv.Itoa(st.IATMode),
	}
	_, pub, err := ServerFactory(nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, pub); diff != "" {
		t.Errorf("public parameters (-want +got):\n%s", diff)
	}
	client, server := newServerIn(t, dir, nil)
	c, s := pair(t, client, server)
	echoOnce(t, c, s, []byte("obfs4proxy's identity"))
}

// certOfState computes the cert of a state: its node ID and the public key
// of its private key, in unpadded base64.
func certOfState(t *testing.T, st stateJSON) string {
	t.Helper()
	nodeID, err := hex.DecodeString(st.NodeID)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := hex.DecodeString(st.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	pubKey, err := curve25519.X25519(priv, curve25519.Basepoint)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawStdEncoding.EncodeToString(append(nodeID, pubKey...))
}

func TestBadState(t *testing.T) {
	good, err := os.ReadFile(filepath.Join("testdata", StateFile))
	if err != nil {
		t.Fatal(err)
	}
	var st stateJSON
	if err := json.Unmarshal(good, &st); err != nil {
		t.Fatal(err)
	}
	with := func(edit func(*stateJSON)) []byte {
		s := st
		edit(&s)
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name string
		file []byte
	}{
		{"empty", nil},
		{"not JSON", []byte("node-id=" + st.NodeID)},
		{"truncated", good[:len(good)/2]},
		{"array", []byte("[]")},
		{"trailing data", append(append([]byte{}, good...), "{}"...)},
		{"string iat-mode", []byte(`{"iat-mode":"0"}`)},
		{"null", []byte("null")},
		{"short key", with(func(s *stateJSON) { s.PrivateKey = s.PrivateKey[:62] })},
		{"odd key", with(func(s *stateJSON) { s.PrivateKey = s.PrivateKey[:63] })},
		{"key not hex", with(func(s *stateJSON) { s.PrivateKey = "zz" + s.PrivateKey[2:] })},
		{"no node id", with(func(s *stateJSON) { s.NodeID = "" })},
		{"short seed", with(func(s *stateJSON) { s.DrbgSeed = s.DrbgSeed[:46] })},
		{"iat 3", with(func(s *stateJSON) { s.IATMode = 3 })},
		{"iat -1", with(func(s *stateJSON) { s.IATMode = -1 })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, StateFile), tt.file, 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, err := ServerFactory(nil, dir)
			if !errors.Is(err, ErrBadState) {
				t.Fatalf("ServerFactory: %v, want ErrBadState", err)
			}
			if _, lerr := (&obfs4lib.Transport{}).ServerFactory(dir, &pt.Args{}); lerr == nil {
				t.Errorf("the library accepts the state checkState rejects (%v)", err)
			}
			for _, secret := range []string{st.PrivateKey[8:24], st.DrbgSeed[8:24]} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q shows a secret", err)
				}
			}
			got, err := os.ReadFile(filepath.Join(dir, StateFile))
			if err != nil || !bytes.Equal(got, tt.file) {
				t.Errorf("the bad state file was changed: %q, %v", got, err)
			}
		})
	}
}

func TestLogValue(t *testing.T) {
	_, server := newServer(t, nil)
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "transport", server)
	if !strings.Contains(buf.String(), "transport=[redacted]") {
		t.Errorf("log record %q does not redact the transport", buf.String())
	}
}

// echoOnce writes msg on c, reads it on s, writes it back and reads it on c.
func echoOnce(t *testing.T, c, s net.Conn, msg []byte) {
	t.Helper()
	for _, dir := range [][2]net.Conn{{c, s}, {s, c}} {
		if _, err := dir[0].Write(msg); err != nil {
			t.Fatalf("Write: %v", err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(dir[1], got); err != nil {
			t.Fatalf("Read: %v", err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("read %q, want %q", got, msg)
		}
	}
}

func TestIATModes(t *testing.T) {
	for _, mode := range []string{"0", "1", "2"} {
		t.Run("iat-mode "+mode, func(t *testing.T) {
			client, server := newServer(t, transport.Params{"iat-mode": mode})
			c, s := pair(t, client, server)
			// The server speaks first, so that the client writes with the
			// server's length table: see the package doc on iat-mode 2.
			echoOnce(t, s, c, bytes.Repeat([]byte("obfs4"), 3000))
		})
	}
}

// TestErrors checks that errors wrap the core/transport sentinels and keep
// what they wrap.
func TestErrors(t *testing.T) {
	ctx := context.Background()
	client, server := newServer(t, nil)
	closedAddr := func(t *testing.T) string {
		t.Helper()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		return addr
	}
	tests := []struct {
		name string
		run  func(t *testing.T) error
		want []error
	}{
		{"dial refused", func(t *testing.T) error {
			_, err := client.Dial(ctx, closedAddr(t))
			return err
		}, []error{transport.ErrRefused}},
		{"dial cancelled", func(t *testing.T) error {
			ctx, cancel := context.WithCancel(ctx)
			cancel()
			_, err := client.Dial(ctx, closedAddr(t))
			return err
		}, []error{context.Canceled}},
		{"dial deadline", func(t *testing.T) error {
			ctx, cancel := context.WithDeadline(ctx, time.Unix(1, 0))
			defer cancel()
			_, err := client.Dial(ctx, closedAddr(t))
			return err
		}, []error{transport.ErrTimeout, context.DeadlineExceeded}},
		{"cancelled in handshake", func(t *testing.T) error {
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			// The server cancels once it has the client's first bytes.
			addr := rawServer(t, func(c net.Conn) {
				c.Read(make([]byte, 1))
				cancel()
				io.Copy(io.Discard, c)
			})
			_, err := client.Dial(ctx, addr)
			return err
		}, []error{context.Canceled}},
		{"server closes", func(t *testing.T) error {
			addr := rawServer(t, func(c net.Conn) {
				c.Read(make([]byte, 1))
			})
			_, err := client.Dial(ctx, addr)
			return err
		}, []error{transport.ErrRefused}},
		{"server answers garbage", func(t *testing.T) error {
			addr := rawServer(t, func(c net.Conn) {
				c.Read(make([]byte, 1))
				junk := make([]byte, 9000)
				cryptorand.Read(junk)
				c.Write(junk)
				io.Copy(io.Discard, c)
			})
			_, err := client.Dial(ctx, addr)
			return err
		}, []error{ErrHandshake}},
		{"listen bad address", func(t *testing.T) error {
			_, err := server.Listen(ctx, "127.0.0.1:99999")
			return err
		}, nil},
		{"listen on a client", func(t *testing.T) error {
			_, err := client.Listen(ctx, "127.0.0.1:0")
			return err
		}, []error{transport.ErrUnsupported}},
		{"read deadline", func(t *testing.T) error {
			c, _ := pair(t, client, server)
			c.SetReadDeadline(time.Unix(1, 0))
			_, err := c.Read(make([]byte, 1))
			return err
		}, []error{transport.ErrTimeout, os.ErrDeadlineExceeded}},
		{"write deadline", func(t *testing.T) error {
			c, _ := pair(t, client, server)
			c.SetWriteDeadline(time.Unix(1, 0))
			_, err := c.Write([]byte("x"))
			return err
		}, []error{transport.ErrTimeout, os.ErrDeadlineExceeded}},
		{"read closed", func(t *testing.T) error {
			c, _ := pair(t, client, server)
			c.Close()
			_, err := c.Read(make([]byte, 1))
			return err
		}, []error{transport.ErrClosed, net.ErrClosed}},
		{"write closed", func(t *testing.T) error {
			c, _ := pair(t, client, server)
			c.Close()
			_, err := c.Write([]byte("x"))
			return err
		}, []error{transport.ErrClosed, net.ErrClosed}},
		{"accept deadline", func(t *testing.T) error {
			ln := listen(t, server)
			ctx, cancel := context.WithDeadline(ctx, time.Unix(1, 0))
			defer cancel()
			_, err := ln.Accept(ctx)
			return err
		}, []error{transport.ErrTimeout, context.DeadlineExceeded}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.run(t)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !errors.Is(err, w) {
					t.Errorf("error %q does not match %q", err, w)
				}
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "obfs4: ") {
				t.Errorf("error %q does not start with the package name", msg)
			}
			if errors.Is(err, transport.ErrTimeout) {
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					t.Errorf("timeout error %q is not a net.Error with Timeout()", err)
				}
			}
		})
	}
}

// rawServer listens on loopback and serves every connection with fn,
// closing it afterwards; it stops when t ends.
func rawServer(t *testing.T, fn func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { defer c.Close(); fn(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// TestEOFUnwrapped checks that io.EOF reaches callers as is, as io.Reader
// requires.
func TestEOFUnwrapped(t *testing.T) {
	client, server := newServer(t, nil)
	c, s := pair(t, client, server)
	s.Close()
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("Read after the peer closed = %d, %v; want 0, io.EOF", n, err)
	}
}

// TestWriteDeadline checks that a Write whose deadline had passed leaves
// the stream whole, and that one that timed out while sending breaks it
// for good.
func TestWriteDeadline(t *testing.T) {
	client, server := newServer(t, nil)
	c, s := pair(t, client, server)
	c.SetWriteDeadline(time.Unix(1, 0))
	if _, err := c.Write([]byte("lost")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write past its deadline: %v", err)
	}
	c.SetWriteDeadline(time.Time{})
	echoOnce(t, c, s, []byte("still whole"))

	// s never reads: fill the buffers until a Write times out while
	// sending.
	c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	chunk := make([]byte, 1<<20)
	var first error
	for first == nil {
		_, first = c.Write(chunk)
	}
	if !errors.Is(first, transport.ErrTimeout) {
		t.Fatalf("blocked Write: %v, want a timeout", first)
	}
	c.SetWriteDeadline(time.Time{})
	if _, err := c.Write([]byte("x")); err != first {
		t.Errorf("Write after a timeout = %v, want the same error %v", err, first)
	}
}

func TestZeroLength(t *testing.T) {
	client, server := newServer(t, nil)
	c, s := pair(t, client, server)
	if n, err := c.Write(nil); n != 0 || err != nil {
		t.Errorf("Write(nil) = %d, %v", n, err)
	}
	if n, err := c.Read(nil); n != 0 || err != nil {
		t.Errorf("Read(nil) = %d, %v", n, err)
	}
	echoOnce(t, c, s, []byte("after empty calls"))
}
