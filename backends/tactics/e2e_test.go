package tactics_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/commucat/commucat/backends/tactics"
	"github.com/commucat/commucat/core/client"
	"github.com/commucat/commucat/core/frame"
	"github.com/commucat/commucat/core/gateway"
	"github.com/commucat/commucat/core/handshake"
	"github.com/commucat/commucat/core/invite"
	"github.com/commucat/commucat/core/router"
	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/transports/tcp"
)

// echoHandler serves sessions through the collector and echoes every
// other frame, as the messaging service would see them.
type echoHandler struct{ c *tactics.Collector }

func (h echoHandler) ServeSession(ctx context.Context, _ [32]byte, s *router.Session) error {
	conn := h.c.Wrap(s, tactics.SessionRemote(s))
	for {
		f, err := conn.Recv(ctx)
		if err != nil {
			return err
		}
		if err := conn.Send(ctx, f); err != nil {
			return err
		}
	}
}

// TestEndToEnd sends reports from two clients over real sessions on
// loopback: the second gets tactics built from both reports, and other
// frames go through untouched.
func TestEndToEnd(t *testing.T) {
	gw, err := handshake.GenerateStatic()
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Wipe()
	col := tactics.NewCollector(tactics.Config{})
	srv, err := gateway.New(gateway.Config{
		Static:    gw,
		Endpoints: []gateway.Endpoint{{Transport: tcp.New(), Addr: "127.0.0.1:0"}},
	}, echoHandler{col})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sctx, stop := context.WithCancel(ctx)
	addrs, err := srv.Listen(sctx)
	if err != nil {
		stop()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(sctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("gateway Run: %v", err)
		}
	}()

	var got []string
	for _, report := range [][]tactics.Verdict{
		{{Transport: "quic", State: tactics.StateBlocked}, {Transport: "tcp", State: tactics.StateOK}},
		{{Transport: "quic", State: tactics.StateBlocked}, {Transport: "reality", State: tactics.StateOK}, {Transport: "tcp", State: tactics.StateThrottled}},
	} {
		got = exchange(ctx, t, gw.Public(), addrs[0].String(), report)
	}
	if diff := cmp.Diff([]string{"reality", "tcp", "quic"}, got); diff != "" {
		t.Errorf("tactics (-want +got):\n%s", diff)
	}
	if n := col.Networks(); n != 1 {
		t.Errorf("networks = %d, want 1 (both clients on 127.0.0.0/16)", n)
	}
}

// exchange connects a new device, sends report and a message, and
// returns the tactics received before the message's echo.
func exchange(ctx context.Context, t *testing.T, gwKey [32]byte, addr string, report []tactics.Verdict) []string {
	t.Helper()
	dev, err := handshake.GenerateStatic()
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Wipe()
	reg := new(transport.Registry)
	reg.Register("tcp", tcp.Factory)
	s, _, err := client.Dial(ctx, client.Config{
		Static: dev, Gateway: gwKey, Transports: reg,
		Endpoints: []invite.Endpoint{{Transport: "tcp", Addr: addr}},
	})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	run := make(chan error, 1)
	go func() { run <- s.Run(rctx) }()
	defer func() {
		s.Close()
		cancel()
		<-run
	}()
	var order []string
	got := false
	conn := tactics.ClientConn(s, func(o []string) { order, got = o, true })
	b, err := tactics.Payload{Verdicts: report}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	msg := frame.Frame{Type: frame.Message, Payload: []byte("after the report")}
	if err := conn.Send(ctx, frame.Frame{Type: frame.ProbeReport, Payload: b}, msg); err != nil {
		t.Fatal(err)
	}
	f, err := conn.Recv(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if f.Type != frame.Message || string(f.Payload) != string(msg.Payload) {
		t.Errorf("echo = %v %q, want the message", f.Type, f.Payload)
	}
	if !got {
		t.Fatalf("no tactics before the echo")
	}
	return order
}
