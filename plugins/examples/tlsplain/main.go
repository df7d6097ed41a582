// Command commucat-transport-tlsplain is an example third-party CommuCat
// transport plugin: plain TLS 1.3 over TCP with crypto/tls, the server's
// certificate pinned by the client. It imports nothing of CommuCat but
// plugins/sdk. See README.md to build it and drop it in.
//
// The gateway side (Server) creates a self-signed certificate in its
// state directory on first use and publishes its pin; the client side
// (Client) needs that pin ("pin") and may send a server name ("sni").
package main

import "github.com/commucat/commucat/plugins/sdk"

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0"

func main() {
	sdk.Serve(sdk.Plugin{
		Name:    "tlsplain",
		Version: version,
		Client:  Factory,
		Server:  ServerFactory,
		Params: []sdk.Param{
			{Name: "pin", Doc: "SHA-256 of the server's public key, base64url", Client: true, Required: true},
			{Name: "sni", Doc: "server name to send; default none", Client: true, Server: true},
		},
	})
}
