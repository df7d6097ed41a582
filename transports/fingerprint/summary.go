package fingerprint

import (
	"errors"
	"fmt"
	"slices"

	"github.com/commucat/commucat/internal/tlshello"
)

// GREASE is the placeholder every GREASE value (RFC 8701: 0x0a0a, 0x1a1a,
// ... 0xfafa) is normalised to in a Summary, so that two hellos of a client
// that picks fresh GREASE values per connection compare equal.
const GREASE uint16 = 0x0a0a

// Extension numbers whose position in the extension list a shuffling client
// (Chrome since 106, utls.ShuffleChromeTLSExtensions) keeps fixed.
const (
	extPadding       uint16 = 21
	extPreSharedKey  uint16 = 41
	extServerName    uint16 = 0
	extSupportedGrps uint16 = 10
	extSigAlgs       uint16 = 13
	extALPN          uint16 = 16
	extSupportedVers uint16 = 43
	extKeyShare      uint16 = 51
)

// Wire constants of the TLS record and handshake layers.
const (
	recordHeaderLen     = 5
	recordTypeHandshake = 0x16
	maxRecordPayload    = 1 << 14 // RFC 8446 §5.1: TLSPlaintext.length <= 2^14
	handshakeHeaderLen  = 4
	typeClientHello     = 0x01
)

// MaxHelloSize is the largest ClientHello this package reads, parses or
// loads, counting the TLS record headers: 64 KiB.
const MaxHelloSize = 64 << 10

// Sentinel errors that callers branch on with errors.Is.
var (
	// ErrNotClientHello is returned for bytes that are not a TLS ClientHello:
	// a wrong record or handshake type, a malformed field, trailing data.
	ErrNotClientHello = errors.New("fingerprint: not a tls clienthello")
	// ErrTooLarge is returned for a ClientHello larger than MaxHelloSize.
	ErrTooLarge = errors.New("fingerprint: clienthello too large")
)

// Summary is what identifies a ClientHello's shape: the fields a passive
// classifier (JA3/JA4 and the like) looks at. Every GREASE value is
// replaced by the GREASE placeholder; lists keep their wire order.
type Summary struct {
	// Version is the legacy_version field (0x0303 for TLS 1.2 and 1.3).
	Version uint16
	// CipherSuites are the offered cipher suites.
	CipherSuites []uint16
	// Extensions are the extension types, in wire order.
	Extensions []uint16
	// ALPN are the protocols of the application_layer_protocol_negotiation
	// extension.
	ALPN []string
	// SupportedGroups are the supported_groups (named curves).
	SupportedGroups []uint16
	// KeyShareGroups are the groups of the key_share entries.
	KeyShareGroups []uint16
	// SignatureAlgorithms are the signature_algorithms.
	SignatureAlgorithms []uint16
	// SupportedVersions are the supported_versions.
	SupportedVersions []uint16
	// ServerName is the host_name of the server_name extension, or "".
	ServerName string
}

// IsGREASE reports whether v is one of the RFC 8701 GREASE values.
func IsGREASE(v uint16) bool {
	return v&0x0f0f == 0x0a0a && v>>8 == v&0xff
}

func ungrease(v uint16) uint16 {
	if IsGREASE(v) {
		return GREASE
	}
	return v
}

// fixedPosition reports whether a shuffling client keeps extension type e
// (already normalised) at its place: GREASE, padding and pre_shared_key,
// exactly the ones utls.ShuffleChromeTLSExtensions skips.
func fixedPosition(e uint16) bool {
	return e == GREASE || e == extPadding || e == extPreSharedKey
}

// SameShape reports whether s and o are hellos of the same shape, allowing
// for Chrome's per-connection extension shuffling. Precisely, it requires:
//
//   - equal Version;
//   - equal CipherSuites, ALPN, SupportedGroups, KeyShareGroups,
//     SignatureAlgorithms and SupportedVersions, in order;
//   - Extensions of equal length holding the same multiset of types, where
//     every position holding GREASE, padding (21) or pre_shared_key (41) in
//     either hello holds the same type in the other: the order of the other
//     extensions is ignored, since Chrome (and utls's Chrome presets)
//     permute exactly those on every connection.
//
// ServerName is not compared: it names the destination, not the client.
// Use SameOrder to also require the exact extension order, for shapes that
// do not shuffle (Firefox, Safari, a replayed non-Chrome capture).
func (s Summary) SameShape(o Summary) bool {
	if s.Version != o.Version ||
		!slices.Equal(s.CipherSuites, o.CipherSuites) ||
		!slices.Equal(s.ALPN, o.ALPN) ||
		!slices.Equal(s.SupportedGroups, o.SupportedGroups) ||
		!slices.Equal(s.KeyShareGroups, o.KeyShareGroups) ||
		!slices.Equal(s.SignatureAlgorithms, o.SignatureAlgorithms) ||
		!slices.Equal(s.SupportedVersions, o.SupportedVersions) ||
		len(s.Extensions) != len(o.Extensions) {
		return false
	}
	for i, e := range s.Extensions {
		if (fixedPosition(e) || fixedPosition(o.Extensions[i])) && e != o.Extensions[i] {
			return false
		}
	}
	a, b := slices.Clone(s.Extensions), slices.Clone(o.Extensions)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// SameOrder reports whether s and o have the same shape (SameShape) and
// their extensions are in the same order.
func (s Summary) SameOrder(o Summary) bool {
	return s.SameShape(o) && slices.Equal(s.Extensions, o.Extensions)
}

// Summarize parses a raw ClientHello, either as TLS handshake record(s)
// (the form Capture returns; the message may span several records) or as a
// bare handshake message, and returns its Summary. It is strict: any
// malformed length, a duplicated extension, or bytes after the message fail
// with an error wrapping ErrNotClientHello (or ErrTooLarge). It never
// panics.
func Summarize(raw []byte) (Summary, error) {
	msg, err := handshakeMessage(raw)
	if err != nil {
		return Summary{}, err
	}
	return parseClientHello(msg)
}

// Message returns the ClientHello handshake message (its 4-byte header
// included) carried by raw: TLS handshake record(s) as Capture returns
// them, or the bare message. It checks the framing as strictly as
// Summarize but not the message body. The result does not alias raw.
func Message(raw []byte) ([]byte, error) {
	return handshakeMessage(raw)
}

func notHello(format string, args ...any) error {
	return fmt.Errorf("fingerprint: %s: %w", fmt.Sprintf(format, args...), ErrNotClientHello)
}

// handshakeMessage returns the ClientHello handshake message (header
// included) held in raw, which is either a sequence of handshake records
// or the bare message. The result does not alias raw.
func handshakeMessage(raw []byte) ([]byte, error) {
	if len(raw) > MaxHelloSize {
		return nil, fmt.Errorf("fingerprint: %d bytes: %w", len(raw), ErrTooLarge)
	}
	if len(raw) == 0 {
		return nil, notHello("empty input")
	}
	if raw[0] == typeClientHello {
		if err := checkMessageHeader(raw); err != nil {
			return nil, err
		}
		n := messageLen(raw)
		if len(raw) != n {
			return nil, notHello("message length %d, have %d bytes", n, len(raw))
		}
		return slices.Clone(raw), nil
	}
	var msg []byte
	rest := raw
	for len(rest) > 0 {
		payload, next, err := splitRecord(rest)
		if err != nil {
			return nil, err
		}
		rest = next
		msg = append(msg, payload...)
		if err := checkMessageHeader(msg); err != nil {
			return nil, err
		}
		if n := messageLen(msg); n >= 0 && len(msg) >= n {
			if len(msg) > n || len(rest) > 0 {
				return nil, notHello("data after the clienthello")
			}
			return msg, nil
		}
	}
	return nil, notHello("truncated clienthello")
}

// splitRecord splits one TLS handshake record off the front of b.
func splitRecord(b []byte) (payload, rest []byte, err error) {
	if len(b) < recordHeaderLen {
		return nil, nil, notHello("truncated record header")
	}
	if err := checkRecordHeader(b[:recordHeaderLen]); err != nil {
		return nil, nil, err
	}
	n := int(b[3])<<8 | int(b[4])
	if len(b) < recordHeaderLen+n {
		return nil, nil, notHello("truncated record")
	}
	return b[recordHeaderLen : recordHeaderLen+n], b[recordHeaderLen+n:], nil
}

// checkRecordHeader checks a 5-byte record header for a plaintext
// handshake record.
func checkRecordHeader(h []byte) error {
	if h[0] != recordTypeHandshake {
		return notHello("record type %d", h[0])
	}
	if h[1] != 3 || h[2] > 4 {
		return notHello("record version %#04x", int(h[1])<<8|int(h[2]))
	}
	n := int(h[3])<<8 | int(h[4])
	if n == 0 || n > maxRecordPayload {
		return notHello("record length %d", n)
	}
	return nil
}

// checkMessageHeader checks as much of the handshake header as msg holds.
func checkMessageHeader(msg []byte) error {
	if len(msg) >= 1 && msg[0] != typeClientHello {
		return notHello("handshake type %d", msg[0])
	}
	if n := messageLen(msg); n > MaxHelloSize-recordHeaderLen {
		return fmt.Errorf("fingerprint: clienthello of %d bytes: %w", n, ErrTooLarge)
	}
	return nil
}

// messageLen is the whole length of the handshake message whose header
// starts msg, or -1 if msg holds less than the header.
func messageLen(msg []byte) int {
	if len(msg) < handshakeHeaderLen {
		return -1
	}
	return handshakeHeaderLen + (int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3]))
}

// parseClientHello parses a whole ClientHello handshake message. A
// summary is strict: on top of tlshello's framing it refuses empty lists
// and names and a second host name.
func parseClientHello(msg []byte) (Summary, error) {
	p, err := tlshello.Parse(msg)
	if err != nil {
		return Summary{}, fmt.Errorf("fingerprint: %w: %w", err, ErrNotClientHello)
	}
	s := Summary{Version: p.Version, CipherSuites: p.CipherSuites}
	ungreaseAll(s.CipherSuites)
	for typ, data := range p.Extensions() {
		s.Extensions = append(s.Extensions, ungrease(typ))
		if err := s.parseExtension(typ, data); err != nil {
			return Summary{}, err
		}
	}
	return s, nil
}

// parseExtension fills the Summary fields that come from extension typ.
func (s *Summary) parseExtension(typ uint16, data []byte) error {
	switch typ {
	case extServerName:
		names, ok := tlshello.ServerNames(data)
		if !ok || len(names) == 0 {
			return notHello("bad server_name")
		}
		for _, n := range names {
			if n.Name == "" {
				return notHello("bad server_name entry")
			}
			if n.Type == 0 {
				if s.ServerName != "" {
					return notHello("two host names in server_name")
				}
				s.ServerName = n.Name
			}
		}
	case extALPN:
		protos, ok := tlshello.ALPN(data)
		if !ok || len(protos) == 0 {
			return notHello("bad alpn")
		}
		if slices.Contains(protos, "") {
			return notHello("bad alpn protocol")
		}
		s.ALPN = protos
	case extSupportedGrps:
		v, ok := readUint16List(data, false)
		if !ok {
			return notHello("bad supported_groups")
		}
		s.SupportedGroups = v
	case extSigAlgs:
		v, ok := readUint16List(data, false)
		if !ok {
			return notHello("bad signature_algorithms")
		}
		s.SignatureAlgorithms = v
	case extSupportedVers:
		v, ok := readUint16List(data, true)
		if !ok {
			return notHello("bad supported_versions")
		}
		s.SupportedVersions = v
	case extKeyShare:
		shares, ok := tlshello.KeyShares(data)
		if !ok {
			return notHello("bad key_share")
		}
		s.KeyShareGroups = make([]uint16, 0, len(shares))
		for _, k := range shares {
			if k.KeyLen == 0 {
				return notHello("bad key_share entry")
			}
			s.KeyShareGroups = append(s.KeyShareGroups, ungrease(k.Group))
		}
	}
	return nil
}

// readUint16List reads a non-empty list of uint16 (tlshello.Uint16List)
// with GREASE normalised.
func readUint16List(data []byte, short bool) ([]uint16, bool) {
	v, ok := tlshello.Uint16List(data, short)
	if !ok || len(v) == 0 {
		return nil, false
	}
	ungreaseAll(v)
	return v, true
}

func ungreaseAll(v []uint16) {
	for i, x := range v {
		v[i] = ungrease(x)
	}
}
