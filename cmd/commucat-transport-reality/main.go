// Command commucat-transport-reality is CommuCat's REALITY-style transport
// (transports/reality) as an out-of-process plugin. Put it into a plugins
// folder; the commucat binary runs it.
package main

import (
	"github.com/commucat/commucat/plugins/sdk"
	"github.com/commucat/commucat/transports/reality"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	sdk.Serve(sdk.Plugin{
		Name: reality.Name, Version: version, Client: reality.Factory, Server: reality.ServerFactory,
		Params: []sdk.Param{
			{Name: "pbk", Doc: "the gateway's public key", Client: true, Required: true},
			{Name: "sni", Doc: "cover server names, comma-separated", Client: true, Server: true, Required: true},
			{Name: "sid", Doc: "short id, up to 16 hex digits", Client: true, Server: true},
			{Name: "fp", Doc: "ClientHello fingerprint preset; default chrome", Client: true, Server: true},
			{Name: "dest", Doc: "cover site host:port", Server: true, Required: true},
		},
	})
}
