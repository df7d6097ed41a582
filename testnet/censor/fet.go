package censor

import (
	"errors"
	"fmt"
	"math/bits"
	"time"
)

// FET thresholds of Wu et al. 2023, Algorithm 1.
const (
	// fetPopLow10 and fetPopHigh10 are 10x the popcount-per-byte bounds
	// 3.4 and 4.6, so Ex1 compares integers: no float rounding at the
	// boundary.
	fetPopLow10  = 34
	fetPopHigh10 = 46
	// fetPrefixLen is how many leading bytes Ex2 requires printable.
	fetPrefixLen = 6
	// fetRunLen is the printable run Ex4 must exceed.
	fetRunLen = 20
)

// Defaults of FETRule.
const (
	// DefaultFETBlockProbability is the share of connections the GFW was
	// measured to block once the test fires: about 26% (Wu et al. 2023).
	DefaultFETBlockProbability = 0.26
	// DefaultFETResidual is how long the GFW kept blocking the 3-tuple
	// (client IP, server IP, server port) after a detection: 180 s.
	DefaultFETResidual = 180 * time.Second
)

// FETResult is the outcome of the fully-encrypted-traffic test on one
// payload: the measured quantities and which exemption of Algorithm 1
// each one triggers.
type FETResult struct {
	// Len is the payload length; an empty payload is exempt (there is no
	// data packet to judge).
	Len int
	// SetBits is the number of 1 bits in the payload.
	SetBits int
	// PrintablePrefix is the number of leading printable bytes
	// (0x20-0x7e), LongestRun the longest run of printable bytes and
	// Printable their count.
	PrintablePrefix, LongestRun, Printable int
	// Ex1: popcount per byte <= 3.4 or >= 4.6.
	Ex1 bool
	// Ex2: the first six bytes are printable.
	Ex2 bool
	// Ex3: more than 50% of the bytes are printable.
	Ex3 bool
	// Ex4: more than 20 contiguous printable bytes.
	Ex4 bool
	// Ex5: the payload starts like TLS ([\x16-\x17]\x03[\x00-\x09]) or an
	// HTTP request ("GET ", "PUT ", "POST ", "HEAD ").
	Ex5 bool
}

// PopcountPerByte is the average number of set bits per byte.
func (r FETResult) PopcountPerByte() float64 {
	if r.Len == 0 {
		return 0
	}
	return float64(r.SetBits) / float64(r.Len)
}

// Exempt reports whether any exemption applies (or the payload is empty):
// the GFW lets such a connection pass.
func (r FETResult) Exempt() bool {
	return r.Len == 0 || r.Ex1 || r.Ex2 || r.Ex3 || r.Ex4 || r.Ex5
}

// Reason names the first exemption that applies, in Algorithm 1's order
// ("ex1" .. "ex5"), "empty", or "" when the payload is not exempt.
func (r FETResult) Reason() string {
	switch {
	case r.Len == 0:
		return "empty"
	case r.Ex1:
		return "ex1"
	case r.Ex2:
		return "ex2"
	case r.Ex3:
		return "ex3"
	case r.Ex4:
		return "ex4"
	case r.Ex5:
		return "ex5"
	}
	return ""
}

// printable reports whether c is printable ASCII as the paper defines it:
// 0x20 to 0x7e.
func printable(c byte) bool { return c >= 0x20 && c <= 0x7e }

// FET runs the GFW's fully-encrypted-traffic test, Algorithm 1 of Wu et
// al., "How the Great Firewall of China Detects and Blocks Fully Encrypted
// Traffic" (USENIX Security 2023), on payload, the first data packet a
// client sends on a TCP connection. The exemptions, in the paper's order
// and with its definitions (§4.1 for Ex1, §4.2 for Ex2-Ex4, §4.3 for Ex5):
//
//	Ex1  popcount(pkt)/len(pkt) <= 3.4 or >= 4.6
//	Ex2  the first six bytes of pkt are in [0x20, 0x7e]
//	Ex3  more than 50% of pkt's bytes are in [0x20, 0x7e]
//	Ex4  more than 20 contiguous bytes of pkt are in [0x20, 0x7e]
//	Ex5  pkt matches the TLS fingerprint [\x16-\x17]\x03[\x00-\x09] or
//	     the HTTP fingerprint "GET ", "PUT ", "POST ", "HEAD "
//
// A payload no exemption covers is "fully encrypted". The authors'
// reference script (usenixsecurity23-artifact, utils/detect.py) accepts
// \x00-\x0f as the third TLS byte; this follows the paper's \x00-\x09.
// FET is one pass over the payload with no allocation.
func FET(payload []byte) FETResult {
	r := FETResult{Len: len(payload)}
	if len(payload) == 0 {
		return r
	}
	run := 0
	prefix := true
	for _, c := range payload {
		r.SetBits += bits.OnesCount8(c)
		if printable(c) {
			r.Printable++
			run++
			if prefix {
				r.PrintablePrefix++
			}
			if run > r.LongestRun {
				r.LongestRun = run
			}
		} else {
			run = 0
			prefix = false
		}
	}
	r.Ex1 = r.SetBits*10 <= fetPopLow10*r.Len || r.SetBits*10 >= fetPopHigh10*r.Len
	r.Ex2 = r.PrintablePrefix >= fetPrefixLen
	r.Ex3 = r.Printable*2 > r.Len
	r.Ex4 = r.LongestRun > fetRunLen
	r.Ex5 = fetProtocolPrefix(payload)
	return r
}

// fetProtocolPrefix is Ex5: the TLS and HTTP fingerprints of §4.3.
func fetProtocolPrefix(b []byte) bool {
	if len(b) >= 3 && (b[0] == 0x16 || b[0] == 0x17) && b[1] == 0x03 && b[2] <= 0x09 {
		return true
	}
	for _, p := range [...]string{"GET ", "PUT ", "POST ", "HEAD "} {
		if len(b) >= len(p) && string(b[:len(p)]) == p {
			return true
		}
	}
	return false
}

// Random is the source of a rule's random choices: a seeded PRNG, so a
// testnet run repeats exactly. *math/rand/v2.Rand satisfies it.
type Random interface {
	// Float64 returns a number in [0, 1).
	Float64() float64
}

// ErrConfig is wrapped by the Validate errors of rule parameters.
var ErrConfig = errors.New("censor: bad rule parameters")

// FETRule holds the parameters of the GFW's fully-encrypted-traffic
// blocking (Wu et al. 2023): the test of FET on the first client data
// packet, blocking of a detected connection with some probability, and
// residual blocking of the connection's 3-tuple (client IP, server IP,
// server port). The zero value is the measured behaviour. Scoping to
// server address ranges (the GFW targeted popular data centres) and to
// TCP is the profile's job. A FETRule is a value, safe for concurrent
// use; the Random passed to Decide need not be.
type FETRule struct {
	// BlockProbability is the chance that a connection the test flags is
	// blocked; if zero, DefaultFETBlockProbability. Use 1 for a
	// deterministic censor.
	BlockProbability float64 `yaml:"block_probability"`
	// Residual is how long the 3-tuple stays blocked after a block; if
	// zero, DefaultFETResidual.
	Residual time.Duration `yaml:"residual"`
}

// Validate checks the parameters.
func (r FETRule) Validate() error {
	if r.BlockProbability < 0 || r.BlockProbability > 1 {
		return fmt.Errorf("censor: fet: block_probability %v outside [0, 1]: %w", r.BlockProbability, ErrConfig)
	}
	if r.Residual < 0 {
		return fmt.Errorf("censor: fet: residual %v is negative: %w", r.Residual, ErrConfig)
	}
	return nil
}

// FETDecision is what FETRule.Decide concludes for one connection.
type FETDecision struct {
	// Result is the test's outcome.
	Result FETResult
	// Block reports whether to block the connection: the payload is not
	// exempt and the random draw fell under BlockProbability.
	Block bool
	// Residual is how long to keep blocking the 3-tuple when Block is
	// set.
	Residual time.Duration
}

// Decide tests the first data packet of a client's TCP connection and
// draws, from rnd, whether to block it. rnd is consulted only for a
// payload the test flags, so exempt traffic does not shift the random
// sequence.
func (r FETRule) Decide(firstPayload []byte, rnd Random) FETDecision {
	d := FETDecision{Result: FET(firstPayload)}
	if d.Result.Exempt() {
		return d
	}
	p := r.BlockProbability
	if p == 0 {
		p = DefaultFETBlockProbability
	}
	if rnd.Float64() < p {
		d.Block = true
		d.Residual = r.Residual
		if d.Residual == 0 {
			d.Residual = DefaultFETResidual
		}
	}
	return d
}
