package sni_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/commucat/commucat/probes"
	"github.com/commucat/commucat/probes/ooni"
	"github.com/commucat/commucat/probes/probestest"
	"github.com/commucat/commucat/probes/sni"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestProbe(t *testing.T) {
	cert, pool := probestest.Cert(t, "allowed.test", "blocked.test", "control.test")
	filtering := probestest.SNIServer(t, cert, "blocked.test")
	silent := probestest.SilentServer(t)
	reset := probestest.ResetServer(t, 5)              // after the start of every ClientHello
	otherCert, _ := probestest.Cert(t, "allowed.test") // right name, untrusted issuer
	other := probestest.SNIServer(t, otherCert)
	tests := []struct {
		name         string
		cfg          sni.Config
		wantFailure  string
		wantOp       string
		wantBlocking ooni.Blocking
		wantState    probes.State
		wantSNI      *bool
	}{
		{"allowed", sni.Config{Addr: filtering, SNI: "allowed.test", ControlSNI: "control.test"}, "", "", ooni.BlockingNone, probes.StateOK, ooni.Bool(false)},
		{"blocked", sni.Config{Addr: filtering, SNI: "blocked.test", ControlSNI: "control.test"}, ooni.FailureConnectionReset, ooni.OpTLSHandshake, ooni.BlockingTLS, probes.StateBlocked, ooni.Bool(true)},
		{"blocked without control", sni.Config{Addr: filtering, SNI: "blocked.test"}, ooni.FailureConnectionReset, ooni.OpTLSHandshake, ooni.BlockingTLS, probes.StateBlocked, ooni.Bool(true)},
		{"handshake timeout, control too", sni.Config{Addr: silent, SNI: "blocked.test", ControlSNI: "control.test", HandshakeTimeout: 200 * time.Millisecond}, ooni.FailureGenericTimeoutError, ooni.OpTLSHandshake, ooni.BlockingUnknown, probes.StateUnknown, nil},
		{"reset everything", sni.Config{Addr: reset, SNI: "blocked.test", ControlSNI: "control.test"}, ooni.FailureConnectionReset, ooni.OpTLSHandshake, ooni.BlockingUnknown, probes.StateUnknown, nil},
		{"wrong certificate", sni.Config{Addr: other, SNI: "allowed.test", ControlSNI: "control.test", RootCAs: pool}, ooni.FailureSSLUnknownAuthority, ooni.OpTLSHandshake, ooni.BlockingTLS, probes.StateBlocked, ooni.Bool(true)},
		{"wrong name", sni.Config{Addr: filtering, SNI: "unlisted.test", ControlSNI: "control.test"}, ooni.FailureSSLInvalidHostname, ooni.OpTLSHandshake, ooni.BlockingTLS, probes.StateBlocked, ooni.Bool(true)},
		{"refused", sni.Config{Addr: probestest.RefusedAddr(t), SNI: "blocked.test", ControlSNI: "control.test"}, ooni.FailureConnectionRefused, ooni.OpConnect, ooni.BlockingUnknown, probes.StateUnknown, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.cfg.RootCAs == nil {
				tt.cfg.RootCAs = pool
			}
			p, err := sni.New(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			res := p.Run(ctx, probes.NewEnv(time.Now(), nil, nil))
			k := res.Keys.(*sni.Keys)
			if got := k.FailureString(); got != tt.wantFailure || ooni.Deref(k.FailedOperation) != tt.wantOp {
				t.Errorf("failure %q at %q, want %q at %q", got, ooni.Deref(k.FailedOperation), tt.wantFailure, tt.wantOp)
			}
			if k.Blocking != tt.wantBlocking || res.State != tt.wantState {
				t.Errorf("blocking %v state %v, want %v %v (%s)", k.Blocking, res.State, tt.wantBlocking, tt.wantState, res.Details)
			}
			if (k.XSNIBlocked == nil) != (tt.wantSNI == nil) || k.XSNIBlocked != nil && *k.XSNIBlocked != *tt.wantSNI {
				t.Errorf("x_sni_blocked %v, want %v", k.XSNIBlocked, tt.wantSNI)
			}
			if len(res.Verdicts) != 1 || res.Verdicts[0].State != res.State || res.Verdicts[0].ServerName != tt.cfg.SNI {
				t.Errorf("verdicts %+v", res.Verdicts)
			}
			if tt.cfg.ControlSNI != "" && tt.wantOp != ooni.OpConnect {
				if len(k.TLSHandshakes) < 2 || k.TLSHandshakes[0].Tags[0] != "control" || k.TLSHandshakes[1].Tags[0] != "target" {
					t.Errorf("handshakes not control first, then target: %+v", k.TLSHandshakes)
				}
			}
		})
	}
}

// TestResidualBlock probes an SNI filter that, after seeing a blocked
// name, resets every connection for a while.
func TestResidualBlock(t *testing.T) {
	cert, pool := probestest.Cert(t, "blocked.test", "control.test")
	addr := probestest.ResidualSNIServer(t, cert, time.Hour, "blocked.test")
	p, err := sni.New(sni.Config{Addr: addr, SNI: "blocked.test", ControlSNI: "control.test", RootCAs: pool, Residual: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	env := probes.NewEnv(time.Now(), nil, nil)
	res := p.Run(context.Background(), env)
	k := res.Keys.(*sni.Keys)
	if k.XResidualBlock == nil || !*k.XResidualBlock {
		t.Fatalf("x_residual_block not set (%s)", res.Details)
	}
	if res.Verdicts[0].RetryAfter != time.Minute {
		t.Errorf("verdict RetryAfter %v, want 1m", res.Verdicts[0].RetryAfter)
	}
	if _, err := env.Await(context.Background(), "tcp", addr); err == nil {
		t.Error("the address is not marked as under a residual block")
	}
}

func TestNewRejects(t *testing.T) {
	for _, c := range []sni.Config{{}, {Addr: "127.0.0.1:443"}, {Addr: "x", SNI: "a"}, {Addr: "127.0.0.1:443", SNI: "a", HandshakeTimeout: -1}} {
		if _, err := sni.New(c); err == nil {
			t.Errorf("New(%+v) succeeded", c)
		}
	}
}
