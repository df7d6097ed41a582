package censor

import (
	"net/netip"
	"testing"
	"time"

	"github.com/commucat/commucat/testnet/packet"
	"github.com/google/go-cmp/cmp"
)

// TestFlowTableBound fills a table of four flows: a fifth evicts the one
// idle longest, not the oldest.
func TestFlowTableBound(t *testing.T) {
	e := newTestEngine(t, mustProfile(t, "name: b\nflows: {max: 4}\nrules:\n  - name: u\n    match: {udp: {ports: [9]}}\n    action: log\n"), 1)
	dst := netip.AddrPortFrom(srvIP, 9)
	for i := range 4 {
		udp(t, e, Outbound, cli(uint16(100+i)), dst, []byte("x"), t0.Add(time.Duration(i)*time.Second))
	}
	// Touch the first flow: the second is now idle longest.
	udp(t, e, Outbound, cli(100), dst, []byte("x"), t0.Add(5*time.Second))
	udp(t, e, Outbound, cli(104), dst, []byte("x"), t0.Add(6*time.Second))
	s := e.Stats()
	if s.Flows != 4 || s.FlowsEvicted != 1 || s.FlowsCreated != 5 {
		t.Fatalf("stats %+v", s)
	}
	e.events(t)
	// The first flow is still known (no new log line: its rule fired
	// once); the second was evicted and starts again (a new log line).
	udp(t, e, Outbound, cli(100), dst, []byte("x"), t0.Add(7*time.Second))
	if evs := e.events(t); len(evs) != 0 {
		t.Errorf("kept flow logged again: %+v", evs)
	}
	udp(t, e, Outbound, cli(101), dst, []byte("x"), t0.Add(8*time.Second))
	if evs := e.events(t); len(evs) != 1 || evs[0].Client != cli(101).String() {
		t.Errorf("evicted flow not restarted: %+v", evs)
	}
}

func TestFlowIdleExpiry(t *testing.T) {
	e := newTestEngine(t, mustProfile(t, "name: i\nflows: {idle: 30s}\nrules:\n  - name: kill\n    match: {udp: {}, flow-age: {seconds: 40}}\n    action: drop\n"), 1)
	dst := netip.AddrPortFrom(srvIP, 9)
	// A flow with a packet every 15 s lives on and ages.
	for i := range 3 {
		wantAction(t, "active flow", udp(t, e, Outbound, cli(100), dst, []byte("x"), t0.Add(time.Duration(i)*15*time.Second)), Pass)
	}
	wantAction(t, "active flow at 45s", udp(t, e, Outbound, cli(100), dst, []byte("x"), t0.Add(45*time.Second)), Drop)
	// A flow silent for 31 s is forgotten: it starts over, young.
	udp(t, e, Outbound, cli(200), dst, []byte("x"), t0.Add(50*time.Second))
	wantAction(t, "after a silence", udp(t, e, Outbound, cli(200), dst, []byte("x"), t0.Add(81*time.Second)), Pass)
	if s := e.Stats(); s.FlowsExpired != 2 || s.Flows != 1 {
		t.Errorf("stats %+v", s)
	}
}

// TestReassemble drives flow.reassemble directly: in order, overlaps
// and retransmissions, a gap, the cap, and sequence wrap-around.
func TestReassemble(t *testing.T) {
	type seg struct {
		seq  uint32
		data string
	}
	tests := []struct {
		name  string
		segs  []seg
		limit int
		want  string
		ended bool
	}{
		{"in order", []seg{{100, "abc"}, {103, "def"}}, 64, "abcdef", false},
		{"retransmission", []seg{{100, "abc"}, {100, "abc"}, {103, "def"}}, 64, "abcdef", false},
		{"overlap", []seg{{100, "abc"}, {101, "bcdef"}}, 64, "abcdef", false},
		{"gap ends reassembly", []seg{{100, "abc"}, {110, "xyz"}, {103, "def"}}, 64, "abc", true},
		{"cap", []seg{{100, "abcdef"}, {106, "ghij"}}, 8, "abcdefgh", true},
		{"wrap-around", []seg{{0xfffffffe, "ab"}, {0, "cd"}}, 64, "abcd", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f flow
			for _, s := range tt.segs {
				f.reassemble(s.seq, []byte(s.data), tt.limit)
			}
			if diff := cmp.Diff(tt.want, string(f.stream)); diff != "" || f.streamEnd != tt.ended {
				t.Errorf("stream %q ended %v, want %q ended %v", f.stream, f.streamEnd, tt.want, tt.ended)
			}
		})
	}
}

// TestEngineCopiesPacket: the engine keeps copies, not the caller's
// buffer, which the router reuses.
func TestEngineCopiesPacket(t *testing.T) {
	e := newTestEngine(t, shipped(t, "iran-protocol-filter"), 1)
	c := newConn(t, e, cli(cliPort), srv443)
	c.handshake()
	first := randomPayload(t, 100)
	b := c.segment(Client, packet.PSH|packet.ACK, first)
	e.Packet(Outbound, b, t0)
	c.cseq += uint32(len(first))
	clear(b)
	wantAction(t, "second packet", c.data(Client, first), Drop)
}
