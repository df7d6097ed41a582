package censor

import "encoding/binary"

// Protocol is what a protocol allowlist recognises in a flow's first
// client data.
type Protocol uint8

// Protocols ClassifyTCP and ClassifyUDP recognise.
const (
	ProtoUnknown Protocol = iota
	ProtoHTTP
	ProtoTLS
	ProtoDNS
)

// String returns "unknown", "http", "tls" or "dns".
func (p Protocol) String() string {
	switch p {
	case ProtoHTTP:
		return "http"
	case ProtoTLS:
		return "tls"
	case ProtoDNS:
		return "dns"
	}
	return "unknown"
}

// httpMethods are the request methods Iran's protocol filter accepts
// (Bock et al. 2020, §4.3).
var httpMethods = [...]string{"GET ", "POST ", "HEAD ", "CONNECT ", "OPTIONS ", "DELETE ", "PUT "}

// minHTTPLen is the least combined payload the filter accepts as HTTP.
const minHTTPLen = 8

// ClassifyTCP classifies the payloads of a TCP flow's first client data
// packets, in order, the way Iran's protocol filter does (Bock et al.,
// "Detecting and Evading Censorship-in-Depth: A Case Study of Iran's
// Protocol Filter", FOCI 2020): it looks at the first two data packets
// together, without TCP reassembly, and recognises
//
//   - HTTP: at least 8 bytes starting with a method and a space (GET,
//     POST, HEAD, CONNECT, OPTIONS, DELETE, PUT);
//   - TLS: a handshake record header (0x16 0x03 0x00-0x04) whose first
//     handshake message is a ClientHello (type 1) once that byte is
//     present;
//   - DNS over TCP: a 2-byte length of at least 12 and a query header
//     (QR clear, opcode QUERY, at least one question).
//
// Callers pass at most the first two packets, as the filter saw. The
// paper's exact byte patterns for TLS and DNS (its §4.3) are approximated
// by these structural checks. It does not allocate.
func ClassifyTCP(packets ...[]byte) Protocol {
	var buf [16]byte // the checks read at most the first 16 bytes
	head := buf[:0]
	total := 0
	for _, p := range packets {
		total += len(p)
		if room := len(buf) - len(head); room > 0 {
			head = append(head, p[:min(room, len(p))]...)
		}
	}
	switch {
	case total >= minHTTPLen && isHTTPRequestStart(head):
		return ProtoHTTP
	case isTLSClientHelloStart(head):
		return ProtoTLS
	case isDNSOverTCPStart(head):
		return ProtoDNS
	}
	return ProtoUnknown
}

func isHTTPRequestStart(b []byte) bool {
	for _, m := range httpMethods {
		if len(b) >= len(m) && string(b[:len(m)]) == m {
			return true
		}
	}
	return false
}

func isTLSClientHelloStart(b []byte) bool {
	if len(b) < 3 || b[0] != recordHandshake || b[1] != 3 || b[2] > 4 {
		return false
	}
	return len(b) < 6 || b[5] == handshakeClientHello
}

func isDNSOverTCPStart(b []byte) bool {
	if len(b) < 2+dnsHeaderLen {
		return false
	}
	return int(binary.BigEndian.Uint16(b)) >= dnsHeaderLen && isDNSQueryHeader(b[2:])
}

// isDNSQueryHeader checks a DNS header: QR clear, opcode QUERY, at least
// one question.
func isDNSQueryHeader(h []byte) bool {
	flags := binary.BigEndian.Uint16(h[2:4])
	return flags&0x8000 == 0 && flags>>11&0x0f == 0 && binary.BigEndian.Uint16(h[4:6]) >= 1
}

// ClassifyUDP classifies a UDP flow's first client datagram: ProtoDNS if
// it parses as a DNS query (ParseDNSQuery), else ProtoUnknown.
func ClassifyUDP(payload []byte) Protocol {
	if _, err := ParseDNSQuery(payload); err == nil {
		return ProtoDNS
	}
	return ProtoUnknown
}
