package ctl

import (
	"fmt"
)

// Datagram sockets (plugin protocol version 2). A flow whose plugin
// described datagram capability has a second socket pair beside its
// stream: AF_UNIX SOCK_SEQPACKET, whose plugin end travels as the second
// descriptor of the FLOW message. Each SOCK_SEQPACKET record carries
// exactly one datagram, in either direction:
//
//	 0      1                                      n
//	+------+------+------+ ... +------+------+------+
//	| 0x00 |  payload: 0 to MaxDatagram bytes       |
//	+------+------+------+ ... +------+------+------+
//
// Byte 0 is the record's kind, DatagramKind (the only one); the rest is
// the datagram, which may be empty. The leading byte keeps an empty
// datagram apart from the end of the socket, which reads as zero bytes.
// A record of another kind, or longer than 1+MaxDatagram bytes, is a
// protocol violation.

// DatagramKind is the first byte of every datagram record.
const DatagramKind = 0x00

// MaxDatagram is the largest datagram that crosses the process boundary:
// the largest UDP payload. A plugin's flows announce their own limit
// (max_datagram_size), at most this.
const MaxDatagram = 65535

// MaxRecord is the length of the longest datagram record.
const MaxRecord = 1 + MaxDatagram

// AppendDatagram appends the record that carries datagram p to b. p must
// not be longer than MaxDatagram.
func AppendDatagram(b, p []byte) []byte {
	b = append(b, DatagramKind)
	return append(b, p...)
}

// ParseDatagram returns the datagram a record carries, which aliases rec.
func ParseDatagram(rec []byte) ([]byte, error) {
	switch {
	case len(rec) == 0:
		return nil, fmt.Errorf("%w: empty datagram record", ErrMalformed)
	case len(rec) > MaxRecord:
		return nil, fmt.Errorf("%w: datagram record of %d bytes (at most %d)", ErrMalformed, len(rec), MaxRecord)
	case rec[0] != DatagramKind:
		return nil, fmt.Errorf("%w: datagram record of kind %#02x", ErrMalformed, rec[0])
	}
	return rec[1:], nil
}
