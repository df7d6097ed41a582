package censor

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/commucat/commucat/testnet/packet"
	"github.com/google/go-cmp/cmp"
)

var (
	cli4 = netip.MustParseAddrPort("198.18.0.2:40000")
	srv4 = netip.MustParseAddrPort("198.19.0.3:443")
)

// seg builds and parses one TCP segment.
func seg(t testing.TB, src, dst netip.AddrPort, seq, ack uint32, flags packet.TCPFlags, n int) *packet.Packet {
	t.Helper()
	p, err := packet.Parse(mustBuildTCP(t, packet.TCPSpec{Src: src, Dst: dst, Seq: seq, Ack: ack, Flags: flags, Payload: make([]byte, n)}))
	if err != nil {
		t.Fatal(err)
	}
	return &p
}

// forged is the parsed form of a forged segment.
type forged struct {
	Src, Dst netip.AddrPort
	Seq, Ack uint32
	Flags    packet.TCPFlags
}

func parseForged(t testing.TB, b []byte) forged {
	t.Helper()
	if err := packet.VerifyChecksums(b); err != nil {
		t.Fatalf("forged packet: %v", err)
	}
	p, err := packet.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return forged{p.SrcAddrPort(), p.DstAddrPort(), p.TCP.Seq, p.TCP.Ack, p.TCP.Flags}
}

// TestForgeFromHandshake follows a handshake and a 517-byte ClientHello
// and forges resets toward both ends, as the GFW does on an SNI match.
func TestForgeFromHandshake(t *testing.T) {
	syn := seg(t, cli4, srv4, 1000, 0, packet.SYN, 0)
	s, err := NewTCPState(syn)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*packet.Packet{
		seg(t, srv4, cli4, 5000, 1001, packet.SYN|packet.ACK, 0),
		seg(t, cli4, srv4, 1001, 5001, packet.ACK, 0),
		seg(t, cli4, srv4, 1001, 5001, packet.PSH|packet.ACK, 517), // the ClientHello
	} {
		if err := s.Observe(p); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name  string
		to    Side
		flags packet.TCPFlags
		want  forged
	}{
		{"rst+ack to the client", Client, packet.RST | packet.ACK, forged{srv4, cli4, 5001, 1518, packet.RST | packet.ACK}},
		{"rst+ack to the server", Server, packet.RST | packet.ACK, forged{cli4, srv4, 1518, 5001, packet.RST | packet.ACK}},
		{"bare rst to the client", Client, packet.RST, forged{srv4, cli4, 5001, 0, packet.RST}},
		{"fin to the server", Server, packet.FIN | packet.ACK, forged{cli4, srv4, 1518, 5001, packet.FIN | packet.ACK}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := s.Forge(tt.to, tt.flags, nil)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, parseForged(t, b), cmpAddrPort); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestForgeClientSideOnly: a censor that sees only the client's packets
// learns the server's sequence number from the client's ACKs.
func TestForgeClientSideOnly(t *testing.T) {
	data := seg(t, cli4, srv4, 77, 9000, packet.PSH|packet.ACK, 100)
	s, err := NewTCPState(data)
	if err != nil {
		t.Fatal(err)
	}
	toClient, err := s.Forge(Client, packet.RST|packet.ACK, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := parseForged(t, toClient), (forged{srv4, cli4, 9000, 177, packet.RST | packet.ACK}); got != want {
		t.Errorf("to client %+v, want %+v", got, want)
	}
	toServer, err := s.Forge(Server, packet.RST, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := parseForged(t, toServer), (forged{cli4, srv4, 177, 0, packet.RST}); got != want {
		t.Errorf("to server %+v, want %+v", got, want)
	}
}

func TestTCPStateSequenceSpace(t *testing.T) {
	t.Run("wraps around 2^32 and ignores retransmissions", func(t *testing.T) {
		s, _ := NewTCPState(seg(t, cli4, srv4, 0xfffffff0, 0, packet.SYN, 0))
		s.Observe(seg(t, cli4, srv4, 0xfffffff1, 1, packet.ACK, 32))
		s.Observe(seg(t, cli4, srv4, 0xfffffff1, 1, packet.ACK, 16)) // retransmission of older data
		if got, _ := s.Next(Client); got != 0x11 {
			t.Errorf("client next = %#x, want 0x11", got)
		}
	})
	t.Run("syn only leaves the server unknown", func(t *testing.T) {
		s, _ := NewTCPState(seg(t, cli4, srv4, 1, 0, packet.SYN, 0))
		if _, err := s.Forge(Client, packet.RST, nil); !errors.Is(err, ErrSeqUnknown) {
			t.Errorf("Forge to client: err = %v", err)
		}
		if _, err := s.Forge(Server, packet.RST|packet.ACK, nil); !errors.Is(err, ErrSeqUnknown) {
			t.Errorf("Forge rst+ack to server: err = %v", err)
		}
		if b, err := s.Forge(Server, packet.RST, nil); err != nil || parseForged(t, b).Seq != 2 {
			t.Errorf("Forge rst to server: %v", err)
		}
	})
	t.Run("resets are not learnt from", func(t *testing.T) {
		s, _ := NewTCPState(seg(t, cli4, srv4, 100, 0, packet.SYN, 0))
		s.Observe(seg(t, cli4, srv4, 5000000, 0, packet.RST, 0))
		if got, _ := s.Next(Client); got != 101 {
			t.Errorf("client next = %d, want 101", got)
		}
	})
	t.Run("fin counts one", func(t *testing.T) {
		s, _ := NewTCPState(seg(t, cli4, srv4, 100, 7, packet.FIN|packet.ACK, 10))
		if got, _ := s.Next(Client); got != 111 {
			t.Errorf("client next = %d, want 111", got)
		}
	})
	t.Run("packets of other flows are refused", func(t *testing.T) {
		s, _ := NewTCPState(seg(t, cli4, srv4, 1, 0, packet.SYN, 0))
		other := netip.MustParseAddrPort("198.18.0.9:40000")
		if err := s.Observe(seg(t, other, srv4, 1, 0, packet.SYN, 0)); !errors.Is(err, ErrNotInFlow) {
			t.Errorf("Observe: err = %v", err)
		}
		udp, _ := packet.Parse(mustUDPPacket(t, cli4, srv4))
		if err := s.Observe(&udp); !errors.Is(err, ErrNotInFlow) {
			t.Errorf("Observe udp: err = %v", err)
		}
		if _, err := NewTCPState(&udp); !errors.Is(err, ErrNotInFlow) {
			t.Errorf("NewTCPState udp: err = %v", err)
		}
	})
	t.Run("ipv6 flow", func(t *testing.T) {
		c6 := netip.MustParseAddrPort("[2001:db8::2]:5555")
		s6 := netip.MustParseAddrPort("[2001:db8::3]:443")
		s, _ := NewTCPState(seg(t, c6, s6, 10, 20, packet.ACK, 5))
		b, err := s.Forge(Client, packet.RST|packet.ACK, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := parseForged(t, b), (forged{s6, c6, 20, 15, packet.RST | packet.ACK}); got != want {
			t.Errorf("got %+v, want %+v", got, want)
		}
	})
	if Client.String() != "client" || Server.String() != "server" {
		t.Errorf("Side.String: %v %v", Client, Server)
	}
}

func mustUDPPacket(t testing.TB, src, dst netip.AddrPort) []byte {
	t.Helper()
	b, err := packet.BuildUDP(packet.UDPSpec{Src: src, Dst: dst})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var cmpAddrPort = cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })
