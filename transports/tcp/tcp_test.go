package tcp

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/core/transport/transporttest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestConformance(t *testing.T) {
	transporttest.Run(t, func(t *testing.T) (transport.Transport, transport.Transport, string) {
		return New(), New(), "127.0.0.1:0"
	})
}

func TestFactory(t *testing.T) {
	tests := []struct {
		name    string
		params  transport.Params
		wantErr error
	}{
		{"nil", nil, nil},
		{"empty", transport.Params{}, nil},
		{"unknown", transport.Params{"sni": "example.com"}, transport.ErrBadParams},
		{"two unknown", transport.Params{"a": "1", "b": "2"}, transport.ErrBadParams},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := Factory(tt.params)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Factory(%v) error = %v, want %v", tt.params, err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if got := tr.Name(); got != "tcp" {
				t.Errorf("Name() = %q, want %q", got, "tcp")
			}
		})
	}
	var r transport.Registry
	r.Register(Name, Factory)
	if _, err := r.New(Name, transport.Params{"x": "y"}); !errors.Is(err, transport.ErrBadParams) {
		t.Errorf("Registry.New with a bad parameter: %v, want ErrBadParams", err)
	}
	if got, want := r.Names(), []string{"tcp"}; !cmp.Equal(got, want) {
		t.Errorf("Names() = %v, want %v", got, want)
	}
}

// pair returns a connected client and server connection over loopback.
func pair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	ctx := context.Background()
	tr := New()
	ln, err := tr.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = tr.Dial(ctx, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept(ctx)
	if err != nil {
		client.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// TestErrors checks that errors wrap the core/transport sentinels and keep
// what they wrap.
func TestErrors(t *testing.T) {
	ctx := context.Background()
	tr := New()
	closedAddr := func(t *testing.T) string {
		t.Helper()
		ln, err := tr.Listen(ctx, "127.0.0.1:0")
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
			_, err := tr.Dial(ctx, closedAddr(t))
			return err
		}, []error{transport.ErrRefused}},
		{"dial cancelled", func(t *testing.T) error {
			ctx, cancel := context.WithCancel(ctx)
			cancel()
			_, err := tr.Dial(ctx, closedAddr(t))
			return err
		}, []error{context.Canceled}},
		{"dial deadline", func(t *testing.T) error {
			ctx, cancel := context.WithDeadline(ctx, time.Unix(1, 0))
			defer cancel()
			_, err := tr.Dial(ctx, closedAddr(t))
			return err
		}, []error{transport.ErrTimeout, context.DeadlineExceeded}},
		{"listen bad address", func(t *testing.T) error {
			_, err := tr.Listen(ctx, "127.0.0.1:99999")
			return err
		}, nil},
		{"read deadline", func(t *testing.T) error {
			c, _ := pair(t)
			c.SetReadDeadline(time.Unix(1, 0))
			_, err := c.Read(make([]byte, 1))
			return err
		}, []error{transport.ErrTimeout, os.ErrDeadlineExceeded}},
		{"write deadline", func(t *testing.T) error {
			c, _ := pair(t)
			c.SetWriteDeadline(time.Unix(1, 0))
			_, err := c.Write([]byte("x"))
			return err
		}, []error{transport.ErrTimeout, os.ErrDeadlineExceeded}},
		{"read closed", func(t *testing.T) error {
			c, _ := pair(t)
			c.Close()
			_, err := c.Read(make([]byte, 1))
			return err
		}, []error{transport.ErrClosed, net.ErrClosed}},
		{"write closed", func(t *testing.T) error {
			c, _ := pair(t)
			c.Close()
			_, err := c.Write([]byte("x"))
			return err
		}, []error{transport.ErrClosed, net.ErrClosed}},
		{"accept deadline", func(t *testing.T) error {
			ln, err := tr.Listen(ctx, "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			ctx, cancel := context.WithDeadline(ctx, time.Unix(1, 0))
			defer cancel()
			_, err = ln.Accept(ctx)
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
			if msg := err.Error(); len(msg) < 5 || msg[:5] != "tcp: " {
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

// TestEOFUnwrapped checks that io.EOF reaches callers as is, as io.Reader
// requires.
func TestEOFUnwrapped(t *testing.T) {
	c, s := pair(t)
	s.Close()
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("Read after the peer closed = %d, %v; want 0, io.EOF", n, err)
	}
}

func TestConcurrentAccept(t *testing.T) {
	ctx := context.Background()
	tr := New()
	ln, err := tr.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// One Accept is cancelled while another waits: the other must still
	// get the next connection.
	cctx, cancel := context.WithCancel(ctx)
	cancelled := make(chan error, 1)
	go func() { _, err := ln.Accept(cctx); cancelled <- err }()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept(ctx)
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	cancel()
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Accept: %v", err)
	}
	c, err := tr.Dial(ctx, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := <-accepted
	if s == nil {
		t.Fatal("second Accept failed")
	}
	s.Close()
}

func BenchmarkGoodput(b *testing.B) {
	c, s := pair(b)
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, s)
		done <- err
	}()
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	c.Close()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}
