package main

import (
	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/transports/kcp"
	"github.com/commucat/commucat/transports/quic"
	"github.com/commucat/commucat/transports/tcp"
)

// newRegistry returns the built-in transports, client and gateway sides.
func newRegistry() *transport.Registry {
	r := new(transport.Registry)
	for _, t := range []struct {
		name   string
		client transport.Factory
		server transport.ServerFactory
	}{
		{tcp.Name, tcp.Factory, tcp.ServerFactory},
		{quic.Name, quic.Factory, quic.ServerFactory},
		{kcp.Name, kcp.Factory, kcp.ServerFactory},
	} {
		r.Register(t.name, t.client)
		r.RegisterServer(t.name, t.server)
	}
	return r
}
