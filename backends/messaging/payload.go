package messaging

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"time"
)

// MaxBody is the largest message body, in bytes.
const MaxBody = 60 << 10

// MaxNameLen is the longest user name, in bytes.
const MaxNameLen = 64

// MaxCodeLen is the longest registration code, in bytes.
const MaxCodeLen = 128

// envelopeFixed is the length of an envelope's fixed part: id, sent time
// and the peer length byte.
const envelopeFixed = 16 + 8 + 1

// Envelope is one message as it travels in a frame.Message payload: from a
// client to the gateway (Peer is the recipient) and from the gateway to the
// recipient (Peer is the sender).
//
//	+----------+---------------------+----------+----------+-------------------+-------------+
//	| id       | sent                | peer len | peer     | body len (varint) | body        |
//	| 16 bytes | int64 ms since the  | 1 byte   | 1..64 B  | 1..3 bytes        | 0..61440 B  |
//	|          | Unix epoch, big end.|          |          |                   |             |
//	+----------+---------------------+----------+----------+-------------------+-------------+
//
// id is chosen by the sender at random and names the message for
// acknowledgements and duplicate suppression; peer is a user name (see
// ValidName); the body length is a minimal LEB128 varint and nothing
// follows the body.
type Envelope struct {
	ID   [16]byte
	Peer string
	Sent time.Time
	Body []byte
}

// Append encodes e and appends it to dst. It does not check limits: see
// Validate.
func (e Envelope) Append(dst []byte) []byte {
	dst = append(dst, e.ID[:]...)
	dst = binary.BigEndian.AppendUint64(dst, uint64(e.Sent.UnixMilli()))
	dst = append(dst, byte(len(e.Peer)))
	dst = append(dst, e.Peer...)
	dst = binary.AppendUvarint(dst, uint64(len(e.Body)))
	return append(dst, e.Body...)
}

// Validate reports whether e can be encoded and parsed back: a valid peer
// name and a body of at most MaxBody bytes (ErrTooLarge).
func (e Envelope) Validate() error {
	if err := ValidName(e.Peer); err != nil {
		return err
	}
	if len(e.Body) > MaxBody {
		return fmt.Errorf("%w: body of %d bytes (max %d)", ErrTooLarge, len(e.Body), MaxBody)
	}
	return nil
}

// ParseEnvelope decodes a Message payload. Body aliases b. It rejects a
// truncated envelope, an invalid peer name, a body over MaxBody (ErrTooLarge,
// checked before anything is copied), a non-minimal length and trailing
// bytes; every error matches ErrPayload.
func ParseEnvelope(b []byte) (Envelope, error) {
	var e Envelope
	if len(b) < envelopeFixed {
		return e, payloadErr("envelope: %d bytes (min %d)", len(b), envelopeFixed)
	}
	copy(e.ID[:], b)
	e.Sent = time.UnixMilli(int64(binary.BigEndian.Uint64(b[16:]))).UTC()
	n := int(b[24])
	off := envelopeFixed
	if len(b)-off < n {
		return Envelope{}, payloadErr("envelope: peer truncated")
	}
	e.Peer = string(b[off : off+n])
	if why := nameProblem(e.Peer); why != "" {
		return Envelope{}, payloadErr("envelope: peer %s", why)
	}
	off += n
	size, k, err := uvarint(b[off:])
	if err != nil {
		return Envelope{}, payloadErr("envelope: body length: %v", err)
	}
	if size > MaxBody {
		return Envelope{}, &PayloadError{Reason: fmt.Sprintf("envelope: body of %d bytes (max %d)", size, MaxBody), tooLarge: true}
	}
	off += k
	if rest := len(b) - off; uint64(rest) != size {
		return Envelope{}, payloadErr("envelope: %d bytes of body for length %d", rest, size)
	}
	e.Body = b[off:len(b):len(b)]
	return e, nil
}

// RegisterRequest is the payload of a frame.Register: the registration code
// from an invite and the user name wanted.
//
//	+----------+-----------+----------+----------+
//	| code len | code      | name len | name     |
//	| 1 byte   | 1..128 B  | 1 byte   | 1..64 B  |
//	+----------+-----------+----------+----------+
//
// code is URL-safe (A-Z a-z 0-9 - _); name follows ValidName; nothing
// follows the name. The code is a secret: RegisterRequest's String and
// LogValue never show it.
type RegisterRequest struct {
	Code string
	Name string
}

// String describes r without its code.
func (r RegisterRequest) String() string { return "register " + r.Name + " code=[redacted]" }

// LogValue implements slog.LogValuer; it never reveals the code.
func (r RegisterRequest) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", r.Name), slog.String("code", "[redacted]"))
}

// Append encodes r and appends it to dst. It does not check limits: see
// Validate.
func (r RegisterRequest) Append(dst []byte) []byte {
	dst = append(dst, byte(len(r.Code)))
	dst = append(dst, r.Code...)
	dst = append(dst, byte(len(r.Name)))
	return append(dst, r.Name...)
}

// Validate reports whether r can be encoded and parsed back: a code of
// 1..MaxCodeLen URL-safe characters (else a *PayloadError) and a valid name
// (else ErrBadName).
func (r RegisterRequest) Validate() error {
	if err := validCode(r.Code); err != nil {
		return err
	}
	return ValidName(r.Name)
}

// ParseRegisterRequest decodes a Register payload. It rejects a truncated
// payload, a bad code or name and trailing bytes; every error matches
// ErrPayload and none contains the code.
func ParseRegisterRequest(b []byte) (RegisterRequest, error) {
	var r RegisterRequest
	off := 0
	field := func(what string) (string, error) {
		if off >= len(b) {
			return "", payloadErr("register: %s length missing", what)
		}
		n := int(b[off])
		off++
		if len(b)-off < n {
			return "", payloadErr("register: %s truncated", what)
		}
		s := string(b[off : off+n])
		off += n
		return s, nil
	}
	var err error
	if r.Code, err = field("code"); err != nil {
		return RegisterRequest{}, err
	}
	if err := validCode(r.Code); err != nil {
		return RegisterRequest{}, err
	}
	if r.Name, err = field("name"); err != nil {
		return RegisterRequest{}, err
	}
	if why := nameProblem(r.Name); why != "" {
		return RegisterRequest{}, payloadErr("register: %s", why)
	}
	if off != len(b) {
		return RegisterRequest{}, payloadErr("register: %d trailing bytes", len(b)-off)
	}
	return r, nil
}

// ValidName reports whether name is a valid user name: 1..MaxNameLen bytes
// of lower-case ASCII letters, digits, '.', '_' and '-', starting with a
// letter or digit. Names are compared exactly. An invalid name is
// ErrBadName.
func ValidName(name string) error {
	if why := nameProblem(name); why != "" {
		return fmt.Errorf("%w: %s", ErrBadName, why)
	}
	return nil
}

func nameProblem(name string) string {
	if len(name) == 0 || len(name) > MaxNameLen {
		return fmt.Sprintf("name of %d bytes (want 1..%d)", len(name), MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return fmt.Sprintf("name byte %d is %q (want a-z 0-9 . _ -, starting with a-z 0-9)", i, c)
		}
	}
	return ""
}

// validCode checks a code's shape without ever putting the code in the
// error, which is a *PayloadError.
func validCode(code string) error {
	if len(code) == 0 || len(code) > MaxCodeLen {
		return payloadErr("registration code of %d bytes (want 1..%d)", len(code), MaxCodeLen)
	}
	for i := 0; i < len(code); i++ {
		c := code[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return payloadErr("registration code has a character outside A-Z a-z 0-9 - _")
		}
	}
	return nil
}

// uvarint decodes a minimal LEB128 varint.
func uvarint(b []byte) (uint64, int, error) {
	v, k := binary.Uvarint(b)
	switch {
	case k == 0:
		return 0, 0, fmt.Errorf("truncated")
	case k < 0:
		return 0, 0, fmt.Errorf("overflow")
	case k > 1 && b[k-1] == 0:
		return 0, 0, fmt.Errorf("not minimal")
	}
	return v, k, nil
}
