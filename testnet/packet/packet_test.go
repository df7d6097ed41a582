package packet

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var update = flag.Bool("update", false, "rewrite the fuzz seed files in testdata/fuzz")

var (
	c4 = netip.MustParseAddrPort("198.18.0.2:40000")
	s4 = netip.MustParseAddrPort("198.19.0.3:443")
	c6 = netip.MustParseAddrPort("[2001:db8::2]:40000")
	s6 = netip.MustParseAddrPort("[2001:db8::3]:443")
)

var cmpAddr = cmpopts.EquateComparable(netip.Addr{})

// mustTCP builds a TCP packet or fails the test.
func mustTCP(t testing.TB, s TCPSpec) []byte {
	t.Helper()
	b, err := BuildTCP(s)
	if err != nil {
		t.Fatalf("BuildTCP(%+v): %v", s, err)
	}
	return b
}

// mustUDP builds a UDP packet or fails the test.
func mustUDP(t testing.TB, s UDPSpec) []byte {
	t.Helper()
	b, err := BuildUDP(s)
	if err != nil {
		t.Fatalf("BuildUDP(%+v): %v", s, err)
	}
	return b
}

func TestParseBuilt(t *testing.T) {
	opts := []byte{2, 4, 0x05, 0xb4, 1, 1, 4, 2} // MSS 1460, NOP, NOP, SACK permitted
	tests := []struct {
		name string
		pkt  []byte
		want Packet
	}{
		{
			name: "ipv4 tcp syn with options",
			pkt:  mustTCP(t, TCPSpec{Src: c4, Dst: s4, Seq: 1000, Flags: SYN, Window: 64240, Options: opts, TTL: 60, ID: 7}),
			want: Packet{Version: 4, Src: c4.Addr(), Dst: s4.Addr(), Protocol: ProtoTCP, TTL: 60, ID: 7,
				SrcPort: 40000, DstPort: 443, TCP: TCP{Seq: 1000, Flags: SYN, Window: 64240, Options: opts},
				Payload: []byte{}, Len: 20 + 28, HeaderLen: 20},
		},
		{
			name: "ipv6 tcp data",
			pkt:  mustTCP(t, TCPSpec{Src: c6, Dst: s6, Seq: 1, Ack: 2, Flags: PSH | ACK, Payload: []byte("hello")}),
			want: Packet{Version: 6, Src: c6.Addr(), Dst: s6.Addr(), Protocol: ProtoTCP, TTL: DefaultTTL,
				SrcPort: 40000, DstPort: 443, TCP: TCP{Seq: 1, Ack: 2, Flags: PSH | ACK, Window: 0xffff, Options: []byte{}},
				Payload: []byte("hello"), Len: 40 + 25, HeaderLen: 40},
		},
		{
			name: "ipv4 udp",
			pkt:  mustUDP(t, UDPSpec{Src: c4, Dst: s4, Payload: []byte("dns?")}),
			want: Packet{Version: 4, Src: c4.Addr(), Dst: s4.Addr(), Protocol: ProtoUDP, TTL: DefaultTTL,
				SrcPort: 40000, DstPort: 443, Payload: []byte("dns?"), Len: 20 + 12, HeaderLen: 20},
		},
		{
			name: "ipv6 udp empty",
			pkt:  mustUDP(t, UDPSpec{Src: c6, Dst: s6, TTL: 1}),
			want: Packet{Version: 6, Src: c6.Addr(), Dst: s6.Addr(), Protocol: ProtoUDP, TTL: 1,
				SrcPort: 40000, DstPort: 443, Payload: []byte{}, Len: 48, HeaderLen: 40},
		},
		{
			name: "ipv4-mapped endpoints build ipv4",
			pkt: mustTCP(t, TCPSpec{Src: netip.AddrPortFrom(netip.AddrFrom16(c4.Addr().As16()), 1),
				Dst: netip.AddrPortFrom(netip.AddrFrom16(s4.Addr().As16()), 2), Flags: RST}),
			want: Packet{Version: 4, Src: c4.Addr(), Dst: s4.Addr(), Protocol: ProtoTCP, TTL: DefaultTTL,
				SrcPort: 1, DstPort: 2, TCP: TCP{Flags: RST, Options: []byte{}}, Payload: []byte{}, Len: 40, HeaderLen: 20},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.pkt)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(tt.want, got, cmpAddr); diff != "" {
				t.Errorf("Parse mismatch (-want +got):\n%s", diff)
			}
			if err := VerifyChecksums(tt.pkt); err != nil {
				t.Errorf("VerifyChecksums: %v", err)
			}
		})
	}
}

// TestChecksumVectors checks Checksum against published examples and a
// plain word-by-word sum.
func TestChecksumVectors(t *testing.T) {
	tests := []struct {
		name string
		hex  string
		want uint16
	}{
		// RFC 1071 §3: the sum of these bytes is ddf2, so the checksum is 220d.
		{name: "rfc1071 example", hex: "0001f203f4f5f6f7", want: 0x220d},
		// The classic IPv4 header with its checksum field zeroed: b861.
		{name: "ipv4 header", hex: "450000730000400040110000c0a80001c0a800c7", want: 0xb861},
		{name: "odd length", hex: "01", want: ^uint16(0x0100)},
		{name: "empty", hex: "", want: 0xffff},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, _ := hex.DecodeString(tt.hex)
			if got := Checksum(b, 0); got != tt.want {
				t.Errorf("Checksum = %#04x, want %#04x", got, tt.want)
			}
			if got := naiveChecksum(b); got != tt.want {
				t.Errorf("naiveChecksum = %#04x, want %#04x (test helper broken)", got, tt.want)
			}
		})
	}
	// Long random-looking buffers: the 8-byte fast path equals the naive sum.
	for n := range 80 {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*131 + n*7 + 0xf0)
		}
		if got, want := Checksum(b, 0x1fffe), naiveChecksumFrom(b, 0x1fffe); got != want {
			t.Fatalf("len %d: Checksum = %#04x, naive = %#04x", n, got, want)
		}
	}
}

func naiveChecksum(b []byte) uint16 { return naiveChecksumFrom(b, 0) }

func naiveChecksumFrom(b []byte, s uint32) uint16 {
	acc := uint64(s)
	for i := 0; i+1 < len(b); i += 2 {
		acc += uint64(b[i])<<8 | uint64(b[i+1])
	}
	if len(b)%2 == 1 {
		acc += uint64(b[len(b)-1]) << 8
	}
	for acc>>16 != 0 {
		acc = acc&0xffff + acc>>16
	}
	return ^uint16(acc)
}

// TestChecksumIndependent recomputes the TCP and UDP checksums of built
// packets from the RFC definitions, with a pseudo-header laid out by hand.
func TestChecksumIndependent(t *testing.T) {
	tests := []struct {
		name string
		pkt  []byte
	}{
		{"tcp4", mustTCP(t, TCPSpec{Src: c4, Dst: s4, Seq: 0xdeadbeef, Ack: 0x01020304, Flags: RST | ACK, Payload: []byte("x")})},
		{"tcp6", mustTCP(t, TCPSpec{Src: c6, Dst: s6, Seq: 5, Flags: FIN | ACK, Payload: bytes.Repeat([]byte{0xff}, 999)})},
		{"udp4", mustUDP(t, UDPSpec{Src: c4, Dst: s4, Payload: []byte("odd")})},
		{"udp6", mustUDP(t, UDPSpec{Src: c6, Dst: s6, Payload: []byte("even")})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse(tt.pkt)
			if err != nil {
				t.Fatal(err)
			}
			seg := append([]byte(nil), tt.pkt[p.HeaderLen:p.Len]...)
			csumAt := 16
			if p.Protocol == ProtoUDP {
				csumAt = 6
			}
			stored := binary.BigEndian.Uint16(seg[csumAt:])
			seg[csumAt], seg[csumAt+1] = 0, 0
			var pseudo []byte
			pseudo = append(pseudo, p.Src.AsSlice()...)
			pseudo = append(pseudo, p.Dst.AsSlice()...)
			if p.Version == 4 {
				pseudo = append(pseudo, 0, p.Protocol, byte(len(seg)>>8), byte(len(seg)))
			} else {
				pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(len(seg)))
				pseudo = append(pseudo, 0, 0, 0, p.Protocol)
			}
			want := naiveChecksum(append(pseudo, seg...))
			if stored != want {
				t.Errorf("stored checksum %#04x, recomputed %#04x", stored, want)
			}
			if p.Version == 4 {
				h := append([]byte(nil), tt.pkt[:20]...)
				storedIP := binary.BigEndian.Uint16(h[10:])
				h[10], h[11] = 0, 0
				if w := naiveChecksum(h); storedIP != w {
					t.Errorf("ipv4 header checksum %#04x, recomputed %#04x", storedIP, w)
				}
			}
		})
	}
}

func TestVerifyChecksumsCatchesDamage(t *testing.T) {
	base4 := mustTCP(t, TCPSpec{Src: c4, Dst: s4, Flags: ACK, Payload: []byte("payload")})
	base6 := mustUDP(t, UDPSpec{Src: c6, Dst: s6, Payload: []byte("payload")})
	udp4 := mustUDP(t, UDPSpec{Src: c4, Dst: s4, Payload: []byte("payload")})
	tests := []struct {
		name    string
		pkt     []byte
		damage  func(b []byte)
		wantErr error
	}{
		{"ipv4 header byte", base4, func(b []byte) { b[8]-- }, ErrChecksum},
		{"tcp payload byte", base4, func(b []byte) { b[len(b)-1] ^= 1 }, ErrChecksum},
		{"udp6 payload byte", base6, func(b []byte) { b[len(b)-1] ^= 1 }, ErrChecksum},
		{"udp6 zero checksum", base6, func(b []byte) { b[46], b[47] = 0, 0 }, ErrChecksum},
		{"udp4 zero checksum means none", udp4, func(b []byte) { b[26], b[27] = 0, 0 }, nil},
		{"truncated", base4, func(b []byte) { binary.BigEndian.PutUint16(b[2:], 200) }, ErrTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := append([]byte(nil), tt.pkt...)
			tt.damage(b)
			if err := VerifyChecksums(b); !errors.Is(err, tt.wantErr) {
				t.Errorf("VerifyChecksums = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tcp4 := mustTCP(t, TCPSpec{Src: c4, Dst: s4, Flags: ACK, Payload: []byte("data")})
	udp4 := mustUDP(t, UDPSpec{Src: c4, Dst: s4, Payload: []byte("data")})
	tcp6 := mustTCP(t, TCPSpec{Src: c6, Dst: s6, Flags: ACK})
	edit := func(b []byte, f func([]byte)) []byte {
		b = append([]byte(nil), b...)
		f(b)
		return b
	}
	tests := []struct {
		name string
		pkt  []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"version 5", []byte{0x50, 0, 0, 0}, ErrVersion},
		{"short ipv4", tcp4[:19], ErrTruncated},
		{"ipv4 ihl 4", edit(tcp4, func(b []byte) { b[0] = 0x44 }), ErrMalformed},
		{"ipv4 total below ihl", edit(tcp4, func(b []byte) { binary.BigEndian.PutUint16(b[2:], 19) }), ErrMalformed},
		{"ipv4 total beyond buffer", tcp4[:len(tcp4)-1], ErrTruncated},
		{"ipv4 ihl beyond total", edit(tcp4, func(b []byte) { b[0] = 0x4f }), ErrMalformed},
		{"tcp short", edit(tcp4[:30], func(b []byte) { binary.BigEndian.PutUint16(b[2:], 30) }), ErrTruncated},
		{"tcp offset 4", edit(tcp4, func(b []byte) { b[32] = 0x40 }), ErrMalformed},
		{"tcp offset beyond", edit(tcp4, func(b []byte) { b[32] = 0xf0 }), ErrTruncated},
		{"udp length 7", edit(udp4, func(b []byte) { binary.BigEndian.PutUint16(b[24:], 7) }), ErrMalformed},
		{"udp length beyond", edit(udp4, func(b []byte) { binary.BigEndian.PutUint16(b[24:], 13) }), ErrTruncated},
		{"short ipv6", tcp6[:39], ErrTruncated},
		{"ipv6 payload beyond", tcp6[:len(tcp6)-1], ErrTruncated},
		{"ipv6 ext header truncated", edit(tcp6, func(b []byte) { b[6] = 0; b[41] = 200 }), ErrTruncated},
		{"ipv6 ext chain too long", ipv6Chain(9), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.pkt)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse = %v, want %v", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "packet: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

// ipv6Chain is an IPv6 packet with n destination-options headers and then
// an empty UDP datagram.
func ipv6Chain(n int) []byte {
	b := make([]byte, IPv6HeaderLen)
	b[0] = 0x60
	b[6] = 60
	b[7] = 64
	for i := range n {
		next := byte(60)
		if i == n-1 {
			next = ProtoUDP
		}
		b = append(b, next, 0, 1, 4, 0, 0, 0, 0) // PadN option
	}
	b = append(b, 0, 1, 0, 2, 0, 8, 0, 0)
	binary.BigEndian.PutUint16(b[4:], uint16(len(b)-IPv6HeaderLen))
	return b
}

func TestParseSpecialCases(t *testing.T) {
	t.Run("ipv6 extension headers are skipped", func(t *testing.T) {
		p, err := Parse(ipv6Chain(3))
		if err != nil {
			t.Fatal(err)
		}
		if !p.IsUDP() || p.SrcPort != 1 || p.DstPort != 2 || p.HeaderLen != 40+24 {
			t.Errorf("got %+v", p)
		}
	})
	t.Run("trailing bytes beyond total length are ignored", func(t *testing.T) {
		b := append(mustUDP(t, UDPSpec{Src: c4, Dst: s4, Payload: []byte("x")}), 0, 0, 0)
		p, err := Parse(b)
		if err != nil || string(p.Payload) != "x" || p.Len != len(b)-3 {
			t.Errorf("Parse = %+v, %v", p, err)
		}
		if err := VerifyChecksums(b); err != nil {
			t.Errorf("VerifyChecksums: %v", err)
		}
	})
	t.Run("udp length shorter than the ip payload", func(t *testing.T) {
		b := mustUDP(t, UDPSpec{Src: c4, Dst: s4, Payload: []byte("abc")})
		binary.BigEndian.PutUint16(b[24:], 10)
		p, err := Parse(b)
		if err != nil || string(p.Payload) != "ab" {
			t.Errorf("Parse = %q, %v", p.Payload, err)
		}
	})
	t.Run("ipv4 fragment", func(t *testing.T) {
		b := mustUDP(t, UDPSpec{Src: c4, Dst: s4, Payload: []byte("frag")})
		binary.BigEndian.PutUint16(b[6:], 0x2000) // MF
		p, err := Parse(b)
		if err != nil || !p.Fragment || p.IsUDP() || len(p.Payload) != 12 || p.SrcPort != 0 {
			t.Errorf("Parse = %+v, %v", p, err)
		}
	})
	t.Run("ipv6 fragment header", func(t *testing.T) {
		b := make([]byte, IPv6HeaderLen)
		b[0], b[6] = 0x60, 44
		b = append(b, ProtoTCP, 0, 0, 1, 0, 0, 0, 9, 0xaa, 0xbb) // offset 0, M=1
		binary.BigEndian.PutUint16(b[4:], uint16(len(b)-IPv6HeaderLen))
		p, err := Parse(b)
		if err != nil || !p.Fragment || p.Protocol != ProtoTCP || !bytes.Equal(p.Payload, []byte{0xaa, 0xbb}) {
			t.Errorf("Parse = %+v, %v", p, err)
		}
	})
	t.Run("icmp keeps ip payload", func(t *testing.T) {
		b := mustUDP(t, UDPSpec{Src: c4, Dst: s4})
		b[9] = ProtoICMP
		p, err := Parse(b)
		if err != nil || p.Protocol != ProtoICMP || len(p.Payload) != 8 {
			t.Errorf("Parse = %+v, %v", p, err)
		}
	})
	t.Run("ipv4 options", func(t *testing.T) {
		b := mustUDP(t, UDPSpec{Src: c4, Dst: s4, Payload: []byte("opt")})
		// Insert a 4-byte option (NOP NOP NOP EOL) and fix the header.
		b = append(append(append([]byte(nil), b[:20]...), 1, 1, 1, 0), b[20:]...)
		b[0] = 0x46
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
		b[10], b[11] = 0, 0
		binary.BigEndian.PutUint16(b[10:], Checksum(b[:24], 0))
		p, err := Parse(b)
		if err != nil || p.HeaderLen != 24 || string(p.Payload) != "opt" {
			t.Fatalf("Parse = %+v, %v", p, err)
		}
		if err := VerifyChecksums(b); err != nil {
			t.Errorf("VerifyChecksums: %v", err)
		}
	})
	t.Run("ipv6 authentication header", func(t *testing.T) {
		b := make([]byte, IPv6HeaderLen)
		b[0], b[6] = 0x60, 51
		b = append(b, ProtoUDP, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0) // AH of (1+2)*4 = 12 bytes
		b = append(b, 0, 7, 0, 9, 0, 8, 0, 0)
		binary.BigEndian.PutUint16(b[4:], uint16(len(b)-IPv6HeaderLen))
		p, err := Parse(b)
		if err != nil || !p.IsUDP() || p.SrcPort != 7 || p.DstPort != 9 || p.HeaderLen != 52 {
			t.Errorf("Parse = %+v, %v", p, err)
		}
	})
	t.Run("seq len counts syn and fin", func(t *testing.T) {
		p, _ := Parse(mustTCP(t, TCPSpec{Src: c4, Dst: s4, Flags: SYN | FIN, Payload: []byte("abc")}))
		if p.SeqLen() != 5 {
			t.Errorf("SeqLen = %d, want 5", p.SeqLen())
		}
	})
}

func TestBuildErrors(t *testing.T) {
	tests := []struct {
		name string
		err  error
	}{
		{"mixed families", func() error { _, err := BuildTCP(TCPSpec{Src: c4, Dst: s6}); return err }()},
		{"invalid address", func() error { _, err := BuildUDP(UDPSpec{Dst: s4}); return err }()},
		{"options not a multiple of 4", func() error { _, err := BuildTCP(TCPSpec{Src: c4, Dst: s4, Options: []byte{1}}); return err }()},
		{"options too long", func() error { _, err := BuildTCP(TCPSpec{Src: c4, Dst: s4, Options: make([]byte, 44)}); return err }()},
		{"ipv4 too large", func() error { _, err := BuildUDP(UDPSpec{Src: c4, Dst: s4, Payload: make([]byte, 65520)}); return err }()},
		{"udp too large", func() error { _, err := BuildUDP(UDPSpec{Src: c6, Dst: s6, Payload: make([]byte, 65530)}); return err }()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !errors.Is(tt.err, ErrSpec) {
				t.Errorf("got %v, want ErrSpec", tt.err)
			}
		})
	}
}

func TestTCPFlagsString(t *testing.T) {
	tests := []struct {
		f    TCPFlags
		want string
	}{
		{0, "0"},
		{SYN | ACK, "SYN|ACK"},
		{RST | ACK, "RST|ACK"},
		{FIN | PSH | CWR, "FIN|PSH|CWR"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.f.String(); got != tt.want {
				t.Errorf("String = %q, want %q", got, tt.want)
			}
			if !tt.f.Has(tt.f) || (tt.f != 0 && tt.f.Has(tt.f|URG) && tt.f&URG == 0) {
				t.Errorf("Has is inconsistent for %v", tt.f)
			}
		})
	}
}

// seedPackets are real encodings that seed FuzzParsePacket.
func seedPackets(t testing.TB) [][]byte {
	return [][]byte{
		mustTCP(t, TCPSpec{Src: c4, Dst: s4, Seq: 1, Flags: SYN, Options: []byte{2, 4, 5, 0xb4}}),
		mustTCP(t, TCPSpec{Src: c6, Dst: s6, Seq: 7, Ack: 9, Flags: PSH | ACK, Payload: []byte("GET / HTTP/1.1\r\n\r\n")}),
		mustUDP(t, UDPSpec{Src: c4, Dst: s4, Payload: []byte{0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}}),
		mustUDP(t, UDPSpec{Src: c6, Dst: s6, Payload: []byte("quic")}),
		ipv6Chain(2),
	}
}

// TestWriteFuzzSeeds writes the seed corpus files under -update.
func TestWriteFuzzSeeds(t *testing.T) {
	if !*update {
		t.Skip("run with -update to rewrite testdata/fuzz")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzParsePacket")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range seedPackets(t) {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
