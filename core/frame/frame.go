// Package frame is the CCP-1 frame codec: the small typed units that
// CommuCat's sessions carry (messages, acks, pings, path control, call
// signalling, media, stream data, probe reports, FEC parity).
//
// Wire format of one frame (all integers are unsigned; "varint" is the
// unsigned LEB128 encoding of encoding/binary.AppendUvarint, at most 10
// bytes, and must be minimal: a decoder rejects a varint with a redundant
// trailing zero group, so every frame has exactly one encoding):
//
//	+---------+--------+--------+----------------+--------------+-----------------+-----------+
//	| version | type   | flags  | stream (varint)| seq (varint) | length (varint) | payload   |
//	| 1 byte  | 1 byte | 1 byte | 1..10 bytes    | 1..10 bytes  | 1..10 bytes     | length B  |
//	+---------+--------+--------+----------------+--------------+-----------------+-----------+
//
// version is 1 for CCP-1. Every type has its own maximum payload length
// (MaxPayload), checked before anything is allocated; a decoder rejects an
// unknown version or type with a clear error and never panics. Decode
// rejects a bad version or type as soon as that byte has arrived, so a
// stream of garbage is refused after one or two bytes.
//
// flags holds FlagUrgent (bit 0), FlagFin (bit 1) and FlagAckRequested
// (bit 2); bits 3 to 7 are reserved: senders set them to zero, receivers
// keep them in Frame.Flags and otherwise ignore them.
//
// The control payloads (Ack, Ping and Pong, Error, Close) have their own
// codecs in this package: AckPayload, SackPayload (Ack of kind
// AckRecords), PingPayload, ErrorPayload and ClosePayload, each documented
// with its byte layout. The other payloads
// belong to the layers that consume them. docs/PROTOCOL.md mirrors
// this description.
//
// Changelog: CCP-1 (version 1) is the first version.
//
// Frames are values; the package keeps no state and is safe for concurrent
// use.
package frame

import "fmt"

// Version is the CCP-1 protocol version carried in every frame.
const Version = 1

// HeaderMax is the largest possible header: 3 fixed bytes and 3 varints.
const HeaderMax = 3 + 3*10

// Type identifies what a frame's payload means.
type Type uint8

// Frame types of CCP-1. Payload formats are documented on each constant and
// in docs/PROTOCOL.md.
const (
	// Message carries one application message (messaging backend envelope).
	Message Type = 0x01
	// Ack acknowledges frames or messages; payload: see AckPayload.
	Ack Type = 0x02
	// Ping asks for a Pong; payload: see PingPayload.
	Ping Type = 0x03
	// Pong answers a Ping, echoing its payload.
	Pong Type = 0x04
	// PathJoin joins a new path to an existing session (proof of keys).
	PathJoin Type = 0x05
	// Close ends a session cleanly; payload: see ClosePayload.
	Close Type = 0x06
	// Error reports a problem; payload: see ErrorPayload.
	Error Type = 0x07
	// CallSignal carries call set-up and control (media backend).
	CallSignal Type = 0x08
	// Media carries one encrypted media packet.
	Media Type = 0x09
	// StreamOpen opens a byte stream identified by the frame's stream id.
	StreamOpen Type = 0x0a
	// StreamData carries bytes of an open stream.
	StreamData Type = 0x0b
	// StreamClose closes a stream.
	StreamClose Type = 0x0c
	// ProbeReport carries transport verdicts from a client and the tactics
	// a gateway answers with (backends/tactics; docs/PROTOCOL.md, Part 7).
	ProbeReport Type = 0x0d
	// FECParity carries one Reed-Solomon parity shard.
	FECParity Type = 0x0e
	// Register asks the gateway to register a device (registration code).
	Register Type = 0x0f
	// Certificate carries a device certificate issued by the gateway.
	Certificate Type = 0x10
	// Padding carries nothing of meaning; receivers discard it.
	Padding Type = 0x11
)

// maxPayload holds the per-type payload limits, indexed by Type. A zero entry
// means the type is unknown.
var maxPayload = [...]int{
	Message:     64 << 10,
	Ack:         4 << 10,
	Ping:        64,
	Pong:        64,
	PathJoin:    256,
	Close:       1 << 10,
	Error:       2 << 10,
	CallSignal:  8 << 10,
	Media:       64 << 10,
	StreamOpen:  1 << 10,
	StreamData:  64 << 10,
	StreamClose: 256,
	ProbeReport: 64 << 10,
	FECParity:   66 << 10,
	Register:    4 << 10,
	Certificate: 4 << 10,
	Padding:     16 << 10,
}

var typeNames = [...]string{
	Message:     "message",
	Ack:         "ack",
	Ping:        "ping",
	Pong:        "pong",
	PathJoin:    "path-join",
	Close:       "close",
	Error:       "error",
	CallSignal:  "call-signal",
	Media:       "media",
	StreamOpen:  "stream-open",
	StreamData:  "stream-data",
	StreamClose: "stream-close",
	ProbeReport: "probe-report",
	FECParity:   "fec-parity",
	Register:    "register",
	Certificate: "certificate",
	Padding:     "padding",
}

// Known reports whether t is a CCP-1 frame type.
func (t Type) Known() bool { return int(t) < len(maxPayload) && maxPayload[t] > 0 }

// MaxPayload is the largest payload a frame of type t may carry, or 0 if t
// is unknown.
func (t Type) MaxPayload() int {
	if !t.Known() {
		return 0
	}
	return maxPayload[t]
}

// String names the type as docs/PROTOCOL.md does.
func (t Type) String() string {
	if !t.Known() {
		return fmt.Sprintf("type(0x%02x)", uint8(t))
	}
	return typeNames[t]
}

// Flags are per-frame bits.
type Flags uint8

const (
	// FlagUrgent asks the router to send the frame on the redundant scheduler.
	FlagUrgent Flags = 1 << 0
	// FlagFin marks the last frame of a stream or message sequence.
	FlagFin Flags = 1 << 1
	// FlagAckRequested asks the receiver to acknowledge this frame.
	FlagAckRequested Flags = 1 << 2
)

// Frame is one CCP-1 frame. Payload aliases the decoded buffer; copy it to
// keep it beyond the buffer's life.
type Frame struct {
	Type    Type
	Flags   Flags
	Stream  uint64
	Seq     uint64
	Payload []byte
}
