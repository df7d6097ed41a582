package frame

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Errors returned by the decoder. ErrTruncated means more bytes are needed;
// the others mean the input is invalid.
var (
	// ErrTruncated means the buffer ends inside a frame.
	ErrTruncated = errors.New("frame: truncated")
	// ErrVersion means the frame's version is not CCP-1.
	ErrVersion = errors.New("frame: unsupported version")
	// ErrType means the frame's type is not a CCP-1 type.
	ErrType = errors.New("frame: unknown type")
	// ErrVarint means a varint is longer than 10 bytes or overflows 64 bits.
	ErrVarint = errors.New("frame: bad varint")
)

// TooLargeError reports a payload over its type's limit.
type TooLargeError struct {
	Type Type
	Len  uint64
	Max  int
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("frame: %s too long (%d > %d)", e.Type, e.Len, e.Max)
}

// Append encodes f and appends it to dst.
func Append(dst []byte, f Frame) ([]byte, error) {
	if !f.Type.Known() {
		return dst, fmt.Errorf("%w: 0x%02x", ErrType, uint8(f.Type))
	}
	if max := f.Type.MaxPayload(); len(f.Payload) > max {
		return dst, &TooLargeError{Type: f.Type, Len: uint64(len(f.Payload)), Max: max}
	}
	dst = append(dst, Version, byte(f.Type), byte(f.Flags))
	dst = binary.AppendUvarint(dst, f.Stream)
	dst = binary.AppendUvarint(dst, f.Seq)
	dst = binary.AppendUvarint(dst, uint64(len(f.Payload)))
	return append(dst, f.Payload...), nil
}

// Size is the encoded length of f.
func Size(f Frame) int {
	return 3 + uvarintLen(f.Stream) + uvarintLen(f.Seq) + uvarintLen(uint64(len(f.Payload))) + len(f.Payload)
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// Decode decodes the first frame in b and returns it with the number of
// bytes it used. The payload aliases b. If b ends inside the frame, the
// error is ErrTruncated (possibly wrapped) and the caller may retry with
// more bytes; every other error means b is invalid.
func Decode(b []byte) (Frame, int, error) {
	var f Frame
	if len(b) < 3 {
		return f, 0, ErrTruncated
	}
	if b[0] != Version {
		return f, 0, fmt.Errorf("%w: %d (want %d)", ErrVersion, b[0], Version)
	}
	f.Type = Type(b[1])
	if !f.Type.Known() {
		return f, 0, fmt.Errorf("%w: 0x%02x", ErrType, b[1])
	}
	f.Flags = Flags(b[2])
	n := 3
	var err error
	if f.Stream, n, err = uvarint(b, n); err != nil {
		return Frame{}, 0, err
	}
	if f.Seq, n, err = uvarint(b, n); err != nil {
		return Frame{}, 0, err
	}
	var length uint64
	if length, n, err = uvarint(b, n); err != nil {
		return Frame{}, 0, err
	}
	if max := f.Type.MaxPayload(); length > uint64(max) {
		return Frame{}, 0, &TooLargeError{Type: f.Type, Len: length, Max: max}
	}
	end := n + int(length)
	if end > len(b) {
		return Frame{}, 0, ErrTruncated
	}
	f.Payload = b[n:end:end]
	return f, end, nil
}

func uvarint(b []byte, off int) (uint64, int, error) {
	v, k := binary.Uvarint(b[off:])
	switch {
	case k > 0:
		return v, off + k, nil
	case k == 0:
		return 0, off, ErrTruncated
	default:
		return 0, off, ErrVarint
	}
}

// Reader is what Read needs: a *bufio.Reader or a *bytes.Reader.
type Reader interface {
	io.Reader
	io.ByteReader
}

// Read reads exactly one frame from r, allocating the payload only after
// checking its declared length against the type's limit.
func Read(r Reader) (Frame, error) {
	var f Frame
	var hdr [3]byte
	for i := range hdr {
		c, err := r.ReadByte()
		if err != nil {
			if i > 0 && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return f, err
		}
		hdr[i] = c
	}
	if hdr[0] != Version {
		return f, fmt.Errorf("%w: %d (want %d)", ErrVersion, hdr[0], Version)
	}
	f.Type = Type(hdr[1])
	if !f.Type.Known() {
		return f, fmt.Errorf("%w: 0x%02x", ErrType, hdr[1])
	}
	f.Flags = Flags(hdr[2])
	var err error
	if f.Stream, err = readUvarint(r); err != nil {
		return Frame{}, err
	}
	if f.Seq, err = readUvarint(r); err != nil {
		return Frame{}, err
	}
	length, err := readUvarint(r)
	if err != nil {
		return Frame{}, err
	}
	if max := f.Type.MaxPayload(); length > uint64(max) {
		return Frame{}, &TooLargeError{Type: f.Type, Len: length, Max: max}
	}
	f.Payload = make([]byte, length)
	if _, err := io.ReadFull(r, f.Payload); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, fmt.Errorf("frame: read %s payload: %w", f.Type, err)
	}
	return f, nil
}

func readUvarint(r io.ByteReader) (uint64, error) {
	v, err := binary.ReadUvarint(r)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return 0, io.ErrUnexpectedEOF
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, err
		}
		return 0, fmt.Errorf("%w: %v", ErrVarint, err)
	}
	return v, nil
}
