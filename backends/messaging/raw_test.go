package messaging_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/commucat/commucat/backends/messaging"
	"github.com/commucat/commucat/backends/messaging/messagingtest"
	"github.com/commucat/commucat/core/frame"
	"github.com/google/go-cmp/cmp"
)

// raw is a session on which the test speaks frames itself.
type raw struct {
	t      testing.TB
	end    *messagingtest.Conn
	cancel context.CancelFunc
	wg     sync.WaitGroup
	served error
}

func (g *gateway) raw(key [32]byte) *raw {
	g.t.Helper()
	peer, err := g.svc.Authenticate(context.Background(), key)
	if err != nil {
		g.t.Fatalf("Authenticate: %v", err)
	}
	gw, cl := messagingtest.Pipe(64)
	ctx, cancel := context.WithCancel(context.Background())
	r := &raw{t: g.t, end: cl, cancel: cancel}
	svc := g.svc
	r.wg.Go(func() { r.served = svc.ServeSession(ctx, peer, gw) })
	g.t.Cleanup(func() {
		cl.Close()
		cancel()
		r.wg.Wait()
	})
	return r
}

func (r *raw) send(frames ...frame.Frame) {
	r.t.Helper()
	if err := r.end.Send(context.Background(), frames...); err != nil {
		r.t.Fatalf("Send: %v", err)
	}
}

// frames returns the frames the gateway has sent so far.
func (r *raw) frames() []frame.Frame {
	r.t.Helper()
	synctest.Wait()
	var out []frame.Frame
	for {
		// In the bubble, the timeout fires only once nothing else can run.
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		f, err := r.end.Recv(ctx)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			return out
		}
		if err != nil {
			r.t.Fatalf("Recv: %v", err)
		}
		out = append(out, f)
	}
}

func ackFrame(kind frame.AckKind, ids ...[16]byte) frame.Frame {
	return frame.Frame{Type: frame.Ack, Payload: frame.AckPayload{Kind: kind, IDs: ids}.Append(nil)}
}

func msgFrame(env messaging.Envelope) frame.Frame {
	return frame.Frame{Type: frame.Message, Payload: env.Append(nil)}
}

// envelopes parses the Message frames among fs.
func envelopes(t *testing.T, fs []frame.Frame) []messaging.Envelope {
	t.Helper()
	var out []messaging.Envelope
	for _, f := range fs {
		if f.Type != frame.Message {
			t.Fatalf("unexpected %s frame", f.Type)
		}
		env, err := messaging.ParseEnvelope(f.Payload)
		if err != nil {
			t.Fatalf("ParseEnvelope: %v", err)
		}
		out = append(out, env)
	}
	return out
}

func TestAckOnlyDeletesOwn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGateway(t, messaging.Config{})
		alice := g.raw(g.user("alice"))
		bobKey := g.user("bob")
		carol := g.raw(g.user("carol"))
		id := [16]byte{1, 2, 3}
		alice.send(msgFrame(messaging.Envelope{ID: id, Peer: "bob", Body: []byte("for bob")}))
		alice.frames()
		alice.send(ackFrame(frame.AckDelivered, id)) // the sender
		carol.send(ackFrame(frame.AckDelivered, id)) // a stranger
		synctest.Wait()
		if diff := cmp.Diff([]string{"for bob"}, g.pending("bob")); diff != "" {
			t.Fatalf("bob's inbox after others acknowledged (-want +got):\n%s", diff)
		}
		bob := g.raw(bobKey)
		got := envelopes(t, bob.frames())
		if len(got) != 1 || got[0].ID != id || got[0].Peer != "alice" {
			t.Fatalf("bob got %+v", got)
		}
		bob.send(ackFrame(frame.AckDelivered, id))
		synctest.Wait()
		if diff := cmp.Diff([]string{}, g.pending("bob")); diff != "" {
			t.Errorf("bob's inbox after bob acknowledged (-want +got):\n%s", diff)
		}
	})
}

// TestWindow checks that at most MaxOnlineQueue messages are outstanding
// on a session and that acknowledgements open the window again, in order.
func TestWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGateway(t, messaging.Config{MaxOnlineQueue: 2})
		alice := g.connect(g.user("alice"))
		bob := g.raw(g.user("bob"))
		for _, body := range []string{"1", "2", "3", "4", "5"} {
			alice.send("bob", body)
		}
		var got []string
		for range 4 {
			envs := envelopes(t, bob.frames())
			var ids [][16]byte
			for _, e := range envs {
				got = append(got, string(e.Body))
				ids = append(ids, e.ID)
			}
			if len(envs) > 2 {
				t.Fatalf("%d messages outstanding, want at most 2", len(envs))
			}
			if len(ids) > 0 {
				bob.send(ackFrame(frame.AckDelivered, ids...))
			}
		}
		if diff := cmp.Diff([]string{"1", "2", "3", "4", "5"}, got); diff != "" {
			t.Errorf("bob got (-want +got):\n%s", diff)
		}
	})
}

func TestRedeliveryTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGateway(t, messaging.Config{RedeliverAfter: 10 * time.Second})
		alice := g.connect(g.user("alice"))
		bob := g.raw(g.user("bob"))
		alice.send("bob", "x")
		if n := len(bob.frames()); n != 1 {
			t.Fatalf("got %d frames, want 1", n)
		}
		time.Sleep(9 * time.Second)
		if n := len(bob.frames()); n != 0 {
			t.Fatalf("redelivered after 9s: %d frames", n)
		}
		time.Sleep(time.Second)
		envs := envelopes(t, bob.frames())
		if len(envs) != 1 {
			t.Fatalf("got %d frames after the timeout, want 1", len(envs))
		}
		bob.send(ackFrame(frame.AckDelivered, envs[0].ID))
		time.Sleep(time.Minute)
		if n := len(bob.frames()); n != 0 {
			t.Errorf("redelivered after the acknowledgement: %d frames", n)
		}
	})
}

func TestBadFrames(t *testing.T) {
	id := [16]byte{0xee}
	big := messaging.Envelope{ID: id, Peer: "bob", Body: make([]byte, messaging.MaxBody+1)}.Append(nil)
	tests := []struct {
		name string
		in   frame.Frame
		want *frame.ErrorPayload // nil: no answer
	}{
		{"malformed envelope", frame.Frame{Type: frame.Message, Payload: []byte("short")},
			&frame.ErrorPayload{Code: frame.ProblemBadRequest, Detail: "malformed message envelope"}},
		{"body too large", frame.Frame{Type: frame.Message, Payload: big},
			&frame.ErrorPayload{Code: frame.ProblemTooLarge, Ref: id[:], Detail: "message body over 61440 bytes"}},
		{"unknown recipient", msgFrame(messaging.Envelope{ID: id, Peer: "nobody"}),
			&frame.ErrorPayload{Code: frame.ProblemUnknownRecipient, Ref: id[:], Detail: "unknown recipient"}},
		{"malformed ack", frame.Frame{Type: frame.Ack, Payload: []byte{9}},
			&frame.ErrorPayload{Code: frame.ProblemBadRequest, Detail: "malformed ack"}},
		{"register again", frame.Frame{Type: frame.Register, Payload: messaging.RegisterRequest{Code: "c", Name: "x"}.Append(nil)},
			&frame.ErrorPayload{Code: frame.ProblemBadRequest, Detail: "device already registered"}},
		{"stored ack from a client", ackFrame(frame.AckStored, id), nil},
		{"ping", frame.Frame{Type: frame.Ping, Payload: make([]byte, frame.PingLen)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				g := newGateway(t, messaging.Config{})
				g.user("bob")
				alice := g.raw(g.user("alice"))
				alice.send(tt.in)
				got := alice.frames()
				if tt.want == nil {
					if len(got) != 0 {
						t.Fatalf("got %d frames, want none", len(got))
					}
				} else {
					if len(got) != 1 || got[0].Type != frame.Error {
						t.Fatalf("got %v, want one error frame", got)
					}
					e, err := frame.ParseError(got[0].Payload)
					if err != nil {
						t.Fatalf("ParseError: %v", err)
					}
					if diff := cmp.Diff(*tt.want, e); diff != "" {
						t.Errorf("error (-want +got):\n%s", diff)
					}
				}
				// The session goes on.
				alice.send(msgFrame(messaging.Envelope{ID: [16]byte{1}, Peer: "bob", Body: []byte("still here")}))
				if got := alice.frames(); len(got) != 1 || got[0].Type != frame.Ack {
					t.Errorf("after %s, got %v, want an ack", tt.name, got)
				}
				// Close ends it cleanly.
				alice.send(frame.Frame{Type: frame.Close})
				synctest.Wait()
				alice.wg.Wait()
				if alice.served != nil {
					t.Errorf("ServeSession after Close = %v", alice.served)
				}
			})
		})
	}
}

// TestClientClosed checks that a Client whose session ended fails fast.
func TestClientClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, cl := messagingtest.Pipe(0)
		c := messaging.NewClient(cl, messaging.ClientConfig{}, nil)
		done := make(chan error)
		go func() { done <- c.Run(context.Background()) }()
		cl.Close()
		if err := <-done; err != nil {
			t.Fatalf("Run after the session closed = %v, want nil", err)
		}
		ctx := context.Background()
		if _, err := c.Send(ctx, "bob", []byte("x")); err == nil {
			t.Errorf("Send after close = %v", err)
		}
		if err := c.Listen(ctx, func(messaging.Envelope) error { return nil }, &memSeen{}); !errors.Is(err, messaging.ErrClosed) {
			t.Errorf("Listen after close = %v, want ErrClosed", err)
		}
	})
}

// TestAckNamesSender: an id names a message together with its sender.
// Bob's ack of Carol's message must not delete Alice's message to him
// that has the same id and that he has not received yet.
func TestAckNamesSender(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGateway(t, messaging.Config{MaxOnlineQueue: 1})
		alice := g.raw(g.user("alice"))
		carol := g.raw(g.user("carol"))
		bobKey := g.user("bob")
		id := [16]byte{7, 7, 7}
		carol.send(msgFrame(messaging.Envelope{ID: id, Peer: "bob", Body: []byte("from carol")}))
		carol.frames()
		alice.send(msgFrame(messaging.Envelope{ID: id, Peer: "bob", Body: []byte("from alice")}))
		alice.frames()
		bob := g.raw(bobKey)
		envs := envelopes(t, bob.frames())
		if len(envs) != 1 || envs[0].Peer != "carol" {
			t.Fatalf("bob received %+v, want carol's message alone (window 1)", envs)
		}
		bob.send(ackFrame(frame.AckDelivered, envs[0].ID))
		synctest.Wait()
		envs = envelopes(t, bob.frames())
		if len(envs) != 1 || envs[0].Peer != "alice" || string(envs[0].Body) != "from alice" {
			t.Fatalf("after acking carol's message, bob received %+v, want alice's", envs)
		}
		bob.send(ackFrame(frame.AckDelivered, envs[0].ID))
		synctest.Wait()
		if p := g.pending("bob"); len(p) != 0 {
			t.Errorf("bob's inbox still holds %q", p)
		}
	})
}

// TestUnregisteredSessionBounded: a device that is not registered gets at
// most 32 frames other than Register, and 2 minutes, before the gateway
// ends its registration with ErrRegistrationRefused.
func TestUnregisteredSessionBounded(t *testing.T) {
	for _, tt := range []struct {
		name   string
		frames int // sent at once; none: stay silent
	}{{"frames", 40}, {"silence", 0}} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				g := newGateway(t, messaging.Config{})
				gw, cl := messagingtest.Pipe(64)
				done := make(chan error, 1)
				start := time.Now()
				go func() {
					_, err := g.svc.ServeRegistration(context.Background(), [32]byte{9}, gw)
					done <- err
				}()
				// Frames the gateway does not answer, so that its
				// answers cannot fill the pipe.
				for range tt.frames {
					if err := cl.Send(context.Background(), frame.Frame{Type: frame.Ack, Payload: make([]byte, 16)}); err != nil {
						t.Fatal(err)
					}
				}
				err := <-done
				if !errors.Is(err, messaging.ErrRegistrationRefused) {
					t.Fatalf("ServeRegistration = %v, want ErrRegistrationRefused", err)
				}
				if took := time.Since(start); tt.frames == 0 && took != 2*time.Minute {
					t.Errorf("a silent device was cut off after %v, want 2m", took)
				}
				cl.Close()
			})
		})
	}
}
