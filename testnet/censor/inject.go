package censor

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/commucat/commucat/testnet/packet"
)

// Side names one end of a connection.
type Side uint8

// The two ends of a connection: the client sent its first packet.
const (
	Client Side = iota
	Server
)

// String returns "client" or "server".
func (s Side) String() string {
	if s == Client {
		return "client"
	}
	return "server"
}

// Errors of the injection helpers.
var (
	// ErrNotInFlow means a packet does not belong to the connection a
	// TCPState tracks.
	ErrNotInFlow = errors.New("censor: packet not in this flow")
	// ErrSeqUnknown means the sequence number a forged segment needs has
	// not been observed yet.
	ErrSeqUnknown = errors.New("censor: sequence number not observed yet")
)

// TCPState is what an on-path censor knows of one TCP connection's
// sequence space: for each side, the next sequence number it will send.
// It is learnt from packets in either direction, so a censor that sees
// only the client's packets still knows the server's next sequence number
// from the client's acknowledgements. It is not safe for concurrent use;
// the flow table owns one per flow.
//
// For each side, Next(side) is the largest of the ends (seq + payload +
// SYN + FIN) of that side's segments and of the acknowledgement numbers
// the other side sent. Once the censor has forwarded everything it saw
// and nothing is in flight, that is exactly the receiver's RCV.NXT, the
// one sequence number a receiver accepts a RST at without a challenge ACK
// (RFC 5961 §3.2).
type TCPState struct {
	// Client and Server are the endpoints; Client sent the first packet
	// observed.
	Client, Server netip.AddrPort
	// TTL is the TTL of forged segments; if zero, packet.DefaultTTL.
	TTL uint8

	next  [2]uint32
	known [2]bool
}

// NewTCPState starts tracking the connection of p, a TCP packet sent by
// the client (usually its SYN, or whatever packet the censor reacts to),
// and observes p.
func NewTCPState(p *packet.Packet) (*TCPState, error) {
	if !p.IsTCP() {
		return nil, fmt.Errorf("censor: tcp state from a non-tcp packet: %w", ErrNotInFlow)
	}
	s := &TCPState{Client: p.SrcAddrPort(), Server: p.DstAddrPort()}
	return s, s.Observe(p)
}

// Observe updates the state from a TCP packet of the connection, in
// either direction.
func (s *TCPState) Observe(p *packet.Packet) error {
	if !p.IsTCP() {
		return fmt.Errorf("censor: non-tcp packet: %w", ErrNotInFlow)
	}
	var from Side
	switch src, dst := p.SrcAddrPort(), p.DstAddrPort(); {
	case src == s.Client && dst == s.Server:
		from = Client
	case src == s.Server && dst == s.Client:
		from = Server
	default:
		return fmt.Errorf("censor: %v -> %v in flow %v -> %v: %w", src, dst, s.Client, s.Server, ErrNotInFlow)
	}
	if p.TCP.Flags&packet.RST != 0 {
		return nil // a reset's numbers need not fit the window
	}
	s.advance(from, p.TCP.Seq+p.SeqLen())
	if p.TCP.Flags&packet.ACK != 0 {
		s.advance(1-from, p.TCP.Ack)
	}
	return nil
}

// advance moves side's next sequence number forward to v, in sequence
// space modulo 2^32.
func (s *TCPState) advance(side Side, v uint32) {
	if !s.known[side] || int32(v-s.next[side]) > 0 {
		s.next[side] = v
		s.known[side] = true
	}
}

// Next returns the next sequence number side will send, and whether it
// has been observed.
func (s *TCPState) Next(side Side) (uint32, bool) {
	return s.next[side], s.known[side]
}

// Forge returns an IP packet that appears to come from the other end and
// goes to side `to`: its sequence number is the other end's Next, and, if
// flags has ACK, its acknowledgement number is to's Next. The usual flags
// are packet.RST (the GFW's "type 1" reset), packet.RST|packet.ACK
// ("type 2") and packet.FIN|packet.ACK. A censor tearing a connection down
// forges one packet toward each side. The checksums are correct.
func (s *TCPState) Forge(to Side, flags packet.TCPFlags, payload []byte) ([]byte, error) {
	from := 1 - to
	seq, ok := s.Next(from)
	if !ok {
		return nil, fmt.Errorf("censor: forging toward the %v: %v's sequence number: %w", to, from, ErrSeqUnknown)
	}
	var ack uint32
	if flags&packet.ACK != 0 {
		if ack, ok = s.Next(to); !ok {
			return nil, fmt.Errorf("censor: forging toward the %v: its own sequence number: %w", to, ErrSeqUnknown)
		}
	}
	src, dst := s.Server, s.Client
	if to == Server {
		src, dst = s.Client, s.Server
	}
	return packet.BuildTCP(packet.TCPSpec{Src: src, Dst: dst, Seq: seq, Ack: ack, Flags: flags, TTL: s.TTL, Payload: payload})
}

// ReplyUDP returns a UDP packet answering p: from p's destination to p's
// source, ports swapped, carrying payload, with correct checksums. It is
// how a censor injects a forged DNS answer (ForgeDNSAnswer) before the
// real resolver's. ttl zero means packet.DefaultTTL.
func ReplyUDP(p *packet.Packet, payload []byte, ttl uint8) ([]byte, error) {
	if !p.IsUDP() {
		return nil, fmt.Errorf("censor: udp reply to a non-udp packet: %w", ErrNotInFlow)
	}
	return packet.BuildUDP(packet.UDPSpec{Src: p.DstAddrPort(), Dst: p.SrcAddrPort(), TTL: ttl, Payload: payload})
}
