package plugins

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/core/transport/transporttest"
)

// TestConformance runs core/transport's conformance suite against the
// built-in transports' plugin binaries, through the host. (The example
// plugin's run is in TestExamplePlugin.)
//
// Every flow has rings (protocol version 3) but in the websocket runs
// "sockets", where none has, and "one-ring", where one flow at a time
// has and the others go through their socket.
func TestConformance(t *testing.T) {
	for _, run := range []struct {
		name, variant string
		rings         int
	}{
		{"tcp", "", 0}, {"quic", "", 0}, {"kcp", "", 0}, {"obfs4", "", 0}, {"websocket", "", 0}, {"reality", "", 0},
		{"websocket", "sockets", -1}, {"websocket", "one-ring", 1},
	} {
		name := run.name
		t.Run(strings.TrimSuffix(name+"/"+run.variant, "/"), func(t *testing.T) {
			bin := buildPlugin(t, name, "./cmd/commucat-transport-"+name)
			_, r := startHost(t, HostConfig{RingFlows: run.rings}, pluginDir(t, map[string]string{name: bin}))
			var client, server transport.Transport
			if name == "reality" {
				client, server = realitySides(t, r)
			} else {
				client, server = serverAndClient(t, r, name)
			}
			transporttest.Run(t, func(t *testing.T) (transport.Transport, transport.Transport, string) {
				return client, server, "127.0.0.1:0"
			}, hostGoroutines...)
		})
	}
}

// hostGoroutines are go-plugin's broker stream goroutines, which it starts
// on its own some time after a plugin starts. They are the host's, live
// until Host.Close (TestMain's goleak check covers them), and may appear
// after the conformance suite took its baseline.
var hostGoroutines = []goleak.Option{
	goleak.IgnoreTopFunction("github.com/hashicorp/go-plugin.(*gRPCBrokerClientImpl).StartStream.func1"),
	goleak.IgnoreTopFunction("google.golang.org/grpc.newClientStreamWithParams.func4"),
}

// realitySides builds the reality transport's two sides in front of a
// local HTTPS cover site (httptest's certificate names example.com).
func realitySides(t testing.TB, r *transport.Registry) (client, server transport.Transport) {
	t.Helper()
	return realitySidesOver(t, r, r)
}

// realitySidesOver is realitySides with the client from creg and the
// server from sreg.
func realitySidesOver(t testing.TB, creg, sreg *transport.Registry) (client, server transport.Transport) {
	t.Helper()
	cover := newCover()
	t.Cleanup(cover.Close)
	return serverAndClientOver(t, creg, sreg, "reality", realityParams(cover.Listener.Addr().String()))
}

// newCover starts an HTTPS server on loopback for reality to borrow.
func newCover() *httptest.Server {
	cover := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "cover\n")
	}))
	cover.Config.ErrorLog = log.New(io.Discard, "", 0)
	cover.StartTLS()
	return cover
}

// realityParams are a reality server's parameters with the cover at dest.
func realityParams(dest string) transport.Params {
	return transport.Params{"dest": dest, "sni": "example.com", "sid": "0123456789abcdef"}
}
