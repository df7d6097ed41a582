package packet

import (
	"bytes"
	"errors"
	"testing"
)

func FuzzParsePacket(f *testing.F) {
	for _, s := range seedPackets(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrVersion) {
				t.Fatalf("undocumented error %v", err)
			}
			return
		}
		if p.Len > len(b) || p.HeaderLen > p.Len || len(p.Payload) > p.Len {
			t.Fatalf("lengths out of range: %+v (buffer %d)", p, len(b))
		}
		_ = VerifyChecksums(b) // must not panic
		if p.Src.Is4In6() != p.Dst.Is4In6() {
			return // one mapped address: BuildTCP/BuildUDP refuse mixed families
		}
		switch {
		case p.IsTCP():
			opts := p.TCP.Options
			if len(opts)%4 != 0 || len(opts) > 40 {
				return
			}
			again, err := BuildTCP(TCPSpec{Src: p.SrcAddrPort(), Dst: p.DstAddrPort(), Seq: p.TCP.Seq, Ack: p.TCP.Ack,
				Flags: p.TCP.Flags, Window: p.TCP.Window, Options: opts, TTL: p.TTL, ID: p.ID, Payload: p.Payload})
			if err != nil {
				t.Fatalf("BuildTCP of a parsed segment: %v", err)
			}
			q := mustReparse(t, again)
			if q.TCP.Seq != p.TCP.Seq || q.TCP.Ack != p.TCP.Ack || q.TCP.Flags != p.TCP.Flags ||
				!bytes.Equal(q.TCP.Options, opts) || !bytes.Equal(q.Payload, p.Payload) {
				t.Fatalf("round trip changed the segment: %+v -> %+v", p, q)
			}
			checkEndpoints(t, p, q)
		case p.IsUDP():
			again, err := BuildUDP(UDPSpec{Src: p.SrcAddrPort(), Dst: p.DstAddrPort(), TTL: p.TTL, ID: p.ID, Payload: p.Payload})
			if err != nil {
				if len(p.Payload) > 0xffff-48 {
					return
				}
				t.Fatalf("BuildUDP of a parsed datagram: %v", err)
			}
			q := mustReparse(t, again)
			if !bytes.Equal(q.Payload, p.Payload) {
				t.Fatalf("round trip changed the payload")
			}
			checkEndpoints(t, p, q)
		}
	})
}

// mustReparse parses a built packet and checks its checksums.
func mustReparse(t *testing.T, b []byte) Packet {
	t.Helper()
	q, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse of a built packet: %v", err)
	}
	if err := VerifyChecksums(b); err != nil {
		t.Fatalf("VerifyChecksums of a built packet: %v", err)
	}
	return q
}

// checkEndpoints checks that a rebuilt packet has the original's
// addresses, ports and TTL (zero TTL becomes DefaultTTL).
func checkEndpoints(t *testing.T, p, q Packet) {
	t.Helper()
	// IPv4-mapped IPv6 addresses are rebuilt as IPv4: compare unmapped.
	if q.Src != p.Src.Unmap() || q.Dst != p.Dst.Unmap() || q.SrcPort != p.SrcPort || q.DstPort != p.DstPort {
		t.Fatalf("endpoints changed: %v->%v became %v->%v", p.SrcAddrPort(), p.DstAddrPort(), q.SrcAddrPort(), q.DstAddrPort())
	}
	want := p.TTL
	if want == 0 {
		want = DefaultTTL
	}
	if q.TTL != want {
		t.Fatalf("TTL %d became %d", p.TTL, q.TTL)
	}
}
