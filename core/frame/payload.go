package frame

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"
)

// ErrPayload is what every *PayloadError matches with errors.Is: a control
// payload is malformed (truncated, trailing bytes, a value out of range or
// text that is not UTF-8).
var ErrPayload = errors.New("frame: bad payload")

// PayloadError reports a malformed control payload of frame type Type.
// It matches ErrPayload.
type PayloadError struct {
	Type   Type
	Reason string
}

// Error reads "frame: bad <type> payload: <reason>".
func (e *PayloadError) Error() string {
	return "frame: bad " + e.Type.String() + " payload: " + e.Reason
}

// Is reports whether target is ErrPayload.
func (e *PayloadError) Is(target error) bool { return target == ErrPayload }

// varintReason turns an error from uvarint into a PayloadError reason.
func varintReason(err error) string {
	if errors.Is(err, ErrTruncated) {
		return "truncated"
	}
	return strings.TrimPrefix(err.Error(), "frame: ")
}

func payloadErr(t Type, format string, args ...any) error {
	return &PayloadError{Type: t, Reason: fmt.Sprintf(format, args...)}
}

// AckKind says what an Ack acknowledges.
type AckKind uint8

// Ack kinds of CCP-1.
const (
	// AckStored: the gateway stored a submitted message.
	AckStored AckKind = 1
	// AckDelivered: the recipient confirms it received a message.
	AckDelivered AckKind = 2
	// AckRecords: the router acknowledges reliable frames by sequence
	// number. Its payload is a SackPayload (ParseSack), not the id list
	// of the other kinds.
	AckRecords AckKind = 3
	// AckDatagrams: the router reports the datagrams it received on a
	// path. Its payload is a DatagramAckPayload (ParseDatagramAck).
	AckDatagrams AckKind = 4
)

// Known reports whether k is a CCP-1 ack kind.
func (k AckKind) Known() bool { return k >= AckStored && k <= AckDatagrams }

// String names the kind as docs/PROTOCOL.md does.
func (k AckKind) String() string {
	switch k {
	case AckStored:
		return "stored"
	case AckDelivered:
		return "delivered"
	case AckRecords:
		return "records"
	case AckDatagrams:
		return "datagrams"
	}
	return fmt.Sprintf("ack-kind(%d)", uint8(k))
}

// MaxAckIDs is the most ids one Ack payload carries.
const MaxAckIDs = 255

// AckPayload is the payload of an Ack frame: one kind and up to MaxAckIDs
// 16-byte ids (message ids for AckStored and AckDelivered).
//
//	+--------+---------------+-------------------------+
//	| kind   | count (varint)| ids                     |
//	| 1 byte | 1..2 bytes    | count × 16 bytes        |
//	+--------+---------------+-------------------------+
//
// kind is 1 to 4 (kinds 3 and 4 have payloads of their own: SackPayload, DatagramAckPayload); count is 0 to 255; nothing follows the last id.
type AckPayload struct {
	Kind AckKind
	IDs  [][16]byte
}

// Append encodes a and appends it to dst. It does not check limits: see
// Validate.
func (a AckPayload) Append(dst []byte) []byte {
	dst = append(dst, byte(a.Kind))
	dst = binary.AppendUvarint(dst, uint64(len(a.IDs)))
	for i := range a.IDs {
		dst = append(dst, a.IDs[i][:]...)
	}
	return dst
}

// Validate reports whether a can be encoded and parsed back: a known kind
// and at most MaxAckIDs ids.
func (a AckPayload) Validate() error {
	if !a.Kind.Known() {
		return payloadErr(Ack, "unknown kind %d", uint8(a.Kind))
	}
	if len(a.IDs) > MaxAckIDs {
		return payloadErr(Ack, "%d ids (max %d)", len(a.IDs), MaxAckIDs)
	}
	return nil
}

// ParseAck decodes an Ack payload. It rejects an unknown kind, a count over
// MaxAckIDs (before allocating), missing ids and trailing bytes.
func ParseAck(b []byte) (AckPayload, error) {
	var a AckPayload
	if len(b) < 1 {
		return a, payloadErr(Ack, "empty")
	}
	a.Kind = AckKind(b[0])
	if !a.Kind.Known() {
		return AckPayload{}, payloadErr(Ack, "unknown kind %d", b[0])
	}
	count, n, err := uvarint(b, 1)
	if err != nil {
		return AckPayload{}, payloadErr(Ack, "count: %s", varintReason(err))
	}
	if count > MaxAckIDs {
		return AckPayload{}, payloadErr(Ack, "%d ids (max %d)", count, MaxAckIDs)
	}
	if rest, want := len(b)-n, int(count)*16; rest != want {
		return AckPayload{}, payloadErr(Ack, "%d bytes of ids for %d ids (want %d)", rest, count, want)
	}
	if count > 0 {
		a.IDs = make([][16]byte, count)
		for i := range a.IDs {
			copy(a.IDs[i][:], b[n+16*i:])
		}
	}
	return a, nil
}

// PingLen is the length of a Ping or Pong payload.
const PingLen = 16

// PingPayload is the payload of a Ping frame; the Pong that answers it
// carries the same bytes, so the sender can match it and measure the
// round-trip time.
//
//	+--------------------+---------------------------------+
//	| id                 | sent                            |
//	| uint64, big endian | int64, big endian: nanoseconds  |
//	|                    | since the Unix epoch (sender's) |
//	| 8 bytes            | 8 bytes                         |
//	+--------------------+---------------------------------+
//
// The payload is exactly 16 bytes.
type PingPayload struct {
	ID           uint64
	SentUnixNano int64
}

// Append encodes p and appends it to dst.
func (p PingPayload) Append(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, p.ID)
	return binary.BigEndian.AppendUint64(dst, uint64(p.SentUnixNano))
}

// ParsePing decodes a Ping or Pong payload, which must be exactly PingLen
// bytes.
func ParsePing(b []byte) (PingPayload, error) {
	if len(b) != PingLen {
		return PingPayload{}, payloadErr(Ping, "%d bytes (want %d)", len(b), PingLen)
	}
	return PingPayload{
		ID:           binary.BigEndian.Uint64(b),
		SentUnixNano: int64(binary.BigEndian.Uint64(b[8:])),
	}, nil
}

// Problem is the code an Error frame carries. Codes are never reused; a
// receiver treats an unknown non-zero code as a generic failure.
type Problem uint16

// Problem codes of CCP-1. Zero is not a problem and never sent.
const (
	// ProblemBadRequest: the frame or its payload was malformed or out of place.
	ProblemBadRequest Problem = 1
	// ProblemUnauthorized: the sender lacks the right to do this.
	ProblemUnauthorized Problem = 2
	// ProblemUnknownRecipient: no such user or device.
	ProblemUnknownRecipient Problem = 3
	// ProblemQuotaExceeded: a storage or message quota is used up.
	ProblemQuotaExceeded Problem = 4
	// ProblemRegistrationRefused: a Register frame was refused.
	ProblemRegistrationRefused Problem = 5
	// ProblemRateLimited: too many requests; retry later.
	ProblemRateLimited Problem = 6
	// ProblemTooLarge: a message or frame was over a limit.
	ProblemTooLarge Problem = 7
	// ProblemInternal: the gateway failed; retrying may help.
	ProblemInternal Problem = 8
	// ProblemUnavailable: a backend is down or the gateway is draining.
	ProblemUnavailable Problem = 9
)

var problemNames = [...]string{
	ProblemBadRequest:          "bad-request",
	ProblemUnauthorized:        "unauthorized",
	ProblemUnknownRecipient:    "unknown-recipient",
	ProblemQuotaExceeded:       "quota-exceeded",
	ProblemRegistrationRefused: "registration-refused",
	ProblemRateLimited:         "rate-limited",
	ProblemTooLarge:            "too-large",
	ProblemInternal:            "internal",
	ProblemUnavailable:         "unavailable",
}

// String names the problem as docs/PROTOCOL.md does, or
// "problem(N)" for a code this version does not know.
func (p Problem) String() string {
	if int(p) < len(problemNames) && problemNames[p] != "" {
		return problemNames[p]
	}
	return fmt.Sprintf("problem(%d)", uint16(p))
}

// MaxErrorRef is the longest Ref an ErrorPayload carries.
const MaxErrorRef = 64

// ErrorPayload is the payload of an Error frame: a problem code, an
// optional reference to what failed (such as a 16-byte message id) and a
// human-readable detail.
//
//	+---------------+-------------------+-------------+------------------+
//	| code (varint) | ref len (varint)  | ref         | detail (UTF-8)   |
//	| 1..3 bytes    | 1 byte            | 0..64 bytes | rest of payload  |
//	+---------------+-------------------+-------------+------------------+
//
// code is 1 to 65535; the whole payload fits Error.MaxPayload().
type ErrorPayload struct {
	Code   Problem
	Ref    []byte
	Detail string
}

// Append encodes e and appends it to dst. It does not check limits: see
// Validate.
func (e ErrorPayload) Append(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(e.Code))
	dst = binary.AppendUvarint(dst, uint64(len(e.Ref)))
	dst = append(dst, e.Ref...)
	return append(dst, e.Detail...)
}

// Validate reports whether e can be encoded and parsed back: a non-zero
// code, a Ref of at most MaxErrorRef bytes, a UTF-8 Detail and an encoding
// that fits an Error frame.
func (e ErrorPayload) Validate() error {
	if e.Code == 0 {
		return payloadErr(Error, "code 0")
	}
	if len(e.Ref) > MaxErrorRef {
		return payloadErr(Error, "ref of %d bytes (max %d)", len(e.Ref), MaxErrorRef)
	}
	if !utf8.ValidString(e.Detail) {
		return payloadErr(Error, "detail is not UTF-8")
	}
	if n := uvarintLen(uint64(e.Code)) + uvarintLen(uint64(len(e.Ref))) + len(e.Ref) + len(e.Detail); n > Error.MaxPayload() {
		return payloadErr(Error, "%d bytes (max %d)", n, Error.MaxPayload())
	}
	return nil
}

// ParseError decodes an Error payload. Ref is copied out of b. It rejects a
// zero or out-of-range code, a Ref over MaxErrorRef, a Detail that is not
// UTF-8 and a payload over Error.MaxPayload().
func ParseError(b []byte) (ErrorPayload, error) {
	if len(b) > Error.MaxPayload() {
		return ErrorPayload{}, payloadErr(Error, "%d bytes (max %d)", len(b), Error.MaxPayload())
	}
	code, n, err := uvarint(b, 0)
	if err != nil {
		return ErrorPayload{}, payloadErr(Error, "code: %s", varintReason(err))
	}
	if code == 0 || code > math.MaxUint16 {
		return ErrorPayload{}, payloadErr(Error, "code %d out of range", code)
	}
	refLen, n, err := uvarint(b, n)
	if err != nil {
		return ErrorPayload{}, payloadErr(Error, "ref length: %s", varintReason(err))
	}
	if refLen > MaxErrorRef {
		return ErrorPayload{}, payloadErr(Error, "ref of %d bytes (max %d)", refLen, MaxErrorRef)
	}
	if uint64(len(b)-n) < refLen {
		return ErrorPayload{}, payloadErr(Error, "ref truncated (%d of %d bytes)", len(b)-n, refLen)
	}
	e := ErrorPayload{Code: Problem(code)}
	if refLen > 0 {
		e.Ref = append([]byte(nil), b[n:n+int(refLen)]...)
	}
	detail := b[n+int(refLen):]
	if !utf8.Valid(detail) {
		return ErrorPayload{}, payloadErr(Error, "detail is not UTF-8")
	}
	e.Detail = string(detail)
	return e, nil
}

// MaxCloseReason is the longest Reason a ClosePayload carries, in bytes.
const MaxCloseReason = 512

// ClosePayload is the payload of a Close frame: a code the session layer
// defines and a human-readable reason.
//
//	+---------------+----------------------------------+
//	| code (varint) | reason (UTF-8)                   |
//	| 1..3 bytes    | rest of payload, 0..512 bytes    |
//	+---------------+----------------------------------+
//
// code is 0 to 65535.
type ClosePayload struct {
	Code   uint16
	Reason string
}

// Append encodes c and appends it to dst. It does not check limits: see
// Validate.
func (c ClosePayload) Append(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(c.Code))
	return append(dst, c.Reason...)
}

// Validate reports whether c can be encoded and parsed back: a UTF-8
// Reason of at most MaxCloseReason bytes.
func (c ClosePayload) Validate() error {
	if len(c.Reason) > MaxCloseReason {
		return payloadErr(Close, "reason of %d bytes (max %d)", len(c.Reason), MaxCloseReason)
	}
	if !utf8.ValidString(c.Reason) {
		return payloadErr(Close, "reason is not UTF-8")
	}
	return nil
}

// ParseClose decodes a Close payload. It rejects an out-of-range code and a
// reason that is too long or not UTF-8.
func ParseClose(b []byte) (ClosePayload, error) {
	code, n, err := uvarint(b, 0)
	if err != nil {
		return ClosePayload{}, payloadErr(Close, "code: %s", varintReason(err))
	}
	if code > math.MaxUint16 {
		return ClosePayload{}, payloadErr(Close, "code %d out of range", code)
	}
	reason := b[n:]
	if len(reason) > MaxCloseReason {
		return ClosePayload{}, payloadErr(Close, "reason of %d bytes (max %d)", len(reason), MaxCloseReason)
	}
	if !utf8.Valid(reason) {
		return ClosePayload{}, payloadErr(Close, "reason is not UTF-8")
	}
	return ClosePayload{Code: uint16(code), Reason: string(reason)}, nil
}
