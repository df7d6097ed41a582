package plugins

import (
	"testing"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/core/transport/transporttest"
)

// TestConformance runs core/transport's conformance suite against the
// built-in transports' plugin binaries, through the host.
func TestConformance(t *testing.T) {
	for _, name := range []string{"tcp", "quic", "kcp", "obfs4", "websocket"} {
		t.Run(name, func(t *testing.T) {
			bin := buildPlugin(t, name, "./cmd/commucat-transport-"+name)
			_, r := startHost(t, HostConfig{}, pluginDir(t, map[string]string{name: bin}))
			client, server := serverAndClient(t, r, name)
			transporttest.Run(t, func(t *testing.T) (transport.Transport, transport.Transport, string) {
				return client, server, "127.0.0.1:0"
			})
		})
	}
}
