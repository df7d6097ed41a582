package quic_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/commucat/commucat/probes"
	"github.com/commucat/commucat/probes/ooni"
	"github.com/commucat/commucat/probes/probestest"
	"github.com/commucat/commucat/probes/quic"
	"github.com/commucat/commucat/testnet/censor"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// quicCensor judges each UDP flow by its first datagrams, as the GFW's
// QUIC filter does: a flow that starts with a QUIC Initial whose
// ClientHello names a blocked server (or any server, if all is set) is
// dropped; a flow that starts with anything else passes for good. After
// a blocked flow, residual drops every new flow for that long.
type quicCensor struct {
	blocked  string
	all      bool
	residual time.Duration

	mu    sync.Mutex
	flows map[string]*flowState
	until time.Time
}

type flowState struct {
	asm     *censor.QUICHelloAssembler
	decided bool
	drop    bool
}

func (c *quicCensor) drop(client string, seq int, d []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.flows == nil {
		c.flows = map[string]*flowState{}
	}
	f := c.flows[client]
	if f == nil {
		f = &flowState{asm: censor.NewQUICHelloAssembler(0)}
		c.flows[client] = f
		if time.Now().Before(c.until) {
			f.decided, f.drop = true, true
		}
	}
	if f.decided {
		return f.drop
	}
	if err := f.asm.AddDatagram(d); err != nil {
		f.decided = true // not QUIC: the flow passes
		return false
	}
	msg, err := f.asm.ClientHello()
	if err != nil {
		return false // need more: let the first part through
	}
	hello, err := censor.ParseClientHello(msg)
	f.decided = true
	if err == nil && (c.all || hello.ServerName == c.blocked) {
		f.drop = true
		if c.residual > 0 {
			c.until = time.Now().Add(c.residual)
		}
	}
	return f.drop
}

func TestProbe(t *testing.T) {
	cert, pool := probestest.Cert(t, "allowed.test", "blocked.test", "control.test")
	server := probestest.QUICServer(t, cert)
	sniFilter := probestest.UDPRelay(t, server, (&quicCensor{blocked: "blocked.test"}).drop)
	protoFilter := probestest.UDPRelay(t, server, (&quicCensor{all: true}).drop)
	residual := probestest.UDPRelay(t, server, (&quicCensor{blocked: "blocked.test", residual: time.Hour}).drop)
	hole := probestest.BlackholeUDP(t)
	// Every case has handshakes that must succeed within hs (the
	// control's at least) beside the ones a filter drops, which wait it
	// out: long enough for a loaded machine, and the cases run in
	// parallel.
	const hs = 2 * time.Second
	tests := []struct {
		name         string
		addr, sni    string
		wantFailure  string
		wantBlocking ooni.Blocking
		wantState    probes.State
		wantBypass   bool
		wantResidual bool
	}{
		{"allowed", server, "allowed.test", "", ooni.BlockingNone, probes.StateOK, false, false},
		{"allowed through the filter", sniFilter, "allowed.test", "", ooni.BlockingNone, probes.StateOK, false, false},
		{"sni filtered", sniFilter, "blocked.test", ooni.FailureGenericTimeoutError, ooni.BlockingTLS, probes.StateBlocked, true, false},
		{"quic filtered", protoFilter, "allowed.test", ooni.FailureGenericTimeoutError, ooni.BlockingUDP, probes.StateBlocked, true, false},
		{"udp dropped", hole, "allowed.test", ooni.FailureGenericTimeoutError, ooni.BlockingUDP, probes.StateBlocked, false, false},
		{"residual", residual, "blocked.test", ooni.FailureGenericTimeoutError, ooni.BlockingTLS, probes.StateBlocked, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := quic.New(quic.Config{Addr: tt.addr, SNI: tt.sni, ControlSNI: "control.test", RootCAs: pool, HandshakeTimeout: hs})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			env := probes.NewEnv(time.Now(), nil, nil)
			res := p.Run(ctx, env)
			k := res.Keys.(*quic.Keys)
			if got := k.FailureString(); got != tt.wantFailure {
				t.Errorf("failure %q, want %q (%s)", got, tt.wantFailure, res.Details)
			}
			if tt.wantFailure != "" && ooni.Deref(k.FailedOperation) != ooni.OpQUICHandshake {
				t.Errorf("failed_operation %q", ooni.Deref(k.FailedOperation))
			}
			if k.Blocking != tt.wantBlocking || res.State != tt.wantState {
				t.Errorf("blocking %v state %v, want %v %v (%s)", k.Blocking, res.State, tt.wantBlocking, tt.wantState, res.Details)
			}
			if got := k.XDummyBypass != nil && *k.XDummyBypass; got != tt.wantBypass {
				t.Errorf("x_dummy_bypass %v, want %v", got, tt.wantBypass)
			}
			if got := k.XResidualBlock != nil && *k.XResidualBlock; got != tt.wantResidual {
				t.Errorf("x_residual_block %v, want %v", got, tt.wantResidual)
			}
			if _, err := env.Await(ctx, "udp", tt.addr); (err != nil) != tt.wantResidual {
				t.Errorf("address marked blocked: %v, want %v", err != nil, tt.wantResidual)
			}
			var tags []string
			for _, h := range k.QUICHandshakes {
				tags = append(tags, h.Tags[0])
			}
			if len(tags) < 3 || tags[0] != "control" || tags[1] != "target_after_dummy" || tags[2] != "target" {
				t.Errorf("handshake order %v", tags)
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	for _, c := range []quic.Config{{}, {Addr: "127.0.0.1:443"}, {Addr: "127.0.0.1:443", SNI: "a", DummySize: 5000}} {
		if _, err := quic.New(c); err == nil {
			t.Errorf("New(%+v) succeeded", c)
		}
	}
}
