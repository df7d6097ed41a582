package messaging_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/commucat/commucat/backends/messaging"
	"github.com/commucat/commucat/backends/messaging/messagingtest"
	"github.com/commucat/commucat/backends/store"
	"github.com/commucat/commucat/core/frame"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// issuer is a stand-in for core/handshake's certificate issuer.
type issuer struct{}

func (issuer) Issue(user string, id [16]byte, key [32]byte) ([]byte, error) {
	return []byte(fmt.Sprintf("cert/%s/%x", user, id[:2])), nil
}

// gateway is a Service over a real SQLite store in a temporary directory.
type gateway struct {
	t    testing.TB
	path string
	cfg  messaging.Config
	st   *store.SQLite
	svc  *messaging.Service
}

func newGateway(t testing.TB, cfg messaging.Config) *gateway {
	t.Helper()
	g := &gateway{t: t, path: filepath.Join(t.TempDir(), "gateway.db"), cfg: cfg}
	g.open()
	t.Cleanup(func() { g.st.Close() })
	return g
}

func (g *gateway) open() {
	g.t.Helper()
	st, err := store.OpenSQLite(g.path)
	if err != nil {
		g.t.Fatalf("OpenSQLite: %v", err)
	}
	g.st = st
	g.svc = messaging.New(st, issuer{}, g.cfg, nil)
}

// restart closes the store and starts a new Service on the same file, as a
// gateway restart does. Sessions of the old Service must be closed first.
func (g *gateway) restart() {
	g.t.Helper()
	if err := g.st.Close(); err != nil {
		g.t.Fatalf("Close: %v", err)
	}
	g.open()
}

// user registers name and returns its device key.
func (g *gateway) user(name string) [32]byte {
	g.t.Helper()
	ctx := context.Background()
	code, _, err := g.svc.NewCode(ctx)
	if err != nil {
		g.t.Fatalf("NewCode: %v", err)
	}
	if len(code) != messaging.CodeLen {
		g.t.Fatalf("NewCode gave %d characters; CodeLen is %d", len(code), messaging.CodeLen)
	}
	var key [32]byte
	rand.Read(key[:])
	if _, err := g.svc.Register(ctx, messaging.RegisterRequest{Code: code, Name: name}, key); err != nil {
		g.t.Fatalf("Register %s: %v", name, err)
	}
	return key
}

// pending returns the bodies in the inbox of name, expired ones included.
func (g *gateway) pending(name string) []string {
	g.t.Helper()
	u, err := g.st.UserByName(context.Background(), name)
	if err != nil {
		g.t.Fatalf("UserByName: %v", err)
	}
	ms, err := g.st.Pending(context.Background(), u.ID, time.Time{}, 1000)
	if err != nil {
		g.t.Fatalf("Pending: %v", err)
	}
	out := []string{}
	for _, m := range ms {
		out = append(out, string(m.Body))
	}
	return out
}

// tap wraps a client's end of a session: it counts the Message frames the
// client receives and can drop the acknowledgements it sends, as a client
// that crashes before acknowledging would.
type tap struct {
	messaging.Conn
	dropAcks atomic.Bool
	messages atomic.Int32
}

func (t *tap) Send(ctx context.Context, frames ...frame.Frame) error {
	if t.dropAcks.Load() {
		kept := frames[:0:0]
		for _, f := range frames {
			if f.Type != frame.Ack {
				kept = append(kept, f)
			}
		}
		frames = kept
	}
	return t.Conn.Send(ctx, frames...)
}

func (t *tap) Recv(ctx context.Context) (frame.Frame, error) {
	f, err := t.Conn.Recv(ctx)
	if err == nil && f.Type == frame.Message {
		t.messages.Add(1)
	}
	return f, err
}

// session is one connected client: a Client and the ServeSession serving
// it, both on goroutines that end when the session closes.
type session struct {
	*messaging.Client
	t      testing.TB
	tap    *tap
	end    *messagingtest.Conn
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	served error
}

func (g *gateway) connect(key [32]byte) *session {
	g.t.Helper()
	peer, err := g.svc.Authenticate(context.Background(), key)
	if err != nil {
		g.t.Fatalf("Authenticate: %v", err)
	}
	gw, cl := messagingtest.Pipe(0)
	s := &session{t: g.t, tap: &tap{Conn: cl}, end: cl}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.Client = messaging.NewClient(s.tap, messaging.ClientConfig{}, nil)
	svc := g.svc
	s.wg.Go(func() { s.served = svc.ServeSession(s.ctx, peer, gw) })
	s.wg.Go(func() { s.Client.Run(s.ctx) })
	g.t.Cleanup(s.close)
	return s
}

// close ends the session and waits for its goroutines.
func (s *session) close() {
	s.end.Close()
	s.cancel()
	s.wg.Wait()
	if s.served != nil {
		s.t.Errorf("ServeSession: %v", s.served)
	}
	s.served = nil
}

// listen runs Listen on the session and returns the messages handled.
func (s *session) listen(seen messaging.SeenStore) <-chan messaging.Envelope {
	ch := make(chan messaging.Envelope, 100)
	s.wg.Go(func() {
		err := s.Client.Listen(s.ctx, func(e messaging.Envelope) error { ch <- e; return nil }, seen)
		if err != nil && !errors.Is(err, messaging.ErrClosed) {
			s.t.Errorf("Listen: %v", err)
		}
	})
	return ch
}

func (s *session) send(to, body string) [16]byte {
	s.t.Helper()
	id, err := s.Send(context.Background(), to, []byte(body))
	if err != nil {
		s.t.Fatalf("Send to %s: %v", to, err)
	}
	return id
}

// memSeen is a SeenStore in memory.
type memSeen struct {
	mu sync.Mutex
	m  map[string]bool
}

func (m *memSeen) MarkSeen(_ context.Context, from string, id [16]byte, _ time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil {
		m.m = make(map[string]bool)
	}
	k := fmt.Sprintf("%s/%x", from, id)
	first := !m.m[k]
	m.m[k] = true
	return first, nil
}

// drain returns what ch holds once every goroutine of the bubble is idle.
func drain(ch <-chan messaging.Envelope) []string {
	synctest.Wait()
	out := []string{}
	for {
		select {
		case e := <-ch:
			out = append(out, e.Peer+": "+string(e.Body))
		default:
			return out
		}
	}
}

func TestRegister(t *testing.T) {
	tests := []struct {
		name   string
		req    func(g *gateway, code string) messaging.RegisterRequest
		reason error  // what Service.Register returns
		detail string // what the client is told
	}{
		{"ok", func(g *gateway, code string) messaging.RegisterRequest {
			return messaging.RegisterRequest{Code: code, Name: "alice"}
		}, nil, ""},
		{"used code", func(g *gateway, code string) messaging.RegisterRequest {
			ctx := context.Background()
			if _, err := g.svc.Register(ctx, messaging.RegisterRequest{Code: code, Name: "first"}, [32]byte{1}); err != nil {
				t.Fatalf("Register: %v", err)
			}
			return messaging.RegisterRequest{Code: code, Name: "alice"}
		}, messaging.ErrCodeUsed, "registration code already used"},
		{"expired code", func(g *gateway, code string) messaging.RegisterRequest {
			time.Sleep(messaging.DefaultCodeTTL)
			return messaging.RegisterRequest{Code: code, Name: "alice"}
		}, messaging.ErrCodeExpired, "registration code expired"},
		{"unknown code", func(g *gateway, code string) messaging.RegisterRequest {
			return messaging.RegisterRequest{Code: "NotAnIssuedCode", Name: "alice"}
		}, messaging.ErrCodeUnknown, "registration code unknown"},
		{"taken name", func(g *gateway, code string) messaging.RegisterRequest {
			g.user("alice")
			return messaging.RegisterRequest{Code: code, Name: "alice"}
		}, messaging.ErrNameTaken, "name already taken"},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/client", func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				g := newGateway(t, messaging.Config{})
				code, _, err := g.svc.NewCode(context.Background())
				if err != nil {
					t.Fatalf("NewCode: %v", err)
				}
				req := tt.req(g, code)
				key := [32]byte{9}
				gw, cl := messagingtest.Pipe(0)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				var wg sync.WaitGroup
				defer wg.Wait()
				defer cl.Close()
				var peer messaging.Peer
				var served error
				wg.Go(func() { peer, served = g.svc.ServeRegistration(ctx, key, gw) })
				c := messaging.NewClient(cl, messaging.ClientConfig{}, nil)
				wg.Go(func() { c.Run(ctx) })
				cert, err := c.Register(ctx, req)
				if tt.reason == nil {
					if err != nil {
						t.Fatalf("Register: %v", err)
					}
					synctest.Wait()
					if served != nil || peer.User != "alice" {
						t.Fatalf("ServeRegistration = %+v, %v", peer, served)
					}
					if !strings.HasPrefix(string(cert), "cert/alice/") {
						t.Errorf("certificate = %q", cert)
					}
					if _, err := g.svc.Authenticate(ctx, key); err != nil {
						t.Errorf("Authenticate after registration: %v", err)
					}
					return
				}
				var pe *messaging.ProblemError
				if !errors.As(err, &pe) || !errors.Is(err, messaging.ErrRegistrationRefused) {
					t.Fatalf("Register = %v, want a registration-refused *ProblemError", err)
				}
				if diff := cmp.Diff(tt.detail, pe.Detail); diff != "" {
					t.Errorf("detail (-want +got):\n%s", diff)
				}
				if strings.Contains(err.Error(), req.Code) {
					t.Errorf("error echoes the code: %v", err)
				}
				if _, err := g.svc.Authenticate(ctx, key); !errors.Is(err, messaging.ErrUnknownDevice) {
					t.Errorf("Authenticate after refusal = %v, want ErrUnknownDevice", err)
				}
			})
		})
		if tt.reason == nil {
			continue
		}
		t.Run(tt.name+"/service", func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				g := newGateway(t, messaging.Config{})
				code, _, err := g.svc.NewCode(context.Background())
				if err != nil {
					t.Fatalf("NewCode: %v", err)
				}
				_, err = g.svc.Register(context.Background(), tt.req(g, code), [32]byte{9})
				var re *messaging.RefusedError
				if !errors.As(err, &re) || !errors.Is(err, tt.reason) || !errors.Is(err, messaging.ErrRegistrationRefused) {
					t.Fatalf("Register = %v, want a *RefusedError matching %v", err, tt.reason)
				}
				if re.Problem() != frame.ProblemRegistrationRefused {
					t.Errorf("problem = %v", re.Problem())
				}
			})
		})
	}
}

func TestRegisterBadName(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGateway(t, messaging.Config{})
		code, _, err := g.svc.NewCode(context.Background())
		if err != nil {
			t.Fatalf("NewCode: %v", err)
		}
		_, err = g.svc.Register(context.Background(), messaging.RegisterRequest{Code: code, Name: "Not Valid"}, [32]byte{})
		var re *messaging.RefusedError
		if !errors.As(err, &re) || !errors.Is(err, messaging.ErrBadName) || re.Problem() != frame.ProblemBadRequest {
			t.Fatalf("Register = %v, want a bad-request *RefusedError matching ErrBadName", err)
		}
		if _, err := g.svc.Register(context.Background(), messaging.RegisterRequest{Code: code, Name: "valid"}, [32]byte{}); err != nil {
			t.Fatalf("the code was consumed by a refused registration: %v", err)
		}
	})
}

// TestRegisterThenMessage registers over a session and goes on to send a
// message on it, as a first connection does.
func TestRegisterThenMessage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGateway(t, messaging.Config{})
		g.user("bob")
		code, _, err := g.svc.NewCode(context.Background())
		if err != nil {
			t.Fatalf("NewCode: %v", err)
		}
		gw, cl := messagingtest.Pipe(0)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() {
			peer, err := g.svc.ServeRegistration(ctx, [32]byte{7}, gw)
			if err != nil {
				t.Errorf("ServeRegistration: %v", err)
				return
			}
			if err := g.svc.ServeSession(ctx, peer, gw); err != nil {
				t.Errorf("ServeSession: %v", err)
			}
		})
		c := messaging.NewClient(cl, messaging.ClientConfig{}, nil)
		wg.Go(func() { c.Run(ctx) })
		var pe *messaging.ProblemError
		if _, err := c.Send(ctx, "bob", []byte("too early")); !errors.As(err, &pe) || pe.Problem != frame.ProblemUnauthorized {
			t.Errorf("Send before registering = %v, want unauthorized", err)
		}
		if _, err := c.Register(ctx, messaging.RegisterRequest{Code: code, Name: "alice"}); err != nil {
			t.Fatalf("Register: %v", err)
		}
		if _, err := c.Send(ctx, "bob", []byte("hi")); err != nil {
			t.Fatalf("Send after registering: %v", err)
		}
		if diff := cmp.Diff([]string{"hi"}, g.pending("bob")); diff != "" {
			t.Errorf("bob's inbox (-want +got):\n%s", diff)
		}
		cl.Close()
		cancel()
		wg.Wait()
	})
}

func TestAuthenticateUnknown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGateway(t, messaging.Config{})
		if _, err := g.svc.Authenticate(context.Background(), [32]byte{1}); !errors.Is(err, messaging.ErrUnknownDevice) {
			t.Fatalf("Authenticate = %v, want ErrUnknownDevice", err)
		}
	})
}

func TestOnlineDelivery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGateway(t, messaging.Config{})
		alice := g.connect(g.user("alice"))
		bob := g.connect(g.user("bob"))
		got := bob.listen(&memSeen{})
		synctest.Wait()
		alice.send("bob", "hello")
		alice.send("bob", "again")
		if diff := cmp.Diff([]string{"alice: hello", "alice: again"}, drain(got)); diff != "" {
			t.Errorf("bob got (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{}, g.pending("bob")); diff != "" {
			t.Errorf("acknowledged messages still in the inbox:\n%s", diff)
		}
	})
}

// TestHandlerSends answers from inside a Listen handler: Send and Listen
// share one session.
func TestHandlerSends(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGateway(t, messaging.Config{})
		alice := g.connect(g.user("alice"))
		bob := g.connect(g.user("bob"))
		bob.wg.Go(func() {
			bob.Listen(bob.ctx, func(e messaging.Envelope) error {
				_, err := bob.Send(bob.ctx, e.Peer, append([]byte("re: "), e.Body...))
				return err
			}, &memSeen{})
		})
		got := alice.listen(&memSeen{})
		alice.send("bob", "ping")
		if diff := cmp.Diff([]string{"bob: re: ping"}, drain(got)); diff != "" {
			t.Errorf("alice got (-want +got):\n%s", diff)
		}
	})
}

func TestOfflineDelivery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGateway(t, messaging.Config{})
		alice := g.connect(g.user("alice"))
		bobKey := g.user("bob")
		var want []string
		for i := range 40 { // more than one delivery batch
			alice.send("bob", fmt.Sprint(i))
			want = append(want, fmt.Sprint("alice: ", i))
		}
		bob := g.connect(bobKey)
		if diff := cmp.Diff(want, drain(bob.listen(&memSeen{}))); diff != "" {
			t.Errorf("bob got (-want +got):\n%s", diff)
		}
	})
}

func TestDeliveryAfterRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGateway(t, messaging.Config{})
		aliceKey, bobKey := g.user("alice"), g.user("bob")
		alice := g.connect(aliceKey)
		alice.send("bob", "stored before the restart")
		alice.close()
		g.restart()
		bob := g.connect(bobKey)
		if diff := cmp.Diff([]string{"alice: stored before the restart"}, drain(bob.listen(&memSeen{}))); diff != "" {
			t.Errorf("bob got (-want +got):\n%s", diff)
		}
	})
}

// TestNeverShownTwice loses the client's acknowledgement, so the gateway
// delivers the message again: on the same session after RedeliverAfter,
// and on the next session after the client restarted with its seen store
// on disk. The handler sees the message once.
func TestNeverShownTwice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGateway(t, messaging.Config{RedeliverAfter: time.Minute})
		alice := g.connect(g.user("alice"))
		bobKey := g.user("bob")
		seenPath := filepath.Join(t.TempDir(), "client.db")
		seen, err := store.OpenSQLite(seenPath)
		if err != nil {
			t.Fatalf("OpenSQLite: %v", err)
		}
		bob := g.connect(bobKey)
		bob.tap.dropAcks.Store(true)
		got := bob.listen(seen)
		alice.send("bob", "once")
		if diff := cmp.Diff([]string{"alice: once"}, drain(got)); diff != "" {
			t.Fatalf("bob got (-want +got):\n%s", diff)
		}
		time.Sleep(time.Minute)
		if diff := cmp.Diff([]string{}, drain(got)); diff != "" {
			t.Errorf("redelivery shown again:\n%s", diff)
		}
		if n := bob.tap.messages.Load(); n != 2 {
			t.Errorf("bob's session received %d message frames, want 2 (one redelivery)", n)
		}
		bob.close()
		seen.Close()

		seen, err = store.OpenSQLite(seenPath)
		if err != nil {
			t.Fatalf("OpenSQLite: %v", err)
		}
		defer seen.Close()
		bob = g.connect(bobKey)
		if diff := cmp.Diff([]string{}, drain(bob.listen(seen))); diff != "" {
			t.Errorf("redelivery after a client restart shown again:\n%s", diff)
		}
		if n := bob.tap.messages.Load(); n != 1 {
			t.Errorf("bob's new session received %d message frames, want 1", n)
		}
		if diff := cmp.Diff([]string{}, g.pending("bob")); diff != "" {
			t.Errorf("the duplicate's acknowledgement did not empty the inbox:\n%s", diff)
		}
		bob.close()
	})
}

func TestResubmission(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGateway(t, messaging.Config{})
		alice := g.connect(g.user("alice"))
		bob := g.connect(g.user("bob"))
		got := bob.listen(&memSeen{})
		synctest.Wait()
		env := messaging.Envelope{ID: [16]byte{42}, Peer: "bob", Body: []byte("retry me")}
		for range 3 {
			if err := alice.SendEnvelope(context.Background(), env); err != nil {
				t.Fatalf("SendEnvelope: %v", err)
			}
			synctest.Wait()
		}
		if diff := cmp.Diff([]string{"alice: retry me"}, drain(got)); diff != "" {
			t.Errorf("bob got (-want +got):\n%s", diff)
		}
		if n := bob.tap.messages.Load(); n != 1 {
			t.Errorf("bob received %d message frames, want 1", n)
		}
	})
}

// TestSeveralSessions connects one user twice. The inbox is per user, so
// the message reaches at least one session (each one that reads the inbox
// before another acknowledges it), and the first acknowledgement removes it.
func TestSeveralSessions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGateway(t, messaging.Config{})
		alice := g.connect(g.user("alice"))
		bobKey := g.user("bob")
		b1, b2 := g.connect(bobKey), g.connect(bobKey)
		got1, got2 := b1.listen(&memSeen{}), b2.listen(&memSeen{})
		synctest.Wait()
		alice.send("bob", "to bob")
		all := append(drain(got1), drain(got2)...)
		if len(all) == 0 || len(all) > 2 || all[0] != "alice: to bob" || all[len(all)-1] != "alice: to bob" {
			t.Errorf("bob's sessions got %q, want the message once or twice", all)
		}
		if diff := cmp.Diff([]string{}, g.pending("bob")); diff != "" {
			t.Errorf("inbox after delivery (-want +got):\n%s", diff)
		}
	})
}

func TestSendRefused(t *testing.T) {
	tests := []struct {
		name    string
		to      string
		body    []byte
		prefill int
		want    error
	}{
		{"unknown recipient", "nobody", []byte("x"), 0, messaging.ErrUnknownRecipient},
		{"quota", "bob", []byte("x"), 2, messaging.ErrQuotaExceeded},
		{"too large", "bob", make([]byte, messaging.MaxBody+1), 0, messaging.ErrTooLarge},
		{"bad name", "Bob", []byte("x"), 0, messaging.ErrBadName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				g := newGateway(t, messaging.Config{InboxQuota: 2})
				alice := g.connect(g.user("alice"))
				g.user("bob")
				for i := range tt.prefill {
					alice.send("bob", fmt.Sprint(i))
				}
				id, err := alice.Send(context.Background(), tt.to, tt.body)
				if !errors.Is(err, tt.want) {
					t.Fatalf("Send = %v, want %v", err, tt.want)
				}
				var pe *messaging.ProblemError
				if errors.As(err, &pe) && string(pe.Ref) != string(id[:]) {
					t.Errorf("error refers to %x, want %x", pe.Ref, id)
				}
				if n := len(g.pending("bob")); n != tt.prefill {
					t.Errorf("bob's inbox holds %d messages, want %d", n, tt.prefill)
				}
			})
		})
	}
}

// TestExpiry keeps a message past its TTL: it is not delivered, and Run
// purges it.
func TestExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clock := &manualClock{t: time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)}
		g := newGateway(t, messaging.Config{InboxTTL: time.Hour, Now: clock.Now, PurgeInterval: time.Minute})
		alice := g.connect(g.user("alice"))
		bobKey := g.user("bob")
		alice.send("bob", "stale")
		clock.Add(time.Hour)
		alice.send("bob", "fresh")
		bob := g.connect(bobKey)
		if diff := cmp.Diff([]string{"alice: fresh"}, drain(bob.listen(&memSeen{}))); diff != "" {
			t.Errorf("bob got (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"stale"}, g.pending("bob")); diff != "" {
			t.Errorf("inbox before purging (-want +got):\n%s", diff)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- g.svc.Run(ctx) }()
		synctest.Wait()
		if diff := cmp.Diff([]string{}, g.pending("bob")); diff != "" {
			t.Errorf("Run left expired messages:\n%s", diff)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

type manualClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *manualClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// TestHandlerError stops Listen on a handler error; the message is not
// acknowledged, is delivered again, and is not handled again.
func TestHandlerError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGateway(t, messaging.Config{RedeliverAfter: time.Minute})
		alice := g.connect(g.user("alice"))
		bob := g.connect(g.user("bob"))
		seen := &memSeen{}
		boom := errors.New("disk full")
		done := make(chan error, 1)
		bob.wg.Go(func() {
			done <- bob.Listen(bob.ctx, func(messaging.Envelope) error { return boom }, seen)
		})
		alice.send("bob", "x")
		if err := <-done; !errors.Is(err, boom) {
			t.Fatalf("Listen = %v, want the handler's error", err)
		}
		if diff := cmp.Diff([]string{"x"}, g.pending("bob")); diff != "" {
			t.Errorf("inbox (-want +got):\n%s", diff)
		}
		got := bob.listen(seen)
		time.Sleep(time.Minute)
		if diff := cmp.Diff([]string{}, drain(got)); diff != "" {
			t.Errorf("handled again after redelivery:\n%s", diff)
		}
		if diff := cmp.Diff([]string{}, g.pending("bob")); diff != "" {
			t.Errorf("inbox after redelivery (-want +got):\n%s", diff)
		}
	})
}

// TestSlowListenerBacklog: a listener that handles its backlog slowly gets
// every message once, without waiting for redelivery: the gateway's
// window is no larger than the client's queue, so the client drops none.
func TestSlowListenerBacklog(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGateway(t, messaging.Config{})
		alice := g.connect(g.user("alice"))
		bobKey := g.user("bob")
		const n = 200
		for i := range n {
			alice.send("bob", fmt.Sprint(i))
		}
		start := time.Now()
		bob := g.connect(bobKey)
		var got atomic.Int32
		done := make(chan struct{})
		bob.wg.Go(func() {
			bob.Client.Listen(bob.ctx, func(messaging.Envelope) error { //nolint:errcheck // ends with the test
				time.Sleep(time.Millisecond) // a slow handler
				if got.Add(1) == n {
					close(done)
				}
				return nil
			}, &memSeen{})
		})
		select {
		case <-done:
		case <-time.After(10 * time.Minute):
			t.Fatalf("%d of %d messages handled after 10 minutes", got.Load(), n)
		}
		if sent := bob.tap.messages.Load(); sent != n {
			t.Errorf("the gateway sent %d Message frames for %d messages", sent, n)
		}
		if took := time.Since(start); took >= messaging.DefaultRedeliverAfter {
			t.Errorf("the backlog took %v: it waited for redelivery", took)
		}
	})
}
