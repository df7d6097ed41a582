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
	// ErrTruncated means the buffer ends inside a frame. Read wraps it
	// together with io.ErrUnexpectedEOF.
	ErrTruncated = errors.New("frame: truncated")
	// ErrVersion means the frame's version is not CCP-1.
	ErrVersion = errors.New("frame: unsupported version")
	// ErrType means the frame's type is not a CCP-1 type.
	ErrType = errors.New("frame: unknown type")
	// ErrVarint means a varint is longer than 10 bytes, overflows 64 bits or
	// is not minimally encoded.
	ErrVarint = errors.New("frame: bad varint")
)

// TooLargeError reports a payload over its type's limit. Len is the length
// the frame declared (or carried, for Append); Max is Type.MaxPayload().
type TooLargeError struct {
	Type Type
	Len  uint64
	Max  int
}

// Error reads "frame: <type> too long (<len> > <max>)".
func (e *TooLargeError) Error() string {
	return fmt.Sprintf("frame: %s too long (%d > %d)", e.Type, e.Len, e.Max)
}

// Append encodes f and appends it to dst. It refuses an unknown type
// (ErrType) and a payload over the type's limit (*TooLargeError), leaving
// dst unchanged. It does not allocate when dst has room for Size(f) bytes.
func Append(dst []byte, f Frame) ([]byte, error) {
	if !f.Type.Known() {
		return dst, fmt.Errorf("%w: 0x%02x", ErrType, uint8(f.Type))
	}
	if limit := f.Type.MaxPayload(); len(f.Payload) > limit {
		return dst, &TooLargeError{Type: f.Type, Len: uint64(len(f.Payload)), Max: limit}
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
// error is ErrTruncated and the caller may retry with more bytes; every
// other error means b is invalid. A bad version or type is reported as soon
// as its byte is present, and a payload over the type's limit as soon as
// the length varint is complete, before any payload byte is needed.
func Decode(b []byte) (Frame, int, error) {
	var f Frame
	if len(b) < 1 {
		return f, 0, ErrTruncated
	}
	if b[0] != Version {
		return f, 0, fmt.Errorf("%w: %d (want %d)", ErrVersion, b[0], Version)
	}
	if len(b) < 2 {
		return f, 0, ErrTruncated
	}
	f.Type = Type(b[1])
	if !f.Type.Known() {
		return Frame{}, 0, fmt.Errorf("%w: 0x%02x", ErrType, b[1])
	}
	if len(b) < 3 {
		return Frame{}, 0, ErrTruncated
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
	if limit := f.Type.MaxPayload(); length > uint64(limit) {
		return Frame{}, 0, &TooLargeError{Type: f.Type, Len: length, Max: limit}
	}
	if uint64(len(b)-n) < length {
		return Frame{}, 0, ErrTruncated
	}
	end := n + int(length)
	f.Payload = b[n:end:end]
	return f, end, nil
}

// uvarint decodes the minimal LEB128 varint at b[off:]. It returns
// ErrTruncated if b ends inside it and ErrVarint if it is too long,
// overflows or has a redundant trailing zero group.
func uvarint(b []byte, off int) (uint64, int, error) {
	var x uint64
	for i := 0; i < binary.MaxVarintLen64; i++ {
		if off+i >= len(b) {
			return 0, off, ErrTruncated
		}
		c := b[off+i]
		if c < 0x80 {
			if err := checkLast(i, c); err != nil {
				return 0, off, err
			}
			return x | uint64(c)<<(7*i), off + i + 1, nil
		}
		x |= uint64(c&0x7f) << (7 * i)
	}
	return 0, off, fmt.Errorf("%w: longer than %d bytes", ErrVarint, binary.MaxVarintLen64)
}

// checkLast validates the final byte c of a varint whose index is i.
func checkLast(i int, c byte) error {
	switch {
	case i == binary.MaxVarintLen64-1 && c > 1:
		return fmt.Errorf("%w: overflows 64 bits", ErrVarint)
	case i > 0 && c == 0:
		return fmt.Errorf("%w: not minimal", ErrVarint)
	}
	return nil
}

// Reader is what Read needs: a *bufio.Reader or a *bytes.Reader.
type Reader interface {
	io.Reader
	io.ByteReader
}

// Read reads exactly one frame from r, allocating the payload only after
// checking its declared length against the type's limit. It returns io.EOF
// (unwrapped) only when r ends before the first byte of a frame; if r ends
// inside a frame the error wraps both ErrTruncated and io.ErrUnexpectedEOF.
// Other errors from r are returned wrapped. It validates the same things,
// in the same order, as Decode.
func Read(r Reader) (Frame, error) {
	var f Frame
	c, err := r.ReadByte()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return f, io.EOF
		}
		return f, fmt.Errorf("frame: read: %w", err)
	}
	if c != Version {
		return f, fmt.Errorf("%w: %d (want %d)", ErrVersion, c, Version)
	}
	if c, err = readByte(r); err != nil {
		return f, err
	}
	f.Type = Type(c)
	if !f.Type.Known() {
		return Frame{}, fmt.Errorf("%w: 0x%02x", ErrType, c)
	}
	if c, err = readByte(r); err != nil {
		return Frame{}, err
	}
	f.Flags = Flags(c)
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
	if limit := f.Type.MaxPayload(); length > uint64(limit) {
		return Frame{}, &TooLargeError{Type: f.Type, Len: length, Max: limit}
	}
	f.Payload = make([]byte, length)
	if _, err := io.ReadFull(r, f.Payload); err != nil {
		return Frame{}, midFrame(err)
	}
	return f, nil
}

// readByte reads one byte inside a frame.
func readByte(r io.ByteReader) (byte, error) {
	c, err := r.ReadByte()
	if err != nil {
		return 0, midFrame(err)
	}
	return c, nil
}

// midFrame wraps an error from the reader met inside a frame.
func midFrame(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: %w", ErrTruncated, io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("frame: read: %w", err)
}

// readUvarint reads a minimal LEB128 varint inside a frame. Unlike
// binary.ReadUvarint it keeps errors from r apart from malformed input.
func readUvarint(r io.ByteReader) (uint64, error) {
	var x uint64
	for i := 0; i < binary.MaxVarintLen64; i++ {
		c, err := readByte(r)
		if err != nil {
			return 0, err
		}
		if c < 0x80 {
			if err := checkLast(i, c); err != nil {
				return 0, err
			}
			return x | uint64(c)<<(7*i), nil
		}
		x |= uint64(c&0x7f) << (7 * i)
	}
	return 0, fmt.Errorf("%w: longer than %d bytes", ErrVarint, binary.MaxVarintLen64)
}
