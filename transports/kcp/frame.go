package kcp

import (
	"bufio"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// Frame types on the KCP byte stream; see the package doc.
const (
	frameHello   byte = 0x01
	frameWelcome byte = 0x02
	frameData    byte = 0x03
	frameFin     byte = 0x04
	frameFinAck  byte = 0x05
	framePing    byte = 0x06
)

// OOB kinds: the first byte of an out-of-band packet's payload.
const (
	oobDatagram byte = 0x00
	oobReset    byte = 0x01
	oobFinAck   byte = 0x02
)

// Sizes on the wire.
const (
	frameHeaderLen = 3     // type u8 | length u16be
	maxDataPayload = 32768 // largest DATA payload
	version        = 1     // the HELLO/WELCOME version
	nonceLen       = 16
	helloLen       = 1 + 8 + nonceLen // version | unix seconds | nonce
	welcomeLen     = 1 + nonceLen     // version | nonce
)

// errProtocol is wrapped by every malformed-frame error.
var errProtocol = errors.New("kcp: protocol violation")

// hello is the payload of the client's first frame.
type hello struct {
	Time  int64 // Unix seconds
	Nonce [nonceLen]byte
}

func (h hello) encode() []byte {
	b := make([]byte, helloLen)
	b[0] = version
	binary.BigEndian.PutUint64(b[1:], uint64(h.Time))
	copy(b[9:], h.Nonce[:])
	return b
}

func parseHello(b []byte) (hello, error) {
	var h hello
	if len(b) != helloLen {
		return h, fmt.Errorf("%w: hello of %d bytes, want %d", errProtocol, len(b), helloLen)
	}
	if b[0] != version {
		return h, fmt.Errorf("%w: hello version %d, want %d", errProtocol, b[0], version)
	}
	h.Time = int64(binary.BigEndian.Uint64(b[1:]))
	copy(h.Nonce[:], b[9:])
	return h, nil
}

func encodeWelcome(nonce [nonceLen]byte) []byte {
	b := make([]byte, welcomeLen)
	b[0] = version
	copy(b[1:], nonce[:])
	return b
}

func parseWelcome(b []byte) ([nonceLen]byte, error) {
	var n [nonceLen]byte
	if len(b) != welcomeLen {
		return n, fmt.Errorf("%w: welcome of %d bytes, want %d", errProtocol, len(b), welcomeLen)
	}
	if b[0] != version {
		return n, fmt.Errorf("%w: welcome version %d, want %d", errProtocol, b[0], version)
	}
	copy(n[:], b[1:])
	return n, nil
}

// appendFrameHeader appends the header of a frame of type typ with an n-byte
// payload.
func appendFrameHeader(b []byte, typ byte, n int) []byte {
	return append(b, typ, byte(n>>8), byte(n))
}

// frameLimit is the payload length a frame type allows, as min and max.
func frameLimit(typ byte) (lo, hi int, ok bool) {
	switch typ {
	case frameHello:
		return helloLen, helloLen, true
	case frameWelcome:
		return welcomeLen, welcomeLen, true
	case frameData:
		return 1, maxDataPayload, true
	case frameFin, frameFinAck, framePing:
		return 0, 0, true
	}
	return 0, 0, false
}

// readFrame reads one frame from r. The length is checked against the
// frame type before anything is allocated. The payload is a new slice.
func readFrame(r *bufio.Reader) (typ byte, payload []byte, err error) {
	var hdr [frameHeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	typ = hdr[0]
	n := int(binary.BigEndian.Uint16(hdr[1:]))
	lo, hi, ok := frameLimit(typ)
	if !ok {
		return 0, nil, fmt.Errorf("%w: unknown frame type %#x", errProtocol, typ)
	}
	if n < lo || n > hi {
		return 0, nil, fmt.Errorf("%w: frame type %#x with %d bytes, want %d to %d", errProtocol, typ, n, lo, hi)
	}
	if n == 0 {
		return typ, nil, nil
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return typ, payload, nil
}

// kcp-go's packet layout, as far as the listener must read it to decide
// whether a packet from an unknown address opens a connection:
//
//	FEC header:  seqid u32le | type u16le | size u16le   (type 0xf1 = data)
//	KCP segment: conv u32le | cmd u8 | frg u8 | wnd u16le | ts u32le |
//	             sn u32le | una u32le | len u32le | data
const (
	fecHeaderLen = 8
	fecTypeData  = 0xf1
	kcpOverhead  = 24
	kcpCmdPush   = 81
	fecTypeOOB   = 0xf3
	fecSeqidOOB  = 0xffffffff
	convLen      = 4
	aeadNonceLen = 12
	aeadOverhead = 16
)

// firstPacket is what a connection-opening packet carries.
type firstPacket struct {
	Conv  uint32
	Hello hello
}

// parseFirstPacket decrypts a UDP payload from an unknown address and
// returns its conversation and hello if it is the opening packet of a
// connection: a FEC data shard whose first KCP segment is the PUSH with
// sequence number 0 and whose data starts with a HELLO frame. scratch is
// reused for the plaintext. Anything else is an error, and the listener
// stays silent.
func parseFirstPacket(aead cipher.AEAD, pkt, scratch []byte) (firstPacket, error) {
	var fp firstPacket
	if len(pkt) < aeadNonceLen+aeadOverhead {
		return fp, fmt.Errorf("%w: short packet", errProtocol)
	}
	plain, err := aead.Open(scratch[:0], pkt[:aeadNonceLen], pkt[aeadNonceLen:], nil)
	if err != nil {
		return fp, fmt.Errorf("%w: packet does not authenticate", errProtocol)
	}
	return parseFirstPlaintext(plain)
}

// parseFirstPlaintext is parseFirstPacket after decryption.
func parseFirstPlaintext(plain []byte) (firstPacket, error) {
	var fp firstPacket
	if len(plain) < fecHeaderLen+kcpOverhead {
		return fp, fmt.Errorf("%w: short packet", errProtocol)
	}
	if binary.LittleEndian.Uint16(plain[4:]) != fecTypeData {
		return fp, fmt.Errorf("%w: not a data shard", errProtocol)
	}
	size := int(binary.LittleEndian.Uint16(plain[6:]))
	if size < 2 || fecHeaderLen-2+size > len(plain) {
		return fp, fmt.Errorf("%w: bad shard size %d", errProtocol, size)
	}
	seg := plain[fecHeaderLen : fecHeaderLen-2+size]
	if len(seg) < kcpOverhead {
		return fp, fmt.Errorf("%w: short segment", errProtocol)
	}
	if seg[4] != kcpCmdPush || binary.LittleEndian.Uint32(seg[12:]) != 0 {
		return fp, fmt.Errorf("%w: not the first data segment", errProtocol)
	}
	n := binary.LittleEndian.Uint32(seg[20:])
	data := seg[kcpOverhead:]
	if uint64(n) > uint64(len(data)) {
		return fp, fmt.Errorf("%w: segment length %d exceeds the packet", errProtocol, n)
	}
	data = data[:n]
	if len(data) < frameHeaderLen+helloLen || data[0] != frameHello ||
		int(binary.BigEndian.Uint16(data[1:])) != helloLen {
		return fp, fmt.Errorf("%w: no hello", errProtocol)
	}
	h, err := parseHello(data[frameHeaderLen : frameHeaderLen+helloLen])
	if err != nil {
		return fp, err
	}
	fp.Conv = binary.LittleEndian.Uint32(seg)
	fp.Hello = h
	return fp, nil
}

// sealOOB builds an encrypted kcp-go out-of-band packet for conv carrying
// payload, as kcp-go's SendOOB does, for sending straight to the socket.
func sealOOB(aead cipher.AEAD, nonce []byte, conv uint32, payload []byte) []byte {
	plain := make([]byte, fecHeaderLen+convLen+len(payload))
	binary.LittleEndian.PutUint32(plain, fecSeqidOOB)
	binary.LittleEndian.PutUint16(plain[4:], fecTypeOOB)
	binary.LittleEndian.PutUint16(plain[6:], uint16(2+convLen+len(payload)))
	binary.LittleEndian.PutUint32(plain[fecHeaderLen:], conv)
	copy(plain[fecHeaderLen+convLen:], payload)
	out := make([]byte, 0, aeadNonceLen+len(plain)+aeadOverhead)
	out = append(out, nonce...)
	return aead.Seal(out, nonce, plain, nil)
}

// clockOK reports whether a hello sent at unix seconds ts is fresh at now.
func clockOK(ts int64, now time.Time) bool {
	d := now.Unix() - ts
	return d <= int64(maxSkew/time.Second) && d >= -int64(maxSkew/time.Second)
}
