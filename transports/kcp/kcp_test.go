package kcp

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/core/transport/transporttest"
)

// kcpGlobals are kcp-go's process-wide goroutines, which never exit: the
// timer scheduler's shards (started when kcp-go loads) and the packet
// workers (started on first use).
var kcpGlobals = []goleak.Option{
	goleak.IgnoreAnyFunction("github.com/xtaci/kcp-go/v5.(*TimedSched).run"),
	goleak.IgnoreAnyFunction("github.com/xtaci/kcp-go/v5.postProcessWorker"),
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, kcpGlobals...)
}

// newTransport returns a transport with key, closed when the test ends.
func newTransport(t testing.TB, key string, tweak func(*Config)) *Transport {
	t.Helper()
	cfg := Config{Key: key}
	if tweak != nil {
		tweak(&cfg)
	}
	tr, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// connect returns a connected client and server connection over a fresh
// listener of server.
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

// warmUp runs one exchange so that kcp-go's lazily started workers exist
// before a goroutine baseline is taken.
func warmUp(t *testing.T) {
	t.Helper()
	key := NewKey()
	tr := newTransport(t, key, nil)
	c, s := connect(t, tr, tr)
	go s.Write([]byte{1}) //nolint:errcheck // checked by the read
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	s.Close()
	tr.Close()
}

func TestConformance(t *testing.T) {
	warmUp(t)
	transporttest.Run(t, func(t *testing.T) (transport.Transport, transport.Transport, string) {
		key := NewKey()
		tweak := func(c *Config) { c.HandshakeTimeout = 2 * time.Second }
		return newTransport(t, key, tweak), newTransport(t, key, tweak), "127.0.0.1:0"
	})
}

func TestWrongKey(t *testing.T) {
	server := newTransport(t, NewKey(), nil)
	client := newTransport(t, NewKey(), func(c *Config) { c.HandshakeTimeout = 300 * time.Millisecond })
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
		t.Fatal("Dial with the wrong key succeeded")
	}
	if !errors.Is(err, transport.ErrTimeout) {
		t.Errorf("Dial with the wrong key: %v; want transport.ErrTimeout", err)
	}
	acceptCtx, cancelAccept := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelAccept()
	if c, err := ln.Accept(acceptCtx); err == nil {
		c.Close()
		t.Error("Accept returned a connection from a client with the wrong key")
	}
}

func TestDatagram(t *testing.T) {
	key := NewKey()
	tr := newTransport(t, key, nil)
	c, s := connect(t, tr, tr)
	cd, ok := c.(transport.DatagramConn)
	if !ok {
		t.Fatalf("%T does not implement transport.DatagramConn", c)
	}
	sd := s.(transport.DatagramConn)
	if got := cd.MaxDatagramSize(); got != 1309 {
		t.Errorf("MaxDatagramSize = %d, want 1309 for the default MTU", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tests := []struct {
		name     string
		from, to transport.DatagramConn
		size     int
	}{
		{"client to server, empty", cd, sd, 0},
		{"client to server, largest", cd, sd, cd.MaxDatagramSize()},
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
			got := make(chan []byte, 1)
			go func() {
				for {
					b, err := tt.to.ReceiveDatagram(ctx)
					if err != nil {
						b = []byte("error: " + err.Error())
					} else if slices.ContainsFunc(stale, func(e []byte) bool { return bytes.Equal(b, e) }) {
						continue
					}
					got <- b
					return
				}
			}()
			// Datagrams may be lost even on loopback; send until one arrives.
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for {
				if err := tt.from.SendDatagram(msg); err != nil {
					t.Fatalf("SendDatagram(%d bytes): %v", tt.size, err)
				}
				select {
				case b := <-got:
					if !bytes.Equal(b, msg) {
						t.Fatalf("received %q, want the %d bytes sent", b, len(msg))
					}
					return
				case <-tick.C:
				case <-ctx.Done():
					t.Fatal("no datagram arrived")
				}
			}
		})
	}
	if err := cd.SendDatagram(make([]byte, cd.MaxDatagramSize()+1)); !errors.Is(err, transport.ErrTooLarge) {
		t.Errorf("oversized SendDatagram = %v, want transport.ErrTooLarge", err)
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
}

func TestListenerCloseKeepsAccepted(t *testing.T) {
	tr := newTransport(t, NewKey(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ln, err := tr.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := tr.Dial(ctx, ln.Addr().String())
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

func TestTransportCloseResets(t *testing.T) {
	server := newTransport(t, NewKey(), nil)
	client := newTransport(t, server.cfg.Key, nil)
	c, s := connect(t, client, server)
	if err := client.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Read(make([]byte, 1)); !errors.Is(err, transport.ErrRefused) {
		t.Errorf("Read after the peer's transport closed = %v, want transport.ErrRefused", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Write on a connection of a closed transport = %v, want transport.ErrClosed", err)
	}
	if _, err := client.Dial(context.Background(), "127.0.0.1:1"); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Dial after Close = %v, want transport.ErrClosed", err)
	}
}

func TestIdleTimeout(t *testing.T) {
	// The server hears nothing from a client whose keep-alives are far
	// apart, and drops the connection.
	key := NewKey()
	server := newTransport(t, key, func(c *Config) {
		c.IdleTimeout = 200 * time.Millisecond
		c.KeepAlive = 20 * time.Millisecond
	})
	client := newTransport(t, key, func(c *Config) {
		c.IdleTimeout = time.Hour
		c.KeepAlive = 30 * time.Minute
	})
	_, s := connect(t, client, server)
	if _, err := s.Read(make([]byte, 1)); !errors.Is(err, transport.ErrTimeout) {
		t.Errorf("Read from a silent peer = %v, want transport.ErrTimeout", err)
	}
}

func TestFactory(t *testing.T) {
	key := NewKey()
	tests := []struct {
		name    string
		params  transport.Params
		wantErr bool
	}{
		{"key only", transport.Params{"key": key}, false},
		{"shards", transport.Params{"key": key, "datashards": "4", "parityshards": "2"}, false},
		{"no key", transport.Params{}, true},
		{"short key", transport.Params{"key": "AAAA"}, true},
		{"padded key", transport.Params{"key": key + "="}, true},
		{"bad shards", transport.Params{"key": key, "datashards": "x"}, true},
		{"zero shards", transport.Params{"key": key, "parityshards": "0"}, true},
		{"too many shards", transport.Params{"key": key, "datashards": "200", "parityshards": "100"}, true},
		{"unknown key", transport.Params{"key": key, "mtu": "1400"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := Factory(tt.params)
			if tt.wantErr {
				if !errors.Is(err, transport.ErrBadParams) {
					t.Fatalf("Factory = %v, want transport.ErrBadParams", err)
				}
				if err != nil && bytes.Contains([]byte(err.Error()), []byte(key)) {
					t.Errorf("error %q reveals the key", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Factory: %v", err)
			}
			if tr.Name() != Name {
				t.Errorf("Name() = %q, want %q", tr.Name(), Name)
			}
			tr.(*Transport).Close()
		})
	}
}

func TestConfigValidate(t *testing.T) {
	key := NewKey()
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{Key: key}, true},
		{"no key", Config{}, false},
		{"mtu too small", Config{Key: key, MTU: 100}, false},
		{"mtu too large", Config{Key: key, MTU: 9000}, false},
		{"negative linger", Config{Key: key, Linger: -1}, false},
		{"keepalive above idle", Config{Key: key, KeepAlive: time.Minute, IdleTimeout: time.Second}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.ok != (err == nil) {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestNewKey(t *testing.T) {
	a, b := NewKey(), NewKey()
	if a == b {
		t.Error("two NewKey calls returned the same key")
	}
	if len(a) != 43 {
		t.Errorf("NewKey() has %d characters, want 43", len(a))
	}
	if err := (Config{Key: a}).Validate(); err != nil {
		t.Errorf("NewKey() does not validate: %v", err)
	}
}
