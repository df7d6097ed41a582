package transport

import (
	"net"
	"net/netip"
	"sync"
)

// SourceLimit bounds how many connections from one source are in some
// state at once (in a handshake, relayed), so that one host cannot take
// every slot of a bound shared by all and stall everyone else. A source
// is an IPv4 address or an IPv6 /64 (what one subscriber usually gets).
// Sources that are not IP addresses are not limited. It holds an entry
// only for a source with a connection in the state, so its memory is
// bounded by the connections counted. A nil *SourceLimit limits nothing.
// It is safe for concurrent use.
type SourceLimit struct {
	max int
	mu  sync.Mutex
	n   map[netip.Prefix]int
}

// Scarce reports whether more than half of slots, a semaphore of
// buffered tokens, are taken: the point from which a SourceLimit holds
// each source to its share.
func Scarce(slots chan struct{}) bool { return 2*len(slots) > cap(slots) }

// NewSourceLimit returns a limit of max connections per source; for max
// <= 0 it returns nil, which limits nothing.
func NewSourceLimit(max int) *SourceLimit {
	if max <= 0 {
		return nil
	}
	return &SourceLimit{max: max, n: make(map[netip.Prefix]int)}
}

// Take counts one more connection from the source of addr, a
// connection's remote address, and returns the function that uncounts it
// (once, however often it is called). If scarce, it returns false,
// counting nothing, when that source has max connections counted
// already. The caller says whether the slots the limit guards are
// scarce (say, more than half taken), so that a burst from one source
// may use slots nobody else needs, yet cannot crowd others out.
func (s *SourceLimit) Take(addr net.Addr, scarce bool) (release func(), ok bool) {
	src, ok := sourceOf(addr)
	if s == nil || !ok {
		return func() {}, true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if scarce && s.n[src] >= s.max {
		return nil, false
	}
	s.n[src]++
	var once sync.Once
	return func() { once.Do(func() { s.release(src) }) }, true
}

func (s *SourceLimit) release(src netip.Prefix) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n[src] <= 1 {
		delete(s.n, src)
		return
	}
	s.n[src]--
}

// Sources returns how many sources have connections counted.
func (s *SourceLimit) Sources() int {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.n)
}

// sourceOf returns the source an address counts against.
func sourceOf(addr net.Addr) (netip.Prefix, bool) {
	var ip netip.Addr
	switch a := addr.(type) {
	case *net.TCPAddr:
		ip = a.AddrPort().Addr()
	case *net.UDPAddr:
		ip = a.AddrPort().Addr()
	case nil:
		return netip.Prefix{}, false
	default:
		ap, err := netip.ParseAddrPort(a.String())
		if err != nil {
			return netip.Prefix{}, false
		}
		ip = ap.Addr()
	}
	if !ip.IsValid() {
		return netip.Prefix{}, false
	}
	return SourcePrefix(ip), true
}

// SourcePrefix is the source ip counts under: an IPv4 address (also
// written IPv4-mapped) as itself, an IPv6 address as its /64, the
// smallest prefix a single subscriber or host is usually given, so that
// one host cannot pass for many by changing the low bits of its address.
// The zone is dropped.
func SourcePrefix(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap().WithZone("")
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits) // cannot fail: bits fits every valid address
	return p
}
