package gateway_test

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/commucat/commucat/core/gateway"
	"github.com/commucat/commucat/core/handshake"
	"github.com/commucat/commucat/transports/tcp"
)

// lineLog sends every record, as text, to lines.
type lineLog struct {
	lines chan string
}

func (l *lineLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *lineLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *lineLog) WithGroup(string) slog.Handler            { return l }
func (l *lineLog) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	l.lines <- b.String()
	return nil
}

// TestErrorsDoNotLogPeerAddress: the errors of a connection's I/O name
// both of its ends; the gateway logs them without the peer's address
// (peer_addr says [scrubbed], and so must err).
func TestErrorsDoNotLogPeerAddress(t *testing.T) {
	gw, err := handshake.GenerateStatic()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Wipe)
	ll := &lineLog{lines: make(chan string, 64)}
	addrs := serve(t, gateway.Config{
		Static:           gw,
		Endpoints:        []gateway.Endpoint{{Transport: tcp.New(), Addr: "127.0.0.1:0"}},
		HandshakeTimeout: time.Second,
		Rate:             100,
		Burst:            100,
		Logger:           slog.New(ll),
	}, new(echo))
	reset := func(t *testing.T, c net.Conn) {
		t.Helper()
		if err := c.(*net.TCPConn).SetLinger(0); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	for _, tt := range []struct {
		name string
		msg  string // the log line to check
		do   func(t *testing.T, c net.Conn)
	}{
		{"first message times out", "first message failed", func(t *testing.T, c net.Conn) {
			if _, err := c.Write([]byte{0x01}); err != nil {
				t.Fatal(err)
			}
		}},
		{"reset in the handshake", "handshake failed", func(t *testing.T, c net.Conn) {
			dev, err := handshake.GenerateStatic()
			if err != nil {
				t.Fatal(err)
			}
			defer dev.Wipe()
			ini, err := handshake.NewInitiator(handshake.ClientConfig{Static: dev, ServerPublic: gw.Public()})
			if err != nil {
				t.Fatal(err)
			}
			defer ini.Wipe()
			m1, err := ini.WriteMessage1()
			if err != nil {
				t.Fatal(err)
			}
			if err := handshake.WriteMessage(c, m1); err != nil {
				t.Fatal(err)
			}
			if _, err := handshake.ReadMessage(c); err != nil {
				t.Fatal(err)
			}
			reset(t, c) // instead of message 3
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addrs[0].String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			peer := c.LocalAddr().String()
			tt.do(t, c)
			deadline := time.After(10 * time.Second)
			for {
				select {
				case line := <-ll.lines:
					if strings.Contains(line, peer) {
						t.Errorf("the log shows the peer address %s: %s", peer, line)
					}
					if !strings.Contains(line, tt.msg) {
						continue
					}
					if !strings.Contains(line, "err=") {
						t.Errorf("no error logged: %s", line)
					}
					return
				case <-deadline:
					t.Fatalf("no %q logged", tt.msg)
				}
			}
		})
	}
}

// TestOneSourceCannotTakeEverySlot: one host opening MaxConns connections
// that send nothing must not lock every other host out. Once more than
// half of the slots are taken, the host gets no more than MaxPerSource
// (here 16/16 = 1) connections before their session, and the rest of its
// connections are refused.
func TestOneSourceCannotTakeEverySlot(t *testing.T) {
	gw, err := handshake.GenerateStatic()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Wipe)
	const maxConns = 16
	srv, addrs := serveServer(t, gateway.Config{
		Static:    gw,
		Endpoints: []gateway.Endpoint{{Transport: tcp.New(), Addr: "127.0.0.1:0"}},
		MaxConns:  maxConns,
	}, new(echo))
	// The gateway accepts connections in the order they were made, so
	// these are all taken before the other host's.
	for range maxConns {
		c, err := net.Dial("tcp", addrs[0].String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	c, err := d.Dial("tcp", addrs[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dev, err := handshake.GenerateStatic()
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Wipe()
	hctx, hcancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer hcancel()
	res, err := handshake.Client(hctx, c, handshake.ClientConfig{Static: dev, ServerPublic: gw.Public()})
	if err != nil {
		t.Fatalf("handshake from another host while one host holds every slot: %v", err)
	}
	res.Wipe()
	if got, want := srv.Stats().Overloaded, uint64(maxConns/2); got != want {
		t.Errorf("Overloaded = %d, want %d (the first host's connections beyond half of MaxConns)", got, want)
	}
}

// TestNewRefusesBadConfig: New reports a configuration it cannot run
// with, instead of panicking (a negative MaxConns made the slot channel)
// or accepting one with which every handshake fails (a MaxSkew the
// handshake refuses).
func TestNewRefusesBadConfig(t *testing.T) {
	gw, err := handshake.GenerateStatic()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Wipe)
	eps := []gateway.Endpoint{{Transport: tcp.New(), Addr: "127.0.0.1:0"}}
	for _, tt := range []struct {
		name string
		cfg  gateway.Config
	}{
		{"negative MaxConns", gateway.Config{Static: gw, Endpoints: eps, MaxConns: -1}},
		{"negative HandshakeTimeout", gateway.Config{Static: gw, Endpoints: eps, HandshakeTimeout: -time.Second}},
		{"negative Rate", gateway.Config{Static: gw, Endpoints: eps, Rate: -1}},
		{"negative Burst", gateway.Config{Static: gw, Endpoints: eps, Burst: -1}},
		{"MaxSkew above a day", gateway.Config{Static: gw, Endpoints: eps, MaxSkew: 48 * time.Hour}},
		{"negative MaxSkew", gateway.Config{Static: gw, Endpoints: eps, MaxSkew: -time.Second}},
		{"endpoint without transport", gateway.Config{Static: gw, Endpoints: []gateway.Endpoint{{Addr: "127.0.0.1:0"}}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("New panicked: %v", r)
				}
			}()
			if _, err := gateway.New(tt.cfg, new(echo)); err == nil {
				t.Fatal("New accepted the configuration")
			}
		})
	}
}

// TestRunOnce: a second Run fails at once instead of waiting, serving
// nothing, for its context to end.
func TestRunOnce(t *testing.T) {
	gw, err := handshake.GenerateStatic()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Wipe)
	srv, err := gateway.New(gateway.Config{Static: gw, Endpoints: []gateway.Endpoint{{Transport: tcp.New(), Addr: "127.0.0.1:0"}}}, new(echo))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Listen(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := srv.Run(ctx); err != nil {
		t.Fatalf("first Run: %v", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Run(ctx); err == nil {
		t.Fatal("second Run returned nil when its context ended, having served nothing")
	}
}
