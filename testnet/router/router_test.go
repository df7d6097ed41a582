package router

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/commucat/commucat/testnet/link"
	"github.com/commucat/commucat/testnet/packet"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var (
	addrA = netip.MustParseAddr("198.18.0.1")
	addrB = netip.MustParseAddr("198.18.0.2")
)

// delivery is a packet a fake device received from the router.
type delivery struct {
	at time.Time
	p  []byte
}

// fakeDev is an in-memory Device: send puts a packet where the router
// reads it; the router's writes arrive on out.
type fakeDev struct {
	in     chan []byte
	out    chan delivery
	closed chan struct{}
	once   sync.Once
}

func newFakeDev() *fakeDev {
	return &fakeDev{in: make(chan []byte), out: make(chan delivery, 4096), closed: make(chan struct{})}
}

func (d *fakeDev) Read(b []byte) (int, error) {
	select {
	case p := <-d.in:
		return copy(b, p), nil
	case <-d.closed:
		return 0, net.ErrClosed
	}
}

func (d *fakeDev) Write(b []byte) (int, error) {
	select {
	case <-d.closed:
		return 0, net.ErrClosed
	default:
	}
	d.out <- delivery{at: time.Now(), p: append([]byte(nil), b...)}
	return len(b), nil
}

func (d *fakeDev) Close() error {
	d.once.Do(func() { close(d.closed) })
	return nil
}

// send hands p to the router as if the host sent it.
func (d *fakeDev) send(p []byte) { d.in <- p }

// recv returns everything delivered so far.
func (d *fakeDev) recv() []delivery {
	var out []delivery
	for {
		select {
		case x := <-d.out:
			out = append(out, x)
		default:
			return out
		}
	}
}

// udp builds a UDP packet with a 4-byte sequence number payload and extra
// bytes.
func udp(t testing.TB, src, dst netip.Addr, dport uint16, seq uint32, extra string) []byte {
	t.Helper()
	pl := binary.BigEndian.AppendUint32(nil, seq)
	pl = append(pl, extra...)
	p, err := packet.BuildUDP(packet.UDPSpec{Src: netip.AddrPortFrom(src, 4000), Dst: netip.AddrPortFrom(dst, dport), Payload: pl})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// seqOf returns the sequence number and extra bytes of a udp packet.
func seqOf(t testing.TB, p []byte) (uint32, string) {
	t.Helper()
	pk, err := packet.Parse(p)
	if err != nil || len(pk.Payload) < 4 {
		t.Fatalf("delivered packet: %v", err)
	}
	return binary.BigEndian.Uint32(pk.Payload), string(pk.Payload[4:])
}

// testNet is a router with two fake hosts, a (Inside) and b (Outside),
// running in the current synctest bubble.
type testNet struct {
	r      *Router
	a, b   *fakeDev
	cancel context.CancelFunc
	done   chan struct{}
}

func startNet(t *testing.T, cfg Config, upA, downB link.Params) *testNet {
	t.Helper()
	n := &testNet{a: newFakeDev(), b: newFakeDev(), done: make(chan struct{})}
	cfg.Hosts = []Host{
		{Name: "a", Addrs: []netip.Addr{addrA}, Zone: Inside, Device: n.a, Up: upA},
		{Name: "b", Addrs: []netip.Addr{addrB}, Zone: Outside, Device: n.b, Down: downB},
	}
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n.r = r
	ctx, cancel := context.WithCancel(t.Context())
	n.cancel = cancel
	go func() {
		defer close(n.done)
		if err := r.Run(ctx); err != nil {
			t.Error(err)
		}
	}()
	return n
}

func (n *testNet) stop() {
	n.cancel()
	<-n.done
}

func TestForwardDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := startNet(t, Config{}, link.Params{Delay: 10 * time.Millisecond}, link.Params{Delay: 5 * time.Millisecond})
		defer n.stop()
		start := time.Now()
		n.a.send(udp(t, addrA, addrB, 53, 1, ""))
		n.b.send(udp(t, addrB, addrA, 4000, 2, ""))
		synctest.Wait()
		if got := n.a.recv(); len(got) != 1 || !got[0].at.Equal(start) {
			t.Errorf("b to a over perfect links: %v, want one packet at once", got)
		}
		time.Sleep(15*time.Millisecond - 1)
		synctest.Wait()
		if got := n.b.recv(); len(got) != 0 {
			t.Fatalf("a to b arrived %s early", 15*time.Millisecond-got[0].at.Sub(start))
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		got := n.b.recv()
		if len(got) != 1 || got[0].at.Sub(start) != 15*time.Millisecond {
			t.Fatalf("a to b: %v, want one packet after 15ms", got)
		}
		if s, _ := seqOf(t, got[0].p); s != 1 {
			t.Errorf("seq %d", s)
		}
		st := n.r.Stats()
		ha, _ := st.Host("a")
		hb, _ := st.Host("b")
		if ha.Up.Passed != 1 || hb.Down.Passed != 1 || ha.Down.Passed != 1 || st.InFlight != 0 {
			t.Errorf("stats %+v", st)
		}
	})
}

func TestJitterOrder(t *testing.T) {
	for _, tc := range []struct {
		name    string
		reorder bool
	}{{"in order", false}, {"reorder", true}} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				n := startNet(t, Config{}, link.Params{Delay: time.Millisecond, Jitter: 5 * time.Millisecond, Reorder: tc.reorder}, link.Params{})
				defer n.stop()
				const count = 100
				for i := range count {
					n.a.send(udp(t, addrA, addrB, 53, uint32(i), ""))
					time.Sleep(100 * time.Microsecond)
				}
				time.Sleep(10 * time.Millisecond)
				synctest.Wait()
				got := n.b.recv()
				if len(got) != count {
					t.Fatalf("%d of %d delivered", len(got), count)
				}
				inversions := 0
				prev := uint32(0)
				for i, d := range got {
					s, _ := seqOf(t, d.p)
					if i > 0 && s < prev {
						inversions++
					}
					prev = s
				}
				if tc.reorder && inversions == 0 {
					t.Error("no packet reordered")
				}
				if !tc.reorder && inversions != 0 {
					t.Errorf("%d packets reordered", inversions)
				}
			})
		})
	}
}

func TestLossCounted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := startNet(t, Config{Seed: 9}, link.Params{Loss: 0.3}, link.Params{Loss: 0.2})
		defer n.stop()
		for i := range 200 {
			n.a.send(udp(t, addrA, addrB, 53, uint32(i), ""))
		}
		synctest.Wait()
		got := n.b.recv()
		st := n.r.Stats()
		ha, _ := st.Host("a")
		hb, _ := st.Host("b")
		if ha.Up.Offered != 200 || ha.Up.Drops[link.ReasonLoss] == 0 || hb.Down.Drops[link.ReasonLoss] == 0 {
			t.Fatalf("stats %+v", st)
		}
		if ha.Up.Passed != hb.Down.Offered || uint64(len(got)) != hb.Down.Passed {
			t.Errorf("up passed %d, down offered %d, down passed %d, delivered %d", ha.Up.Passed, hb.Down.Offered, hb.Down.Passed, len(got))
		}
		// The same seed loses the same packets.
		m := startNet(t, Config{Seed: 9}, link.Params{Loss: 0.3}, link.Params{Loss: 0.2})
		defer m.stop()
		for i := range 200 {
			m.a.send(udp(t, addrA, addrB, 53, uint32(i), ""))
		}
		synctest.Wait()
		again := m.b.recv()
		seqs := func(ds []delivery) []uint32 {
			var out []uint32
			for _, d := range ds {
				s, _ := seqOf(t, d.p)
				out = append(out, s)
			}
			return out
		}
		if diff := cmp.Diff(seqs(got), seqs(again)); diff != "" {
			t.Errorf("same seed, different losses (-first +second):\n%s", diff)
		}
	})
}

// testCensor records what it saw and acts on the payload's extra bytes.
type testCensor struct {
	dirs []Direction
	buf  []byte
}

func (c *testCensor) Packet(dir Direction, pkt []byte, now time.Time) Verdict {
	c.dirs = append(c.dirs, dir)
	pk, err := packet.Parse(pkt)
	if err != nil || len(pk.Payload) < 4 {
		return Verdict{}
	}
	switch string(pk.Payload[4:]) {
	case "drop":
		return Verdict{Action: Drop}
	case "swap":
		c.buf, _ = packet.BuildUDP(packet.UDPSpec{Src: pk.SrcAddrPort(), Dst: pk.DstAddrPort(), Payload: []byte("\x00\x00\x00\x63swapped")})
		return Verdict{Action: Replace, Packet: c.buf}
	case "slow":
		return Verdict{Delay: 100 * time.Millisecond}
	case "rst":
		// Answer the sender in its own name's place and drop the packet.
		c.buf, _ = packet.BuildUDP(packet.UDPSpec{Src: pk.DstAddrPort(), Dst: pk.SrcAddrPort(), Payload: []byte("\x00\x00\x00\x07forged")})
		return Verdict{Action: Drop, Inject: []Injection{{Packet: c.buf, Delay: time.Millisecond}}}
	}
	return Verdict{}
}

func TestCensor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := &testCensor{}
		n := startNet(t, Config{Censor: c}, link.Params{}, link.Params{})
		defer n.stop()
		start := time.Now()
		for i, w := range []string{"pass", "drop", "swap", "slow", "rst"} {
			n.a.send(udp(t, addrA, addrB, 53, uint32(i), w))
		}
		n.b.send(udp(t, addrB, addrA, 4000, 10, "back"))
		time.Sleep(time.Second)
		synctest.Wait()
		type got struct {
			Seq   uint32
			Extra string
			After time.Duration
		}
		collect := func(ds []delivery) []got {
			var out []got
			for _, d := range ds {
				s, e := seqOf(t, d.p)
				out = append(out, got{s, e, d.at.Sub(start)})
			}
			return out
		}
		wantB := []got{{0, "pass", 0}, {99, "swapped", 0}, {3, "slow", 100 * time.Millisecond}}
		if diff := cmp.Diff(wantB, collect(n.b.recv())); diff != "" {
			t.Errorf("b received (-want +got):\n%s", diff)
		}
		wantA := []got{{7, "forged", time.Millisecond}, {10, "back", 0}}
		gotA := collect(n.a.recv())
		if len(gotA) == 2 && gotA[0].Seq == 10 {
			gotA[0], gotA[1] = gotA[1], gotA[0]
		}
		if diff := cmp.Diff(wantA, gotA); diff != "" {
			t.Errorf("a received (-want +got):\n%s", diff)
		}
		// Each host's device has its own reader, so b's packet may reach
		// the censor between a's: count the directions, not their order.
		dirs := map[Direction]int{}
		for _, d := range c.dirs {
			dirs[d]++
		}
		if diff := cmp.Diff(map[Direction]int{Outbound: 5, Inbound: 1}, dirs); diff != "" {
			t.Errorf("directions (-want +got):\n%s", diff)
		}
		st := n.r.Stats()
		want := CensorCounters{Inspected: 6, Dropped: 2, Replaced: 1, Delayed: 1, Injected: 1}
		if diff := cmp.Diff(want, st.Censor); diff != "" {
			t.Errorf("censor counters (-want +got):\n%s", diff)
		}
		hb, _ := st.Host("b")
		if hb.Down.Drops[link.ReasonCensor] != 2 {
			t.Errorf("b down drops %v", hb.Down.DropMap())
		}
		// Switched off, the censor sees nothing.
		n.r.SetCensorOn(false)
		n.a.send(udp(t, addrA, addrB, 53, 20, "drop"))
		synctest.Wait()
		if got := n.b.recv(); len(got) != 1 {
			t.Errorf("censor off: %d delivered", len(got))
		}
		if n.r.Stats().Censor.Inspected != 6 {
			t.Error("censor inspected a packet while off")
		}
	})
}

func TestTimeline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		on, off := true, false
		drop := CensorFunc(func(Direction, []byte, time.Time) Verdict { return Verdict{Action: Drop} })
		cfg := Config{
			Censor:    drop,
			CensorOff: true,
			Timeline: []Event{
				{At: 1 * time.Second, Blackhole: &Blackhole{Host: "b", Proto: packet.ProtoUDP, Port: 53}},
				{At: 2 * time.Second, Unblackhole: &Blackhole{Host: "b", Proto: packet.ProtoUDP, Port: 53}},
				{At: 2 * time.Second, Blackhole: &Blackhole{Host: "a"}},
				{At: 3 * time.Second, Unblackhole: &Blackhole{Host: "a"}},
				{At: 3 * time.Second, Link: &LinkChange{Host: "b", Dir: Down, Params: link.Params{Delay: 50 * time.Millisecond}}},
				{At: 4 * time.Second, Censor: &on},
				{At: 5 * time.Second, Censor: &off},
			},
		}
		n := startNet(t, cfg, link.Params{}, link.Params{})
		defer n.stop()
		time.Sleep(500 * time.Millisecond)
		var delivered []string
		for sec := range 6 {
			at := time.Now()
			n.a.send(udp(t, addrA, addrB, 53, uint32(sec), ""))   // to b's port 53
			n.a.send(udp(t, addrA, addrB, 54, uint32(sec), ""))   // to b's port 54
			n.b.send(udp(t, addrB, addrA, 4000, uint32(sec), "")) // to a
			time.Sleep(200 * time.Millisecond)
			synctest.Wait()
			s := ""
			for _, d := range n.b.recv() {
				pk, _ := packet.Parse(d.p)
				s += "b" + string(rune('0'+pk.DstPort-50))
				if d.at.Sub(at) >= 50*time.Millisecond {
					s += "+"
				}
				s += " "
			}
			for range n.a.recv() {
				s += "a"
			}
			delivered = append(delivered, s)
			time.Sleep(800 * time.Millisecond)
		}
		want := []string{
			"b3 b4 a",   // 0.5s: all pass
			"b4 a",      // 1.5s: b's udp port 53 blackholed
			"",          // 2.5s: host a blackholed both ways
			"b3+ b4+ a", // 3.5s: b's down link has 50ms delay
			"",          // 4.5s: censor on, dropping everything at the border
			"b3+ b4+ a", // 5.5s: censor off
		}
		if diff := cmp.Diff(want, delivered); diff != "" {
			t.Errorf("deliveries per second (-want +got):\n%s", diff)
		}
		st := n.r.Stats()
		ha, _ := st.Host("a")
		hb, _ := st.Host("b")
		// a's blackhole: a's two packets on its up link; b's packet on a's
		// down link. b's port: one on b's down link.
		if ha.Up.Drops[link.ReasonBlackhole] != 2 || ha.Down.Drops[link.ReasonBlackhole] != 1 || hb.Down.Drops[link.ReasonBlackhole] != 1 {
			t.Errorf("blackhole drops: a up %v, a down %v, b down %v", ha.Up.DropMap(), ha.Down.DropMap(), hb.Down.DropMap())
		}
		if len(n.r.Blackholes()) != 0 {
			t.Errorf("blackholes left: %v", n.r.Blackholes())
		}
		if p, _ := n.r.Link("b", Down); p.Delay != 50*time.Millisecond {
			t.Errorf("b down params %+v", p)
		}
	})
}

func TestOverflowAndRoutes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := startNet(t, Config{MaxInFlight: 2 * smallBuf}, link.Params{Delay: time.Second}, link.Params{})
		defer n.stop()
		for i := range 5 {
			n.a.send(udp(t, addrA, addrB, 53, uint32(i), ""))
		}
		n.a.send(udp(t, addrA, netip.MustParseAddr("198.18.0.99"), 53, 9, ""))
		n.a.send([]byte{0x10, 1, 2})
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if got := len(n.b.recv()); got != 2 {
			t.Errorf("%d delivered, want 2 (the in-flight bound)", got)
		}
		ha, _ := n.r.Stats().Host("a")
		want := map[string]uint64{"overflow": 3, "noroute": 1, "malformed": 1}
		if diff := cmp.Diff(want, ha.Up.DropMap()); diff != "" {
			t.Errorf("a up drops (-want +got):\n%s", diff)
		}
	})
}

func TestNewErrors(t *testing.T) {
	dev := newFakeDev()
	for _, tc := range []struct {
		name string
		cfg  Config
		is   error
	}{
		{"no hosts", Config{}, nil},
		{"no name", Config{Hosts: []Host{{Device: dev}}}, nil},
		{"no device", Config{Hosts: []Host{{Name: "a"}}}, nil},
		{"duplicate name", Config{Hosts: []Host{{Name: "a", Device: dev}, {Name: "a", Device: dev}}}, nil},
		{"duplicate address", Config{Hosts: []Host{{Name: "a", Device: dev, Addrs: []netip.Addr{addrA}}, {Name: "b", Device: dev, Addrs: []netip.Addr{addrA}}}}, nil},
		{"bad link", Config{Hosts: []Host{{Name: "a", Device: dev, Up: link.Params{Loss: 2}}}}, link.ErrParams},
		{"empty event", Config{Hosts: []Host{{Name: "a", Device: dev}}, Timeline: []Event{{At: time.Second}}}, ErrEvent},
		{"two changes", Config{Hosts: []Host{{Name: "a", Device: dev}}, Timeline: []Event{{Blackhole: &Blackhole{Host: "a"}, Unblackhole: &Blackhole{Host: "a"}}}}, ErrEvent},
		{"unknown host", Config{Hosts: []Host{{Name: "a", Device: dev}}, Timeline: []Event{{Blackhole: &Blackhole{Host: "z"}}}}, ErrHost},
		{"bad params", Config{Hosts: []Host{{Name: "a", Device: dev}}, Timeline: []Event{{Link: &LinkChange{Host: "a", Params: link.Params{Delay: -1}}}}}, link.ErrParams},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil {
				t.Fatal("New succeeded")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v, want %v", err, tc.is)
			}
		})
	}
	r, err := New(Config{Hosts: []Host{{Name: "a", Device: dev}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.SetLink("z", Both, link.Params{}); !errors.Is(err, ErrHost) {
		t.Errorf("SetLink unknown host: %v", err)
	}
	if err := r.SetBlackhole(Blackhole{Host: "z"}, true); !errors.Is(err, ErrHost) {
		t.Errorf("SetBlackhole unknown host: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Error(err)
	}
}

func TestStrings(t *testing.T) {
	on := true
	for _, tc := range []struct{ got, want string }{
		{Outbound.String(), "outbound"},
		{Inbound.String(), "inbound"},
		{Local.String(), "local"},
		{Inside.String(), "inside"},
		{Drop.String(), "drop"},
		{Up.String(), "up"},
		{Blackhole{Host: "gw", Port: 443, Proto: packet.ProtoTCP}.String(), "gw:443/tcp"},
		{Event{At: time.Second, Censor: &on}.String(), "1s censor true"},
		{Event{At: 2 * time.Second, Link: &LinkChange{Host: "c", Dir: Down}}.String(), "2s link c down"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

// discardDev is a Device whose writes vanish, for benchmarks.
type discardDev struct{}

func (discardDev) Read([]byte) (int, error)    { return 0, net.ErrClosed }
func (discardDev) Write(b []byte) (int, error) { return len(b), nil }
func (discardDev) Close() error                { return nil }

// BenchmarkIngress measures the inline path of one packet: route, up link,
// censor, down link, write.
func BenchmarkIngress(b *testing.B) {
	for _, bc := range []struct {
		name   string
		censor Censor
	}{{"nocensor", nil}, {"nopcensor", NopCensor{}}} {
		b.Run(bc.name, func(b *testing.B) {
			r, err := New(Config{Censor: bc.censor, Hosts: []Host{
				{Name: "a", Addrs: []netip.Addr{addrA}, Device: discardDev{}},
				{Name: "b", Addrs: []netip.Addr{addrB}, Device: discardDev{}},
			}})
			if err != nil {
				b.Fatal(err)
			}
			p := udp(b, addrA, addrB, 53, 1, string(make([]byte, 1400)))
			src := r.byName["a"]
			b.SetBytes(int64(len(p)))
			b.ReportAllocs()
			for b.Loop() {
				r.ingress(src, p, time.Now())
			}
		})
	}
}
