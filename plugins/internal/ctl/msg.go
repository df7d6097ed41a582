// Package ctl is the plugin protocol's control socket: the AF_UNIX
// SOCK_SEQPACKET socket the host creates for each plugin process and
// passes to it as an inherited file descriptor. Over it the host hands the
// plugin one end of a fresh socket pair for every connection ("flow"),
// and both sides mark the clean end of a flow's stream, so that the other
// can tell a clean end of stream from a side that died.
//
// # Messages
//
// Every message is one SOCK_SEQPACKET record of exactly 12 bytes:
//
//	 0      1      2      3      4                              11
//	+------+------+------+------+------+------+ ... +------+------+
//	| 0xCC | 0x01 | type | 0x00 |   flow id, uint64 big-endian   |
//	+------+------+------+------+------+------+ ... +------+------+
//
// Byte 0 is a magic value, byte 1 the message format version, byte 3
// reserved (zero). The flow id is nonzero. Types:
//
//	1 FLOW   host to plugin; carries file descriptors in one SCM_RIGHTS
//	         control message: first the plugin's end of a fresh AF_UNIX
//	         SOCK_STREAM socket pair for flow id; then, if and only if the
//	         plugin described datagram capability (protocol version 2),
//	         the plugin's end of a fresh AF_UNIX SOCK_SEQPACKET socket pair
//	         for the flow's datagrams (see dgram.go); then, if the host
//	         gives the flow rings (protocol version 3), the rings' memfd
//	         and the plugin's end of the room bell (see package ring).
//	2 EOF    either way; the sender has written its last byte of flow id
//	         and shuts its writing side down right after. A flow socket
//	         that reaches end of stream without a preceding EOF ended
//	         abnormally (its other side died or failed).
//	3 CLOSE  host to plugin; the host closed flow id after a half close,
//	         or gave up on a flow whose Dial or Accept call failed.
//	4 HANDOVER plugin to host; carries exactly one file descriptor: the
//	         transport connection's own connected TCP socket, which replaces
//	         flow id's socket pair (the plugin closes its end of the pair
//	         and keeps no copy of the socket). Sent before the Dial or
//	         Accept answer that says handed_over.
//	5 DGRAM_EOF plugin to host (protocol version 2); the plugin has
//	         written its last datagram of flow id and closes the flow's
//	         datagram socket right after. A datagram socket that reaches
//	         its end without a preceding DGRAM_EOF ended abnormally (the
//	         plugin died).
//
// Anything else (another length, magic, version or type, a nonzero
// reserved byte, a zero id, descriptors on anything but FLOW and
// HANDOVER) is a protocol violation. The message format is the same in
// plugin protocol versions 1 to 3; version 2 adds DGRAM_EOF and the
// datagram socket in FLOW, version 3 the rings in FLOW.
package ctl

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Size is the length of every message.
const Size = 12

// Magic and Version are the first two bytes of every message.
const (
	Magic   = 0xCC
	Version = 0x01
)

// Type is a message's type.
type Type uint8

// The message types; see the package doc.
const (
	TypeFlow     Type = 1
	TypeEOF      Type = 2
	TypeClose    Type = 3
	TypeHandOver Type = 4
	TypeDgramEOF Type = 5
)

// String names the type.
func (t Type) String() string {
	switch t {
	case TypeFlow:
		return "FLOW"
	case TypeEOF:
		return "EOF"
	case TypeClose:
		return "CLOSE"
	case TypeHandOver:
		return "HANDOVER"
	case TypeDgramEOF:
		return "DGRAM_EOF"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Msg is one control message.
type Msg struct {
	Type Type
	Flow uint64
}

// ErrMalformed is returned for bytes that are not a valid message.
var ErrMalformed = errors.New("ctl: malformed message")

// Append appends m's encoding to b.
func (m Msg) Append(b []byte) []byte {
	b = append(b, Magic, Version, byte(m.Type), 0)
	return binary.BigEndian.AppendUint64(b, m.Flow)
}

// Decode parses one message. It checks the format, not whether the type
// may travel in the direction it came from.
func Decode(b []byte) (Msg, error) {
	if len(b) != Size {
		return Msg{}, fmt.Errorf("%w: %d bytes, want %d", ErrMalformed, len(b), Size)
	}
	if b[0] != Magic || b[1] != Version || b[3] != 0 {
		return Msg{}, fmt.Errorf("%w: header % x", ErrMalformed, b[:4])
	}
	m := Msg{Type: Type(b[2]), Flow: binary.BigEndian.Uint64(b[4:])}
	if m.Type < TypeFlow || m.Type > TypeDgramEOF {
		return Msg{}, fmt.Errorf("%w: unknown type %d", ErrMalformed, b[2])
	}
	if m.Flow == 0 {
		return Msg{}, fmt.Errorf("%w: flow id 0", ErrMalformed)
	}
	return m, nil
}
