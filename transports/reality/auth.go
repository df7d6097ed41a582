package reality

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Sizes and labels of the authentication construction; see the package
// doc for the diagram.
const (
	authVersion   = 1
	randomLen     = 32
	sessionIDLen  = 32
	plainLen      = 16 // version, reserved, timestamp, short id
	tagLen        = 16
	nonceLen      = 12
	kdfInfo       = "commucat reality v1"
	certMACLabel  = "commucat reality v1 server"
	derivedKeyLen = 64 // 32 bytes session id key, 32 bytes certificate MAC key
)

// ShortIDLen is the size of the short id (parameter "sid", up to 16 hex
// digits; a shorter one is zero-padded).
const ShortIDLen = 8

// DefaultMaxSkew is how far a client's timestamp may be from the gateway's
// clock, either way, if ServerConfig.MaxSkew is zero.
const DefaultMaxSkew = 2 * time.Minute

// errAuth is why a ClientHello did not authenticate. It never leaves the
// package: an unauthenticated hello is relayed to the cover, not refused.
var errAuth = errors.New("reality: clienthello not authenticated")

// keys are the per-connection secrets derived from the X25519 shared
// secret of the client's key share and the gateway's static key.
type keys struct {
	session [32]byte // seals the session id
	certMAC [32]byte // binds the server certificate
}

// wipe clears k.
func (k *keys) wipe() {
	clear(k.session[:])
	clear(k.certMAC[:])
}

// deriveKeys computes the connection's keys from the client's key-share
// private key and the gateway's public key (client side) or the gateway's
// private key and the client's key-share public key (server side).
func deriveKeys(priv *ecdh.PrivateKey, pub *ecdh.PublicKey, clientRandom []byte) (*keys, error) {
	shared, err := priv.ECDH(pub) // fails for an all-zero result
	if err != nil {
		return nil, fmt.Errorf("reality: x25519: %w", err)
	}
	defer clear(shared)
	okm, err := hkdf.Key(sha256.New, shared, clientRandom, kdfInfo, derivedKeyLen)
	if err != nil {
		return nil, fmt.Errorf("reality: hkdf: %w", err)
	}
	defer clear(okm)
	k := new(keys)
	copy(k.session[:], okm[:32])
	copy(k.certMAC[:], okm[32:])
	return k, nil
}

func (k *keys) aead() (cipher.AEAD, error) {
	block, err := aes.NewCipher(k.session[:])
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// sealSessionID returns the 32-byte session id: AES-256-GCM over
// version | 0 0 0 | unix seconds | short id, with nonce random[:12] and
// the ClientHello message (session id zeroed) as additional data.
func (k *keys) sealSessionID(random []byte, now time.Time, sid [ShortIDLen]byte, aad []byte) ([]byte, error) {
	a, err := k.aead()
	if err != nil {
		return nil, fmt.Errorf("reality: seal session id: %w", err)
	}
	var plain [plainLen]byte
	plain[0] = authVersion
	binary.BigEndian.PutUint32(plain[4:8], uint32(now.Unix()))
	copy(plain[8:], sid[:])
	return a.Seal(make([]byte, 0, sessionIDLen), random[:nonceLen], plain[:], aad), nil
}

// openSessionID checks a session id sealed by sealSessionID and returns
// its timestamp. Every failure is errAuth.
func (k *keys) openSessionID(random, sessionID []byte, sid [ShortIDLen]byte, aad []byte) (time.Time, error) {
	if len(sessionID) != sessionIDLen || len(random) != randomLen {
		return time.Time{}, errAuth
	}
	a, err := k.aead()
	if err != nil {
		return time.Time{}, errAuth
	}
	plain, err := a.Open(nil, random[:nonceLen], sessionID, aad)
	if err != nil || len(plain) != plainLen || plain[0] != authVersion || plain[1]|plain[2]|plain[3] != 0 {
		return time.Time{}, errAuth
	}
	if subtle.ConstantTimeCompare(plain[8:], sid[:]) != 1 {
		return time.Time{}, errAuth
	}
	return time.Unix(int64(binary.BigEndian.Uint32(plain[4:8])), 0), nil
}

// certMAC binds a server certificate's public key (its DER
// SubjectPublicKeyInfo) to this connection: HMAC-SHA256 keyed with the
// certificate MAC key over the label, the client random and the key.
func (k *keys) certMACOf(random, spki []byte) []byte {
	m := hmac.New(sha256.New, k.certMAC[:])
	m.Write([]byte(certMACLabel))
	m.Write(random)
	m.Write(spki)
	return m.Sum(nil)
}

// replayCache remembers the session ids of accepted hellos until their
// timestamps leave the skew window, so that a recorded hello is accepted
// at most once. It holds at most max entries: when full, it forgets the
// entry accepted first and from then on refuses every hello whose
// timestamp is not newer than that entry's (floor), so that eviction
// never reopens a replay. The floor never passes the second before the
// present: a flood stamped at the far end of the skew window (which
// anyone holding an invite can send) would otherwise raise it there and
// lock every honest client out for minutes. The cost is that an entry
// evicted while its timestamp is still ahead of that second is open to
// replay, which takes max verified hellos within about a second. It is
// safe for concurrent use.
type replayCache struct {
	mu    sync.Mutex
	max   int
	skew  time.Duration
	seen  map[[sessionIDLen]byte]int64 // session id -> unix seconds
	order [][sessionIDLen]byte         // acceptance order
	floor int64                        // refuse timestamps <= floor
}

func newReplayCache(max int, skew time.Duration) *replayCache {
	return &replayCache{max: max, skew: skew, seen: make(map[[sessionIDLen]byte]int64), floor: -1 << 62}
}

// check reports whether a hello with session id id and timestamp ts is
// fresh at time now (within the skew and not seen before), and if so
// records it.
func (r *replayCache) check(id []byte, ts, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	// Forget entries from the front whose timestamps left the window: a
	// replay of them fails the timestamp check. Acceptance order is only
	// roughly timestamp order, so an entry may stay longer than needed,
	// never shorter.
	limit := now.Add(-r.skew).Unix()
	for len(r.order) > 0 && r.seen[r.order[0]] < limit {
		delete(r.seen, r.order[0])
		r.order = r.order[1:]
	}
	if ts.Before(now.Add(-r.skew)) || ts.After(now.Add(r.skew)) || ts.Unix() <= r.floor {
		return false
	}
	var key [sessionIDLen]byte
	copy(key[:], id)
	if _, dup := r.seen[key]; dup {
		return false
	}
	for len(r.order) >= r.max {
		first := r.order[0]
		// The floor never passes the second before now: hellos stamped
		// later (clocks ahead, or a flood stamped at the window's far
		// end) would otherwise raise it above every honest hello for
		// up to the whole skew. An entry evicted while still stamped
		// after that second could be replayed; at the cache's size that
		// takes a flood far beyond what the gateway can verify.
		r.floor = max(r.floor, min(r.seen[first], now.Unix()-1))
		delete(r.seen, first)
		r.order = r.order[1:]
	}
	r.seen[key] = ts.Unix()
	r.order = append(r.order, key)
	return true
}

// len returns the number of remembered session ids.
func (r *replayCache) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}
