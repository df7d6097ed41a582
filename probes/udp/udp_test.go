package udp_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/probes"
	"github.com/commucat/commucat/probes/ooni"
	"github.com/commucat/commucat/probes/probestest"
	"github.com/commucat/commucat/probes/udp"
	"github.com/commucat/commucat/transports/kcp"
)

// kcp-go starts process-wide scheduler goroutines that never end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/xtaci/kcp-go/v5.(*TimedSched).run"),
		goleak.IgnoreAnyFunction("github.com/xtaci/kcp-go/v5.postProcessWorker"))
}

// kcpGateway starts a KCP listener that accepts and closes connections,
// and returns its address and the client side of the transport.
func kcpGateway(t *testing.T) (string, transport.Transport) {
	t.Helper()
	srv, pub, err := kcp.ServerFactory(nil, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := srv.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			c.Close()
		}
	})
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	cl, err := kcp.Factory(pub)
	if err != nil {
		t.Fatal(err)
	}
	return ln.Addr().String(), cl
}

func TestProbe(t *testing.T) {
	cert, _ := probestest.Cert(t, "gw.test")
	server := probestest.QUICServer(t, cert)
	hole := probestest.BlackholeUDP(t)
	kcpAddr, kcpClient := kcpGateway(t)
	// A server that answers gets a wait a loaded machine cannot outlast;
	// the black hole is waited out briefly.
	const answer, silence = 10 * time.Second, 500 * time.Millisecond
	tests := []struct {
		name          string
		cfg           udp.Config
		wantReachable bool
		wantFailure   string
		wantBlocking  ooni.Blocking
		wantState     probes.State
	}{
		{"quic answers", udp.Config{Addr: server, SNI: "gw.test"}, true, "", ooni.BlockingNone, probes.StateOK},
		{"quic refuses, still reachable", udp.Config{Addr: server, SNI: "gw.test", ALPN: "nope"}, true, ooni.FailureSSLFailedHandshake, ooni.BlockingNone, probes.StateOK},
		{"dropped", udp.Config{Addr: hole, Timeout: silence}, false, ooni.FailureGenericTimeoutError, ooni.BlockingUDP, probes.StateBlocked},
		{"kcp answers", udp.Config{Addr: kcpAddr, Transport: kcpClient}, true, "", ooni.BlockingNone, probes.StateOK},
		{"kcp dropped", udp.Config{Addr: hole, Transport: kcpClient, Timeout: silence}, false, ooni.FailureGenericTimeoutError, ooni.BlockingUDP, probes.StateBlocked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.cfg.Timeout == 0 {
				tt.cfg.Timeout = answer
			}
			p, err := udp.New(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			res := p.Run(context.Background(), probes.NewEnv(time.Now(), nil, nil))
			k := res.Keys.(*udp.Keys)
			if k.XUDPReachable == nil || *k.XUDPReachable != tt.wantReachable {
				t.Errorf("x_udp_reachable %v, want %v (%s)", k.XUDPReachable, tt.wantReachable, res.Details)
			}
			if got := k.FailureString(); got != tt.wantFailure {
				t.Errorf("failure %q, want %q", got, tt.wantFailure)
			}
			if k.Blocking != tt.wantBlocking || res.State != tt.wantState {
				t.Errorf("blocking %v state %v, want %v %v", k.Blocking, res.State, tt.wantBlocking, tt.wantState)
			}
			if tt.cfg.Transport != nil && res.Verdicts[0].Transport != kcp.Name {
				t.Errorf("verdict transport %q", res.Verdicts[0].Transport)
			}
		})
	}
}
