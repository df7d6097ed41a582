package messaging_test

import (
	"github.com/commucat/commucat/backends/messaging"
	"github.com/commucat/commucat/backends/messaging/messagingtest"
	coresession "github.com/commucat/commucat/core/session"
)

// The real session and the in-memory pipe both carry the protocol.
var (
	_ messaging.Conn = (*coresession.Session)(nil)
	_ messaging.Conn = (*messagingtest.Conn)(nil)
)
