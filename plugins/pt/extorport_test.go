package pt

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	ptlib "gitlab.torproject.org/tpo/anti-censorship/pluggable-transports/goptlib"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/core/transport/transporttest"
)

var cmpMeta = cmp.AllowUnexported(extMeta{})

// TestExtORPortGoptlib runs the host's Extended ORPort handshake against
// goptlib's DialOrWithDialer, which PTs built on goptlib use (through
// DialOr) to reach the host.
func TestExtORPortGoptlib(t *testing.T) {
	dir := t.TempDir()
	cookie, path, err := newCookie(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != 64 {
		t.Fatalf("cookie file: %v, %v; want 64 bytes, mode 0600", fi, err)
	}
	_, otherPath, err := newCookie(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tests := []struct {
		name     string
		path     string
		userAddr string
		want     extMeta
		wantErr  bool
	}{
		{"ipv4", path, "203.0.113.5:4444", extMeta{"203.0.113.5:4444", "obfs4"}, false},
		{"ipv6", path, "[2001:db8::5]:1", extMeta{"[2001:db8::5]:1", "obfs4"}, false},
		{"bare ip ignored", path, "203.0.113.5", extMeta{"", "obfs4"}, false},
		{"no user address", path, "", extMeta{"", "obfs4"}, false},
		{"wrong cookie", otherPath, "203.0.113.5:4444", extMeta{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			type result struct {
				m   extMeta
				err error
			}
			got := make(chan result, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					got <- result{err: err}
					return
				}
				defer c.Close()
				m, err := extServerHandshake(c, cookie)
				if err == nil {
					_, err = c.Write([]byte("stream"))
				}
				got <- result{m, err}
			}()
			info := &ptlib.ServerInfo{ExtendedOrAddr: ln.Addr().(*net.TCPAddr), AuthCookiePath: tt.path}
			c, err := ptlib.DialOrWithDialer(&net.Dialer{}, info, tt.userAddr, "obfs4")
			r := <-got
			if tt.wantErr {
				if err == nil || !errors.Is(r.err, errExtOR) {
					t.Fatalf("DialOr: %v, host: %v; want both to fail", err, r.err)
				}
				return
			}
			if err != nil || r.err != nil {
				t.Fatalf("DialOr: %v, host: %v", err, r.err)
			}
			defer c.Close()
			if diff := cmp.Diff(tt.want, r.m, cmpMeta); diff != "" {
				t.Errorf("metadata (-want +got):\n%s", diff)
			}
			b, err := io.ReadAll(c)
			if err != nil || string(b) != "stream" {
				t.Errorf("stream after the handshake: %q, %v", b, err)
			}
		})
	}
}

func TestReadExtCommands(t *testing.T) {
	cmd := appendExtCommand
	tests := []struct {
		name    string
		in      []byte
		want    extMeta
		wantErr string
	}{
		{"done", cmd(nil, extCmdDone, nil), extMeta{}, ""},
		{"all", cmd(cmd(cmd(nil, extCmdUserAddr, []byte("192.0.2.1:5")), extCmdTransport, []byte("obfs4")), extCmdDone, nil),
			extMeta{"192.0.2.1:5", "obfs4"}, ""},
		{"unknown ignored", cmd(cmd(nil, 0x0042, bytes.Repeat([]byte("x"), 1000)), extCmdDone, nil), extMeta{}, ""},
		{"last address wins", cmd(cmd(cmd(nil, extCmdUserAddr, []byte("192.0.2.1:5")), extCmdUserAddr, []byte("192.0.2.2:6")), extCmdDone, nil),
			extMeta{userAddr: "192.0.2.2:6"}, ""},
		{"no done", cmd(nil, extCmdTransport, []byte("obfs4")), extMeta{}, "reading a command"},
		{"short body", []byte{0, 1, 0, 10, '1'}, extMeta{}, "reading command 0x0001"},
		{"too many", bytes.Repeat(cmd(nil, 0x0042, nil), maxExtCommands+1), extMeta{}, "more than 16"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.in
			if tt.wantErr == "" {
				in = append(in, "stream"...)
			}
			r := bytes.NewReader(in)
			got, err := readExtCommands(r)
			if tt.wantErr != "" {
				if !errors.Is(err, errExtOR) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("readExtCommands: %v; want an error saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmpMeta); diff != "" {
				t.Errorf("metadata (-want +got):\n%s", diff)
			}
			if rest, _ := io.ReadAll(r); string(rest) != "stream" {
				t.Errorf("read past DONE: %q left", rest)
			}
		})
	}
}

// FuzzExtCommands checks that readExtCommands never panics on what a
// peer of the Extended ORPort listener sends, and that what it accepts
// survives a round trip through appendExtCommand.
func FuzzExtCommands(f *testing.F) {
	f.Add(appendExtCommand(appendExtCommand(appendExtCommand(nil, extCmdUserAddr, []byte("192.0.2.1:5")),
		extCmdTransport, []byte("obfs4")), extCmdDone, nil))
	f.Add(appendExtCommand(nil, extCmdDone, nil))
	f.Add([]byte{0, 1, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := readExtCommands(bytes.NewReader(data))
		if err != nil {
			return
		}
		var enc []byte
		if m.userAddr != "" {
			enc = appendExtCommand(enc, extCmdUserAddr, []byte(m.userAddr))
		}
		if m.transport != "" {
			enc = appendExtCommand(enc, extCmdTransport, []byte(m.transport))
		}
		enc = appendExtCommand(enc, extCmdDone, nil)
		m2, err := readExtCommands(bytes.NewReader(enc))
		if err != nil {
			t.Fatalf("re-encoded %+v does not read: %v", m, err)
		}
		if m2 != m {
			t.Fatalf("round trip: %+v, then %+v", m, m2)
		}
	})
}

// TestObfs4proxyExtORPortConformance runs the conformance suite through
// obfs4proxy forwarding over the Extended ORPort.
func TestObfs4proxyExtORPortConformance(t *testing.T) {
	bin := obfs4proxy(t)
	transporttest.Run(t, func(t *testing.T) (transport.Transport, transport.Transport, string) {
		srv, pub, err := Config{Binary: bin, Method: "obfs4", ExtORPort: true}.ServerFactory()(nil, t.TempDir())
		if err != nil {
			t.Fatalf("ServerFactory: %v", err)
		}
		cli, err := Factory(bin, "obfs4")(pub)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.(*Client).Close() })
		return cli, srv, "127.0.0.1:0"
	})
}

// TestObfs4proxyExtORPort checks the client address an accepted
// connection reports, and that a local peer without the cookie is dropped
// without holding up Accept.
func TestObfs4proxyExtORPort(t *testing.T) {
	bin := obfs4proxy(t)
	cfg, rec := fakeConfig(t, "")
	cfg.Binary, cfg.Method, cfg.Env, cfg.ExtORPort = bin, "obfs4", nil, true
	srv, pub, err := cfg.ServerFactory()(nil, t.TempDir())
	if err != nil {
		t.Fatalf("ServerFactory: %v", err)
	}
	cli, err := NewClient(Config{Binary: bin, Method: "obfs4"}, pub)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ln, err := srv.Listen(t.Context(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	// A local process that connects straight to the loopback listener:
	// one stalls, one sends garbage.
	orAddr := ln.(*listener).or.Addr().String()
	stalled, err := net.Dial("tcp", orAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	intruder, err := net.Dial("tcp", orAddr)
	if err != nil {
		t.Fatal(err)
	}
	intruder.Write(append([]byte{1}, make([]byte, 64)...)) //nolint:errcheck // checked by the read below
	if b, _ := io.ReadAll(intruder); len(b) != 2+64+1 || b[len(b)-1] != 0 {
		t.Errorf("intruder got %x; want the auth types, the server hash and nonce, and a failure status", b)
	}
	intruder.Close()

	acc := make(chan net.Conn, 1)
	go func() {
		s, err := ln.Accept(t.Context())
		if err != nil {
			acc <- nil
			return
		}
		acc <- s
	}()
	c, err := cli.Dial(t.Context(), ln.Addr().String())
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer c.Close()
	s := <-acc
	if s == nil {
		t.Fatal("Accept failed")
	}
	defer s.Close()
	remote := s.RemoteAddr().(*net.TCPAddr)
	raw := s.(*conn).Conn.RemoteAddr().(*net.TCPAddr)
	if !remote.IP.IsLoopback() || remote.Port == raw.Port {
		t.Errorf("RemoteAddr %v; want the obfs4 client's address, not the PT's loopback end %v", remote, raw)
	}
	if _, err := c.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 2)
	if _, err := io.ReadFull(s, b); err != nil || string(b) != "hi" {
		t.Fatalf("read %q, %v", b, err)
	}
	if !rec.contains("does not hold the cookie") {
		t.Errorf("the intruder was not logged:\n%s", strings.Join(rec.messages(), "\n"))
	}
}

// TestServerExtORPortEnv checks the environment of a server PT with
// Extended ORPort: no plain ORPort, and the cookie file.
func TestServerExtORPortEnv(t *testing.T) {
	cfg, rec := fakeConfig(t, "server")
	cfg.ExtORPort = true
	dir := t.TempDir()
	if _, _, err := cfg.ServerFactory()(nil, dir); err != nil {
		t.Fatalf("ServerFactory: %v", err)
	}
	env := envOf(t, rec)
	var ext string
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "TOR_PT_EXTENDED_SERVER_PORT="); ok {
			ext = v
		}
	}
	want := []string{
		fakeEnv + "=server",
		"TOR_PT_AUTH_COOKIE_FILE=" + dir + "/" + cookieFileName,
		"TOR_PT_EXIT_ON_STDIN_CLOSE=1",
		"TOR_PT_EXTENDED_SERVER_PORT=" + ext,
		"TOR_PT_MANAGED_TRANSPORT_VER=1",
		"TOR_PT_SERVER_BINDADDR=fake-127.0.0.1:0",
		"TOR_PT_SERVER_TRANSPORTS=fake",
		"TOR_PT_STATE_LOCATION=" + dir,
	}
	if diff := cmp.Diff(want, env); diff != "" {
		t.Errorf("the PT's environment (-want +got):\n%s", diff)
	}
	if !strings.HasPrefix(ext, "127.0.0.1:") {
		t.Errorf("Extended ORPort %q is not on loopback", ext)
	}
	b, err := os.ReadFile(dir + "/" + cookieFileName)
	if err != nil || len(b) != 64 || string(b[:32]) != cookieHeader {
		t.Errorf("cookie file: %q, %v", b, err)
	}
}

// TestServerExtORPortExit checks that, with Extended ORPort, an Accept
// waiting while the PT exits on its own keeps waiting while the listener
// launches the PT again, and that Close interrupts a handshake still in
// progress and that Accept.
func TestServerExtORPortExit(t *testing.T) {
	cfg, rec := fakeConfig(t, "server")
	cfg.ExtORPort = true
	wake := logWaker(rec)
	srv, _, err := cfg.ServerFactory()(nil, t.TempDir())
	if err != nil {
		t.Fatalf("ServerFactory: %v", err)
	}
	ln, err := srv.Listen(t.Context(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	l := ln.(*listener)
	stalled, err := net.Dial("tcp", l.or.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	offer := make([]byte, 2)
	if _, err := io.ReadFull(stalled, offer); err != nil {
		t.Fatalf("reading the auth types: %v", err)
	}

	accepted := make(chan error, 1)
	go func() {
		_, err := ln.Accept(t.Context())
		accepted <- err
	}()
	kill(t, l.current())
	waitLog(t, rec, wake, "pt running again", 1)
	select {
	case err := <-accepted:
		t.Fatalf("Accept as the PT died: %v; want it to wait", err)
	default:
	}

	if err := ln.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-accepted; !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Accept waiting across Close: %v; want ErrClosed", err)
	}
	if b, err := io.ReadAll(stalled); len(b) > 0 || err != nil {
		t.Errorf("the stalled handshake after Close: read %x, %v; want EOF", b, err)
	}
	if _, err := ln.Accept(t.Context()); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Accept after Close: %v; want ErrClosed", err)
	}
}
