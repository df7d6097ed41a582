package censor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// DNS wire constants (RFC 1035 §4.1).
const (
	dnsHeaderLen = 12
	dnsMaxName   = 255
	dnsMaxLabel  = 63
	dnsMaxJumps  = 16

	// DNSTypeA, DNSTypeAAAA and DNSClassINET are the record type and class
	// numbers the forged answers use.
	DNSTypeA     uint16 = 1
	DNSTypeAAAA  uint16 = 28
	DNSClassINET uint16 = 1

	// DNSRcodeNXDomain is the NXDOMAIN response code.
	DNSRcodeNXDomain = 3

	// DefaultDNSTTL is the TTL of forged answers whose ttl is zero.
	DefaultDNSTTL = 60
)

// ErrNotDNS is wrapped by the DNS parsers' errors: the bytes are not a
// well-formed DNS query.
var ErrNotDNS = errors.New("censor: not a dns query")

func notDNS(format string, args ...any) error {
	return fmt.Errorf("censor: dns: %s: %w", fmt.Sprintf(format, args...), ErrNotDNS)
}

// DNSQuery is the part of a DNS query a censor reads and echoes.
type DNSQuery struct {
	// ID is the transaction ID.
	ID uint16
	// Flags is the header's second 16-bit word (QR, opcode, RD, ...).
	Flags uint16
	// Name is the queried name in presentation form, lower-cased, without
	// the trailing dot ("." for the root); bytes outside the letters,
	// digits, '-' and '_' are escaped as \DDD.
	Name string
	// Type and Class are QTYPE and QCLASS.
	Type, Class uint16
	// Question is the raw question section (QNAME, QTYPE, QCLASS) as the
	// client sent it, 0x20 case randomisation included, echoed in forged
	// answers. It aliases the parsed message.
	Question []byte
}

// ParseDNSQuery parses a DNS query message (over UDP, or over TCP without
// its length prefix): a header with QR clear, opcode QUERY and exactly
// one question. Other sections are ignored. Errors wrap ErrNotDNS; it
// never panics.
func ParseDNSQuery(msg []byte) (DNSQuery, error) {
	var q DNSQuery
	if len(msg) < dnsHeaderLen {
		return q, notDNS("%d-byte message", len(msg))
	}
	q.ID = binary.BigEndian.Uint16(msg[0:2])
	q.Flags = binary.BigEndian.Uint16(msg[2:4])
	if q.Flags&0x8000 != 0 {
		return q, notDNS("response, not a query")
	}
	if op := q.Flags >> 11 & 0x0f; op != 0 {
		return q, notDNS("opcode %d", op)
	}
	if n := binary.BigEndian.Uint16(msg[4:6]); n != 1 {
		return q, notDNS("%d questions", n)
	}
	name, end, err := readName(msg, dnsHeaderLen)
	if err != nil {
		return q, err
	}
	if len(msg)-end < 4 {
		return q, notDNS("truncated question")
	}
	q.Name = name
	q.Type = binary.BigEndian.Uint16(msg[end : end+2])
	q.Class = binary.BigEndian.Uint16(msg[end+2 : end+4])
	q.Question = msg[dnsHeaderLen : end+4]
	return q, nil
}

// ParseDNSQueryTCP parses the first DNS query of a DNS-over-TCP stream:
// a 2-byte length, then the message. It returns ErrNeedMore while the
// stream holds less than the announced message.
func ParseDNSQueryTCP(stream []byte) (DNSQuery, error) {
	if len(stream) < 2 {
		return DNSQuery{}, ErrNeedMore
	}
	n := int(binary.BigEndian.Uint16(stream))
	if n < dnsHeaderLen {
		return DNSQuery{}, notDNS("tcp length %d", n)
	}
	if len(stream)-2 < n {
		return DNSQuery{}, ErrNeedMore
	}
	return ParseDNSQuery(stream[2 : 2+n])
}

// readName reads a domain name at off, following compression pointers,
// and returns it in presentation form and the offset after the name's
// bytes at off.
func readName(msg []byte, off int) (string, int, error) {
	var sb strings.Builder
	end := -1
	total := 0
	for jumps := 0; ; {
		if off >= len(msg) {
			return "", 0, notDNS("truncated name")
		}
		c := int(msg[off])
		switch c & 0xc0 {
		case 0x00:
			if c == 0 {
				if end < 0 {
					end = off + 1
				}
				if sb.Len() == 0 {
					return ".", end, nil
				}
				return sb.String(), end, nil
			}
			if off+1+c > len(msg) {
				return "", 0, notDNS("truncated label")
			}
			if total += c + 1; total > dnsMaxName {
				return "", 0, notDNS("name longer than %d bytes", dnsMaxName)
			}
			if sb.Len() > 0 {
				sb.WriteByte('.')
			}
			writeLabel(&sb, msg[off+1:off+1+c])
			off += 1 + c
		case 0xc0:
			if off+2 > len(msg) {
				return "", 0, notDNS("truncated pointer")
			}
			if jumps++; jumps > dnsMaxJumps {
				return "", 0, notDNS("compression loop")
			}
			if end < 0 {
				end = off + 2
			}
			off = int(binary.BigEndian.Uint16(msg[off:]) & 0x3fff)
		default:
			return "", 0, notDNS("label type %#x", c&0xc0)
		}
	}
}

// writeLabel writes a label lower-cased, escaping bytes that are not
// letters, digits, '-' or '_' as \DDD.
func writeLabel(sb *strings.Builder, l []byte) {
	for _, c := range l {
		switch {
		case c >= 'A' && c <= 'Z':
			sb.WriteByte(c + 'a' - 'A')
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
			sb.WriteByte(c)
		default:
			fmt.Fprintf(sb, "\\%03d", c)
		}
	}
}

// dnsResponse writes a response header and the echoed question.
func dnsResponse(q DNSQuery, rcode uint16, answers uint16) []byte {
	b := make([]byte, dnsHeaderLen, dnsHeaderLen+len(q.Question)+28)
	binary.BigEndian.PutUint16(b[0:2], q.ID)
	// QR, opcode QUERY, RD copied from the query, RA, rcode.
	flags := uint16(0x8000) | q.Flags&0x0100 | 0x0080 | rcode&0x0f
	binary.BigEndian.PutUint16(b[2:4], flags)
	if len(q.Question) > 0 {
		binary.BigEndian.PutUint16(b[4:6], 1)
	}
	binary.BigEndian.PutUint16(b[6:8], answers)
	return append(b, q.Question...)
}

// FrameDNSTCP prefixes a DNS message with its 2-byte length, for DNS over
// TCP (RFC 1035 §4.2.2). Messages over 65535 bytes do not occur here: the
// forged ones are small.
func FrameDNSTCP(msg []byte) []byte {
	b := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(msg)), uint16(len(msg)))
	return append(b, msg...)
}

// ForgeDNSAnswer returns a DNS response to q (same ID, RD copied, RA set,
// the question echoed byte for byte) with one answer for the queried
// name: an A record if ip is IPv4, an AAAA record if IPv6, whatever the
// query's type, as the GFW's injector answers. ttl zero means
// DefaultDNSTTL.
func ForgeDNSAnswer(q DNSQuery, ip netip.Addr, ttl uint32) ([]byte, error) {
	ip = ip.Unmap()
	if !ip.IsValid() {
		return nil, fmt.Errorf("censor: dns: invalid answer address: %w", ErrConfig)
	}
	if len(q.Question) < 5 {
		return nil, fmt.Errorf("censor: dns: query without a question: %w", ErrConfig)
	}
	if ttl == 0 {
		ttl = DefaultDNSTTL
	}
	b := dnsResponse(q, 0, 1)
	b = append(b, 0xc0, dnsHeaderLen) // pointer to the question's name
	typ := DNSTypeA
	if ip.Is6() {
		typ = DNSTypeAAAA
	}
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint16(b, DNSClassINET)
	b = binary.BigEndian.AppendUint32(b, ttl)
	raw := ip.AsSlice()
	b = binary.BigEndian.AppendUint16(b, uint16(len(raw)))
	return append(b, raw...), nil
}

// ForgeNXDOMAIN returns a DNS response to q with rcode NXDOMAIN and no
// answer, its ID and question echoed.
func ForgeNXDOMAIN(q DNSQuery) []byte {
	return dnsResponse(q, DNSRcodeNXDomain, 0)
}
