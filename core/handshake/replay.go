package handshake

import (
	"container/heap"
	"fmt"
	"sync"
	"time"
)

// DefaultReplayCacheSize is the capacity NewReplayCache uses when asked for
// zero or fewer entries. At the default 2-minute skew entries live 4
// minutes, so it admits a sustained 273 handshakes per second.
const DefaultReplayCacheSize = 1 << 16

// ReplayCache remembers the SHA-256 of every message 1 a gateway accepted,
// each for 2*MaxSkew, so that a recorded message 1 cannot be replayed while
// its timestamp would still pass the skew check. It holds at most max
// entries (about 100 bytes each).
//
// When the cache is full of unexpired entries it refuses new handshakes
// with ErrRateLimited instead of evicting: evicting an unexpired entry
// would let an attacker flush the cache with fresh handshakes and then
// replay a recorded message 1, so the cache fails closed. Only a message 1
// that decrypted under the gateway key and passed the skew check is
// stored, and per-source rate limiting keeps one source from filling it.
// Size it as the peak handshake rate times 2*MaxSkew.
//
// A ReplayCache is safe for concurrent use and is shared by every
// handshake of one gateway.
type ReplayCache struct {
	mu      sync.Mutex
	max     int
	seen    map[[32]byte]struct{}
	expires expiryHeap
}

// NewReplayCache returns an empty cache holding at most max entries; if
// max is zero or less, DefaultReplayCacheSize.
func NewReplayCache(max int) *ReplayCache {
	if max <= 0 {
		max = DefaultReplayCacheSize
	}
	return &ReplayCache{max: max, seen: make(map[[32]byte]struct{})}
}

// Len returns the number of entries, expired ones included until the next
// check removes them.
func (c *ReplayCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

// check records key until now+ttl. It returns ErrReplay if key is already
// recorded and unexpired, and ErrRateLimited if the cache is full.
//
// An entry is kept through now+ttl inclusive and dropped only once both
// the wall clock and, when now carries one, the monotonic clock are past
// it. The skew check compares the message's timestamp with the wall
// clock, boundaries included, so a message accepted at t with a
// timestamp of t+MaxSkew still passes it at t+2*MaxSkew: dropping the
// entry at that instant would let the message be replayed. And a wall
// clock that steps back (or forward and back) must not bring a recorded
// timestamp back into the skew window after its entry is gone, nor may
// the monotonic clock alone decide: it does not follow such steps.
func (c *ReplayCache) check(key [32]byte, now time.Time, ttl time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	wall := now.Round(0)
	for len(c.expires) > 0 && c.expires[0].expired(now, wall) {
		e := heap.Pop(&c.expires).(expiry)
		delete(c.seen, e.key)
	}
	if _, ok := c.seen[key]; ok {
		return ErrReplay
	}
	if len(c.seen) >= c.max {
		return fmt.Errorf("%w: replay cache full (%d unexpired entries)", ErrRateLimited, len(c.seen))
	}
	c.seen[key] = struct{}{}
	heap.Push(&c.expires, expiry{key: key, wall: wall.Add(ttl), mono: now.Add(ttl)})
	return nil
}

// expiry is when an entry may be dropped: wall has no monotonic reading,
// mono keeps now's (if it had one).
type expiry struct {
	key        [32]byte
	wall, mono time.Time
}

// expired reports whether both clocks are strictly past the entry's
// expiry. now.After(e.mono) compares monotonic readings when both have
// one, and wall times otherwise.
func (e expiry) expired(now, wall time.Time) bool {
	return wall.After(e.wall) && now.After(e.mono)
}

// expiryHeap is a min-heap of wall-clock expiry times (container/heap).
// An entry at the top that the monotonic clock still holds keeps the
// later ones too, which only delays their removal.
type expiryHeap []expiry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].wall.Before(h[j].wall) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
