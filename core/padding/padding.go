// Package padding draws the lengths that hide a session's opening from
// length-based detectors.
//
// TLS-in-TLS and similar detectors classify tunnels by the sizes of the
// first few inner messages: CommuCat's handshake messages carry a 1184-byte
// ML-KEM public key and a 1088-byte ciphertext, which would otherwise give
// every session the same telltale sizes. Each gateway therefore has its own
// padding Profile, derived from a random 16-byte seed that it generates once
// and publishes in its invites. The profile fixes, per gateway, a target
// length range for each handshake message and for each of the first
// Records records of a session; every handshake then draws fresh lengths
// uniformly from those ranges with crypto/rand. Two handshakes with one
// gateway differ in their lengths, and two gateways differ in their ranges,
// so no fixed length pattern is shared by all CommuCat traffic.
//
// A Profile is an immutable value, safe for concurrent use.
package padding

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// SeedSize is the length of a profile seed.
const SeedSize = 16

// Records is how many of a session's first records (per direction) are
// padded.
const Records = 6

// span is a length range [lo, hi].
type span struct{ lo, hi int }

// Profile is one gateway's padding profile.
type Profile struct {
	seed      [SeedSize]byte
	handshake [3]span       // messages 1, 2, 3: target total message length
	records   [Records]span // target plaintext length of records 0..Records-1
}

// ErrSeed is returned by Parse for a malformed seed.
var ErrSeed = errors.New("padding: bad seed")

// NewSeed returns a fresh random seed.
func NewSeed() ([SeedSize]byte, error) {
	var s [SeedSize]byte
	if _, err := rand.Read(s[:]); err != nil {
		return s, fmt.Errorf("padding: %w", err)
	}
	return s, nil
}

// New derives the profile of seed.
func New(seed [SeedSize]byte) Profile {
	p := Profile{seed: seed}
	// An expanding stream of numbers from the seed: SHA-256(seed || i).
	var i uint32
	next := func(n int) int {
		var in [SeedSize + 4]byte
		copy(in[:], seed[:])
		binary.BigEndian.PutUint32(in[SeedSize:], i)
		i++
		h := sha256.Sum256(in[:])
		return int(binary.BigEndian.Uint32(h[:4]) % uint32(n))
	}
	// Message 1 is at least 1250 bytes (ML-KEM key, timestamp, Noise
	// overhead), message 2 at least 1150, message 3 at least 100. The ranges
	// start above those and are a few hundred bytes wide.
	base := [3]int{1250, 1150, 100}
	for m := range p.handshake {
		lo := base[m] + next(700)
		p.handshake[m] = span{lo, lo + 150 + next(650)}
	}
	for r := range p.records {
		lo := 60 + next(900)
		p.records[r] = span{lo, lo + 100 + next(500)}
	}
	return p
}

// Seed returns the profile's seed.
func (p Profile) Seed() [SeedSize]byte { return p.seed }

// String encodes the seed as invites carry it: base64url without padding.
func (p Profile) String() string { return base64.RawURLEncoding.EncodeToString(p.seed[:]) }

// Parse decodes a seed written by String and derives its profile.
func Parse(s string) (Profile, error) {
	// Strict: a seed has exactly one encoding (no stray bits in the last
	// character, and no line breaks, which the decoder would skip).
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != SeedSize || strings.ContainsAny(s, "\r\n") {
		return Profile{}, fmt.Errorf("%w: want %d bytes in base64url", ErrSeed, SeedSize)
	}
	return New([SeedSize]byte(b)), nil
}

// uniform draws from [lo, hi] with crypto/rand. It never fails: should the
// system's randomness fail, it returns hi (padding then stays maximal,
// never absent).
func uniform(sp span) int {
	n, err := rand.Int(rand.Reader, big.NewInt(int64(sp.hi-sp.lo+1)))
	if err != nil {
		return sp.hi
	}
	return sp.lo + int(n.Int64())
}

// Handshake returns how many padding bytes to add to handshake message msg
// (1, 2 or 3) whose unpadded length is n: the distance to a length drawn
// from the profile's range for that message, or 0 if n already exceeds it.
// Its signature matches core/handshake's Pad hooks.
func (p Profile) Handshake(msg, n int) int {
	if msg < 1 || msg > 3 {
		return 0
	}
	return max(0, uniform(p.handshake[msg-1])-n)
}

// Record returns how many padding bytes to add to the record-th record of
// a session whose frames take n bytes; 0 from record Records on. Its
// signature matches core/session's Config.Pad.
func (p Profile) Record(record uint64, n int) int {
	if record >= Records {
		return 0
	}
	return max(0, uniform(p.records[record])-n)
}
