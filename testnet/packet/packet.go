// Package packet parses and builds the raw IP packets that the testnet's
// userspace router forwards between hosts: IPv4 and IPv6 with TCP or UDP on
// top. It is the byte layer under testnet/censor: Parse reads a packet
// without copying it, and BuildTCP and BuildUDP write the forged packets a
// censor injects, with correct IPv4 header and TCP/UDP checksums.
//
// Wire formats, as Parse reads them (RFC 791, RFC 8200, RFC 9293, RFC 768;
// all integers big-endian):
//
//	IPv4 header (20..60 bytes)
//	+---------+-----+-------+--------------+-------------+---------------+
//	| ver|ihl | tos | total length         | id          | flags|fragoff |
//	+---------+-----+-------+--------------+-------------+---------------+
//	| ttl     | protocol    | header checksum            | src (4) dst (4)| options
//
//	IPv6 header (40 bytes), then extension headers (hop-by-hop 0, routing 43,
//	fragment 44, destination options 60, AH 51) chained by next-header
//	+----------+---------------+-----------------+-------------+-----------+
//	| ver|tc|flow label (4)    | payload len (2) | next hdr (1)| hop limit |
//	+----------+---------------+-----------------+-------------+-----------+
//	| src (16) | dst (16)
//
//	TCP header (20..60 bytes)
//	| sport (2) | dport (2) | seq (4) | ack (4) | off|flags (2) | window (2) |
//	| checksum (2) | urgent (2) | options (off*4-20)
//
//	UDP header (8 bytes)
//	| sport (2) | dport (2) | length (2) | checksum (2) |
//
// Parse is strict about lengths: every length field is checked against the
// bytes present before it is used, and it never panics. It does not verify
// checksums (middleboxes such as Iran's protocol filter do not either; Bock
// et al., FOCI 2020); VerifyChecksums does. Fragments are reported with
// Fragment set and their transport header left unparsed: the router
// forwards them, but a censor built on this package does not reassemble IP
// fragments.
//
// Everything here is a pure function of its arguments, safe for concurrent
// use.
package packet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// IP protocol numbers of the transports this package knows.
const (
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoICMPv6 uint8 = 58
	// ProtoNone is IPv6's "no next header" (59).
	ProtoNone uint8 = 59
)

// Header sizes.
const (
	IPv4HeaderLen = 20
	IPv6HeaderLen = 40
	TCPHeaderLen  = 20
	UDPHeaderLen  = 8
)

// maxExtHeaders bounds the IPv6 extension-header chain Parse walks.
const maxExtHeaders = 8

// Sentinel errors that callers branch on with errors.Is.
var (
	// ErrTruncated is returned when a header or a length field promises
	// more bytes than the packet holds.
	ErrTruncated = errors.New("packet: truncated")
	// ErrMalformed is returned for inconsistent headers: a header length
	// below the minimum, a UDP length below 8, an over-long IPv6 extension
	// chain.
	ErrMalformed = errors.New("packet: malformed")
	// ErrVersion is returned for an IP version other than 4 or 6.
	ErrVersion = errors.New("packet: unsupported ip version")
	// ErrChecksum is returned by VerifyChecksums for a wrong checksum.
	ErrChecksum = errors.New("packet: bad checksum")
)

// TCPFlags are the flag bits of a TCP header (the low byte of the
// offset/flags word).
type TCPFlags uint8

// TCP flag bits.
const (
	FIN TCPFlags = 1 << iota
	SYN
	RST
	PSH
	ACK
	URG
	ECE
	CWR
)

// Has reports whether every bit of g is set in f.
func (f TCPFlags) Has(g TCPFlags) bool { return f&g == g }

// String returns the set flags joined by "|", e.g. "SYN|ACK", or "0".
func (f TCPFlags) String() string {
	if f == 0 {
		return "0"
	}
	names := [...]string{"FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"}
	var parts []string
	for i, n := range names {
		if f&(1<<i) != 0 {
			parts = append(parts, n)
		}
	}
	return strings.Join(parts, "|")
}

// TCP holds the fields of a TCP header.
type TCP struct {
	Seq, Ack uint32
	Flags    TCPFlags
	Window   uint16
	Urgent   uint16
	// Options are the raw option bytes; they alias the parsed packet.
	Options []byte
}

// Packet is one parsed IP packet. Its byte slices alias the buffer given to
// Parse: copy them to keep them past the buffer's reuse.
type Packet struct {
	// Version is 4 or 6.
	Version uint8
	// Src and Dst are the IP addresses.
	Src, Dst netip.Addr
	// Protocol is the transport protocol number: for IPv6, the one after
	// the extension headers.
	Protocol uint8
	// TTL is the IPv4 time to live or the IPv6 hop limit.
	TTL uint8
	// ID is the IPv4 identification field (0 for IPv6).
	ID uint16
	// Fragment reports a packet that is one fragment of a larger datagram
	// (IPv4 MF or offset, or an IPv6 fragment header). For fragments the
	// transport header is not parsed and Payload is the IP payload.
	Fragment bool
	// SrcPort and DstPort are the TCP or UDP ports.
	SrcPort, DstPort uint16
	// TCP is the TCP header, valid when Protocol is ProtoTCP and the packet
	// is not a fragment.
	TCP TCP
	// Payload is the TCP or UDP payload; for other protocols and for
	// fragments, the IP payload.
	Payload []byte
	// Len is the length of the IP packet (the IPv4 total length, or 40 plus
	// the IPv6 payload length); bytes after it in the buffer are ignored.
	Len int
	// HeaderLen is the length of the IP header with its options or
	// extension headers: the offset of the transport header.
	HeaderLen int
}

// IsTCP reports whether p carries a parsed TCP segment.
func (p *Packet) IsTCP() bool { return p.Protocol == ProtoTCP && !p.Fragment }

// IsUDP reports whether p carries a parsed UDP datagram.
func (p *Packet) IsUDP() bool { return p.Protocol == ProtoUDP && !p.Fragment }

// SrcAddrPort is the source address and port.
func (p *Packet) SrcAddrPort() netip.AddrPort { return netip.AddrPortFrom(p.Src, p.SrcPort) }

// DstAddrPort is the destination address and port.
func (p *Packet) DstAddrPort() netip.AddrPort { return netip.AddrPortFrom(p.Dst, p.DstPort) }

// SeqLen is how much sequence space a TCP segment takes: its payload
// length, plus one for SYN and one for FIN. It is 0 for non-TCP packets.
func (p *Packet) SeqLen() uint32 {
	if !p.IsTCP() {
		return 0
	}
	n := uint32(len(p.Payload))
	if p.TCP.Flags&SYN != 0 {
		n++
	}
	if p.TCP.Flags&FIN != 0 {
		n++
	}
	return n
}

func truncated(format string, args ...any) error {
	return fmt.Errorf("packet: %s: %w", fmt.Sprintf(format, args...), ErrTruncated)
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("packet: %s: %w", fmt.Sprintf(format, args...), ErrMalformed)
}

// Parse parses the IP packet at the start of b. It returns an error
// wrapping ErrTruncated, ErrMalformed or ErrVersion for bytes that are not
// a well-formed IPv4 or IPv6 packet, or whose TCP or UDP header is not
// well-formed. The result aliases b.
func Parse(b []byte) (Packet, error) {
	var p Packet
	err := ParseInto(&p, b)
	return p, err
}

// ParseInto is Parse writing into p, for callers that reuse a Packet on a
// hot path. On error p's contents are unspecified.
func ParseInto(p *Packet, b []byte) error {
	*p = Packet{}
	if len(b) == 0 {
		return truncated("empty packet")
	}
	var l4 []byte
	var err error
	switch b[0] >> 4 {
	case 4:
		l4, err = p.parseIPv4(b)
	case 6:
		l4, err = p.parseIPv6(b)
	default:
		return fmt.Errorf("packet: version %d: %w", b[0]>>4, ErrVersion)
	}
	if err != nil {
		return err
	}
	if p.Fragment {
		p.Payload = l4
		return nil
	}
	switch p.Protocol {
	case ProtoTCP:
		return p.parseTCP(l4)
	case ProtoUDP:
		return p.parseUDP(l4)
	default:
		p.Payload = l4
		return nil
	}
}

// parseIPv4 fills the IP fields from an IPv4 header and returns the IP
// payload.
func (p *Packet) parseIPv4(b []byte) ([]byte, error) {
	if len(b) < IPv4HeaderLen {
		return nil, truncated("ipv4 header needs %d bytes, have %d", IPv4HeaderLen, len(b))
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < IPv4HeaderLen {
		return nil, malformed("ipv4 header length %d", ihl)
	}
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if total < ihl {
		return nil, malformed("ipv4 total length %d < header length %d", total, ihl)
	}
	if total > len(b) {
		return nil, truncated("ipv4 total length %d, have %d bytes", total, len(b))
	}
	p.Version = 4
	p.Len = total
	p.ID = binary.BigEndian.Uint16(b[4:6])
	frag := binary.BigEndian.Uint16(b[6:8])
	p.Fragment = frag&0x2000 != 0 || frag&0x1fff != 0
	p.TTL = b[8]
	p.Protocol = b[9]
	p.Src = netip.AddrFrom4([4]byte(b[12:16]))
	p.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	p.HeaderLen = ihl
	return b[ihl:total], nil
}

// parseIPv6 fills the IP fields from an IPv6 header and its extension
// headers and returns the upper-layer payload.
func (p *Packet) parseIPv6(b []byte) ([]byte, error) {
	if len(b) < IPv6HeaderLen {
		return nil, truncated("ipv6 header needs %d bytes, have %d", IPv6HeaderLen, len(b))
	}
	plen := int(binary.BigEndian.Uint16(b[4:6]))
	if IPv6HeaderLen+plen > len(b) {
		return nil, truncated("ipv6 payload length %d, have %d bytes", plen, len(b)-IPv6HeaderLen)
	}
	p.Version = 6
	p.Len = IPv6HeaderLen + plen
	p.TTL = b[7]
	p.Src = netip.AddrFrom16([16]byte(b[8:24]))
	p.Dst = netip.AddrFrom16([16]byte(b[24:40]))
	next := b[6]
	rest := b[IPv6HeaderLen:p.Len]
	for i := 0; ; i++ {
		var hlen int
		switch next {
		case 0, 43, 60: // hop-by-hop, routing, destination options
			if len(rest) < 8 {
				return nil, truncated("ipv6 extension header %d", next)
			}
			hlen = (int(rest[1]) + 1) * 8
		case 51: // authentication header
			if len(rest) < 8 {
				return nil, truncated("ipv6 authentication header")
			}
			hlen = (int(rest[1]) + 2) * 4
		case 44: // fragment
			if len(rest) < 8 {
				return nil, truncated("ipv6 fragment header")
			}
			hlen = 8
			off := binary.BigEndian.Uint16(rest[2:4])
			if off>>3 != 0 || off&1 != 0 { // fragment offset or M flag
				p.Fragment = true
			}
		default:
			p.Protocol = next
			p.HeaderLen = p.Len - len(rest)
			return rest, nil
		}
		if i == maxExtHeaders {
			return nil, malformed("more than %d ipv6 extension headers", maxExtHeaders)
		}
		if hlen > len(rest) {
			return nil, truncated("ipv6 extension header %d of %d bytes, have %d", next, hlen, len(rest))
		}
		next = rest[0]
		rest = rest[hlen:]
		if p.Fragment {
			p.Protocol = next
			p.HeaderLen = p.Len - len(rest)
			return rest, nil
		}
	}
}

func (p *Packet) parseTCP(b []byte) error {
	if len(b) < TCPHeaderLen {
		return truncated("tcp header needs %d bytes, have %d", TCPHeaderLen, len(b))
	}
	off := int(b[12]>>4) * 4
	if off < TCPHeaderLen {
		return malformed("tcp data offset %d", off)
	}
	if off > len(b) {
		return truncated("tcp data offset %d, have %d bytes", off, len(b))
	}
	p.SrcPort = binary.BigEndian.Uint16(b[0:2])
	p.DstPort = binary.BigEndian.Uint16(b[2:4])
	p.TCP = TCP{
		Seq:     binary.BigEndian.Uint32(b[4:8]),
		Ack:     binary.BigEndian.Uint32(b[8:12]),
		Flags:   TCPFlags(b[13]),
		Window:  binary.BigEndian.Uint16(b[14:16]),
		Urgent:  binary.BigEndian.Uint16(b[18:20]),
		Options: b[TCPHeaderLen:off],
	}
	p.Payload = b[off:]
	return nil
}

func (p *Packet) parseUDP(b []byte) error {
	if len(b) < UDPHeaderLen {
		return truncated("udp header needs %d bytes, have %d", UDPHeaderLen, len(b))
	}
	n := int(binary.BigEndian.Uint16(b[4:6]))
	if n < UDPHeaderLen {
		return malformed("udp length %d", n)
	}
	if n > len(b) {
		return truncated("udp length %d, have %d bytes", n, len(b))
	}
	p.SrcPort = binary.BigEndian.Uint16(b[0:2])
	p.DstPort = binary.BigEndian.Uint16(b[2:4])
	p.Payload = b[UDPHeaderLen:n]
	return nil
}
