// Command commucat-transport-quic is CommuCat's QUIC transport
// (transports/quic) as an out-of-process plugin. Put it into a plugins
// folder; the commucat binary runs it.
package main

import (
	"github.com/commucat/commucat/plugins/sdk"
	"github.com/commucat/commucat/transports/quic"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	sdk.Serve(sdk.Plugin{
		Name: quic.Name, Version: version, Client: quic.Factory, Server: quic.ServerFactory, Datagram: true,
		Params: []sdk.Param{
			{Name: "pin", Doc: "pin of the server's certificate", Client: true, Required: true},
			{Name: "sni", Doc: "server name sent; default: the dialled host", Client: true},
			{Name: "alpn", Doc: "application protocol; default h3", Client: true, Server: true},
		},
	})
}
