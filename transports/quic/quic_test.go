package quic

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/core/transport/transporttest"
)

func TestMain(m *testing.M) {
	// The test machine may not allow 7 MiB UDP buffers; see the package doc.
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	goleak.VerifyTestMain(m)
}

// pair returns a server and a client transport that trust each other,
// closed when the test ends.
func pair(t testing.TB, tweak func(*Config)) (client, server *Transport) {
	t.Helper()
	cert, pin, err := LoadOrCreateCert(t.TempDir())
	if err != nil {
		t.Fatalf("LoadOrCreateCert: %v", err)
	}
	scfg, ccfg := Config{Certificate: &cert}, Config{Pin: pin}
	if tweak != nil {
		tweak(&scfg)
		tweak(&ccfg)
	}
	server, err = New(scfg)
	if err != nil {
		t.Fatalf("New(server): %v", err)
	}
	client, err = New(ccfg)
	if err != nil {
		t.Fatalf("New(client): %v", err)
	}
	t.Cleanup(func() {
		client.Close()
		server.Close()
	})
	return client, server
}

// connect returns a connected client and server connection over a fresh
// listener.
func connect(t testing.TB, client, server *Transport) (c, s net.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ln, err := server.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	c, err = client.Dial(ctx, ln.Addr().String())
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

func TestConformance(t *testing.T) {
	transporttest.Run(t, func(t *testing.T) (transport.Transport, transport.Transport, string) {
		// A short handshake timeout only speeds up DialClosedPort.
		client, server := pair(t, func(c *Config) { c.HandshakeTimeout = 2 * time.Second })
		return client, server, "127.0.0.1:0"
	})
}

func TestWrongPin(t *testing.T) {
	_, server := pair(t, nil)
	_, otherPin, err := LoadOrCreateCert(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	client, err := New(Config{Pin: otherPin})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ln, err := server.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := client.Dial(ctx, ln.Addr().String())
	if err == nil {
		c.Close()
		t.Fatal("Dial with the wrong pin succeeded")
	}
	if !errors.Is(err, ErrPinMismatch) {
		t.Errorf("Dial with the wrong pin: %v; want ErrPinMismatch", err)
	}
	// The listener goes on serving.
	acceptCtx, cancelAccept := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelAccept()
	if c, err := ln.Accept(acceptCtx); err == nil {
		c.Close()
		t.Error("Accept returned a connection from a client with the wrong pin")
	}
}

func TestALPNMismatch(t *testing.T) {
	cert, pin, err := LoadOrCreateCert(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	server, err := New(Config{Certificate: &cert, ALPN: "h3"})
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	client, err := New(Config{Pin: pin, ALPN: "doq"})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ln, err := server.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if c, err := client.Dial(ctx, ln.Addr().String()); err == nil {
		c.Close()
		t.Fatal("Dial with another ALPN succeeded")
	}
}

func TestDatagram(t *testing.T) {
	client, server := pair(t, nil)
	c, s := connect(t, client, server)
	cd, ok := c.(transport.DatagramConn)
	if !ok {
		t.Fatalf("%T does not implement transport.DatagramConn", c)
	}
	sd := s.(transport.DatagramConn)
	if got := cd.MaxDatagramSize(); got != MaxDatagramSize {
		t.Errorf("MaxDatagramSize = %d, want %d", got, MaxDatagramSize)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	tests := []struct {
		name     string
		from, to transport.DatagramConn
		size     int
	}{
		{"client to server, small", cd, sd, 1},
		{"client to server, largest", cd, sd, MaxDatagramSize},
		{"server to client", sd, cd, 600},
	}
	// The copies an earlier case sent after its first (while that one was
	// on its way) may still arrive: a receiver skips exactly those.
	var earlier [][]byte
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := bytes.Repeat([]byte{byte(tt.size)}, tt.size)
			stale := slices.Clone(earlier)
			earlier = append(earlier, msg)
			// Datagrams may be lost even on loopback; send until one arrives.
			got := make(chan []byte, 1)
			go func() {
				for {
					b, err := tt.to.ReceiveDatagram(ctx)
					if err != nil {
						b = nil
					} else if slices.ContainsFunc(stale, func(e []byte) bool { return bytes.Equal(b, e) }) {
						continue
					}
					got <- b
					return
				}
			}()
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for {
				if err := tt.from.SendDatagram(msg); err != nil {
					t.Fatalf("SendDatagram(%d bytes): %v", tt.size, err)
				}
				select {
				case b := <-got:
					if !bytes.Equal(b, msg) {
						t.Fatalf("received %d bytes, want the %d sent", len(b), len(msg))
					}
					return
				case <-tick.C:
				case <-ctx.Done():
					t.Fatal("no datagram arrived")
				}
			}
		})
	}

	if err := cd.SendDatagram(make([]byte, MaxDatagramSize+1)); !errors.Is(err, transport.ErrTooLarge) {
		t.Errorf("SendDatagram(%d bytes) = %v, want transport.ErrTooLarge", MaxDatagramSize+1, err)
	}
	cancelled, cancelNow := context.WithCancel(ctx)
	cancelNow()
	if _, err := cd.ReceiveDatagram(cancelled); !errors.Is(err, context.Canceled) {
		t.Errorf("ReceiveDatagram(cancelled) = %v, want context.Canceled", err)
	}
	c.Close()
	if err := cd.SendDatagram([]byte("x")); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("SendDatagram after Close = %v, want transport.ErrClosed", err)
	}
	if _, err := cd.ReceiveDatagram(ctx); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("ReceiveDatagram after Close = %v, want transport.ErrClosed", err)
	}
}

func TestListenerCloseKeepsAccepted(t *testing.T) {
	client, server := pair(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ln, err := server.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
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
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	go s.Write([]byte("still open")) //nolint:errcheck // checked by the read
	got := make([]byte, len("still open"))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read after the listener closed: %v", err)
	}
}

func TestLinger(t *testing.T) {
	// The server closes; the client never does, so the server's connection
	// is aborted after Linger and the client sees it.
	client, server := pair(t, func(c *Config) { c.Linger = 50 * time.Millisecond })
	c, s := connect(t, client, server)
	if _, err := s.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "bye" {
		t.Fatalf("ReadAll = %q, %v; want %q, nil", got, err, "bye")
	}
	// The stream ended cleanly; the abort only ends the connection, so a
	// datagram receive fails once the linger has passed.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = c.(transport.DatagramConn).ReceiveDatagram(ctx)
	if !errors.Is(err, transport.ErrRefused) {
		t.Errorf("ReceiveDatagram after the peer's linger = %v, want transport.ErrRefused", err)
	}
}

func TestTransportClose(t *testing.T) {
	client, server := pair(t, nil)
	c, s := connect(t, client, server)
	if err := c.Close(); err != nil { // lingers: s never closes
		t.Fatal(err)
	}
	if err := client.Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.(transport.DatagramConn).ReceiveDatagram(ctx); !errors.Is(err, transport.ErrRefused) {
		t.Errorf("server ReceiveDatagram after the client transport's Close = %v, want transport.ErrRefused", err)
	}
	if _, err := client.Dial(context.Background(), "127.0.0.1:1"); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Dial after Close = %v, want transport.ErrClosed", err)
	}
	if err := client.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

func TestFactory(t *testing.T) {
	_, pin, err := LoadOrCreateCert(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		params  transport.Params
		wantErr bool
	}{
		{"pin only", transport.Params{"pin": pin}, false},
		{"all", transport.Params{"pin": pin, "sni": "example.org", "alpn": "h3"}, false},
		{"no pin", transport.Params{"sni": "example.org"}, true},
		{"bad pin", transport.Params{"pin": "abc"}, true},
		{"unknown key", transport.Params{"pin": pin, "port": "443"}, true},
		{"bad sni", transport.Params{"pin": pin, "sni": "a b"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := Factory(tt.params)
			if tt.wantErr {
				if !errors.Is(err, transport.ErrBadParams) {
					t.Fatalf("Factory(%v) = %v, want transport.ErrBadParams", tt.params, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Factory(%v): %v", tt.params, err)
			}
			if tr.Name() != Name {
				t.Errorf("Name() = %q, want %q", tr.Name(), Name)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	cert, pin, err := LoadOrCreateCert(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"server", Config{Certificate: &cert}, true},
		{"client", Config{Pin: pin}, true},
		{"empty", Config{}, false},
		{"empty certificate", Config{Certificate: &tls.Certificate{}}, false},
		{"negative linger", Config{Pin: pin, Linger: -time.Second}, false},
		{"keepalive above idle", Config{Pin: pin, KeepAlive: time.Minute, IdleTimeout: time.Second}, false},
		{"long alpn", Config{Pin: pin, ALPN: string(make([]byte, 256))}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.ok != (err == nil) {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, transport.ErrBadParams) {
				t.Errorf("Validate() = %v, want it to wrap transport.ErrBadParams", err)
			}
		})
	}
}

func TestMissingSide(t *testing.T) {
	cert, pin, err := LoadOrCreateCert(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{Certificate: &cert})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if _, err := srv.Dial(context.Background(), "127.0.0.1:1"); !errors.Is(err, transport.ErrBadParams) {
		t.Errorf("Dial without a pin = %v, want transport.ErrBadParams", err)
	}
	cli, err := New(Config{Pin: pin})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Listen(context.Background(), "127.0.0.1:0"); !errors.Is(err, transport.ErrBadParams) {
		t.Errorf("Listen without a certificate = %v, want transport.ErrBadParams", err)
	}
	if got := srv.Pin(); got != pin {
		t.Errorf("server Pin() = %q, want %q", got, pin)
	}
	if got := cli.Pin(); got != pin {
		t.Errorf("client Pin() = %q, want %q", got, pin)
	}
}
