package probestest

import (
	"net"
	"net/netip"
	"sync"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// DNSReply is how the DNS responder answers one question.
type DNSReply struct {
	// RCode is the response code; zero is success.
	RCode dnsmessage.RCode
	// Addrs are the A and AAAA answers (those of the question's type).
	Addrs []netip.Addr
	// Drop makes the responder ignore the query, as a resolver whose
	// packets are dropped.
	Drop bool
	// Extra, if set, is a second, different answer sent right after the
	// first, as an on-path injector racing a resolver produces.
	Extra []netip.Addr
}

// DNSServer starts a UDP DNS responder on 127.0.0.1 that answers each
// question with answer(name) (name in canonical form, with the trailing
// dot). It returns the responder's address.
func DNSServer(t testing.TB, answer func(name string) DNSReply) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			h, err := p.Start(buf[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil {
				continue
			}
			r := answer(q.Name.String())
			if r.Drop {
				continue
			}
			if b, err := DNSResponse(h.ID, q, r.RCode, r.Addrs); err == nil {
				pc.WriteTo(b, from)
			}
			if r.Extra != nil {
				if b, err := DNSResponse(h.ID, q, r.RCode, r.Extra); err == nil {
					pc.WriteTo(b, from)
				}
			}
		}
	})
	t.Cleanup(func() {
		pc.Close()
		wg.Wait()
	})
	return pc.LocalAddr().String()
}

// DNSResponse builds a response to q with id, rcode and the addresses of
// q's type among addrs, each with a TTL of 300 s.
func DNSResponse(id uint16, q dnsmessage.Question, rcode dnsmessage.RCode, addrs []netip.Addr) ([]byte, error) {
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, Response: true, RecursionAvailable: true, RCode: rcode})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	for _, a := range addrs {
		h := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 300}
		switch {
		case a.Is4() && q.Type == dnsmessage.TypeA:
			if err := b.AResource(h, dnsmessage.AResource{A: a.As4()}); err != nil {
				return nil, err
			}
		case a.Is6() && q.Type == dnsmessage.TypeAAAA:
			if err := b.AAAAResource(h, dnsmessage.AAAAResource{AAAA: a.As16()}); err != nil {
				return nil, err
			}
		}
	}
	return b.Finish()
}
