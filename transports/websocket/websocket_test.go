package websocket

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

// pair returns a server transport made by ServerFactory in a fresh state
// directory and a client transport made by Factory from its public
// parameters.
func pair(t testing.TB) (client, server *Transport, public transport.Params) {
	t.Helper()
	st, pub, err := ServerFactory(nil, t.TempDir())
	if err != nil {
		t.Fatalf("ServerFactory: %v", err)
	}
	ct, err := Factory(pub)
	if err != nil {
		t.Fatalf("Factory(%v): %v", pub, err)
	}
	return ct.(*Transport), st.(*Transport), pub
}

// connect returns a connected client and server connection over a fresh
// listener.
func connect(t testing.TB, client, server *Transport) (c, s net.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ln := listen(t, server)
	c, err := client.Dial(ctx, ln.Addr().String())
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

// listen opens a listener on loopback, closed when the test ends.
func listen(t testing.TB, server *Transport) transport.Listener {
	t.Helper()
	ln, err := server.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func TestConformance(t *testing.T) {
	client, server, _ := pair(t)
	transporttest.Run(t, func(t *testing.T) (transport.Transport, transport.Transport, string) {
		return client, server, "127.0.0.1:0"
	})
}
