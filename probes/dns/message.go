package dns

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/commucat/commucat/probes/ooni"
)

// MaxResponse bounds a DNS response this package reads.
const MaxResponse = 64 << 10

// ErrMismatch is returned by ParseResponse for a response that does not
// answer the query (wrong ID, not a response, another question).
var ErrMismatch = errors.New("dns: response does not match the query")

// Response is a parsed DNS response.
type Response struct {
	// RCode is the response code.
	RCode dnsmessage.RCode
	// Addrs are the A and AAAA answers, in order.
	Addrs []netip.Addr
	// Answers are the A, AAAA and CNAME answers as OONI writes them.
	Answers []ooni.Answer
}

// Err returns the lookup's error: the DNS sentinels of probes/ooni for
// NXDOMAIN, REFUSED, SERVFAIL, another error code, or no address.
func (r Response) Err() error {
	switch r.RCode {
	case dnsmessage.RCodeSuccess:
		if len(r.Addrs) == 0 {
			return ooni.ErrDNSNoAnswer
		}
		return nil
	case dnsmessage.RCodeNameError:
		return ooni.ErrDNSNXDOMAIN
	case dnsmessage.RCodeRefused:
		return ooni.ErrDNSRefused
	case dnsmessage.RCodeServerFailure:
		return ooni.ErrDNSServfail
	}
	return fmt.Errorf("rcode %d: %w", r.RCode, ooni.ErrDNSMisbehaving)
}

// NewQuery builds a recursive query for name (with or without the final
// dot) and type t with the given ID.
func NewQuery(id uint16, name string, t dnsmessage.Type) ([]byte, error) {
	n, err := dnsmessage.NewName(canonical(name))
	if err != nil {
		return nil, fmt.Errorf("dns: query name %q: %w", name, err)
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	if err := b.StartQuestions(); err != nil {
		return nil, fmt.Errorf("dns: build query: %w", err)
	}
	if err := b.Question(dnsmessage.Question{Name: n, Type: t, Class: dnsmessage.ClassINET}); err != nil {
		return nil, fmt.Errorf("dns: build query: %w", err)
	}
	q, err := b.Finish()
	if err != nil {
		return nil, fmt.Errorf("dns: build query: %w", err)
	}
	return q, nil
}

func canonical(name string) string {
	if strings.HasSuffix(name, ".") {
		return name
	}
	return name + "."
}

// ParseResponse parses msg as the response to the query with id for name
// and type t. It returns ErrMismatch for a message that is not that
// response and an error wrapping ooni.ErrDNSMisbehaving for one that
// cannot be parsed. Records other than A, AAAA and CNAME are skipped, as
// are answers for other classes.
func ParseResponse(msg []byte, id uint16, name string, t dnsmessage.Type) (Response, error) {
	var r Response
	if len(msg) > MaxResponse {
		return r, fmt.Errorf("dns: response of %d bytes: %w", len(msg), ooni.ErrDNSMisbehaving)
	}
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil {
		return r, fmt.Errorf("dns: response header: %w: %w", err, ooni.ErrDNSMisbehaving)
	}
	if !h.Response || h.ID != id {
		return r, ErrMismatch
	}
	q, err := p.Question()
	if err != nil {
		return r, fmt.Errorf("dns: response question: %w: %w", err, ooni.ErrDNSMisbehaving)
	}
	if !strings.EqualFold(q.Name.String(), canonical(name)) || q.Type != t || q.Class != dnsmessage.ClassINET {
		return r, ErrMismatch
	}
	if err := p.SkipAllQuestions(); err != nil {
		return r, fmt.Errorf("dns: response questions: %w: %w", err, ooni.ErrDNSMisbehaving)
	}
	r.RCode = h.RCode
	for {
		ah, err := p.AnswerHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			break
		}
		if err != nil {
			return r, fmt.Errorf("dns: answer: %w: %w", err, ooni.ErrDNSMisbehaving)
		}
		ttl := ah.TTL
		if ah.Class != dnsmessage.ClassINET {
			if err := p.SkipAnswer(); err != nil {
				return r, fmt.Errorf("dns: answer: %w: %w", err, ooni.ErrDNSMisbehaving)
			}
			continue
		}
		switch ah.Type {
		case dnsmessage.TypeA:
			a, err := p.AResource()
			if err != nil {
				return r, fmt.Errorf("dns: A answer: %w: %w", err, ooni.ErrDNSMisbehaving)
			}
			ip := netip.AddrFrom4(a.A)
			r.Addrs = append(r.Addrs, ip)
			r.Answers = append(r.Answers, ooni.Answer{AnswerType: "A", IPv4: ip.String(), TTL: &ttl})
		case dnsmessage.TypeAAAA:
			a, err := p.AAAAResource()
			if err != nil {
				return r, fmt.Errorf("dns: AAAA answer: %w: %w", err, ooni.ErrDNSMisbehaving)
			}
			ip := netip.AddrFrom16(a.AAAA)
			r.Addrs = append(r.Addrs, ip)
			r.Answers = append(r.Answers, ooni.Answer{AnswerType: "AAAA", IPv6: ip.String(), TTL: &ttl})
		case dnsmessage.TypeCNAME:
			c, err := p.CNAMEResource()
			if err != nil {
				return r, fmt.Errorf("dns: CNAME answer: %w: %w", err, ooni.ErrDNSMisbehaving)
			}
			r.Answers = append(r.Answers, ooni.Answer{AnswerType: "CNAME", Hostname: c.CNAME.String(), TTL: &ttl})
		default:
			if err := p.SkipAnswer(); err != nil {
				return r, fmt.Errorf("dns: answer: %w: %w", err, ooni.ErrDNSMisbehaving)
			}
		}
	}
	return r, nil
}

// bogons are the address ranges no public name should resolve to, as
// OONI lists them: private, loopback, link-local, shared, documentation,
// benchmarking, multicast and reserved ranges.
var bogons = func() []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
		"172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
		"198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
		"::/128", "::1/128", "100::/64", "2001:10::/28", "2001:db8::/32",
		"fc00::/7", "fe80::/10", "ff00::/8",
	} {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}()

// IsBogon reports whether ip is in a range no public name resolves to.
func IsBogon(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range bogons {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
