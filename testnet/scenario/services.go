package scenario

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/commucat/commucat/testnet/topology"
	"github.com/commucat/commucat/transports/decoy"
	"golang.org/x/net/dns/dnsmessage"
)

// DefaultCoverName is the cover website's name when its host names none.
const DefaultCoverName = "www.cover.test"

// services are the in-process servers of a run: cover websites and DNS
// resolvers, on sockets made in their hosts' namespaces. They are owned
// by the run and stopped by close.
type services struct {
	wg      sync.WaitGroup
	closers []func()
}

// close stops every service and waits for their goroutines.
func (s *services) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.wg.Wait()
}

// startCover serves the decoy website on host: HTTPS on 443 with a
// self-signed certificate for names, and HTTP on 80.
func (s *services) startCover(ctx context.Context, n *topology.Net, host, dir string, names []string, log *slog.Logger) error {
	cert, err := decoy.LoadOrCreateCert(dir, names)
	if err != nil {
		return fmt.Errorf("scenario: cover %s: %w", host, err)
	}
	addr := n.Addr(host).String()
	for _, port := range []string{"443", "80"} {
		ln, err := n.Listen(ctx, host, "tcp", net.JoinHostPort(addr, port))
		if err != nil {
			return fmt.Errorf("scenario: cover %s: %w", host, err)
		}
		srv := &http.Server{
			Handler:           decoy.Handler(),
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       60 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		}
		tlsOn := port == "443"
		if tlsOn {
			srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
		}
		s.wg.Go(func() {
			var err error
			if tlsOn {
				err = srv.ServeTLS(ln, "", "")
			} else {
				err = srv.Serve(ln)
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Warn("cover site stopped", "host", host, "err", err)
			}
		})
		s.closers = append(s.closers, func() {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if srv.Shutdown(sctx) != nil {
				srv.Close()
			}
		})
	}
	return nil
}

// startResolver answers A queries on host's UDP port 53 from records
// (names are matched without case and without a trailing dot); other
// names get NXDOMAIN, other types an empty answer.
func (s *services) startResolver(ctx context.Context, n *topology.Net, host string, records map[string]netip.Addr, log *slog.Logger) error {
	pc, err := n.ListenPacket(ctx, host, "udp", net.JoinHostPort(n.Addr(host).String(), "53"))
	if err != nil {
		return fmt.Errorf("scenario: resolver %s: %w", host, err)
	}
	rec := make(map[string]netip.Addr, len(records))
	for k, v := range records {
		rec[strings.ToLower(strings.TrimSuffix(k, "."))] = v
	}
	s.wg.Go(func() {
		buf := make([]byte, 1500)
		for {
			nr, from, err := pc.ReadFrom(buf)
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					log.Warn("resolver stopped", "host", host, "err", err)
				}
				return
			}
			if out, ok := answer(buf[:nr], rec); ok {
				pc.WriteTo(out, from)
			}
		}
	})
	s.closers = append(s.closers, func() { pc.Close() })
	return nil
}

// answer builds the reply to one DNS query, or false for a message that
// is not a query with one question.
func answer(q []byte, rec map[string]netip.Addr) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil || h.Response {
		return nil, false
	}
	qs, err := p.AllQuestions()
	if err != nil || len(qs) != 1 {
		return nil, false
	}
	question := qs[0]
	name := strings.ToLower(strings.TrimSuffix(question.Name.String(), "."))
	addr, known := rec[name]
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired, RecursionAvailable: true}
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(make([]byte, 0, 512), rh)
	b.EnableCompression()
	if b.StartQuestions() != nil || b.Question(question) != nil {
		return nil, false
	}
	if known && question.Type == dnsmessage.TypeA && question.Class == dnsmessage.ClassINET {
		if b.StartAnswers() != nil {
			return nil, false
		}
		rr := dnsmessage.ResourceHeader{Name: question.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 300}
		if b.AResource(rr, dnsmessage.AResource{A: addr.As4()}) != nil {
			return nil, false
		}
	}
	out, err := b.Finish()
	if err != nil {
		return nil, false
	}
	return out, true
}
