// Command commucat-transport-obfs4 is CommuCat's obfs4 transport
// (transports/obfs4) as an out-of-process plugin. Put it into a plugins
// folder; the commucat binary runs it.
package main

import (
	"github.com/commucat/commucat/plugins/sdk"
	"github.com/commucat/commucat/transports/obfs4"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	sdk.Serve(sdk.Plugin{
		Name: obfs4.Name, Version: version, Client: obfs4.Factory, Server: obfs4.ServerFactory,
		Params: []sdk.Param{
			{Name: "cert", Doc: "server node ID and identity key, unpadded base64", Client: true, Required: true},
			{Name: "iat-mode", Doc: "0, 1 or 2: inter-arrival-time obfuscation", Client: true, Server: true},
		},
	})
}
