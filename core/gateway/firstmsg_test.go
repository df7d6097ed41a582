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
	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/transports/tcp"
)

// levelLog records the level of each "first message failed" line.
type levelLog struct {
	levels chan slog.Level
}

func (l *levelLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *levelLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *levelLog) WithGroup(string) slog.Handler            { return l }
func (l *levelLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "first message failed" {
		l.levels <- r.Level
	}
	return nil
}

// TestQuietConnectionLoggedAtDebug: a connection that sends nothing before
// the handshake timeout (what a client's race leaves behind on a
// datagram transport, which sends no close) or before it closes is a
// debug line; one that sends a byte, then nothing, stays an info line.
func TestQuietConnectionLoggedAtDebug(t *testing.T) {
	gw, err := handshake.GenerateStatic()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Wipe)
	ll := &levelLog{levels: make(chan slog.Level, 4)}
	// The quiet cases wait out the handshake timeout; the third case's
	// byte must be read within it, which a short one leaves to the
	// scheduler of a loaded machine.
	addrs := serve(t, gateway.Config{
		Static:           gw,
		Endpoints:        []gateway.Endpoint{{Transport: tcp.New(), Addr: "127.0.0.1:0"}},
		HandshakeTimeout: time.Second,
		Logger:           slog.New(ll),
	}, new(echo))
	for _, tt := range []struct {
		name  string
		send  []byte
		close bool
		want  slog.Level
	}{
		{"nothing, then quiet", nil, false, slog.LevelDebug},
		{"nothing, then closed", nil, true, slog.LevelDebug},
		{"one byte, then quiet", []byte{0x01}, false, slog.LevelInfo},
	} {
		c, err := net.Dial("tcp", addrs[0].String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(tt.send); err != nil {
			t.Fatal(err)
		}
		if tt.close {
			c.Close()
		}
		select {
		case got := <-ll.levels:
			if got != tt.want {
				t.Errorf("%s: logged at %v, want %v", tt.name, got, tt.want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: nothing logged", tt.name)
		}
		c.Close()
	}
}

// closingTCP is tcp whose listeners the test can close behind the
// gateway's back, as a plugin host closes a plugin's listener.
type closingTCP struct {
	*tcp.Transport
	listeners chan transport.Listener
}

func (c closingTCP) Listen(ctx context.Context, addr string) (transport.Listener, error) {
	l, err := c.Transport.Listen(ctx, addr)
	if err == nil {
		c.listeners <- l
	}
	return l, err
}

// TestListenerClosedLogged: a listener closed while the gateway runs ends
// that transport's service, and the gateway says so at error level.
func TestListenerClosedLogged(t *testing.T) {
	gw, err := handshake.GenerateStatic()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Wipe)
	tr := closingTCP{Transport: tcp.New(), listeners: make(chan transport.Listener, 1)}
	ll := &lineLog{lines: make(chan string, 64)}
	serve(t, gateway.Config{
		Static:    gw,
		Endpoints: []gateway.Endpoint{{Transport: tr, Addr: "127.0.0.1:0"}},
		Logger:    slog.New(ll),
	}, new(echo))
	(<-tr.listeners).Close()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case line := <-ll.lines:
			if strings.HasPrefix(line, "ERROR ") {
				if !strings.Contains(line, "no longer served") {
					t.Errorf("logged %q", line)
				}
				return
			}
		case <-timeout:
			t.Fatal("nothing logged at error level after the listener closed")
		}
	}
}
