package gateway_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/commucat/commucat/core/client"
	"github.com/commucat/commucat/core/gateway"
	"github.com/commucat/commucat/core/handshake"
	"github.com/commucat/commucat/core/invite"
	"github.com/commucat/commucat/core/padding"
	"github.com/commucat/commucat/core/router"
	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/transports/kcp"
	"github.com/commucat/commucat/transports/obfs4"
	"github.com/commucat/commucat/transports/quic"
	"github.com/commucat/commucat/transports/reality"
	"github.com/commucat/commucat/transports/tcp"
	"github.com/commucat/commucat/transports/websocket"
)

// recorder wraps a transport and records the size of every write on the
// connections it dials or accepts: what the transport is asked to carry.
type recorder struct {
	transport.Transport
	mu     sync.Mutex
	writes [][]int // per connection
}

type recListener struct {
	transport.Listener
	r *recorder
}

type recConn struct {
	net.Conn
	r *recorder
	i int
}

func (r *recorder) wrap(c net.Conn) net.Conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, nil)
	return &recConn{Conn: c, r: r, i: len(r.writes) - 1}
}

func (c *recConn) Write(b []byte) (int, error) {
	c.r.mu.Lock()
	c.r.writes[c.i] = append(c.r.writes[c.i], len(b))
	c.r.mu.Unlock()
	return c.Conn.Write(b)
}

func (r *recorder) Dial(ctx context.Context, addr string) (net.Conn, error) {
	c, err := r.Transport.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	return r.wrap(c), nil
}

func (r *recorder) Listen(ctx context.Context, addr string) (transport.Listener, error) {
	l, err := r.Transport.Listen(ctx, addr)
	if err != nil {
		return nil, err
	}
	return &recListener{Listener: l, r: r}, nil
}

func (l *recListener) Accept(ctx context.Context) (net.Conn, error) {
	c, err := l.Listener.Accept(ctx)
	if err != nil {
		return nil, err
	}
	return l.r.wrap(c), nil
}

func (r *recorder) conn(i int) []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.writes[i])
}

// TestOpeningLengthsDiffer shows that the sizes a transport is asked to
// carry for a session's opening (handshake messages and first records)
// differ between two sessions with one gateway, and that the ML-KEM
// messages no longer have their bare sizes.
func TestOpeningLengthsDiffer(t *testing.T) {
	cover := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer cover.Close()
	for _, tc := range []struct {
		name         string
		client       transport.Factory
		server       transport.ServerFactory
		serverParams transport.Params
	}{
		{"tcp", tcp.Factory, tcp.ServerFactory, nil},
		{"quic", quic.Factory, quic.ServerFactory, nil},
		{"kcp", kcp.Factory, kcp.ServerFactory, nil},
		{"websocket", websocket.Factory, websocket.ServerFactory, nil},
		{"obfs4", obfs4.Factory, obfs4.ServerFactory, nil},
		{"reality", reality.Factory, reality.ServerFactory, transport.Params{"dest": cover.Listener.Addr().String(), "sni": "cover.test"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srvT, pub, err := tc.server(tc.serverParams, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			cliT, err := tc.client(pub)
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range []transport.Transport{srvT, cliT} {
				if c, ok := x.(interface{ Close() error }); ok {
					defer c.Close()
				}
			}
			openingLengthsDiffer(t, srvT, cliT)
		})
	}
}

func openingLengthsDiffer(t *testing.T, srvT, cliT transport.Transport) {
	seed, err := padding.NewSeed()
	if err != nil {
		t.Fatal(err)
	}
	prof := padding.New(seed)
	gw, _ := handshake.GenerateStatic()
	t.Cleanup(gw.Wipe)
	srvRec := &recorder{Transport: srvT}
	addrs := serve(t, gateway.Config{
		Static:    gw,
		Endpoints: []gateway.Endpoint{{Transport: srvRec, Addr: "127.0.0.1:0"}},
		Pad:       prof.Handshake,
		Router:    router.Config{Pad: prof.Record},
	}, new(echo))

	cliRec := &recorder{Transport: cliT}
	reg := new(transport.Registry)
	reg.Register("tcp", func(transport.Params) (transport.Transport, error) { return cliRec, nil })
	for range 2 {
		dev, _ := handshake.GenerateStatic()
		dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
		s, _, err := client.Dial(dctx, client.Config{
			Static: dev, Gateway: gw.Public(), Transports: reg,
			Endpoints: []invite.Endpoint{{Transport: "tcp", Addr: addrs[0].String()}},
			Pad:       prof.Handshake,
			Router:    router.Config{Pad: prof.Record},
		})
		dcancel()
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, s)
		dev.Wipe()
	}
	// Client writes: message 1, message 3, then records. Gateway writes:
	// message 2, then records.
	c0, c1 := cliRec.conn(0), cliRec.conn(1)
	s0, s1 := srvRec.conn(0), srvRec.conn(1)
	t.Logf("client write sizes: %v and %v", c0, c1)
	t.Logf("gateway write sizes: %v and %v", s0, s1)
	if len(c0) < 3 || len(c1) < 3 || len(s0) < 2 || len(s1) < 2 {
		t.Fatalf("too few writes recorded: %v %v %v %v", c0, c1, s0, s1)
	}
	// Bare sizes without padding: message 1 = 2 (length) + 32 (e) + 1237
	// (version, timestamp, ML-KEM key, pad length, tag) and message 2 = 2 +
	// 32 + 1106.
	if slices.Equal(c0[:3], c1[:3]) {
		t.Errorf("the client's opening lengths repeat: %v", c0[:3])
	}
	if s0[0] == s1[0] && s0[1] == s1[1] {
		t.Errorf("the gateway's opening lengths repeat: %v", s0[:2])
	}
}
