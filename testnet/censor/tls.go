package censor

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/commucat/commucat/internal/tlshello"
)

// TLS extension numbers the parser reads.
const (
	extServerName     uint16 = 0
	extSupportedGrps  uint16 = 10
	extECPointFormats uint16 = 11
	extSigAlgs        uint16 = 13
	extALPN           uint16 = 16
	extSupportedVers  uint16 = 43
)

// ClientHello is what a censor reads from a TLS ClientHello: the fields
// that SNI blocking and JA3/JA4 fingerprinting look at. Lists keep their
// wire order and their GREASE values (RFC 8701); the fingerprint methods
// drop GREASE as their specifications say. A ClientHello is a value; its
// methods are safe for concurrent use.
type ClientHello struct {
	// Version is the legacy_version field (0x0303 for TLS 1.2 and 1.3).
	Version uint16
	// CipherSuites are the offered cipher suites.
	CipherSuites []uint16
	// Extensions are the extension types, in wire order.
	Extensions []uint16
	// ServerName is the first host_name of the first server_name
	// extension, or "".
	ServerName string
	// HasServerName reports whether a server_name extension is present,
	// whatever it holds.
	HasServerName bool
	// ALPN are the protocols of the first ALPN extension.
	ALPN []string
	// SupportedGroups are the supported_groups (elliptic curves).
	SupportedGroups []uint16
	// ECPointFormats are the ec_point_formats.
	ECPointFormats []uint8
	// SignatureAlgorithms are the signature_algorithms.
	SignatureAlgorithms []uint16
	// SupportedVersions are the supported_versions.
	SupportedVersions []uint16
}

// IsGREASE reports whether v is one of the RFC 8701 GREASE values
// (0x0a0a, 0x1a1a, ... 0xfafa).
func IsGREASE(v uint16) bool {
	return v&0x0f0f == 0x0a0a && v>>8 == v&0xff
}

func badHello(format string, args ...any) error {
	return fmt.Errorf("censor: clienthello: %s: %w", fmt.Sprintf(format, args...), ErrNotClientHello)
}

// ParseClientHello parses one ClientHello handshake message: the 4-byte
// handshake header (type 1, 24-bit length) and the body, without TLS
// record framing (ReassembleClientHello strips that). Bytes after the
// message are an error. Extension bodies the fingerprints need are checked
// strictly; other extensions are only framed. Errors wrap
// ErrNotClientHello. It never panics.
func ParseClientHello(msg []byte) (*ClientHello, error) {
	p, err := tlshello.Parse(msg)
	if err != nil {
		return nil, fmt.Errorf("censor: clienthello: %w: %w", err, ErrNotClientHello)
	}
	h := &ClientHello{Version: p.Version, CipherSuites: p.CipherSuites}
	if p.HasExtensions {
		h.Extensions = make([]uint16, 0, 24)
	}
	for typ, data := range p.Extensions() {
		h.Extensions = append(h.Extensions, typ)
		if err := h.parseExtension(typ, data); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// parseExtension fills the fields that come from extension typ. A censor
// takes what it finds: empty lists and names pass.
func (h *ClientHello) parseExtension(typ uint16, data []byte) error {
	var ok bool
	switch typ {
	case extServerName:
		h.HasServerName = true
		var names []tlshello.ServerName
		if names, ok = tlshello.ServerNames(data); !ok {
			return badHello("server_name")
		}
		for _, n := range names {
			if n.Type == 0 && h.ServerName == "" {
				h.ServerName = n.Name
			}
		}
	case extALPN:
		if h.ALPN, ok = tlshello.ALPN(data); !ok {
			return badHello("alpn")
		}
	case extSupportedGrps:
		if h.SupportedGroups, ok = tlshello.Uint16List(data, false); !ok {
			return badHello("supported_groups")
		}
	case extSigAlgs:
		if h.SignatureAlgorithms, ok = tlshello.Uint16List(data, false); !ok {
			return badHello("signature_algorithms")
		}
	case extSupportedVers:
		if h.SupportedVersions, ok = tlshello.Uint16List(data, true); !ok {
			return badHello("supported_versions")
		}
	case extECPointFormats:
		if h.ECPointFormats, ok = tlshello.ECPointFormats(data); !ok {
			return badHello("ec_point_formats")
		}
	}
	return nil
}

// JA3 returns the JA3 string of h (Althouse et al., Salesforce, 2017):
//
//	SSLVersion,Ciphers,Extensions,EllipticCurves,EllipticCurvePointFormats
//
// each field a list of decimal values joined by "-", in wire order, with
// every GREASE value removed from the cipher, extension and curve lists;
// an absent list is an empty field.
func (h *ClientHello) JA3() string {
	var b strings.Builder
	b.Grow(256)
	b.WriteString(strconv.Itoa(int(h.Version)))
	for _, list := range [][]uint16{h.CipherSuites, h.Extensions, h.SupportedGroups} {
		b.WriteByte(',')
		first := true
		for _, v := range list {
			if IsGREASE(v) {
				continue
			}
			if !first {
				b.WriteByte('-')
			}
			first = false
			b.WriteString(strconv.Itoa(int(v)))
		}
	}
	b.WriteByte(',')
	for i, v := range h.ECPointFormats {
		if i > 0 {
			b.WriteByte('-')
		}
		b.WriteString(strconv.Itoa(int(v)))
	}
	return b.String()
}

// JA3Hash returns the MD5 of the JA3 string in lower-case hex: the JA3
// fingerprint.
func (h *ClientHello) JA3Hash() string {
	sum := md5.Sum([]byte(h.JA3()))
	return hex.EncodeToString(sum[:])
}

// JA4Transport is the first character of a JA4 fingerprint: the transport
// the ClientHello travelled over.
type JA4Transport byte

// JA4 transports.
const (
	JA4TCP  JA4Transport = 't'
	JA4QUIC JA4Transport = 'q'
	JA4DTLS JA4Transport = 'd'
)

// JA4 returns the JA4 fingerprint of h (FoxIO, JA4+ technical details,
// "JA4: TLS Client Fingerprinting"), e.g.
// t13d1516h2_8daaf6152771_e5627efa2ab1:
//
//	JA4_a: transport, TLS version (highest non-GREASE supported_versions
//	       entry, else legacy_version), "d" if a server_name extension is
//	       present else "i", cipher count and extension count (GREASE
//	       excluded, two digits, capped at 99), first and last character
//	       of the first ALPN value ("00" if none; its hex digits if either
//	       end is not alphanumeric)
//	JA4_b: first 12 hex digits of SHA-256 over the non-GREASE ciphers as
//	       4-digit lower-case hex, sorted, comma-separated
//	JA4_c: same over the sorted non-GREASE extensions without SNI (0000)
//	       and ALPN (0010), then "_" and the signature algorithms in wire
//	       order (no "_" if there are none)
//
// An empty list hashes to twelve zeros.
func (h *ClientHello) JA4(t JA4Transport) string { return h.ja4(t, false, false) }

// JA4R returns JA4_r, the raw (unhashed) form of JA4 with sorted lists.
func (h *ClientHello) JA4R(t JA4Transport) string { return h.ja4(t, false, true) }

// JA4O returns JA4_o: JA4 over the lists in wire order, SNI and ALPN
// extensions included.
func (h *ClientHello) JA4O(t JA4Transport) string { return h.ja4(t, true, false) }

// JA4RO returns JA4_ro, the raw form of JA4_o.
func (h *ClientHello) JA4RO(t JA4Transport) string { return h.ja4(t, true, true) }

func (h *ClientHello) ja4(t JA4Transport, original, raw bool) string {
	ciphers := withoutGREASE(h.CipherSuites)
	exts := withoutGREASE(h.Extensions)
	var b strings.Builder
	b.Grow(128)
	b.WriteByte(byte(t))
	b.WriteString(ja4Version(h))
	if h.HasServerName {
		b.WriteByte('d')
	} else {
		b.WriteByte('i')
	}
	for _, n := range [2]int{min(len(ciphers), 99), min(len(exts), 99)} {
		b.WriteByte(byte('0' + n/10))
		b.WriteByte(byte('0' + n%10))
	}
	b.WriteString(ja4ALPN(h.ALPN))
	b.WriteByte('_')

	if !original {
		slices.Sort(ciphers)
		kept := exts[:0]
		for _, e := range exts {
			if e != extServerName && e != extALPN {
				kept = append(kept, e)
			}
		}
		exts = kept
		slices.Sort(exts)
	}
	cs := hexList(ciphers)
	es := hexList(exts)
	if len(exts) > 0 {
		if sigs := withoutGREASE(h.SignatureAlgorithms); len(sigs) > 0 {
			es += "_" + hexList(sigs)
		}
	}
	if raw {
		b.WriteString(cs)
		b.WriteByte('_')
		b.WriteString(es)
		return b.String()
	}
	b.WriteString(ja4Hash(cs, len(ciphers) == 0))
	b.WriteByte('_')
	b.WriteString(ja4Hash(es, len(exts) == 0))
	return b.String()
}

func withoutGREASE(v []uint16) []uint16 {
	out := make([]uint16, 0, len(v))
	for _, x := range v {
		if !IsGREASE(x) {
			out = append(out, x)
		}
	}
	return out
}

func hexList(v []uint16) string {
	const digits = "0123456789abcdef"
	b := make([]byte, 0, len(v)*5)
	for i, x := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, digits[x>>12], digits[x>>8&0xf], digits[x>>4&0xf], digits[x&0xf])
	}
	return string(b)
}

func ja4Hash(s string, empty bool) string {
	if empty {
		return "000000000000"
	}
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:6])
}

func ja4Version(h *ClientHello) string {
	v := h.Version
	var best uint16
	for _, x := range h.SupportedVersions {
		if !IsGREASE(x) && x > best {
			best = x
		}
	}
	if best != 0 {
		v = best
	}
	switch v {
	case 0x0304:
		return "13"
	case 0x0303:
		return "12"
	case 0x0302:
		return "11"
	case 0x0301:
		return "10"
	case 0x0300:
		return "s3"
	case 0x0002:
		return "s2"
	case 0xfeff:
		return "d1"
	case 0xfefd:
		return "d2"
	case 0xfefc:
		return "d3"
	}
	return "00"
}

func ja4ALPN(alpn []string) string {
	if len(alpn) == 0 || alpn[0] == "" {
		return "00"
	}
	a := alpn[0]
	first, last := a[0], a[len(a)-1]
	if isAlnum(first) && isAlnum(last) {
		return string([]byte{first, last})
	}
	x := hex.EncodeToString([]byte(a))
	return string([]byte{x[0], x[len(x)-1]})
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z'
}
