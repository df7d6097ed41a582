package handshake

import (
	"container/list"
	"net/netip"
	"sync"
	"time"

	"github.com/commucat/commucat/core/transport"
)

// RateLimiter limits handshakes per source with one token bucket per
// source (the caller passes the peer's IP address as a string; an IPv6
// address counts as its /64, see Source): a bucket
// holds at most burst tokens, refills at perSecond tokens per second, and
// each allowed handshake takes one token. It tracks at most maxSources
// sources; when a new source arrives at a full table, the least recently
// used bucket is dropped. That bucket has been idle the longest, so it has
// usually refilled to full and forgetting it changes nothing; if not, its
// source merely starts again from a full bucket, which is preferred to
// refusing every new source while the table is full. The caller's clock is
// passed in, so tests use synthetic time.
//
// A RateLimiter is safe for concurrent use.
type RateLimiter struct {
	mu      sync.Mutex
	rate    float64
	burst   float64
	max     int
	sources map[string]*list.Element
	lru     list.List // of *bucket, most recently used first
}

type bucket struct {
	source string
	tokens float64
	last   time.Time
}

// NewRateLimiter returns a limiter allowing each source burst handshakes at
// once and perSecond per second after that, remembering at most maxSources
// sources. perSecond below zero counts as zero (no refill); burst and
// maxSources below one count as one.
func NewRateLimiter(perSecond float64, burst int, maxSources int) *RateLimiter {
	return &RateLimiter{
		rate:    max(perSecond, 0),
		burst:   float64(max(burst, 1)),
		max:     max(maxSources, 1),
		sources: make(map[string]*list.Element),
	}
}

// Allow reports whether source may start a handshake at now, and if so
// takes a token from its bucket. A clock that steps backwards adds no
// tokens.
func (l *RateLimiter) Allow(source string, now time.Time) bool {
	source = Source(source)
	l.mu.Lock()
	defer l.mu.Unlock()
	el, ok := l.sources[source]
	if !ok {
		if l.lru.Len() >= l.max {
			oldest := l.lru.Back()
			delete(l.sources, oldest.Value.(*bucket).source)
			l.lru.Remove(oldest)
		}
		el = l.lru.PushFront(&bucket{source: source, tokens: l.burst, last: now})
		l.sources[source] = el
	} else {
		l.lru.MoveToFront(el)
	}
	b := el.Value.(*bucket)
	if elapsed := now.Sub(b.last); elapsed > 0 {
		b.tokens = min(l.burst, b.tokens+elapsed.Seconds()*l.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Len returns the number of sources tracked.
func (l *RateLimiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lru.Len()
}

// Source is the key RateLimiter counts an address under: the text of
// transport.SourcePrefix (an IPv4 address as itself, an IPv6 address as
// its /64). A string that is not an IP address is used as it is.
func Source(addr string) string {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	p := transport.SourcePrefix(a)
	if p.Addr().Is4() {
		return p.Addr().String()
	}
	return p.String()
}
