package fec

import (
	"fmt"

	"github.com/klauspost/reedsolomon"
)

// maxCodes bounds a codes cache: partial blocks and adaptation use many
// (k, m) pairs, and a peer chooses the pairs a Decoder sees.
const maxCodes = 32

// codes caches Reed-Solomon codes by (k, m). Not safe for concurrent use.
type codes struct {
	m map[[2]uint8]reedsolomon.Encoder
}

// get returns the code for k data and m parity shards.
//
// The code runs on the calling goroutine (WithMaxGoroutines(1)): shards are
// at most MaxShard bytes, too small to gain from splitting, the router runs
// many sessions side by side, and the CPU cost stays where it is measured.
// The inversion cache is off so that a peer choosing erasure patterns
// cannot grow it; inverting a k x k matrix (k <= 64) is cheap next to the
// shard arithmetic.
func (c *codes) get(k, m int) (reedsolomon.Encoder, error) {
	key := [2]uint8{uint8(k), uint8(m)}
	if enc, ok := c.m[key]; ok {
		return enc, nil
	}
	enc, err := reedsolomon.New(k, m, reedsolomon.WithMaxGoroutines(1), reedsolomon.WithInversionCache(false))
	if err != nil {
		return nil, fmt.Errorf("fec: reed-solomon code (%d, %d): %w", k, m, err)
	}
	if c.m == nil {
		c.m = make(map[[2]uint8]reedsolomon.Encoder)
	}
	if len(c.m) >= maxCodes {
		for key := range c.m {
			delete(c.m, key)
			break
		}
	}
	c.m[key] = enc
	return enc, nil
}
