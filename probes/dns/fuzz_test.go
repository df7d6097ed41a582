package dns_test

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/commucat/commucat/probes/dns"
	"github.com/commucat/commucat/probes/ooni"
	"github.com/commucat/commucat/probes/probestest"
)

var update = flag.Bool("update", false, "rewrite the seed files in testdata/fuzz")

const fuzzName = "example.org"

// seeds are responses built by the real encoder.
func seeds(t testing.TB) map[string][]byte {
	q := dnsmessage.Question{Name: dnsmessage.MustNewName(fuzzName + "."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}
	ok, err := probestest.DNSResponse(7, q, dnsmessage.RCodeSuccess, []netip.Addr{netip.MustParseAddr("93.184.215.14"), netip.MustParseAddr("10.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	nx, err := probestest.DNSResponse(7, q, dnsmessage.RCodeNameError, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 7, Response: true})
	b.EnableCompression()
	b.StartQuestions()
	b.Question(q)
	b.StartAnswers()
	b.CNAMEResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}, dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName("cdn.example.net.")})
	b.AResource(dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName("cdn.example.net."), Class: dnsmessage.ClassINET, TTL: 60}, dnsmessage.AResource{A: [4]byte{151, 101, 1, 1}})
	cname, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{"answers": ok, "nxdomain": nx, "cname": cname, "truncated": ok[:len(ok)-3]}
}

// encode rebuilds a response from a parsed one.
func encode(id uint16, rcode dnsmessage.RCode, r dns.Response) ([]byte, error) {
	n := dnsmessage.MustNewName(fuzzName + ".")
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, Response: true, RCode: rcode})
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(dnsmessage.Question{Name: n, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}); err != nil {
		return nil, err
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	for _, a := range r.Answers {
		h := dnsmessage.ResourceHeader{Name: n, Class: dnsmessage.ClassINET, TTL: *a.TTL}
		var err error
		switch a.AnswerType {
		case "A":
			err = b.AResource(h, dnsmessage.AResource{A: netip.MustParseAddr(a.IPv4).As4()})
		case "AAAA":
			err = b.AAAAResource(h, dnsmessage.AAAAResource{AAAA: netip.MustParseAddr(a.IPv6).As16()})
		case "CNAME":
			var c dnsmessage.Name
			c, err = dnsmessage.NewName(a.Hostname)
			if err == nil {
				err = b.CNAMEResource(h, dnsmessage.CNAMEResource{CNAME: c})
			}
		}
		if err != nil {
			return nil, err
		}
	}
	return b.Finish()
}

func TestWriteSeeds(t *testing.T) {
	if !*update {
		t.Skip("run with -update to rewrite the seeds")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzParseResponse")
	os.MkdirAll(dir, 0o755)
	for name, b := range seeds(t) {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzParseResponse checks that no response panics the parser, that every
// error is a mismatch or a misbehaving server, and that a parsed response
// encodes back to one that parses the same.
func FuzzParseResponse(f *testing.F) {
	for _, b := range seeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		r, err := dns.ParseResponse(msg, 7, fuzzName, dnsmessage.TypeA)
		if err != nil {
			if !errors.Is(err, dns.ErrMismatch) && !errors.Is(err, ooni.ErrDNSMisbehaving) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		_ = r.Err()
		if len(r.Addrs) > len(r.Answers) {
			t.Fatalf("%d addresses but %d answers", len(r.Addrs), len(r.Answers))
		}
		again, err := encode(7, r.RCode, r)
		if err != nil {
			return // a CNAME the builder cannot write, such as an over-long name
		}
		back, err := dns.ParseResponse(again, 7, fuzzName, dnsmessage.TypeA)
		if err != nil {
			t.Fatalf("re-encoded response does not parse: %v", err)
		}
		if diff := cmp.Diff(r, back, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
			t.Fatalf("round trip differs:\n%s", diff)
		}
	})
}

func BenchmarkParseResponse(b *testing.B) {
	msg := seeds(b)["answers"]
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := dns.ParseResponse(msg, 7, fuzzName, dnsmessage.TypeA); err != nil {
			b.Fatal(err)
		}
	}
}
