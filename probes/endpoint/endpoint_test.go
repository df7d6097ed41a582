package endpoint_test

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/commucat/commucat/core/invite"
	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/probes"
	"github.com/commucat/commucat/probes/endpoint"
	"github.com/commucat/commucat/probes/ooni"
	"github.com/commucat/commucat/probes/probestest"
	"github.com/commucat/commucat/transports/quic"
	"github.com/commucat/commucat/transports/tcp"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// gateway listens with the server side of a transport and echoes every
// connection, standing in for the gateway's session layer.
func gateway(t *testing.T, server transport.ServerFactory) (addr string, pub transport.Params) {
	t.Helper()
	srv, pub, err := server(nil, t.TempDir())
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
			wg.Go(func() {
				defer c.Close()
				io.Copy(c, c)
			})
		}
	})
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String(), pub
}

// echoLink is a Link over a connection to an echoing gateway.
type echoLink struct{ c net.Conn }

func (l *echoLink) Ping(ctx context.Context) (time.Duration, error) {
	t0 := time.Now()
	if _, err := l.c.Write([]byte{1}); err != nil {
		return 0, err
	}
	if _, err := io.ReadFull(l.c, make([]byte, 1)); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}

func (l *echoLink) Sample(ctx context.Context, n int) (int, error) {
	var wg sync.WaitGroup
	wg.Go(func() { l.c.Write(make([]byte, n)) })
	got, err := io.ReadFull(l.c, make([]byte, n))
	wg.Wait()
	return got, err
}

func (l *echoLink) Close() error { return l.c.Close() }

func echoHandshake(ctx context.Context, c net.Conn) (endpoint.Link, error) {
	return &echoLink{c: c}, nil
}

func failingHandshake(ctx context.Context, c net.Conn) (endpoint.Link, error) {
	c.Close()
	return nil, io.EOF
}

func registry() *transport.Registry {
	r := new(transport.Registry)
	r.Register(tcp.Name, tcp.Factory)
	r.Register(quic.Name, quic.Factory)
	return r
}

func TestProbe(t *testing.T) {
	tcpAddr, _ := gateway(t, tcp.ServerFactory)
	quicAddr, quicPub := gateway(t, quic.ServerFactory)
	hole := probestest.BlackholeUDP(t)
	tests := []struct {
		name         string
		ep           invite.Endpoint
		handshake    endpoint.Handshake
		poison       bool
		wantFailure  string
		wantOp       string
		wantBlocking ooni.Blocking
		wantState    probes.State
		wantRTT      string
		wantSample   bool
	}{
		{"tcp dial only", invite.Endpoint{Transport: "tcp", Addr: tcpAddr}, nil, false, "", "", ooni.BlockingNone, probes.StateOK, "tcp_connect", false},
		{"tcp with session", invite.Endpoint{Transport: "tcp", Addr: tcpAddr}, echoHandshake, false, "", "", ooni.BlockingNone, probes.StateOK, "session", true},
		{"session handshake ends", invite.Endpoint{Transport: "tcp", Addr: tcpAddr}, failingHandshake, false, ooni.FailureEOFError, ooni.OpSessionHandshake, ooni.BlockingTCPIP, probes.StateBlocked, "", false},
		{"quic", invite.Endpoint{Transport: "quic", Addr: quicAddr, Params: quicPub}, echoHandshake, false, "", "", ooni.BlockingNone, probes.StateOK, "session", true},
		{"quic dropped", invite.Endpoint{Transport: "quic", Addr: hole, Params: quicPub}, nil, false, ooni.FailureGenericTimeoutError, ooni.OpTransportDial, ooni.BlockingUDP, probes.StateBlocked, "", false},
		{"refused", invite.Endpoint{Transport: "tcp", Addr: probestest.RefusedAddr(t)}, nil, false, ooni.FailureConnectionRefused, ooni.OpConnect, ooni.BlockingUnknown, probes.StateUnknown, "", false},
		{"unknown transport", invite.Endpoint{Transport: "carrier-pigeon", Addr: tcpAddr}, nil, false, endpoint.FailureBadEndpoint, ooni.OpTransportDial, ooni.BlockingUnknown, probes.StateUnknown, "", false},
		{"residual", invite.Endpoint{Transport: "tcp", Addr: tcpAddr}, nil, true, ooni.FailureResidualAvoided, ooni.OpConnect, ooni.BlockingUnknown, probes.StateUnknown, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Only the black hole's dial is meant to time out; the
			// others' handshakes get a budget a loaded machine cannot
			// outlast.
			dial := 10 * time.Second
			if tt.wantFailure == ooni.FailureGenericTimeoutError {
				dial = time.Second
			}
			p, err := endpoint.New(endpoint.Config{Endpoint: tt.ep, Transports: registry(), Handshake: tt.handshake,
				DialTimeout: dial, SampleBytes: 64 << 10})
			if err != nil {
				t.Fatal(err)
			}
			env := probes.NewEnv(time.Now(), nil, nil)
			if tt.poison {
				env.Poison(endpoint.Network(tt.ep.Transport), tt.ep.Addr, time.Now().Add(time.Hour))
			}
			res := p.Run(context.Background(), env)
			k := res.Keys.(*endpoint.Keys)
			if got := k.FailureString(); got != tt.wantFailure || ooni.Deref(k.FailedOperation) != tt.wantOp {
				t.Errorf("failure %q at %q, want %q at %q (%s)", got, ooni.Deref(k.FailedOperation), tt.wantFailure, tt.wantOp, res.Details)
			}
			if k.Blocking != tt.wantBlocking || res.State != tt.wantState {
				t.Errorf("blocking %v state %v, want %v %v (%s)", k.Blocking, res.State, tt.wantBlocking, tt.wantState, res.Details)
			}
			if k.XRTTSource != tt.wantRTT || (tt.wantRTT != "") != (k.XRTTSeconds != nil) {
				t.Errorf("rtt %v from %q, want from %q", k.XRTTSeconds, k.XRTTSource, tt.wantRTT)
			}
			if (k.XThroughput != nil) != tt.wantSample {
				t.Errorf("throughput %v, want a sample: %v", k.XThroughput, tt.wantSample)
			}
			if len(res.Verdicts) != 1 {
				t.Fatalf("%d verdicts", len(res.Verdicts))
			}
			v := res.Verdicts[0]
			if v.Transport != tt.ep.Transport || v.Addr != tt.ep.Addr || v.State != res.State || v.Network != endpoint.Network(tt.ep.Transport) {
				t.Errorf("verdict %+v", v)
			}
			if res.State == probes.StateOK && v.Handshake <= 0 {
				t.Errorf("verdict without a handshake time: %+v", v)
			}
		})
	}
}

// TestForInvite runs the probes of a whole invite through a Runner and
// checks that the router's sink gets one verdict per endpoint, and that
// the report never carries an endpoint's parameters.
func TestForInvite(t *testing.T) {
	tcpAddr, _ := gateway(t, tcp.ServerFactory)
	quicAddr, quicPub := gateway(t, quic.ServerFactory)
	eps := []invite.Endpoint{{Transport: "quic", Addr: quicAddr, Params: quicPub}, {Transport: "tcp", Addr: tcpAddr}}
	ps, err := endpoint.ForInvite(eps, endpoint.Config{Transports: registry(), DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu       sync.Mutex
		verdicts = map[string]probes.State{}
		report   syncBuffer
	)
	r, err := probes.New(probes.Config{Interval: time.Millisecond, Report: &report, Sink: probes.VerdictFunc(func(v probes.Verdict) {
		mu.Lock()
		verdicts[v.Transport] = v.State
		mu.Unlock()
	})})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Run(context.Background(), ps); err != nil {
		t.Fatal(err)
	}
	if verdicts["quic"] != probes.StateOK || verdicts["tcp"] != probes.StateOK {
		t.Errorf("verdicts %v", verdicts)
	}
	if pin := quicPub["pin"]; pin == "" || report.contains(pin) {
		t.Error("the report carries the quic endpoint's pin")
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b = append(s.b, p...)
	return len(p), nil
}

func (s *syncBuffer) contains(x string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Contains(string(s.b), x)
}

func TestNewRejects(t *testing.T) {
	for _, c := range []endpoint.Config{
		{},
		{Endpoint: invite.Endpoint{Transport: "tcp", Addr: "x"}, Transports: registry()},
		{Endpoint: invite.Endpoint{Transport: "tcp", Addr: "127.0.0.1:1"}},
		{Endpoint: invite.Endpoint{Transport: "tcp", Addr: "127.0.0.1:1"}, Transports: registry(), Pings: -1},
	} {
		if _, err := endpoint.New(c); err == nil {
			t.Errorf("New(%+v) succeeded", c)
		}
	}
}
