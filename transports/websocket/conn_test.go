package websocket

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/commucat/commucat/core/transport"
)

// TestErrors checks that errors wrap the core/transport sentinels and keep
// what they wrap.
func TestErrors(t *testing.T) {
	client, server, _ := pair(t)
	tests := []struct {
		name string
		run  func(t *testing.T) error
		want []error
	}{
		{"read deadline", func(t *testing.T) error {
			c, _ := connect(t, client, server)
			c.SetReadDeadline(time.Unix(1, 0))
			_, err := c.Read(make([]byte, 1))
			return err
		}, []error{transport.ErrTimeout, os.ErrDeadlineExceeded}},
		{"write deadline", func(t *testing.T) error {
			c, _ := connect(t, client, server)
			c.SetWriteDeadline(time.Unix(1, 0))
			_, err := c.Write([]byte("x"))
			return err
		}, []error{transport.ErrTimeout, os.ErrDeadlineExceeded}},
		{"read closed", func(t *testing.T) error {
			c, _ := connect(t, client, server)
			c.Close()
			_, err := c.Read(make([]byte, 1))
			return err
		}, []error{transport.ErrClosed, net.ErrClosed}},
		{"write closed", func(t *testing.T) error {
			c, _ := connect(t, client, server)
			c.Close()
			_, err := c.Write([]byte("x"))
			return err
		}, []error{transport.ErrClosed, net.ErrClosed}},
		{"second close", func(t *testing.T) error {
			c, _ := connect(t, client, server)
			c.Close()
			return c.Close()
		}, []error{transport.ErrClosed}},
		{"peer dropped without a close frame", func(t *testing.T) error {
			c, s := connect(t, client, server)
			s.(*conn).raw.(*serverConn).Conn.Close() // the TCP connection under TLS
			_, err := c.Read(make([]byte, 1))
			return err
		}, []error{transport.ErrRefused}},
		{"accept deadline", func(t *testing.T) error {
			ln := listen(t, server)
			ctx, cancel := context.WithDeadline(context.Background(), time.Unix(1, 0))
			defer cancel()
			_, err := ln.Accept(ctx)
			return err
		}, []error{transport.ErrTimeout, context.DeadlineExceeded}},
		{"dial refused", func(t *testing.T) error {
			ln := listen(t, server)
			addr := ln.Addr().String()
			ln.Close()
			_, err := client.Dial(context.Background(), addr)
			return err
		}, []error{transport.ErrRefused}},
		{"dial cancelled", func(t *testing.T) error {
			ln := listen(t, server)
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_, err := client.Dial(ctx, ln.Addr().String())
			return err
		}, []error{context.Canceled}},
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
			if !strings.HasPrefix(err.Error(), "websocket: ") {
				t.Errorf("error %q does not start with the package name", err)
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

// TestCloseEndsBlockedWrite checks that Close fails a Write blocked on a
// peer that does not read, as closing a TCP socket does.
func TestCloseEndsBlockedWrite(t *testing.T) {
	client, server, _ := pair(t)
	c, _ := connect(t, client, server) // the peer never reads
	wrote := make(chan error, 1)
	go func() {
		chunk := make([]byte, 1<<20)
		for {
			if _, err := c.Write(chunk); err != nil {
				wrote <- err
				return
			}
		}
	}()
	// Whether the writer is blocked yet or not, Close must end it with
	// transport.ErrClosed and must not wait for the close timeout.
	c.Close()
	if err := <-wrote; !errors.Is(err, transport.ErrClosed) {
		t.Errorf("blocked Write after Close: %v, want transport.ErrClosed", err)
	}
}

// TestListenerCloseAbortsQueued checks that upgraded connections nobody
// accepted are closed with the listener.
func TestListenerCloseAbortsQueued(t *testing.T) {
	client, server, _ := pair(t)
	ln, err := server.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var conns []net.Conn
	for range 3 {
		c, err := client.Dial(ctx, ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	for i, c := range conns {
		if n, err := c.Read(make([]byte, 1)); err == nil {
			t.Errorf("conn %d: Read = %d, nil after the listener closed", i, n)
		}
	}
	if _, err := ln.Accept(ctx); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Accept after Close: %v", err)
	}
}

// TestLargeWrite checks that one Write larger than a message arrives whole
// and in order.
func TestLargeWrite(t *testing.T) {
	client, server, _ := pair(t)
	c, s := connect(t, client, server)
	msg := make([]byte, 3*maxMessage+12345)
	for i := range msg {
		msg[i] = byte(i * 13)
	}
	go func() {
		c.Write(msg) //nolint:errcheck // checked by the read
		c.Close()
	}()
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(msg) {
		t.Errorf("read %d bytes that differ from the %d written", len(got), len(msg))
	}
}
