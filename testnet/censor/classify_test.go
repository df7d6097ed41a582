package censor

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/dns/dnsmessage"
)

func TestClassifyTCP(t *testing.T) {
	hello := captureGoHello(t, "www.example.com", nil)
	dnsq := FrameDNSTCP(packQuery(t, 5, "example.com.", dnsmessage.TypeA, true))
	q, _ := ParseDNSQuery(dnsq[2:])
	dnsResp := FrameDNSTCP(ForgeNXDOMAIN(q))
	tests := []struct {
		name    string
		packets [][]byte
		want    Protocol
	}{
		{"http get", [][]byte{[]byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")}, ProtoHTTP},
		{"http connect", [][]byte{[]byte("CONNECT example.com:443 HTTP/1.1\r\n\r\n")}, ProtoHTTP},
		{"http split over two packets", [][]byte{[]byte("PO"), []byte("ST /submit HTTP/1.1\r\n")}, ProtoHTTP},
		{"http method shorter than 8 bytes in all", [][]byte{[]byte("GET / H")}, ProtoUnknown},
		{"http exactly 8 bytes", [][]byte{[]byte("GET / HT")}, ProtoHTTP},
		{"unknown method", [][]byte{[]byte("PATCH / HTTP/1.1\r\n")}, ProtoUnknown},
		{"tls clienthello", [][]byte{hello}, ProtoTLS},
		{"tls clienthello in two packets", [][]byte{hello[:3], hello[3:]}, ProtoTLS},
		{"tls record header only", [][]byte{hello[:5]}, ProtoTLS},
		{"tls server hello", [][]byte{{0x16, 3, 3, 0, 40, 2}}, ProtoUnknown},
		{"tls application data", [][]byte{{0x17, 3, 3, 0, 40, 1}}, ProtoUnknown},
		{"dns query over tcp", [][]byte{dnsq}, ProtoDNS},
		{"dns query split", [][]byte{dnsq[:2], dnsq[2:]}, ProtoDNS},
		{"dns response over tcp", [][]byte{dnsResp}, ProtoUnknown},
		{"ssh banner", [][]byte{[]byte("SSH-2.0-OpenSSH_9.6\r\n")}, ProtoUnknown},
		{"fully encrypted", [][]byte{randomPayload(t, 300)}, ProtoUnknown},
		{"nothing", nil, ProtoUnknown},
		{"empty packets", [][]byte{{}, {}}, ProtoUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ClassifyTCP(tt.packets...); got != tt.want {
				t.Errorf("ClassifyTCP = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestClassifyUDP(t *testing.T) {
	quic := readHex(t, "rfc9001-a2-protected.hex")
	tests := []struct {
		name    string
		payload []byte
		want    Protocol
	}{
		{"dns query", packQuery(t, 1, "example.com.", dnsmessage.TypeAAAA, true), ProtoDNS},
		{"quic initial", quic, ProtoUnknown},
		{"random", randomPayload(t, 64), ProtoUnknown},
		{"empty", nil, ProtoUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ClassifyUDP(tt.payload); got != tt.want {
				t.Errorf("ClassifyUDP = %v, want %v", got, tt.want)
			}
		})
	}
	for p, s := range map[Protocol]string{ProtoUnknown: "unknown", ProtoHTTP: "http", ProtoTLS: "tls", ProtoDNS: "dns"} {
		if p.String() != s {
			t.Errorf("%d.String() = %q", p, p.String())
		}
	}
}

func TestParseHTTPRequest(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    HTTPRequest
		wantErr error
	}{
		{"full request", "GET /index.html HTTP/1.1\r\nHost: WWW.Example.COM:8080\r\nAccept: */*\r\n\r\nbody",
			HTTPRequest{Method: "GET", Target: "/index.html", Version: "HTTP/1.1", Host: "www.example.com", Complete: true}, nil},
		{"lower-case header, trailing dot", "POST /x HTTP/1.0\nhost:  blocked.example. \n\n",
			HTTPRequest{Method: "POST", Target: "/x", Version: "HTTP/1.0", Host: "blocked.example", Complete: true}, nil},
		{"absolute form, no host yet", "GET http://a.example/ HTTP/1.1\r\nUser-Agent: x\r\n",
			HTTPRequest{Method: "GET", Target: "http://a.example/", Version: "HTTP/1.1"}, nil},
		{"ipv6 literal host", "GET / HTTP/1.1\r\nHost: [2001:DB8::1]:80\r\n\r\n",
			HTTPRequest{Method: "GET", Target: "/", Version: "HTTP/1.1", Host: "[2001:db8::1]", Complete: true}, nil},
		{"first host header wins", "GET / HTTP/1.1\r\nHost: one.example\r\nHost: two.example\r\n\r\n",
			HTTPRequest{Method: "GET", Target: "/", Version: "HTTP/1.1", Host: "one.example", Complete: true}, nil},
		{"line without colon skipped", "GET / HTTP/1.1\r\ngarbage\r\nHost: h.example\r\n\r\n",
			HTTPRequest{Method: "GET", Target: "/", Version: "HTTP/1.1", Host: "h.example", Complete: true}, nil},
		{"request line not ended", "GET /very/long/pa", HTTPRequest{}, ErrNeedMore},
		{"empty", "", HTTPRequest{}, ErrNeedMore},
		{"binary", "\x16\x03\x01\x02\x00\x01", HTTPRequest{}, ErrNotHTTP},
		{"control byte before the line ends", "GET /\x00", HTTPRequest{}, ErrNotHTTP},
		{"http/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", HTTPRequest{}, ErrNotHTTP},
		{"two fields only", "GET /\r\n", HTTPRequest{}, ErrNotHTTP},
		{"bad method", "G(T / HTTP/1.1\r\n", HTTPRequest{}, ErrNotHTTP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseHTTPRequest([]byte(tt.in))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHTTPRuleMatch(t *testing.T) {
	rule := HTTPRule{
		Hosts:    DomainList{"blocked.example", "*tube.example"},
		Keywords: []string{"falungong", "Ultrasurf"},
	}
	tests := []struct {
		name   string
		req    string
		want   HTTPMatch
		wantOK bool
	}{
		{"blocked host", "GET / HTTP/1.1\r\nHost: blocked.example\r\n\r\n", HTTPMatch{"host", "blocked.example"}, true},
		{"subdomain", "GET / HTTP/1.1\r\nHost: www.Blocked.example:80\r\n\r\n", HTTPMatch{"host", "blocked.example"}, true},
		{"not at a label boundary", "GET / HTTP/1.1\r\nHost: notblocked.example\r\n\r\n", HTTPMatch{}, false},
		{"star entry over-blocks", "GET / HTTP/1.1\r\nHost: mytube.example\r\n\r\n", HTTPMatch{"host", "*tube.example"}, true},
		{"keyword in path", "GET /search?q=falungong HTTP/1.1\r\nHost: ok.example\r\n\r\n", HTTPMatch{"target", "falungong"}, true},
		{"percent-encoded keyword", "GET /%66alun%67ong HTTP/1.1\r\nHost: ok.example\r\n\r\n", HTTPMatch{"target", "falungong"}, true},
		{"keyword case-insensitive", "GET /ULTRASURF HTTP/1.1\r\nHost: ok.example\r\n\r\n", HTTPMatch{"target", "Ultrasurf"}, true},
		{"keyword in host", "GET / HTTP/1.1\r\nHost: ultrasurf.ok.example\r\n\r\n", HTTPMatch{"host", "Ultrasurf"}, true},
		{"keyword in another header is ignored", "GET / HTTP/1.1\r\nHost: ok.example\r\nCookie: falungong\r\n\r\n", HTTPMatch{}, false},
		{"clean", "GET /news HTTP/1.1\r\nHost: ok.example\r\n\r\n", HTTPMatch{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := ParseHTTPRequest([]byte(tt.req))
			if err != nil {
				t.Fatal(err)
			}
			got, ok := rule.Match(req)
			if ok != tt.wantOK || got != tt.want {
				t.Errorf("Match = %+v, %v; want %+v, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestDomainListMatch(t *testing.T) {
	l := DomainList{"Blocked.Example.", "*evil", "*"}
	tests := []struct {
		host   string
		want   string
		wantOK bool
	}{
		{"blocked.example", "Blocked.Example.", true},
		{"a.b.BLOCKED.example.", "Blocked.Example.", true},
		{"xblocked.example", "", false},
		{"example", "", false},
		{"very.evil", "*evil", true},
		{"notevil", "*evil", true},
		{"", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			got, ok := l.Match(tt.host)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("Match(%q) = %q, %v; want %q, %v", tt.host, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}
