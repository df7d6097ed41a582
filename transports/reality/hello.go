package reality

import (
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"

	"github.com/commucat/commucat/transports/fingerprint"
)

// TLS numbers the gateway reads from a ClientHello.
const (
	extServerName        = 0
	extSupportedVersions = 43
	extKeyShare          = 51
	groupX25519          = 29
	versionTLS13         = 0x0304
	x25519KeyLen         = 32
)

// errHello is wrapped by parseHello's errors. Like errAuth it never leaves
// the package: such a hello goes to the cover.
var errHello = errors.New("reality: clienthello unusable")

// clientHello is what the gateway needs from a ClientHello to check its
// authenticator.
type clientHello struct {
	random     []byte // 32 bytes
	sessionID  []byte // 32 bytes, the sealed authenticator
	x25519     []byte // the X25519 key share, 32 bytes
	serverName string
	tls13      bool   // supported_versions offers TLS 1.3
	aad        []byte // the handshake message with the session id zeroed
}

// parseHello parses the ClientHello carried by raw (records or message).
// It requires a 32-byte session id and a standalone X25519 key share; the
// rest is checked as strictly as fingerprint.Summarize does.
func parseHello(raw []byte) (*clientHello, error) {
	msg, err := fingerprint.Message(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errHello, err)
	}
	if _, err := fingerprint.Summarize(msg); err != nil {
		return nil, fmt.Errorf("%w: %w", errHello, err)
	}
	h := new(clientHello)
	in := cryptobyte.String(msg[4:]) // Message checked the header
	var version uint16
	var sessionID, suites, compression, exts cryptobyte.String
	if !in.ReadUint16(&version) || !in.ReadBytes(&h.random, randomLen) ||
		!in.ReadUint8LengthPrefixed(&sessionID) ||
		!in.ReadUint16LengthPrefixed(&suites) || !in.ReadUint8LengthPrefixed(&compression) ||
		!in.ReadUint16LengthPrefixed(&exts) {
		return nil, fmt.Errorf("%w: no extensions", errHello)
	}
	if len(sessionID) != sessionIDLen {
		return nil, fmt.Errorf("%w: session id of %d bytes", errHello, len(sessionID))
	}
	h.sessionID = sessionID
	for !exts.Empty() {
		var typ uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
			return nil, fmt.Errorf("%w: bad extension", errHello) // not reached after Summarize
		}
		switch typ {
		case extServerName:
			var list cryptobyte.String
			data.ReadUint16LengthPrefixed(&list)
			for !list.Empty() {
				var nameType uint8
				var name cryptobyte.String
				if !list.ReadUint8(&nameType) || !list.ReadUint16LengthPrefixed(&name) {
					break
				}
				if nameType == 0 {
					h.serverName = string(name)
				}
			}
		case extSupportedVersions:
			var list cryptobyte.String
			data.ReadUint8LengthPrefixed(&list)
			for !list.Empty() {
				var v uint16
				if !list.ReadUint16(&v) {
					break
				}
				h.tls13 = h.tls13 || v == versionTLS13
			}
		case extKeyShare:
			var list cryptobyte.String
			data.ReadUint16LengthPrefixed(&list)
			for !list.Empty() {
				var group uint16
				var key cryptobyte.String
				if !list.ReadUint16(&group) || !list.ReadUint16LengthPrefixed(&key) {
					break
				}
				if group == groupX25519 && h.x25519 == nil && len(key) == x25519KeyLen {
					h.x25519 = key
				}
			}
		}
	}
	if h.x25519 == nil {
		return nil, fmt.Errorf("%w: no x25519 key share", errHello)
	}
	// The session id starts after the 4-byte header, the 2-byte version,
	// the random and the session id's length byte.
	const sidOffset = 4 + 2 + randomLen + 1
	h.aad = append([]byte(nil), msg...)
	clear(h.aad[sidOffset : sidOffset+sessionIDLen])
	return h, nil
}
