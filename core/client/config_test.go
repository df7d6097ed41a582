package client_test

import (
	"errors"
	"testing"
	"time"

	"github.com/commucat/commucat/core/client"
	"github.com/commucat/commucat/core/handshake"
	"github.com/commucat/commucat/core/invite"
	"github.com/commucat/commucat/core/transport"
)

// TestDialRefusesBadConfig: Dial reports a configuration it cannot use
// instead of panicking (no registry) or timing every attempt out at once
// (a negative AttemptTimeout).
func TestDialRefusesBadConfig(t *testing.T) {
	dev, err := handshake.GenerateStatic()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dev.Wipe)
	reg := new(transport.Registry)
	eps := []invite.Endpoint{{Transport: "none", Addr: "127.0.0.1:1"}}
	for _, tt := range []struct {
		name string
		cfg  client.Config
	}{
		{"no registry", client.Config{Static: dev, Endpoints: eps}},
		{"negative AttemptTimeout", client.Config{Static: dev, Endpoints: eps, Transports: reg, AttemptTimeout: -time.Second}},
		{"negative Stagger", client.Config{Static: dev, Endpoints: eps, Transports: reg, Stagger: -time.Second}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("Dial panicked: %v", r)
				}
			}()
			_, _, err := client.Dial(t.Context(), tt.cfg)
			// A configuration error, not a failure to reach the gateway.
			if err == nil || errors.Is(err, client.ErrNoEndpoint) {
				t.Fatalf("Dial = %v, want a configuration error", err)
			}
		})
	}
}
