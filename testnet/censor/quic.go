package censor

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
)

// QUICVersion1 is the version number of QUIC v1 (RFC 9000).
const QUICVersion1 uint32 = 0x00000001

// quicV1Salt is initial_salt of RFC 9001 §5.2.
var quicV1Salt = []byte{
	0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17,
	0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad, 0xcc, 0xbb, 0x7f, 0x0a,
}

// QUIC limits.
const (
	maxConnIDLen = 20 // RFC 9000 §17.2
	sampleLen    = 16 // RFC 9001 §5.4.2
	gcmTagLen    = 16
)

// DefaultCryptoLimit is the byte cap of a QUICHelloAssembler whose limit
// is zero: the highest CRYPTO stream offset it accepts.
const DefaultCryptoLimit = 16 << 10

// Sentinel errors of the QUIC helpers, for errors.Is.
var (
	// ErrNotInitial means a datagram does not start with a QUIC long-header
	// Initial packet.
	ErrNotInitial = errors.New("censor: not a quic initial packet")
	// ErrQUICVersion means a long-header packet of a version other than
	// QUIC v1.
	ErrQUICVersion = errors.New("censor: unsupported quic version")
	// ErrDecrypt means an Initial packet failed to decrypt or to
	// authenticate with the keys of its connection ID.
	ErrDecrypt = errors.New("censor: quic initial does not decrypt")
	// ErrFrame means the decrypted payload holds a malformed frame or a
	// frame not allowed in Initial packets.
	ErrFrame = errors.New("censor: bad quic frame")
)

// InitialKeys are the packet protection keys of one direction of a QUIC v1
// connection's Initial packets (RFC 9001 §5.2). Anyone who sees the
// client's first Destination Connection ID can derive them, which is what
// lets an on-path censor read the ClientHello.
type InitialKeys struct {
	// Secret is client_initial_secret or server_initial_secret.
	Secret []byte
	// Key is the AEAD_AES_128_GCM key, IV its 12-byte IV, HP the
	// header-protection key.
	Key, IV, HP []byte
}

// LogValue keeps the keys out of logs.
func (InitialKeys) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// DeriveInitialKeys derives the client and server Initial keys of QUIC v1
// from the Destination Connection ID of the client's first Initial packet
// (RFC 9001 §5.2: HKDF-Extract with initial_salt, then HKDF-Expand-Label
// with "client in"/"server in", "quic key", "quic iv", "quic hp").
func DeriveInitialKeys(dcid []byte) (client, server InitialKeys, err error) {
	initial, err := hkdf.Extract(sha256.New, dcid, quicV1Salt)
	if err != nil {
		return client, server, fmt.Errorf("censor: quic initial secret: %w", err)
	}
	if client, err = deriveKeys(initial, "client in"); err != nil {
		return client, server, err
	}
	server, err = deriveKeys(initial, "server in")
	return client, server, err
}

func deriveKeys(initial []byte, label string) (InitialKeys, error) {
	var k InitialKeys
	var err error
	if k.Secret, err = expandLabel(initial, label, sha256.Size); err != nil {
		return k, err
	}
	if k.Key, err = expandLabel(k.Secret, "quic key", 16); err != nil {
		return k, err
	}
	if k.IV, err = expandLabel(k.Secret, "quic iv", 12); err != nil {
		return k, err
	}
	k.HP, err = expandLabel(k.Secret, "quic hp", 16)
	return k, err
}

// expandLabel is HKDF-Expand-Label of TLS 1.3 (RFC 8446 §7.1) with an
// empty context.
func expandLabel(secret []byte, label string, n int) ([]byte, error) {
	full := "tls13 " + label
	info := make([]byte, 0, 4+len(full))
	info = binary.BigEndian.AppendUint16(info, uint16(n))
	info = append(info, byte(len(full)))
	info = append(info, full...)
	info = append(info, 0)
	out, err := hkdf.Expand(sha256.New, secret, string(info), n)
	if err != nil {
		return nil, fmt.Errorf("censor: hkdf-expand-label %q: %w", label, err)
	}
	return out, nil
}

// QUICInitial is one decrypted client Initial packet.
type QUICInitial struct {
	Version uint32
	// DCID and SCID are the connection IDs; Token the Initial token.
	DCID, SCID, Token []byte
	// PacketNumber is the (truncated, which for a connection's first
	// packets is the full) packet number.
	PacketNumber uint64
	// Payload is the decrypted frames.
	Payload []byte
}

// OpenInitial removes header protection from and decrypts the client
// Initial packet at the start of datagram, with the keys derived from
// keyDCID (the Destination Connection ID of the client's first Initial;
// nil means this packet's own). It returns the packet and the number of
// bytes it took, so that coalesced packets after it can be read. It never
// panics. Errors wrap ErrNotInitial, ErrQUICVersion or ErrDecrypt.
func OpenInitial(datagram, keyDCID []byte) (*QUICInitial, int, error) {
	h, err := parseInitialHeader(datagram)
	if err != nil {
		return nil, 0, err
	}
	if keyDCID == nil {
		keyDCID = h.DCID
	}
	client, _, err := DeriveInitialKeys(keyDCID)
	if err != nil {
		return nil, 0, err
	}
	pkt := datagram[:h.end]
	// Header protection (RFC 9001 §5.4): the sample starts four bytes
	// after the packet number's first byte.
	sample := pkt[h.pnOffset+4 : h.pnOffset+4+sampleLen]
	hp, err := aes.NewCipher(client.HP)
	if err != nil {
		return nil, 0, fmt.Errorf("censor: quic header protection: %w", err)
	}
	var mask [aes.BlockSize]byte
	hp.Encrypt(mask[:], sample)
	first := pkt[0] ^ mask[0]&0x0f
	pnLen := int(first&0x03) + 1
	header := make([]byte, h.pnOffset+pnLen)
	copy(header, pkt)
	header[0] = first
	var pn uint64
	for i := range pnLen {
		header[h.pnOffset+i] ^= mask[1+i]
		pn = pn<<8 | uint64(header[h.pnOffset+i])
	}
	if len(pkt)-len(header) < gcmTagLen {
		return nil, 0, fmt.Errorf("censor: quic initial too short for its tag: %w", ErrDecrypt)
	}
	block, err := aes.NewCipher(client.Key)
	if err != nil {
		return nil, 0, fmt.Errorf("censor: quic packet protection: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, 0, fmt.Errorf("censor: quic packet protection: %w", err)
	}
	nonce := slices.Clone(client.IV)
	for i := range 8 {
		nonce[len(nonce)-1-i] ^= byte(pn >> (8 * i))
	}
	payload, err := aead.Open(nil, nonce, pkt[len(header):], header)
	if err != nil {
		return nil, 0, fmt.Errorf("censor: quic initial packet %d: %w", pn, ErrDecrypt)
	}
	return &QUICInitial{
		Version: h.version, DCID: h.DCID, SCID: h.SCID, Token: h.token,
		PacketNumber: pn, Payload: payload,
	}, h.end, nil
}

// longHeader is the part of a long header read before header protection
// is removed.
type longHeader struct {
	version    uint32
	typ        byte // 0 Initial, 1 0-RTT, 2 Handshake, 3 Retry
	DCID, SCID []byte
	token      []byte
	pnOffset   int // offset of the packet number
	end        int // end of this packet in the datagram
}

func notInitial(format string, args ...any) error {
	return fmt.Errorf("censor: %s: %w", fmt.Sprintf(format, args...), ErrNotInitial)
}

// parseLongHeader reads a QUIC v1 long header (RFC 9000 §17.2); for an
// Initial (§17.2.2):
//
//	1 | 1 | type (2) = 0 | reserved (2) | pn length (2)   (1 byte, protected bits)
//	version (4) | dcid len (1) | dcid | scid len (1) | scid
//	token length (varint) | token | length (varint) | packet number | payload
//
// 0-RTT and Handshake packets have no token; a Retry packet has no length
// and takes the rest of the datagram.
func parseLongHeader(b []byte) (longHeader, error) {
	var h longHeader
	if len(b) < 7 || b[0]&0x80 == 0 {
		return h, notInitial("no long header")
	}
	h.version = binary.BigEndian.Uint32(b[1:5])
	if h.version != QUICVersion1 {
		return h, fmt.Errorf("censor: quic version %#08x: %w", h.version, ErrQUICVersion)
	}
	h.typ = b[0] >> 4 & 0x03
	off := 5
	var ok bool
	if h.DCID, off, ok = readConnID(b, off); !ok {
		return h, notInitial("bad destination connection id")
	}
	if h.SCID, off, ok = readConnID(b, off); !ok {
		return h, notInitial("bad source connection id")
	}
	if h.typ == 3 {
		h.end = len(b)
		return h, nil
	}
	if h.typ == 0 {
		tlen, n := readVarint(b[off:])
		if n == 0 || tlen > uint64(len(b)-off-n) {
			return h, notInitial("bad token length")
		}
		off += n
		h.token = b[off : off+int(tlen)]
		off += int(tlen)
	}
	plen, n := readVarint(b[off:])
	if n == 0 || plen > uint64(len(b)-off-n) {
		return h, notInitial("bad length")
	}
	off += n
	h.pnOffset = off
	h.end = off + int(plen)
	return h, nil
}

// parseInitialHeader reads the long header of a client Initial packet and
// checks it is long enough for header protection to be removed.
func parseInitialHeader(b []byte) (longHeader, error) {
	h, err := parseLongHeader(b)
	if err != nil {
		return h, err
	}
	if h.typ != 0 {
		return h, notInitial("long header type %d", h.typ)
	}
	if h.end-h.pnOffset < 4+sampleLen {
		return h, notInitial("packet too short to sample (%d bytes)", h.end-h.pnOffset)
	}
	return h, nil
}

func readConnID(b []byte, off int) ([]byte, int, bool) {
	if off >= len(b) {
		return nil, off, false
	}
	n := int(b[off])
	off++
	if n > maxConnIDLen || n > len(b)-off {
		return nil, off, false
	}
	return b[off : off+n], off + n, true
}

// readVarint reads a QUIC variable-length integer (RFC 9000 §16) and
// returns it and its length, or length 0 if b is too short.
func readVarint(b []byte) (uint64, int) {
	if len(b) == 0 {
		return 0, 0
	}
	n := 1 << (b[0] >> 6)
	if len(b) < n {
		return 0, 0
	}
	v := uint64(b[0] & 0x3f)
	for _, c := range b[1:n] {
		v = v<<8 | uint64(c)
	}
	return v, n
}

// CryptoFrame is one CRYPTO frame: Data at Offset of the handshake stream.
type CryptoFrame struct {
	Offset uint64
	Data   []byte
}

func badFrame(format string, args ...any) error {
	return fmt.Errorf("censor: %s: %w", fmt.Sprintf(format, args...), ErrFrame)
}

// CryptoFrames returns the CRYPTO frames of a decrypted Initial payload,
// in packet order, skipping the other frame types allowed in Initial
// packets (PADDING, PING, ACK, CONNECTION_CLOSE; RFC 9000 §17.2.2). Any
// other frame type, or a truncated frame, is an error wrapping ErrFrame.
// The frames alias payload.
func CryptoFrames(payload []byte) ([]CryptoFrame, error) {
	var frames []CryptoFrame
	b := payload
	for len(b) > 0 {
		typ, n := readVarint(b)
		if n == 0 {
			return nil, badFrame("truncated frame type")
		}
		b = b[n:]
		switch typ {
		case 0x00, 0x01: // PADDING, PING
		case 0x02, 0x03: // ACK, ACK with ECN counts
			fields := 4 // largest, delay, range count, first range
			v := make([]uint64, 0, 4)
			for range fields {
				x, n := readVarint(b)
				if n == 0 {
					return nil, badFrame("truncated ack frame")
				}
				v = append(v, x)
				b = b[n:]
			}
			ranges := v[2]
			if ranges > uint64(len(b)) {
				return nil, badFrame("ack frame with %d ranges", ranges)
			}
			extra := 2 * int(ranges)
			if typ == 0x03 {
				extra += 3
			}
			for range extra {
				_, n := readVarint(b)
				if n == 0 {
					return nil, badFrame("truncated ack frame")
				}
				b = b[n:]
			}
		case 0x06: // CRYPTO
			off, n := readVarint(b)
			if n == 0 {
				return nil, badFrame("truncated crypto offset")
			}
			b = b[n:]
			l, n := readVarint(b)
			if n == 0 || l > uint64(len(b)-n) {
				return nil, badFrame("truncated crypto data")
			}
			b = b[n:]
			frames = append(frames, CryptoFrame{Offset: off, Data: b[:l]})
			b = b[l:]
		case 0x1c: // CONNECTION_CLOSE (transport)
			for range 2 { // error code, frame type
				_, n := readVarint(b)
				if n == 0 {
					return nil, badFrame("truncated connection_close")
				}
				b = b[n:]
			}
			l, n := readVarint(b)
			if n == 0 || l > uint64(len(b)-n) {
				return nil, badFrame("truncated connection_close reason")
			}
			b = b[n+int(l):]
		default:
			return nil, badFrame("frame type %#x in an initial packet", typ)
		}
	}
	return frames, nil
}

// QUICHelloAssembler gathers the ClientHello of one QUIC connection from
// the CRYPTO frames of its client Initial packets: frames out of order,
// several per packet, coalesced packets, several datagrams (Chrome splits
// a post-quantum ClientHello over two). Every Initial is decrypted with
// the keys of the first Initial's Destination Connection ID, as the client
// itself does until the handshake moves on. It is not safe for concurrent
// use.
//
// The GFW's QUIC SNI filter did not reassemble across datagrams (GFW
// Report, USENIX Security 2025): model it with a fresh assembler per
// datagram.
type QUICHelloAssembler struct {
	limit int
	dcid  []byte
	buf   []byte
	spans []span // sorted, merged byte ranges of buf that hold data
}

type span struct{ start, end int }

// NewQUICHelloAssembler returns an assembler that accepts CRYPTO data up
// to stream offset limit (zero means DefaultCryptoLimit).
func NewQUICHelloAssembler(limit int) *QUICHelloAssembler {
	if limit <= 0 {
		limit = DefaultCryptoLimit
	}
	return &QUICHelloAssembler{limit: limit}
}

// AddDatagram decrypts every client Initial packet in datagram (coalesced
// packets are read in turn; a non-Initial long-header packet is skipped
// and a short-header packet or padding ends the datagram) and adds their
// CRYPTO frames. It returns an error if the first packet is not a
// decryptable Initial, if a frame is malformed, or (ErrTooLong) if CRYPTO
// data lies beyond the limit; data added before the error is kept.
func (a *QUICHelloAssembler) AddDatagram(datagram []byte) error {
	for i := 0; len(datagram) > 0; i++ {
		if datagram[0]&0x80 == 0 {
			if i == 0 {
				return notInitial("short header packet")
			}
			return nil // a 1-RTT packet or padding after the Initials
		}
		if i > 0 {
			// After the first packet: skip coalesced 0-RTT, Handshake and
			// Retry packets; stop at anything unreadable.
			lh, err := parseLongHeader(datagram)
			if err != nil {
				return nil
			}
			if lh.typ != 0 {
				datagram = datagram[lh.end:]
				continue
			}
		}
		h, err := parseInitialHeader(datagram)
		if err != nil {
			return err
		}
		if a.dcid == nil {
			a.dcid = slices.Clone(h.DCID)
		}
		init, n, err := OpenInitial(datagram, a.dcid)
		if err != nil {
			return err
		}
		frames, err := CryptoFrames(init.Payload)
		if err != nil {
			return err
		}
		for _, f := range frames {
			if err := a.add(f); err != nil {
				return err
			}
		}
		datagram = datagram[n:]
	}
	return nil
}

// add copies one CRYPTO frame into the buffer.
func (a *QUICHelloAssembler) add(f CryptoFrame) error {
	if f.Offset > uint64(a.limit) || uint64(len(f.Data)) > uint64(a.limit)-f.Offset {
		return fmt.Errorf("censor: crypto data at %d+%d beyond the cap of %d: %w", f.Offset, len(f.Data), a.limit, ErrTooLong)
	}
	if len(f.Data) == 0 {
		return nil
	}
	start, end := int(f.Offset), int(f.Offset)+len(f.Data)
	if end > len(a.buf) {
		a.buf = append(a.buf, make([]byte, end-len(a.buf))...)
	}
	copy(a.buf[start:end], f.Data)
	a.spans = mergeSpan(a.spans, span{start, end})
	return nil
}

// mergeSpan inserts s into the sorted, disjoint spans and merges what
// touches or overlaps it.
func mergeSpan(spans []span, s span) []span {
	out := spans[:0:0]
	out = slices.Grow(out, len(spans)+1)
	placed := false
	for _, x := range spans {
		switch {
		case x.end < s.start:
			out = append(out, x)
		case s.end < x.start:
			if !placed {
				out = append(out, s)
				placed = true
			}
			out = append(out, x)
		default:
			s = span{min(s.start, x.start), max(s.end, x.end)}
		}
	}
	if !placed {
		out = append(out, s)
		slices.SortFunc(out, func(p, q span) int { return p.start - q.start })
	}
	return out
}

// ClientHello returns the whole ClientHello handshake message once the
// CRYPTO stream holds it from offset 0; ErrNeedMore until then; ErrNotTLS
// if the stream does not start with a ClientHello; ErrTooLong if its
// length exceeds the limit. The result aliases the assembler's buffer.
func (a *QUICHelloAssembler) ClientHello() ([]byte, error) {
	if len(a.spans) == 0 || a.spans[0].start != 0 {
		return nil, ErrNeedMore
	}
	have := a.buf[:a.spans[0].end]
	if have[0] != handshakeClientHello {
		return nil, notTLS("crypto stream starts with handshake type %d", have[0])
	}
	if len(have) < handshakeHeaderLen {
		return nil, ErrNeedMore
	}
	need := handshakeHeaderLen + (int(have[1])<<16 | int(have[2])<<8 | int(have[3]))
	if need > a.limit {
		return nil, fmt.Errorf("censor: quic clienthello of %d bytes over a cap of %d: %w", need, a.limit, ErrTooLong)
	}
	if len(have) < need {
		return nil, ErrNeedMore
	}
	return have[:need], nil
}

// QUICClientHello reads the ClientHello of a QUIC v1 connection from the
// client's first datagrams, in the order they were sent, and parses it.
// It returns ErrNeedMore if the datagrams do not hold all of it.
func QUICClientHello(datagrams ...[]byte) (*ClientHello, error) {
	a := NewQUICHelloAssembler(0)
	for _, d := range datagrams {
		if err := a.AddDatagram(d); err != nil {
			return nil, err
		}
	}
	msg, err := a.ClientHello()
	if err != nil {
		return nil, err
	}
	return ParseClientHello(msg)
}
