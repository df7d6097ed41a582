package packet

import (
	"bytes"
	"testing"
)

func BenchmarkParse(b *testing.B) {
	pkt := mustTCP(b, TCPSpec{Src: c4, Dst: s4, Seq: 1, Ack: 2, Flags: PSH | ACK, Payload: bytes.Repeat([]byte{0xa5}, 1400)})
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	var p Packet
	for b.Loop() {
		if err := ParseInto(&p, pkt); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBuildTCPReset(b *testing.B) {
	b.SetBytes(IPv4HeaderLen + TCPHeaderLen)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := BuildTCP(TCPSpec{Src: s4, Dst: c4, Seq: 1, Ack: 2, Flags: RST | ACK}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyChecksums(b *testing.B) {
	pkt := mustTCP(b, TCPSpec{Src: c6, Dst: s6, Flags: ACK, Payload: bytes.Repeat([]byte{0x5a}, 1400)})
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	for b.Loop() {
		if err := VerifyChecksums(pkt); err != nil {
			b.Fatal(err)
		}
	}
}
