// Package tlshello reads a TLS ClientHello handshake message (RFC 8446
// §4.1.2) for the two packages that look at one: transports/fingerprint,
// which summarises the hellos the product sends, and testnet/censor, which
// reads them as a censor would.
//
// Parse checks the framing both agree on and leaves extension bodies raw;
// the body readers (ServerNames, ALPN, Uint16List, ECPointFormats,
// KeyShares) check only their own framing and return what they read. Each
// caller adds its own checks on top: a fingerprint summary refuses the
// empty lists and names a censor lets pass. Nothing here panics, whatever
// the input. Only the extension bodies alias the input.
package tlshello

import (
	"errors"
	"fmt"
	"iter"
	"slices"

	"golang.org/x/crypto/cryptobyte"
)

// typeClientHello is the handshake type of a ClientHello.
const typeClientHello = 1

// Hello is a ClientHello split into its fields. The random, the session
// ID and the compression methods are checked but not kept.
type Hello struct {
	// Version is the legacy_version field (0x0303 for TLS 1.2 and 1.3).
	Version uint16
	// CipherSuites are the offered cipher suites, at least one.
	CipherSuites []uint16
	// HasExtensions reports whether the message has an extensions block,
	// which may be empty.
	HasExtensions bool
	exts          []byte // the extensions block, its framing checked
}

func bad(what string) error {
	return errors.New("tlshello: bad " + what)
}

// Parse parses one ClientHello handshake message: the 4-byte handshake
// header (type 1, 24-bit length) and the body, without TLS record
// framing. It requires a 32-byte random, a session ID of at most 32
// bytes, a non-empty even-length cipher suite list, at least one
// compression method, and, if there are extensions, a block that frames
// them exactly and fills the rest of the message, with no type twice.
// Bytes after the message are an error. The error names the field at
// fault.
func Parse(msg []byte) (Hello, error) {
	in := cryptobyte.String(msg)
	var typ uint8
	var body cryptobyte.String
	if !in.ReadUint8(&typ) || typ != typeClientHello {
		return Hello{}, bad("handshake type")
	}
	if !in.ReadUint24LengthPrefixed(&body) || !in.Empty() {
		return Hello{}, bad("handshake length")
	}
	var h Hello
	var sessionID, suites, compression cryptobyte.String
	if !body.ReadUint16(&h.Version) || !body.Skip(32) ||
		!body.ReadUint8LengthPrefixed(&sessionID) || len(sessionID) > 32 {
		return Hello{}, bad("version, random or session id")
	}
	if !body.ReadUint16LengthPrefixed(&suites) || len(suites) == 0 || len(suites)%2 != 0 {
		return Hello{}, bad("cipher suites")
	}
	h.CipherSuites = readUint16s(suites)
	if !body.ReadUint8LengthPrefixed(&compression) || len(compression) == 0 {
		return Hello{}, bad("compression methods")
	}
	if body.Empty() {
		return h, nil
	}
	var exts cryptobyte.String
	if !body.ReadUint16LengthPrefixed(&exts) || !body.Empty() {
		return Hello{}, bad("extensions block")
	}
	h.HasExtensions, h.exts = true, exts
	var seen [1 << 16 / 64]uint64 // a bit per extension type
	for !exts.Empty() {
		var typ uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
			return Hello{}, bad("extension framing")
		}
		if seen[typ/64]&(1<<(typ%64)) != 0 {
			return Hello{}, fmt.Errorf("tlshello: extension %d twice", typ)
		}
		seen[typ/64] |= 1 << (typ % 64)
	}
	return h, nil
}

// Extensions yields the type and body of each extension, in wire order.
// A body aliases the message Parse read.
func (h Hello) Extensions() iter.Seq2[uint16, []byte] {
	return func(yield func(uint16, []byte) bool) {
		exts := cryptobyte.String(h.exts)
		for !exts.Empty() {
			var typ uint16
			var data cryptobyte.String
			if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) || !yield(typ, data) {
				return
			}
		}
	}
}

// readUint16s reads a list of even length.
func readUint16s(list cryptobyte.String) []uint16 {
	out := make([]uint16, 0, len(list)/2)
	for !list.Empty() {
		var v uint16
		list.ReadUint16(&v)
		out = append(out, v)
	}
	return out
}

// wholeList16 returns the body of the 2-byte-length list that fills data.
func wholeList16(data []byte) (cryptobyte.String, bool) {
	in := cryptobyte.String(data)
	var list cryptobyte.String
	if !in.ReadUint16LengthPrefixed(&list) || !in.Empty() {
		return nil, false
	}
	return list, true
}

// ServerName is one entry of a server_name extension.
type ServerName struct {
	// Type is the name_type; 0 is host_name, the only one defined.
	Type uint8
	Name string
}

// ServerNames reads a server_name extension body (RFC 6066 §3): a
// 2-byte-length list that fills data, of entries each a type byte and a
// 2-byte-length name. The list and the names may be empty. It reports
// false if the framing is wrong.
func ServerNames(data []byte) ([]ServerName, bool) {
	list, ok := wholeList16(data)
	if !ok {
		return nil, false
	}
	var out []ServerName
	for !list.Empty() {
		var n ServerName
		var name cryptobyte.String
		if !list.ReadUint8(&n.Type) || !list.ReadUint16LengthPrefixed(&name) {
			return nil, false
		}
		n.Name = string(name)
		out = append(out, n)
	}
	return out, true
}

// ALPN reads an application_layer_protocol_negotiation extension body
// (RFC 7301 §3.1): a 2-byte-length list that fills data, of 1-byte-length
// protocol names. The list (then nil) and the names may be empty. It
// reports false if the framing is wrong.
func ALPN(data []byte) ([]string, bool) {
	list, ok := wholeList16(data)
	if !ok {
		return nil, false
	}
	var out []string
	for !list.Empty() {
		var proto cryptobyte.String
		if !list.ReadUint8LengthPrefixed(&proto) {
			return nil, false
		}
		out = append(out, string(proto))
	}
	return out, true
}

// Uint16List reads a list of uint16 values that fills data after its
// length: two bytes of length for supported_groups and
// signature_algorithms, one (short) for supported_versions. The list may
// be empty; the result is never nil. It reports false if the framing is
// wrong or the length is odd.
func Uint16List(data []byte, short bool) ([]uint16, bool) {
	in := cryptobyte.String(data)
	var list cryptobyte.String
	var ok bool
	if short {
		ok = in.ReadUint8LengthPrefixed(&list)
	} else {
		ok = in.ReadUint16LengthPrefixed(&list)
	}
	if !ok || !in.Empty() || len(list)%2 != 0 {
		return nil, false
	}
	return readUint16s(list), true
}

// ECPointFormats reads an ec_point_formats extension body (RFC 8422
// §5.1.2): a 1-byte-length list of formats that fills data. The list may
// be empty; the result is never nil. It reports false if the framing is
// wrong.
func ECPointFormats(data []byte) ([]uint8, bool) {
	in := cryptobyte.String(data)
	var list cryptobyte.String
	if !in.ReadUint8LengthPrefixed(&list) || !in.Empty() {
		return nil, false
	}
	return slices.Clone([]uint8(list)), true
}

// KeyShare is one entry of a key_share extension.
type KeyShare struct {
	Group uint16
	// KeyLen is the length of the key_exchange field.
	KeyLen int
}

// KeyShares reads a key_share extension body (RFC 8446 §4.2.8): a
// 2-byte-length list that fills data, of entries each a group and a
// 2-byte-length key. The list (then nil) and the keys may be empty. It
// reports false if the framing is wrong.
func KeyShares(data []byte) ([]KeyShare, bool) {
	list, ok := wholeList16(data)
	if !ok {
		return nil, false
	}
	var out []KeyShare
	for !list.Empty() {
		var k KeyShare
		var key cryptobyte.String
		if !list.ReadUint16(&k.Group) || !list.ReadUint16LengthPrefixed(&key) {
			return nil, false
		}
		k.KeyLen = len(key)
		out = append(out, k)
	}
	return out, true
}
