package router

import (
	"net/netip"
	"testing"
	"time"

	"github.com/commucat/commucat/testnet/link"
	"github.com/commucat/commucat/testnet/packet"
)

// FuzzIngress feeds arbitrary bytes to the router as packets read from a
// host, with blackholes active and a censor that replaces and injects the
// input itself: the router must not panic, and the source's up link must
// account for every packet it was offered.
func FuzzIngress(f *testing.F) {
	a4, b4 := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")
	a6, b6 := netip.MustParseAddr("2001:2::1"), netip.MustParseAddr("2001:2::2")
	seeds := []packet.UDPSpec{
		{Src: netip.AddrPortFrom(a4, 4000), Dst: netip.AddrPortFrom(b4, 53), Payload: []byte("\x00\x01query")},
		{Src: netip.AddrPortFrom(a6, 4000), Dst: netip.AddrPortFrom(b6, 443), Payload: []byte("quic")},
	}
	for _, s := range seeds {
		p, err := packet.BuildUDP(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p)
	}
	tcp, err := packet.BuildTCP(packet.TCPSpec{Src: netip.AddrPortFrom(a4, 40000), Dst: netip.AddrPortFrom(b4, 443), Flags: packet.SYN, Seq: 1})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tcp)
	f.Add([]byte{0x45})
	f.Add([]byte{0x60, 0, 0, 0})
	f.Fuzz(func(t *testing.T, p []byte) {
		mirror := CensorFunc(func(_ Direction, pkt []byte, _ time.Time) Verdict {
			if len(pkt)%3 == 0 {
				return Verdict{Action: Replace, Packet: pkt, Delay: time.Millisecond}
			}
			return Verdict{Inject: []Injection{{Packet: pkt, Delay: time.Millisecond}, {Packet: nil}}}
		})
		r, err := New(Config{
			Censor:      mirror,
			MaxInFlight: 4 * smallBuf,
			Hosts: []Host{
				{Name: "a", Addrs: []netip.Addr{a4, a6}, Zone: Inside, Device: discardDev{}, Up: link.Params{MTU: 1500}},
				{Name: "b", Addrs: []netip.Addr{b4, b6}, Device: discardDev{}, Down: link.Params{Delay: time.Millisecond}},
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range []Blackhole{{Host: "b", Port: 53}, {Host: "a", Proto: packet.ProtoTCP, Port: 40000}, {Host: "b", Proto: packet.ProtoICMP}} {
			r.SetBlackhole(b, true)
		}
		src := r.byName["a"]
		now := time.Unix(1, 0)
		r.ingress(src, p, now)
		r.ingress(src, p, now.Add(time.Millisecond))
		for _, it := range r.sched.drain() {
			r.fire(it)
		}
		up := src.up.Counters()
		if up.Offered != 2 || up.Passed+up.Dropped() != up.Offered {
			t.Errorf("a up counters %+v", up)
		}
	})
}
