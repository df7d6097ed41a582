// Package probestest has the local servers that the probes' tests measure:
// servers that reset, stall, never answer, filter server names, cut
// downloads off, and a DNS responder. Every server listens on 127.0.0.1
// only, owns its goroutines and stops them in the test's cleanup.
package probestest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"
)

// Cert returns a self-signed certificate for names and 127.0.0.1, and a
// pool that trusts it.
func Cert(t testing.TB, names ...string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "probestest"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		DNSNames:              names,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// server runs an accept loop and tracks its connections so that cleanup
// can close them and wait for the handlers.
type server struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	done  chan struct{}
}

func listen(t testing.TB) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{ln: ln, conns: make(map[net.Conn]struct{}), done: make(chan struct{})}
	t.Cleanup(s.close)
	return s
}

func (s *server) serve(handle func(c net.Conn, done <-chan struct{})) string {
	s.wg.Go(func() {
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Go(func() {
				handle(c, s.done)
				c.Close()
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
			})
		}
	})
	return s.ln.Addr().String()
}

func (s *server) close() {
	close(s.done)
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// Reset closes c with SO_LINGER 0, so the peer gets a RST.
func Reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// ResetServer starts a TCP server that reads up to readFirst bytes (none
// if 0) and then resets the connection. It returns its address.
func ResetServer(t testing.TB, readFirst int) string {
	t.Helper()
	return listen(t).serve(func(c net.Conn, _ <-chan struct{}) {
		if readFirst > 0 {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			io.ReadFull(c, make([]byte, readFirst))
		}
		Reset(c)
	})
}

// SilentServer starts a TCP server that accepts and never sends anything,
// reading and discarding what it gets until the test ends.
func SilentServer(t testing.TB) string {
	t.Helper()
	return listen(t).serve(func(c net.Conn, _ <-chan struct{}) { io.Copy(io.Discard, c) })
}

// EchoServer starts a TCP server that echoes what it reads.
func EchoServer(t testing.TB) string {
	t.Helper()
	return listen(t).serve(func(c net.Conn, _ <-chan struct{}) { io.Copy(c, c) })
}

// CloseAfterServer starts a TCP server that writes one byte every tick
// and closes each connection after life (with a RST if reset is set).
func CloseAfterServer(t testing.TB, life, tick time.Duration, reset bool) string {
	t.Helper()
	return listen(t).serve(func(c net.Conn, done <-chan struct{}) {
		end := time.NewTimer(life)
		defer end.Stop()
		tk := time.NewTicker(tick)
		defer tk.Stop()
		for {
			select {
			case <-done:
				return
			case <-end.C:
				if reset {
					Reset(c)
				}
				return
			case <-tk.C:
				if _, err := c.Write([]byte{'.'}); err != nil {
					return
				}
			}
		}
	})
}

// RefusedAddr returns a loopback address where nothing listens.
func RefusedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// BlackholeUDP returns the address of a UDP socket that never reads, so
// datagrams sent there vanish without an ICMP error.
func BlackholeUDP(t testing.TB) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String()
}

// SNIServer starts a TLS server with cert that resets (SO_LINGER 0) every
// connection whose ClientHello names one of blocked, as an SNI filter
// injecting RSTs does, and completes the handshake for the others.
func SNIServer(t testing.TB, cert tls.Certificate, blocked ...string) string {
	t.Helper()
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			for _, b := range blocked {
				if h.ServerName == b {
					Reset(h.Conn)
					return nil, errors.New("probestest: blocked server name")
				}
			}
			return nil, nil
		},
	}
	return listen(t).serve(func(c net.Conn, _ <-chan struct{}) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(c, cfg)
		if err := tc.Handshake(); err != nil {
			return
		}
		tc.Write([]byte("ok\n"))
		io.Copy(io.Discard, tc)
	})
}

// QUICServer starts a QUIC server with cert and ALPN "h3" that completes
// handshakes and then closes the connections. It returns its address.
func QUICServer(t testing.TB, cert tls.Certificate) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tr := &quicgo.Transport{Conn: pc}
	ln, err := tr.Listen(&tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h3"}}, &quicgo.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			wg.Go(func() {
				select {
				case <-c.Context().Done():
				case <-time.After(2 * time.Second):
				case <-ctx.Done():
				}
				c.CloseWithError(0, "")
			})
		}
	})
	t.Cleanup(func() {
		cancel()
		ln.Close()
		tr.Close()
		pc.Close()
		wg.Wait()
	})
	return pc.LocalAddr().String()
}

// UDPRelay forwards datagrams between clients and target, one upstream
// socket per client, and drops the client's datagrams for which drop
// returns true. drop gets the client's address, the datagram's index in
// that client's flow (0 for the first) and the datagram; it is called from
// one goroutine. UDPRelay returns the relay's address.
func UDPRelay(t testing.TB, target string, drop func(client string, seq int, d []byte) bool) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	raddr, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		t.Fatal(err)
	}
	type flow struct {
		up  *net.UDPConn
		seq int
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		flows = map[string]*flow{}
	)
	wg.Go(func() {
		buf := make([]byte, 64<<10)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			key := from.String()
			mu.Lock()
			f := flows[key]
			if f == nil {
				up, err := net.DialUDP("udp", nil, raddr)
				if err != nil {
					mu.Unlock()
					continue
				}
				f = &flow{up: up}
				flows[key] = f
				wg.Go(func() {
					b := make([]byte, 64<<10)
					for {
						n, err := up.Read(b)
						if err != nil {
							return
						}
						pc.WriteTo(b[:n], from)
					}
				})
			}
			seq := f.seq
			f.seq++
			mu.Unlock()
			if drop != nil && drop(key, seq, buf[:n]) {
				continue
			}
			f.up.Write(buf[:n])
		}
	})
	t.Cleanup(func() {
		pc.Close()
		mu.Lock()
		for _, f := range flows {
			f.up.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return pc.LocalAddr().String()
}

// CutoffHandler serves size bytes but stops after cutoff of them and
// holds the connection until the client goes away or done closes, as a
// censor that stops forwarding after N bytes does.
func CutoffHandler(size, cutoff int, done <-chan struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		w.WriteHeader(http.StatusOK)
		chunk := make([]byte, 1024)
		for sent := 0; sent < cutoff; sent += len(chunk) {
			if cutoff-sent < len(chunk) {
				chunk = chunk[:cutoff-sent]
			}
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		select {
		case <-r.Context().Done():
		case <-done:
		}
	})
}

// SlowHandler serves size bytes in chunks of chunk bytes, one every tick,
// as a throttled path does.
func SlowHandler(size, chunk int, tick time.Duration, done <-chan struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		w.WriteHeader(http.StatusOK)
		f, _ := w.(http.Flusher)
		tk := time.NewTicker(tick)
		defer tk.Stop()
		b := make([]byte, chunk)
		for sent := 0; sent < size; {
			n := min(chunk, size-sent)
			if _, err := w.Write(b[:n]); err != nil {
				return
			}
			if f != nil {
				f.Flush()
			}
			sent += n
			if sent == size {
				return
			}
			select {
			case <-r.Context().Done():
				return
			case <-done:
				return
			case <-tk.C:
			}
		}
	})
}

// ResidualSNIServer is SNIServer with a residual block: after a
// ClientHello names one of blocked, every connection is reset for
// residual, whatever name it carries.
func ResidualSNIServer(t testing.TB, cert tls.Certificate, residual time.Duration, blocked ...string) string {
	t.Helper()
	var (
		mu    sync.Mutex
		until time.Time
	)
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			mu.Lock()
			defer mu.Unlock()
			hit := time.Now().Before(until)
			for _, b := range blocked {
				if h.ServerName == b {
					hit, until = true, time.Now().Add(residual)
				}
			}
			if hit {
				Reset(h.Conn)
				return nil, errors.New("probestest: blocked")
			}
			return nil, nil
		},
	}
	return listen(t).serve(func(c net.Conn, _ <-chan struct{}) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(c, cfg)
		if err := tc.Handshake(); err != nil {
			return
		}
		tc.Write([]byte("ok\n"))
		io.Copy(io.Discard, tc)
	})
}
