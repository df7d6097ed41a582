package packet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// DefaultTTL is the TTL (or hop limit) of built packets whose spec leaves
// it zero: Linux's default.
const DefaultTTL = 64

// ErrSpec is returned by BuildTCP and BuildUDP for a spec they cannot
// encode: invalid or mixed-family addresses, a payload too large, options
// of a bad length.
var ErrSpec = errors.New("packet: bad packet spec")

// TCPSpec describes a TCP segment to build. Zero fields take the
// documented defaults.
type TCPSpec struct {
	// Src and Dst are the endpoints; both IPv4 (or IPv4-mapped IPv6) or
	// both IPv6.
	Src, Dst netip.AddrPort
	Seq, Ack uint32
	Flags    TCPFlags
	// Window is the receive window; if zero, 65535 unless Flags has RST,
	// where it stays 0.
	Window uint16
	// Options are raw TCP options, a multiple of 4 bytes, at most 40.
	Options []byte
	// TTL is the IPv4 TTL or IPv6 hop limit; if zero, DefaultTTL.
	TTL uint8
	// ID is the IPv4 identification field.
	ID      uint16
	Payload []byte
}

// UDPSpec describes a UDP datagram to build.
type UDPSpec struct {
	// Src and Dst are the endpoints, as in TCPSpec.
	Src, Dst netip.AddrPort
	// TTL is the IPv4 TTL or IPv6 hop limit; if zero, DefaultTTL.
	TTL uint8
	// ID is the IPv4 identification field.
	ID      uint16
	Payload []byte
}

func badSpec(format string, args ...any) error {
	return fmt.Errorf("packet: %s: %w", fmt.Sprintf(format, args...), ErrSpec)
}

// addrs checks and unmaps the endpoints of a spec.
func addrs(src, dst netip.AddrPort) (s, d netip.Addr, err error) {
	s, d = src.Addr().Unmap(), dst.Addr().Unmap()
	if !s.IsValid() || !d.IsValid() {
		return s, d, badSpec("invalid address %v -> %v", src, dst)
	}
	if s.Is4() != d.Is4() {
		return s, d, badSpec("mixed address families %v -> %v", s, d)
	}
	if s.Zone() != "" || d.Zone() != "" {
		s, d = s.WithZone(""), d.WithZone("")
	}
	return s, d, nil
}

// ipHeader writes an IP header for a transport segment of n bytes into a
// new buffer with room for the segment and returns the buffer and the
// offset of the segment.
func ipHeader(src, dst netip.Addr, proto, ttl uint8, id uint16, n int) ([]byte, int, error) {
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if src.Is4() {
		total := IPv4HeaderLen + n
		if total > 0xffff {
			return nil, 0, badSpec("ipv4 packet of %d bytes", total)
		}
		b := make([]byte, total)
		b[0] = 0x45
		binary.BigEndian.PutUint16(b[2:4], uint16(total))
		binary.BigEndian.PutUint16(b[4:6], id)
		binary.BigEndian.PutUint16(b[6:8], 0x4000) // DF, as Linux sets
		b[8] = ttl
		b[9] = proto
		s, d := src.As4(), dst.As4()
		copy(b[12:16], s[:])
		copy(b[16:20], d[:])
		binary.BigEndian.PutUint16(b[10:12], Checksum(b[:IPv4HeaderLen], 0))
		return b, IPv4HeaderLen, nil
	}
	if n > 0xffff {
		return nil, 0, badSpec("ipv6 payload of %d bytes", n)
	}
	b := make([]byte, IPv6HeaderLen+n)
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:6], uint16(n))
	b[6] = proto
	b[7] = ttl
	s, d := src.As16(), dst.As16()
	copy(b[8:24], s[:])
	copy(b[24:40], d[:])
	return b, IPv6HeaderLen, nil
}

// BuildTCP returns a new IP packet holding the TCP segment s, with correct
// IPv4 header and TCP checksums. Errors wrap ErrSpec.
func BuildTCP(s TCPSpec) ([]byte, error) {
	src, dst, err := addrs(s.Src, s.Dst)
	if err != nil {
		return nil, err
	}
	if len(s.Options)%4 != 0 || len(s.Options) > 40 {
		return nil, badSpec("tcp options of %d bytes", len(s.Options))
	}
	hdr := TCPHeaderLen + len(s.Options)
	n := hdr + len(s.Payload)
	b, off, err := ipHeader(src, dst, ProtoTCP, s.TTL, s.ID, n)
	if err != nil {
		return nil, err
	}
	t := b[off:]
	binary.BigEndian.PutUint16(t[0:2], s.Src.Port())
	binary.BigEndian.PutUint16(t[2:4], s.Dst.Port())
	binary.BigEndian.PutUint32(t[4:8], s.Seq)
	binary.BigEndian.PutUint32(t[8:12], s.Ack)
	t[12] = byte(hdr/4) << 4
	t[13] = byte(s.Flags)
	win := s.Window
	if win == 0 && s.Flags&RST == 0 {
		win = 0xffff
	}
	binary.BigEndian.PutUint16(t[14:16], win)
	copy(t[TCPHeaderLen:], s.Options)
	copy(t[hdr:], s.Payload)
	binary.BigEndian.PutUint16(t[16:18], Checksum(t, PseudoHeaderSum(src, dst, ProtoTCP, n)))
	return b, nil
}

// BuildUDP returns a new IP packet holding the UDP datagram s, with
// correct IPv4 header and UDP checksums. Errors wrap ErrSpec.
func BuildUDP(s UDPSpec) ([]byte, error) {
	src, dst, err := addrs(s.Src, s.Dst)
	if err != nil {
		return nil, err
	}
	n := UDPHeaderLen + len(s.Payload)
	if n > 0xffff {
		return nil, badSpec("udp datagram of %d bytes", n)
	}
	b, off, err := ipHeader(src, dst, ProtoUDP, s.TTL, s.ID, n)
	if err != nil {
		return nil, err
	}
	u := b[off:]
	binary.BigEndian.PutUint16(u[0:2], s.Src.Port())
	binary.BigEndian.PutUint16(u[2:4], s.Dst.Port())
	binary.BigEndian.PutUint16(u[4:6], uint16(n))
	copy(u[UDPHeaderLen:], s.Payload)
	c := Checksum(u, PseudoHeaderSum(src, dst, ProtoUDP, n))
	if c == 0 {
		c = 0xffff // RFC 768: a computed zero is sent as all ones
	}
	binary.BigEndian.PutUint16(u[6:8], c)
	return b, nil
}
