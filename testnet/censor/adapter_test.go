package censor

import (
	"net/netip"
	"testing"
	"time"

	"github.com/commucat/commucat/testnet/link"
	"github.com/commucat/commucat/testnet/packet"
	"github.com/commucat/commucat/testnet/router"
	"github.com/google/go-cmp/cmp"
)

const adapterProfile = `
name: adapter
rules:
  - name: keyword
    match: {transport: tcp, keyword: [falun]}
    action: reset
  - name: udp
    match: {udp: {ports: [4000]}}
    action: drop
  - name: slow
    match: {udp: {ports: [5000]}}
    action: {throttle: {delay: 40ms}}
`

// TestRouterCensor feeds the same packets to an engine directly and to a
// twin through the adapter: the router's verdicts must say the same.
func TestRouterCensor(t *testing.T) {
	p, err := ParseProfile([]byte(adapterProfile))
	if err != nil {
		t.Fatal(err)
	}
	direct, err := New(Config{Profile: p, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	twin, err := New(Config{Profile: p, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	a := RouterCensor{Engine: twin}
	cl := netip.MustParseAddrPort("198.18.0.1:40000")
	sv := netip.MustParseAddrPort("198.18.0.3:80")
	tcp := func(src, dst netip.AddrPort, seq, ack uint32, flags packet.TCPFlags, payload string) []byte {
		b, err := packet.BuildTCP(packet.TCPSpec{Src: src, Dst: dst, Seq: seq, Ack: ack, Flags: flags, Payload: []byte(payload)})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	udp := func(port uint16) []byte {
		b, err := packet.BuildUDP(packet.UDPSpec{Src: cl, Dst: netip.AddrPortFrom(sv.Addr(), port), Payload: []byte("\x01\x02\x03 not dns")})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	req := "GET /falun HTTP/1.1\r\nHost: x.example\r\n\r\n"
	now := time.Unix(1700000000, 0)
	tests := []struct {
		name       string
		dir        router.Direction
		pkt        []byte
		wantAction router.Action
		wantInject int
	}{
		{"syn", router.Outbound, tcp(cl, sv, 100, 0, packet.SYN, ""), router.Pass, 0},
		{"syn-ack", router.Inbound, tcp(sv, cl, 500, 101, packet.SYN|packet.ACK, ""), router.Pass, 0},
		{"ack", router.Outbound, tcp(cl, sv, 101, 501, packet.ACK, ""), router.Pass, 0},
		{"keyword request", router.Outbound, tcp(cl, sv, 101, 501, packet.PSH|packet.ACK, req), router.Drop, 2},
		{"udp blocked port", router.Outbound, udp(4000), router.Drop, 0},
		{"udp other port", router.Outbound, udp(4001), router.Pass, 0},
		{"udp throttled", router.Outbound, udp(5000), router.Pass, 0},
		{"local", router.Local, udp(4000), router.Pass, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := direct.Packet(Direction(tt.dir), tt.pkt, now)
			got := a.Packet(tt.dir, tt.pkt, now)
			if got.Action != tt.wantAction || len(got.Inject) != tt.wantInject {
				t.Fatalf("verdict %v with %d injections, want %v with %d", got.Action, len(got.Inject), tt.wantAction, tt.wantInject)
			}
			conv := router.Verdict{Action: router.Action(want.Action), Delay: want.Delay, Packet: want.Packet}
			for _, in := range want.Inject {
				conv.Inject = append(conv.Inject, router.Injection{Packet: in.Packet, Delay: in.Delay})
			}
			if diff := cmp.Diff(conv, got); diff != "" {
				t.Errorf("adapter differs from the engine (-engine +adapter):\n%s", diff)
			}
		})
	}
}

// TestRouterCensorNoAlloc checks that a passed packet costs no allocation.
func TestRouterCensorNoAlloc(t *testing.T) {
	e, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	a := RouterCensor{Engine: e}
	b, err := packet.BuildUDP(packet.UDPSpec{Src: netip.MustParseAddrPort("198.18.0.1:1"), Dst: netip.MustParseAddrPort("198.18.0.2:2"), Payload: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1700000000, 0)
	if n := testing.AllocsPerRun(100, func() { a.Packet(router.Outbound, b, now) }); n != 0 {
		t.Errorf("%v allocations per passed packet, want 0", n)
	}
}

func TestLinkParams(t *testing.T) {
	tests := []struct {
		name string
		in   LinkParams
		want link.Params
	}{
		{"zero", LinkParams{}, link.Params{}},
		{"all", LinkParams{Delay: 40 * time.Millisecond, Jitter: 5 * time.Millisecond, Reorder: true, Loss: 0.01, Duplicate: 0.001, Rate: 250000, Queue: 65536, MTU: 1400,
			Burst: &GilbertElliott{PGoodBad: 0.01, PBadGood: 0.25, LossGood: 0.001, LossBad: 0.5}},
			link.Params{Delay: 40 * time.Millisecond, Jitter: 5 * time.Millisecond, Reorder: true, Loss: 0.01, Duplicate: 0.001, Rate: 250000, Queue: 65536, MTU: 1400,
				Burst: &link.GilbertElliott{PGoodBad: 0.01, PBadGood: 0.25, LossGood: 0.001, LossBad: 0.5}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, tt.in.Params()); diff != "" {
				t.Errorf("Params (-want +got):\n%s", diff)
			}
		})
	}
}

// BenchmarkRouterCensor measures the adapter around a pass verdict.
func BenchmarkRouterCensor(b *testing.B) {
	e, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	a := RouterCensor{Engine: e}
	pkt, err := packet.BuildUDP(packet.UDPSpec{Src: netip.MustParseAddrPort("198.18.0.1:1"), Dst: netip.MustParseAddrPort("198.18.0.2:2"), Payload: make([]byte, 1200)})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Unix(1700000000, 0)
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	for b.Loop() {
		a.Packet(router.Outbound, pkt, now)
	}
}
