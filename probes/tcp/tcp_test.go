package tcp_test

import (
	"context"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/commucat/commucat/probes"
	"github.com/commucat/commucat/probes/ooni"
	"github.com/commucat/commucat/probes/probestest"
	"github.com/commucat/commucat/probes/tcp"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestProbe(t *testing.T) {
	echo := probestest.EchoServer(t)
	_, echoPort, _ := net.SplitHostPort(echo)
	tests := []struct {
		name         string
		addr         string
		poison       bool
		wantFailure  string
		wantBlocking ooni.Blocking
		wantState    probes.State
	}{
		{"connects", echo, false, "", ooni.BlockingNone, probes.StateOK},
		{"resolves a name", "localhost:" + echoPort, false, "", ooni.BlockingNone, probes.StateOK},
		{"refused", probestest.RefusedAddr(t), false, ooni.FailureConnectionRefused, ooni.BlockingUnknown, probes.StateUnknown},
		{"timeout", probestest.FullServer(t), false, ooni.FailureGenericTimeoutError, ooni.BlockingTCPIP, probes.StateBlocked},
		{"residual", echo, true, ooni.FailureResidualAvoided, ooni.BlockingUnknown, probes.StateUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := tcp.New(tt.addr)
			if err != nil {
				t.Fatal(err)
			}
			// The full server's backlog makes the connect time out; the
			// others answer at once, within any budget.
			budget := 10 * time.Second
			if tt.wantFailure == ooni.FailureGenericTimeoutError {
				budget = time.Second
			}
			ctx, cancel := context.WithTimeout(context.Background(), budget)
			defer cancel()
			env := probes.NewEnv(time.Now(), nil, nil)
			if tt.poison {
				env.Poison("tcp", tt.addr, time.Now().Add(time.Hour))
			}
			res := p.Run(ctx, env)
			k := res.Keys.(*tcp.Keys)
			if got := k.FailureString(); got != tt.wantFailure {
				t.Errorf("failure %q, want %q", got, tt.wantFailure)
			}
			if k.Blocking != tt.wantBlocking || res.State != tt.wantState {
				t.Errorf("blocking %v state %v, want %v %v (%s)", k.Blocking, res.State, tt.wantBlocking, tt.wantState, res.Details)
			}
			if tt.wantFailure != "" && ooni.Deref(k.FailedOperation) != ooni.OpConnect {
				t.Errorf("failed_operation %q", ooni.Deref(k.FailedOperation))
			}
			if tt.name == "resolves a name" && (len(k.Queries) != 1 || k.Queries[0].Engine != "system") {
				t.Errorf("queries %+v, want one system lookup", k.Queries)
			}
			if !tt.poison && len(k.TCPConnect) != 1 {
				t.Errorf("%d tcp_connect entries, want 1", len(k.TCPConnect))
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	for _, addr := range []string{"", "example.org", "1.2.3.4"} {
		if _, err := tcp.New(addr); err == nil {
			t.Errorf("New(%q) succeeded", addr)
		}
	}
}
