package obfs4

import (
	"context"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"

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
