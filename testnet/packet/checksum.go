package packet

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// Checksum returns the Internet checksum (RFC 1071) of b added to the
// partial one's-complement sum initial: the value to store in a header
// whose checksum field was zero while summing. A header that already holds
// its correct checksum sums to 0.
func Checksum(b []byte, initial uint32) uint16 {
	return ^fold(sum(b, initial))
}

// sum adds b, as big-endian 16-bit words (an odd last byte padded with
// zero), to the 32-bit partial sum s, eight bytes at a time.
func sum(b []byte, s uint32) uint32 {
	acc := uint64(s)
	for len(b) >= 8 {
		v := binary.BigEndian.Uint64(b)
		acc += v >> 48
		acc += (v >> 32) & 0xffff
		acc += (v >> 16) & 0xffff
		acc += v & 0xffff
		b = b[8:]
	}
	for len(b) >= 2 {
		acc += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint64(b[0]) << 8
	}
	for acc>>32 != 0 {
		acc = (acc & 0xffffffff) + acc>>32
	}
	return uint32(acc)
}

// fold folds a 32-bit partial sum into 16 bits with end-around carry.
func fold(s uint32) uint16 {
	for s>>16 != 0 {
		s = (s & 0xffff) + s>>16
	}
	return uint16(s)
}

// PseudoHeaderSum is the partial checksum of the TCP/UDP pseudo-header
// (RFC 9293 §3.1, RFC 8200 §8.1) for a segment of length n between src and
// dst carrying protocol proto. Pass it as initial to Checksum over the
// segment.
func PseudoHeaderSum(src, dst netip.Addr, proto uint8, n int) uint32 {
	var s uint32
	if src.Is4() {
		a, b := src.As4(), dst.As4()
		s = sum(a[:], s)
		s = sum(b[:], s)
	} else {
		a, b := src.As16(), dst.As16()
		s = sum(a[:], s)
		s = sum(b[:], s)
	}
	return s + uint32(proto) + uint32(n)&0xffff + uint32(n)>>16
}

// VerifyChecksums checks the IPv4 header checksum and the TCP or UDP
// checksum of the packet in b. It returns an error wrapping ErrChecksum
// for a wrong checksum, or Parse's error. Fragments have only their IPv4
// header checked; other protocols are not checked. A zero UDP checksum over
// IPv4 means "none" (RFC 768) and passes; over IPv6 it is an error.
func VerifyChecksums(b []byte) error {
	p, err := Parse(b)
	if err != nil {
		return err
	}
	if p.Version == 4 {
		ihl := int(b[0]&0x0f) * 4
		if c := Checksum(b[:ihl], 0); c != 0 {
			return fmt.Errorf("packet: ipv4 header checksum off by %#04x: %w", c, ErrChecksum)
		}
	}
	if p.Fragment || (p.Protocol != ProtoTCP && p.Protocol != ProtoUDP) {
		return nil
	}
	seg := transportSegment(b, &p)
	if p.Protocol == ProtoUDP && binary.BigEndian.Uint16(seg[6:8]) == 0 {
		if p.Version == 4 {
			return nil
		}
		return fmt.Errorf("packet: zero udp checksum over ipv6: %w", ErrChecksum)
	}
	if c := Checksum(seg, PseudoHeaderSum(p.Src, p.Dst, p.Protocol, len(seg))); c != 0 {
		return fmt.Errorf("packet: %s checksum off by %#04x: %w", protoName(p.Protocol), c, ErrChecksum)
	}
	return nil
}

// transportSegment returns the TCP or UDP header and payload of a parsed,
// unfragmented packet: the bytes the transport checksum covers.
func transportSegment(b []byte, p *Packet) []byte {
	hdr := UDPHeaderLen
	if p.Protocol == ProtoTCP {
		hdr = TCPHeaderLen + len(p.TCP.Options)
	}
	return b[p.HeaderLen : p.HeaderLen+hdr+len(p.Payload)]
}

func protoName(proto uint8) string {
	switch proto {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	}
	return fmt.Sprintf("protocol %d", proto)
}
