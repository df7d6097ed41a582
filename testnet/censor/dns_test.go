package censor

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"github.com/commucat/commucat/testnet/packet"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/net/dns/dnsmessage"
)

// packQuery encodes a query with x/net's DNS encoder, with an EDNS OPT
// record the way stub resolvers send one.
func packQuery(t testing.TB, id uint16, name string, typ dnsmessage.Type, rd bool) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: rd})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		t.Fatal(err)
	}
	if err := b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}); err != nil {
		t.Fatal(err)
	}
	if err := b.StartAdditionals(); err != nil {
		t.Fatal(err)
	}
	var opt dnsmessage.ResourceHeader
	if err := opt.SetEDNS0(1232, dnsmessage.RCodeSuccess, false); err != nil {
		t.Fatal(err)
	}
	if err := b.OPTResource(opt, dnsmessage.OPTResource{}); err != nil {
		t.Fatal(err)
	}
	msg, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func TestParseDNSQuery(t *testing.T) {
	tests := []struct {
		name string
		msg  []byte
		want DNSQuery
	}{
		{"a with 0x20 case", packQuery(t, 0xbeef, "WwW.BlOcKed.Example.", dnsmessage.TypeA, true),
			DNSQuery{ID: 0xbeef, Flags: 0x0100, Name: "www.blocked.example", Type: DNSTypeA, Class: DNSClassINET}},
		{"aaaa without rd", packQuery(t, 1, "v6.example.", dnsmessage.TypeAAAA, false),
			DNSQuery{ID: 1, Name: "v6.example", Type: DNSTypeAAAA, Class: DNSClassINET}},
		{"root", packQuery(t, 2, ".", dnsmessage.TypeNS, true),
			DNSQuery{ID: 2, Flags: 0x0100, Name: ".", Type: uint16(dnsmessage.TypeNS), Class: DNSClassINET}},
		{"escaped bytes", []byte("\x00\x07\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03a.b\x02\x00\xff\x00\x00\x01\x00\x01"),
			DNSQuery{ID: 7, Name: `a\046b.\000\255`, Type: 1, Class: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseDNSQuery(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(tt.msg[12:], got.Question) || len(got.Question) < 5 {
				t.Errorf("Question %x is not the question section of %x", got.Question, tt.msg)
			}
			got.Question = nil
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseDNSQueryErrors(t *testing.T) {
	q := packQuery(t, 9, "x.example.", dnsmessage.TypeA, true)
	edit := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), q...)) }
	hdr := func(rest string) []byte {
		return append([]byte("\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00"), rest...)
	}
	long := hdr("")
	for range 5 {
		long = append(long, 63)
		long = append(long, bytes.Repeat([]byte{'a'}, 63)...)
	}
	long = append(long, 0, 0, 1, 0, 1)
	tests := []struct {
		name string
		msg  []byte
	}{
		{"empty", nil},
		{"short header", q[:11]},
		{"response", edit(func(b []byte) []byte { b[2] |= 0x80; return b })},
		{"notify opcode", edit(func(b []byte) []byte { b[2] |= 4 << 3; return b })},
		{"no question", edit(func(b []byte) []byte { b[5] = 0; return b })},
		{"two questions", edit(func(b []byte) []byte { b[5] = 2; return b })},
		{"truncated name", hdr("\x05ab")},
		{"no terminating label", hdr("\x01a")},
		{"truncated question", hdr("\x01a\x00\x00\x01\x00")},
		{"label type 01", hdr("\x41a\x00\x00\x01\x00\x01")},
		{"pointer loop", hdr("\xc0\x0c\x00\x01\x00\x01")},
		{"truncated pointer", hdr("\xc0")},
		{"name over 255 bytes", long},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseDNSQuery(tt.msg); !errors.Is(err, ErrNotDNS) {
				t.Errorf("ParseDNSQuery = %v, want ErrNotDNS", err)
			}
		})
	}
}

func TestParseDNSQueryTCP(t *testing.T) {
	q := packQuery(t, 3, "tcp.example.", dnsmessage.TypeA, true)
	framed := FrameDNSTCP(q)
	for n := range len(framed) {
		if _, err := ParseDNSQueryTCP(framed[:n]); !errors.Is(err, ErrNeedMore) {
			t.Fatalf("prefix %d: err = %v, want ErrNeedMore", n, err)
		}
	}
	got, err := ParseDNSQueryTCP(append(framed, 0xff))
	if err != nil || got.Name != "tcp.example" || got.ID != 3 {
		t.Fatalf("ParseDNSQueryTCP = %+v, %v", got, err)
	}
	if _, err := ParseDNSQueryTCP([]byte{0, 5, 1, 2, 3, 4, 5}); !errors.Is(err, ErrNotDNS) {
		t.Errorf("short length: err = %v", err)
	}
}

// TestForgeDNS decodes forged answers with x/net's DNS parser.
func TestForgeDNS(t *testing.T) {
	query := packQuery(t, 0x1234, "WWW.Blocked.example.", dnsmessage.TypeA, true)
	q, err := ParseDNSQuery(query)
	if err != nil {
		t.Fatal(err)
	}
	v4, _ := ForgeDNSAnswer(q, netip.MustParseAddr("198.18.0.66"), 0)
	v6, _ := ForgeDNSAnswer(q, netip.MustParseAddr("2001:db8::66"), 300)
	mapped, _ := ForgeDNSAnswer(q, netip.AddrFrom16(netip.MustParseAddr("10.0.0.1").As16()), 5)
	tests := []struct {
		name      string
		msg       []byte
		wantRCode dnsmessage.RCode
		wantAns   []dnsmessage.Resource
	}{
		{"a record", v4, dnsmessage.RCodeSuccess, []dnsmessage.Resource{{
			Header: dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName("WWW.Blocked.example."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60, Length: 4},
			Body:   &dnsmessage.AResource{A: [4]byte{198, 18, 0, 66}}}}},
		{"aaaa record for an ipv6 address", v6, dnsmessage.RCodeSuccess, []dnsmessage.Resource{{
			Header: dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName("WWW.Blocked.example."), Type: dnsmessage.TypeAAAA, Class: dnsmessage.ClassINET, TTL: 300, Length: 16},
			Body:   &dnsmessage.AAAAResource{AAAA: netip.MustParseAddr("2001:db8::66").As16()}}}},
		{"ipv4-mapped address is an a record", mapped, dnsmessage.RCodeSuccess, []dnsmessage.Resource{{
			Header: dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName("WWW.Blocked.example."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 5, Length: 4},
			Body:   &dnsmessage.AResource{A: [4]byte{10, 0, 0, 1}}}}},
		{"nxdomain", ForgeNXDOMAIN(q), dnsmessage.RCodeNameError, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m dnsmessage.Message
			if err := m.Unpack(tt.msg); err != nil {
				t.Fatal(err)
			}
			wantHdr := dnsmessage.Header{ID: 0x1234, Response: true, RecursionDesired: true, RecursionAvailable: true, RCode: tt.wantRCode}
			if diff := cmp.Diff(wantHdr, m.Header); diff != "" {
				t.Errorf("header mismatch (-want +got):\n%s", diff)
			}
			wantQ := []dnsmessage.Question{{Name: dnsmessage.MustNewName("WWW.Blocked.example."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}
			if diff := cmp.Diff(wantQ, m.Questions); diff != "" {
				t.Errorf("question mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantAns, m.Answers, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("answers mismatch (-want +got):\n%s", diff)
			}
			if !bytes.Equal(tt.msg[12:12+len(q.Question)], q.Question) {
				t.Errorf("question not echoed byte for byte")
			}
		})
	}
	if _, err := ForgeDNSAnswer(q, netip.Addr{}, 0); !errors.Is(err, ErrConfig) {
		t.Errorf("invalid address: err = %v", err)
	}
	if _, err := ForgeDNSAnswer(DNSQuery{}, netip.MustParseAddr("1.2.3.4"), 0); !errors.Is(err, ErrConfig) {
		t.Errorf("empty query: err = %v", err)
	}
}

// TestReplyUDP injects a forged answer as a whole IP packet.
func TestReplyUDP(t *testing.T) {
	client := netip.MustParseAddrPort("198.18.0.2:53000")
	resolver := netip.MustParseAddrPort("198.18.0.53:53")
	query := packQuery(t, 77, "blocked.example.", dnsmessage.TypeA, true)
	pkt, err := packet.BuildUDP(packet.UDPSpec{Src: client, Dst: resolver, Payload: query})
	if err != nil {
		t.Fatal(err)
	}
	p, err := packet.Parse(pkt)
	if err != nil {
		t.Fatal(err)
	}
	if got := ClassifyUDP(p.Payload); got != ProtoDNS {
		t.Errorf("ClassifyUDP = %v", got)
	}
	q, err := ParseDNSQuery(p.Payload)
	if err != nil {
		t.Fatal(err)
	}
	answer, err := ForgeDNSAnswer(q, netip.MustParseAddr("198.18.0.66"), 0)
	if err != nil {
		t.Fatal(err)
	}
	reply, err := ReplyUDP(&p, answer, 40)
	if err != nil {
		t.Fatal(err)
	}
	if err := packet.VerifyChecksums(reply); err != nil {
		t.Fatal(err)
	}
	r, _ := packet.Parse(reply)
	if r.SrcAddrPort() != resolver || r.DstAddrPort() != client || r.TTL != 40 || !bytes.Equal(r.Payload, answer) {
		t.Errorf("reply %v -> %v ttl %d", r.SrcAddrPort(), r.DstAddrPort(), r.TTL)
	}
	tcp, _ := packet.Parse(mustBuildTCP(t, packet.TCPSpec{Src: client, Dst: resolver, Flags: packet.SYN}))
	if _, err := ReplyUDP(&tcp, answer, 0); !errors.Is(err, ErrNotInFlow) {
		t.Errorf("reply to tcp: err = %v", err)
	}
}

func mustBuildTCP(t testing.TB, s packet.TCPSpec) []byte {
	t.Helper()
	b, err := packet.BuildTCP(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
