package censor

import (
	"errors"
	"fmt"
)

// TLS record and handshake constants.
const (
	recordHeaderLen      = 5
	recordHandshake      = 0x16
	maxRecordPayload     = 1 << 14 // RFC 8446 §5.1
	handshakeHeaderLen   = 4
	handshakeClientHello = 0x01
)

// DefaultHelloLimit is the byte cap ReassembleClientHello applies when its
// limit is zero: 16 KiB of stream, enough for any browser's hello with
// post-quantum key shares.
const DefaultHelloLimit = 16 << 10

// Sentinel errors of the stream helpers, for errors.Is.
var (
	// ErrNeedMore means the bytes so far are a valid prefix of what is
	// looked for: wait for more of the stream.
	ErrNeedMore = errors.New("censor: need more bytes")
	// ErrNotTLS means the stream does not start with a TLS handshake
	// record carrying a ClientHello.
	ErrNotTLS = errors.New("censor: not tls")
	// ErrNotClientHello means a ClientHello message is malformed.
	ErrNotClientHello = errors.New("censor: malformed clienthello")
	// ErrTooLong means the looked-for message does not fit in the byte cap.
	ErrTooLong = errors.New("censor: message exceeds the byte cap")
)

func notTLS(format string, args ...any) error {
	return fmt.Errorf("censor: %s: %w", fmt.Sprintf(format, args...), ErrNotTLS)
}

// ReassembleClientHello finds the ClientHello at the start of a TCP
// connection's client-to-server byte stream, however the client split it
// over TLS records (each at most 16 KiB, handshake records only) and over
// TCP segments (the caller appends segment payloads in sequence order).
//
// It returns the whole handshake message, header included, or:
//   - ErrNeedMore if stream is a valid but incomplete prefix and the
//     message could still fit in limit bytes of stream;
//   - ErrTooLong if the message or its records would need more than limit
//     bytes of stream;
//   - ErrNotTLS if the stream is not a handshake record carrying a
//     ClientHello, as soon as the bytes present show it.
//
// A limit of zero means DefaultHelloLimit; a censor that does no
// reassembly passes the length of the first segment. The message aliases
// stream when it sits in one record, and is a new slice otherwise. The
// message body is not parsed: pass it to ParseClientHello. It never
// panics.
func ReassembleClientHello(stream []byte, limit int) ([]byte, error) {
	if limit <= 0 {
		limit = DefaultHelloLimit
	}
	var msg []byte // message bytes gathered from complete records
	single := true // msg so far is one record's payload, aliasing stream
	need := -1     // whole message length once its header is known
	off := 0
	for {
		if need >= 0 && len(msg) >= need {
			return msg[:need], nil
		}
		rest := stream[off:]
		if err := checkRecordPrefix(rest, off == 0); err != nil {
			return nil, err
		}
		if len(rest) < recordHeaderLen {
			return nil, needMoreOrTooLong(off+recordHeaderLen, limit)
		}
		n := int(rest[3])<<8 | int(rest[4])
		end := off + recordHeaderLen + n
		payload := rest[recordHeaderLen:min(len(rest), recordHeaderLen+n)]
		// Check the handshake header as soon as its bytes arrive, even in
		// an incomplete record, so garbage is refused early.
		at := func(i int) (byte, bool) {
			if i < len(msg) {
				return msg[i], true
			}
			if i -= len(msg); i < len(payload) {
				return payload[i], true
			}
			return 0, false
		}
		if c, ok := at(0); ok && c != handshakeClientHello {
			return nil, notTLS("handshake type %d", c)
		}
		if need < 0 {
			if _, ok := at(handshakeHeaderLen - 1); ok {
				b1, _ := at(1)
				b2, _ := at(2)
				b3, _ := at(3)
				need = handshakeHeaderLen + (int(b1)<<16 | int(b2)<<8 | int(b3))
			}
		}
		if need >= 0 {
			// The stream must hold the message plus one record header per
			// 16 KiB of it at the least.
			if minStream := off - len(msg) + need + recordHeaderLen; minStream > limit {
				return nil, fmt.Errorf("censor: clienthello of %d bytes over a cap of %d: %w", need, limit, ErrTooLong)
			}
		}
		if end > len(stream) {
			return nil, needMoreOrTooLong(end, limit)
		}
		if len(msg) == 0 {
			msg = payload
		} else {
			if single {
				msg = append([]byte(nil), msg...)
				single = false
			}
			msg = append(msg, payload...)
		}
		off = end
	}
}

// checkRecordPrefix checks the bytes present of a handshake record header.
func checkRecordPrefix(h []byte, first bool) error {
	if len(h) >= 1 && h[0] != recordHandshake {
		if first {
			return notTLS("record type %d", h[0])
		}
		return notTLS("record type %d inside the clienthello", h[0])
	}
	if len(h) >= 2 && h[1] != 3 {
		return notTLS("record version major %d", h[1])
	}
	if len(h) >= 3 && h[2] > 4 {
		return notTLS("record version minor %d", h[2])
	}
	if len(h) >= recordHeaderLen {
		if n := int(h[3])<<8 | int(h[4]); n == 0 || n > maxRecordPayload {
			return notTLS("record length %d", n)
		}
	}
	return nil
}

func needMoreOrTooLong(want, limit int) error {
	if want > limit {
		return fmt.Errorf("censor: clienthello needs more than %d bytes of stream: %w", limit, ErrTooLong)
	}
	return ErrNeedMore
}

// ClientHelloFromStream reassembles (ReassembleClientHello) and parses
// (ParseClientHello) the ClientHello at the start of stream.
func ClientHelloFromStream(stream []byte, limit int) (*ClientHello, error) {
	msg, err := ReassembleClientHello(stream, limit)
	if err != nil {
		return nil, err
	}
	return ParseClientHello(msg)
}
