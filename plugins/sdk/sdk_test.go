package sdk

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/commucat/commucat/plugins/internal/ctl"
	"github.com/commucat/commucat/plugins/proto"
	"github.com/commucat/commucat/transports/tcp"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestLayering checks that the SDK, which third-party plugins import,
// pulls in none of the core's upper layers, and that none of CommuCat's
// own packages it uses imports testing. (go-plugin itself imports testing
// for its test helpers; that is upstream's choice.)
func TestLayering(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{join .Imports \",\"}}",
		"github.com/commucat/commucat/plugins/sdk").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const mod = "github.com/commucat/commucat/"
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, " ")
		for _, banned := range []string{"core/router", "core/session", "core/gateway", "backends/", "transports/", "cmd/", "probes/"} {
			if strings.HasPrefix(pkg, mod+banned) {
				t.Errorf("plugins/sdk depends on %s", pkg)
			}
		}
		if strings.HasPrefix(pkg, mod) && strings.Contains(","+imports+",", ",testing,") {
			t.Errorf("%s imports testing", pkg)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		p    Plugin
		ok   bool
	}{
		{"good", Plugin{Name: "tcp", Client: tcp.Factory}, true},
		{"dash", Plugin{Name: "my-tls2", Server: tcp.ServerFactory}, true},
		{"empty name", Plugin{Client: tcp.Factory}, false},
		{"upper case", Plugin{Name: "TCP", Client: tcp.Factory}, false},
		{"slash", Plugin{Name: "a/b", Client: tcp.Factory}, false},
		{"no sides", Plugin{Name: "tcp"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.p.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate() = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

// host is the host's side of a control socket to an in-process server.
type host struct {
	ctl      *ctl.Conn
	mu       sync.Mutex
	eof      map[uint64]bool // EOF marks from the plugin
	dgramEOF map[uint64]bool // DGRAM_EOF marks from the plugin
}

func (h *host) handle(m ctl.Msg, fds []int) error {
	if len(fds) > 0 || m.Type != ctl.TypeEOF && m.Type != ctl.TypeDgramEOF {
		return &ctl.ViolationError{Reason: "unexpected " + m.Type.String()}
	}
	h.mu.Lock()
	if m.Type == ctl.TypeEOF {
		h.eof[m.Flow] = true
	} else {
		h.dgramEOF[m.Flow] = true
	}
	h.mu.Unlock()
	return nil
}

func (h *host) sawEOF(t *testing.T, id uint64) bool {
	t.Helper()
	if err := h.ctl.Sync(); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.eof[id]
}

// flow sends a new flow to the server and returns the host's end.
func (h *host) flow(t *testing.T, id uint64) *net.UnixConn {
	t.Helper()
	local, peer, err := ctl.FlowPair()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if err := h.ctl.Send(ctl.Msg{Type: ctl.TypeFlow, Flow: id}, time.Time{}, peer); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { local.Close() })
	return local
}

// newTestServer runs a server for a TCP plugin over a control socket.
func newTestServer(t *testing.T) (*server, *host) {
	t.Helper()
	return newServerFor(t, Plugin{Name: "tcp", Version: "test", Client: tcp.Factory, Server: tcp.ServerFactory})
}

// newServerFor runs a server for p over a control socket.
func newServerFor(t *testing.T, p Plugin) (*server, *host) {
	t.Helper()
	fh, fp, err := ctl.Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	defer fp.Close()
	s, err := newServer(p, fp, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	h := &host{eof: make(map[uint64]bool), dgramEOF: make(map[uint64]bool)}
	if h.ctl, err = ctl.New(fh, h.handle); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { s.ctl.Run() }) //nolint:errcheck // ends at cleanup
	wg.Go(func() { h.ctl.Run() }) //nolint:errcheck // ends at cleanup
	t.Cleanup(func() {
		h.ctl.Close()
		s.ctl.Close()
		wg.Wait()
	})
	return s, h
}

// peerServer accepts one TCP connection and runs fn on it.
func peerServer(t *testing.T, fn func(c *net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		fn(c.(*net.TCPConn))
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String()
}

func configure(t *testing.T, s *server) uint64 {
	t.Helper()
	r, err := s.Configure(context.Background(), &proto.ConfigureRequest{Role: proto.Role_ROLE_CLIENT})
	if err != nil || r.GetError() != nil {
		t.Fatalf("Configure: %v, %v", err, r.GetError())
	}
	return r.GetInstance()
}

func dial(t *testing.T, s *server, inst, id uint64, addr string) *proto.DialResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := s.Dial(ctx, &proto.DialRequest{Instance: inst, Flow: id, Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestFlowHalfClose(t *testing.T) {
	s, h := newTestServer(t)
	inst := configure(t, s)
	addr := peerServer(t, func(c *net.TCPConn) {
		io.Copy(c, c) //nolint:errcheck // echo until the host's half close
		c.Write([]byte(" bye"))
		c.CloseWrite()
	})
	uc := h.flow(t, 1)
	if r := dial(t, s, inst, 1, addr); r.GetError() != nil || !r.GetHalfClose() {
		t.Fatalf("Dial = %v", r)
	}
	if _, err := uc.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	// The host's half close: EOF first, then the socket's.
	if err := h.ctl.Send(ctl.Msg{Type: ctl.TypeEOF, Flow: 1}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := uc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(uc)
	if err != nil || string(got) != "hello bye" {
		t.Fatalf("read %q, %v", got, err)
	}
	if !h.sawEOF(t, 1) {
		t.Error("clean end of stream without an EOF mark")
	}
}

func TestFlowAbnormalEnd(t *testing.T) {
	s, h := newTestServer(t)
	inst := configure(t, s)
	addr := peerServer(t, func(c *net.TCPConn) {
		c.Read(make([]byte, 1)) //nolint:errcheck // any outcome
		c.SetLinger(0)          // then reset
	})
	uc := h.flow(t, 1)
	if r := dial(t, s, inst, 1, addr); r.GetError() != nil {
		t.Fatalf("Dial = %v", r)
	}
	if _, err := uc.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(uc); err != nil {
		t.Logf("read: %v", err)
	}
	if h.sawEOF(t, 1) {
		t.Error("a reset connection was marked as a clean end")
	}
}

func TestDialErrors(t *testing.T) {
	s, h := newTestServer(t)
	inst := configure(t, s)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	tests := []struct {
		name string
		inst uint64
		want proto.ErrorCode
	}{
		{"refused", inst, proto.ErrorCode_ERROR_CODE_REFUSED},
		{"no instance", inst + 100, proto.ErrorCode_ERROR_CODE_NOT_FOUND},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := uint64(i + 1)
			h.flow(t, id)
			r := dial(t, s, tt.inst, id, closed)
			if got := r.GetError().GetCode(); got != tt.want {
				t.Errorf("Dial error = %v, want %v", r.GetError(), tt.want)
			}
		})
	}
	// A cancelled Dial (the host gave up) leaves no flow behind.
	h.flow(t, 10)
	if err := h.ctl.Send(ctl.Msg{Type: ctl.TypeClose, Flow: 10}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := s.ctl.Sync(); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	n, pending := len(s.flows), s.pending
	s.mu.Unlock()
	if n != 0 || pending != 0 {
		t.Errorf("%d flows, %d pending after failures and CLOSE", n, pending)
	}
}

func TestConfigureErrors(t *testing.T) {
	s, _ := newTestServer(t)
	tests := []struct {
		name string
		req  *proto.ConfigureRequest
		want error
	}{
		{"bad params", &proto.ConfigureRequest{Role: proto.Role_ROLE_CLIENT, Params: map[string]string{"x": "y"}}, ErrBadParams},
		{"no role", &proto.ConfigureRequest{}, ErrBadParams},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := s.Configure(context.Background(), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if got := r.GetError().Err(); !errors.Is(got, tt.want) {
				t.Errorf("Configure error = %v, want %v", got, tt.want)
			}
		})
	}
}
