package tactics

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestKey(t *testing.T) {
	c := NewCollector(Config{Salt: []byte("salt")})
	other := NewCollector(Config{Salt: []byte("pepper")})
	tests := []struct {
		name string
		a, b string
		same bool
	}{
		{"same /16", "203.0.113.7", "203.0.200.9", true},
		{"other /16", "203.0.113.7", "203.1.113.7", false},
		{"mapped v4", "203.0.113.7", "::ffff:203.0.113.7", true},
		{"same v6 /32", "2001:db8:1::1", "2001:db8:ffff::2", true},
		{"other v6 /32", "2001:db8::1", "2001:db9::1", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ka, _ := c.Key(addr(tt.a))
			kb, _ := c.Key(addr(tt.b))
			if (ka == kb) != tt.same {
				t.Errorf("Key(%s) == Key(%s) is %v, want %v", tt.a, tt.b, ka == kb, tt.same)
			}
			if ko, _ := other.Key(addr(tt.a)); ko == ka {
				t.Errorf("another salt gives the same key")
			}
		})
	}
	if _, ok := c.Key(netip.Addr{}); ok {
		t.Errorf("Key of the zero address is ok")
	}
}

// TestNoRawAddresses checks that nothing the collector keeps holds the
// address or prefix bytes of the clients it heard from.
func TestNoRawAddresses(t *testing.T) {
	c := NewCollector(Config{})
	a := addr("198.51.100.77")
	k, _ := c.Key(a)
	c.Observe(k, []Verdict{{"quic", StateBlocked}}, time.Now())
	dump := fmt.Sprintf("%#v %#v", c.nets, k)
	for _, s := range []string{"198.51", "198, 51", "0xc6, 0x33"} {
		if bytes.Contains([]byte(dump), []byte(s)) {
			t.Errorf("collector state contains %q: %s", s, dump)
		}
	}
	if bytes.Contains(k[:], []byte{198, 51}) {
		t.Errorf("key %x contains the prefix bytes", k)
	}
}

func TestOrder(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var k, k2 NetworkKey
	k2[0] = 1
	tests := []struct {
		name    string
		reports [][]Verdict
		want    []string
	}{
		{name: "nothing", want: []string{}},
		{name: "blocked last", reports: [][]Verdict{
			{{"quic", StateBlocked}, {"tcp", StateOK}, {"reality", StateOK}},
			{{"quic", StateBlocked}, {"reality", StateOK}},
		}, want: []string{"reality", "tcp", "quic"}},
		{name: "throttled between", reports: [][]Verdict{
			{{"kcp", StateThrottled}, {"tcp", StateOK}, {"quic", StateBlocked}},
		}, want: []string{"tcp", "kcp", "quic"}},
		{name: "majority wins", reports: [][]Verdict{
			{{"quic", StateOK}}, {{"quic", StateOK}}, {{"quic", StateOK}}, {{"quic", StateBlocked}},
			{{"tcp", StateOK}}, {{"tcp", StateBlocked}}, {{"tcp", StateBlocked}},
		}, want: []string{"quic", "tcp"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewCollector(Config{})
			for _, r := range tt.reports {
				c.Observe(k, r, now)
			}
			c.Observe(k2, []Verdict{{"tcp", StateBlocked}, {"obfs4", StateOK}}, now)
			got := c.Order(k, now)
			if got == nil {
				got = []string{}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Order (-want +got):\n%s", diff)
			}
		})
	}
}

// TestReportCountsOncePerTransport gives one network a report that names
// quic 32 times: it must weigh as one verdict, not 32, or a single
// client would outvote everyone on its network.
func TestReportCountsOncePerTransport(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewCollector(Config{})
	var k NetworkKey
	stuffed := []Verdict{{"tcp", StateBlocked}}
	for range MaxVerdicts - 1 {
		stuffed = append(stuffed, Verdict{"quic", StateBlocked})
	}
	c.Observe(k, stuffed, now)
	for range 2 {
		c.Observe(k, []Verdict{{"quic", StateOK}, {"tcp", StateOK}}, now)
	}
	// Both have one bad and two good verdicts: equal, so by name.
	if diff := cmp.Diff([]string{"quic", "tcp"}, c.Order(k, now)); diff != "" {
		t.Errorf("Order (-want +got):\n%s", diff)
	}
}

// TestEvictKeepsTheReportedNetwork reports on a new network with a time
// before every other network's (reports handled at once take their times
// before the lock): the collector is full, and the network reported on
// must stay, the oldest other one go.
func TestEvictKeepsTheReportedNetwork(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewCollector(Config{MaxNetworks: 2})
	var a, b, late NetworkKey
	a[0], b[0], late[0] = 1, 2, 3
	c.Observe(a, []Verdict{{"tcp", StateOK}}, now.Add(time.Second))
	c.Observe(b, []Verdict{{"tcp", StateOK}}, now.Add(2*time.Second))
	c.Observe(late, []Verdict{{"quic", StateOK}}, now)
	if got := c.Order(late, now); !cmp.Equal(got, []string{"quic"}) {
		t.Errorf("the network reported on: Order = %v, want [quic]", got)
	}
	if got := c.Order(a, now); got != nil {
		t.Errorf("the oldest other network was kept: %v", got)
	}
	if n := c.Networks(); n != 2 {
		t.Errorf("Networks = %d, want 2", n)
	}
}

func TestDecay(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewCollector(Config{HalfLife: time.Hour})
	var k NetworkKey
	for range 8 {
		c.Observe(k, []Verdict{{"quic", StateOK}, {"tcp", StateBlocked}}, now)
	}
	if diff := cmp.Diff([]string{"quic", "tcp"}, c.Order(k, now)); diff != "" {
		t.Errorf("before (-want +got):\n%s", diff)
	}
	// The network changed: quic is blocked now; old counts have faded.
	later := now.Add(6 * time.Hour)
	for range 2 {
		c.Observe(k, []Verdict{{"quic", StateBlocked}, {"tcp", StateOK}}, later)
	}
	if diff := cmp.Diff([]string{"tcp", "quic"}, c.Order(k, later)); diff != "" {
		t.Errorf("after (-want +got):\n%s", diff)
	}
	if got := c.Order(k, later.Add(30*24*time.Hour)); len(got) != 0 {
		t.Errorf("a month later: %v, want nothing", got)
	}
}

func TestBounded(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewCollector(Config{MaxNetworks: 10})
	for i := range 100 {
		k, _ := c.Key(netip.AddrFrom4([4]byte{10, byte(i), 0, 1}))
		var vs []Verdict
		for j := range MaxVerdicts + 5 {
			vs = append(vs, Verdict{fmt.Sprintf("t%d", j), StateOK})
		}
		c.Observe(k, vs, now.Add(time.Duration(i)*time.Second))
	}
	if n := c.Networks(); n != 10 {
		t.Errorf("Networks = %d, want 10", n)
	}
	last, _ := c.Key(netip.AddrFrom4([4]byte{10, 99, 0, 1}))
	if got := len(c.Order(last, now.Add(100*time.Second))); got != MaxVerdicts {
		t.Errorf("transports kept = %d, want %d", got, MaxVerdicts)
	}
	first, _ := c.Key(netip.AddrFrom4([4]byte{10, 0, 0, 1}))
	if got := c.Order(first, now); got != nil {
		t.Errorf("the oldest network was kept: %v", got)
	}
}

func BenchmarkObserveOrder(b *testing.B) {
	c := NewCollector(Config{})
	vs := []Verdict{{"quic", StateBlocked}, {"tcp", StateOK}, {"reality", StateOK}, {"kcp", StateThrottled}}
	now := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		k, _ := c.Key(netip.AddrFrom4([4]byte{10, byte(i), 0, 1}))
		c.Observe(k, vs, now)
		c.Order(k, now)
	}
}
