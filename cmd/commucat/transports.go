package main

import (
	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/transports/tcp"
)

// newRegistry returns the built-in transports, client and gateway sides.
func newRegistry() *transport.Registry {
	r := new(transport.Registry)
	r.Register(tcp.Name, tcp.Factory)
	r.RegisterServer(tcp.Name, tcp.ServerFactory)
	return r
}
