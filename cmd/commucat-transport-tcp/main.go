// Command commucat-transport-tcp is CommuCat's plain TCP transport
// (transports/tcp) as an out-of-process plugin. Put it into a plugins
// folder; the commucat binary runs it.
package main

import (
	"github.com/commucat/commucat/plugins/sdk"
	"github.com/commucat/commucat/transports/tcp"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	sdk.Serve(sdk.Plugin{Name: tcp.Name, Version: version, Client: tcp.Factory, Server: tcp.ServerFactory, HandOver: true})
}
