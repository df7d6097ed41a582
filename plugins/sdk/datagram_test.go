package sdk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/commucat/commucat/plugins/internal/ctl"
	"github.com/commucat/commucat/plugins/proto"
	"github.com/commucat/commucat/transports/tcp"
)

// fakeDgram is a transport whose connections are TCP for the stream and
// carry datagrams through channels the test holds.
type fakeDgram struct {
	sent chan []byte // the datagrams the host sent
	recv chan []byte // datagrams for the host
	max  int
}

func newFakeDgram(limit int) *fakeDgram {
	return &fakeDgram{sent: make(chan []byte, 16), recv: make(chan []byte, 16), max: limit}
}

func (f *fakeDgram) Name() string { return "fake" }

func (f *fakeDgram) Dial(ctx context.Context, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &fakeDgramConn{Conn: c, f: f}, nil
}

func (f *fakeDgram) Listen(context.Context, string) (Listener, error) {
	return nil, ErrUnsupported
}

type fakeDgramConn struct {
	net.Conn
	f *fakeDgram
}

func (c *fakeDgramConn) SendDatagram(b []byte) error {
	if len(b) > c.f.max {
		return fmt.Errorf("fake: %d bytes: %w", len(b), ErrTooLarge)
	}
	c.f.sent <- bytes.Clone(b)
	return nil
}

func (c *fakeDgramConn) ReceiveDatagram(ctx context.Context) ([]byte, error) {
	select {
	case b := <-c.f.recv:
		return b, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *fakeDgramConn) MaxDatagramSize() int { return c.f.max }

// flowWithDatagrams sends a new flow with a datagram socket to the server
// and returns the host's ends.
func (h *host) flowWithDatagrams(t *testing.T, id uint64) (uc, dc *net.UnixConn) {
	t.Helper()
	uc, peer, err := ctl.FlowPair()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	dc, dpeer, err := ctl.DatagramPair()
	if err != nil {
		t.Fatal(err)
	}
	defer dpeer.Close()
	if err := h.ctl.Send(ctl.Msg{Type: ctl.TypeFlow, Flow: id}, time.Time{}, peer, dpeer); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		uc.Close()
		dc.Close()
	})
	return uc, dc
}

func describe(t *testing.T, s *server, hostVersion uint32) *proto.DescribeResponse {
	t.Helper()
	r, err := s.Describe(context.Background(), &proto.DescribeRequest{HostProtocolVersion: hostVersion})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// readRecord reads one datagram record from dc.
func readRecord(t *testing.T, dc *net.UnixConn) []byte {
	t.Helper()
	if err := dc.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, ctl.MaxRecord+1)
	n, err := dc.Read(buf)
	if err != nil {
		t.Fatalf("read datagram record: %v", err)
	}
	p, err := ctl.ParseDatagram(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDatagramFlow(t *testing.T) {
	fake := newFakeDgram(100)
	s, h := newServerFor(t, Plugin{Name: "fake", Datagram: true, Client: func(Params) (Transport, error) { return fake, nil }})
	if r := describe(t, s, proto.ProtocolVersion); r.GetProtocolVersion() != proto.ProtocolVersion || !r.GetCapabilities().GetDatagram() {
		t.Fatalf("Describe = %v; want version %d with datagrams", r, proto.ProtocolVersion)
	}
	inst := configure(t, s)
	addr := peerServer(t, func(c *net.TCPConn) { io.Copy(io.Discard, c) }) //nolint:errcheck // until the end
	_, dc := h.flowWithDatagrams(t, 1)
	if r := dial(t, s, inst, 1, addr); r.GetError() != nil || r.GetMaxDatagramSize() != 100 {
		t.Fatalf("Dial = %v; want max_datagram_size 100", r)
	}

	// Host to transport, an empty datagram included.
	for _, p := range [][]byte{[]byte("hello"), {}, bytes.Repeat([]byte{7}, 100)} {
		if _, err := dc.Write(ctl.AppendDatagram(nil, p)); err != nil {
			t.Fatal(err)
		}
		if got := <-fake.sent; !bytes.Equal(got, p) {
			t.Errorf("transport sent %q, want %q", got, p)
		}
	}
	// Transport to host.
	for _, p := range [][]byte{[]byte("world"), {}} {
		fake.recv <- p
		if got := readRecord(t, dc); !bytes.Equal(got, p) {
			t.Errorf("host got %q, want %q", got, p)
		}
	}
	st, _ := s.Stats(context.Background(), &proto.StatsRequest{})
	if st.GetDatagramsFromHost() != 3 || st.GetDatagramsToHost() != 2 {
		t.Errorf("Stats = %v; want 3 datagrams from the host, 2 to it", st)
	}

	// A record above the announced limit ends the flow's datagrams, with
	// DGRAM_EOF first.
	if _, err := dc.Write(ctl.AppendDatagram(nil, make([]byte, 101))); err != nil {
		t.Fatal(err)
	}
	if n, err := dc.Read(make([]byte, 16)); err != io.EOF {
		t.Fatalf("read after an oversized datagram = %d, %v; want io.EOF", n, err)
	}
	h.ctl.Sync() //nolint:errcheck // checked by the flag
	h.mu.Lock()
	clean := h.dgramEOF[1]
	h.mu.Unlock()
	if !clean {
		t.Error("the datagrams ended without DGRAM_EOF")
	}
}

// TestDatagramFlowWithoutDatagrams checks a connection that carries no
// datagrams in a plugin that has datagram capability: the answer says so
// and the plugin closes its end of the datagram socket.
func TestDatagramFlowWithoutDatagrams(t *testing.T) {
	s, h := newServerFor(t, Plugin{Name: "tcp", Datagram: true, Client: tcp.Factory})
	describe(t, s, proto.ProtocolVersion)
	inst := configure(t, s)
	addr := peerServer(t, func(c *net.TCPConn) { io.Copy(io.Discard, c) }) //nolint:errcheck // until the end
	uc, dc := h.flowWithDatagrams(t, 1)
	if r := dial(t, s, inst, 1, addr); r.GetError() != nil || r.GetMaxDatagramSize() != 0 {
		t.Fatalf("Dial = %v; want no datagrams", r)
	}
	if n, err := dc.Read(make([]byte, 16)); err != io.EOF {
		t.Errorf("datagram socket read = %d, %v; want io.EOF", n, err)
	}
	if _, err := uc.Write([]byte("stream")); err != nil {
		t.Errorf("stream write: %v", err)
	}
}

// TestDatagramVersions checks the descriptors FLOW must carry: two after
// a version 2 Describe with datagrams, one otherwise (also for a plugin
// with datagrams under a version 1 host).
func TestDatagramVersions(t *testing.T) {
	tests := []struct {
		name        string
		hostVersion uint32
		datagrams   bool // the second descriptor is sent
		wantVersion uint32
		wantDgram   bool
	}{
		{"version 2, one descriptor", 2, false, 2, true},
		{"version 1, two descriptors", 1, true, 1, false},
		{"unknown version", 0, false, proto.ProtocolVersion, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, h := newServerFor(t, Plugin{Name: "fake", Datagram: true, Client: func(Params) (Transport, error) { return newFakeDgram(10), nil }})
			r := describe(t, s, tt.hostVersion)
			if r.GetProtocolVersion() != tt.wantVersion || r.GetCapabilities().GetDatagram() != tt.wantDgram {
				t.Fatalf("Describe = %v; want version %d, datagram %v", r, tt.wantVersion, tt.wantDgram)
			}
			if tt.datagrams {
				h.flowWithDatagrams(t, 1)
			} else {
				h.flow(t, 1)
			}
			var v *ctl.ViolationError
			if err := s.ctl.Sync(); !errors.As(err, &v) {
				t.Errorf("after a FLOW with the wrong descriptors: %v, want a violation", err)
			}
		})
	}
}
