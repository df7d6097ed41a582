package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/commucat/commucat/plugins/sdk"
)

// handshakeTimeout bounds a server-side handshake.
const handshakeTimeout = 10 * time.Second

// Transport is a TLS 1.3 transport: a client (pin set) or a server (cert
// set).
type Transport struct {
	pin  []byte // client: the server's public key hash
	sni  string
	cert *tls.Certificate // server
}

// Factory builds the client side from "pin" and "sni".
func Factory(p sdk.Params) (sdk.Transport, error) {
	for k := range p {
		if k != "pin" && k != "sni" {
			return nil, fmt.Errorf("tlsplain: unknown parameter %q: %w", k, sdk.ErrBadParams)
		}
	}
	pin, err := base64.RawURLEncoding.DecodeString(p["pin"])
	if err != nil || len(pin) != sha256.Size {
		return nil, fmt.Errorf("tlsplain: parameter pin is not a base64url SHA-256: %w", sdk.ErrBadParams)
	}
	return &Transport{pin: pin, sni: p["sni"]}, nil
}

// ServerFactory builds the gateway side; its certificate lives in dir.
func ServerFactory(p sdk.Params, dir string) (sdk.Transport, sdk.Params, error) {
	for k := range p {
		if k != "sni" {
			return nil, nil, fmt.Errorf("tlsplain: unknown parameter %q: %w", k, sdk.ErrBadParams)
		}
	}
	cert, err := loadOrCreateCert(dir)
	if err != nil {
		return nil, nil, err
	}
	pub := sdk.Params{"pin": pinOf(cert.Leaf)}
	if p["sni"] != "" {
		pub["sni"] = p["sni"]
	}
	return &Transport{cert: cert}, pub, nil
}

// Name returns "tlsplain".
func (*Transport) Name() string { return "tlsplain" }

// Dial connects and completes the TLS handshake, checking the pin.
func (t *Transport) Dial(ctx context.Context, addr string) (net.Conn, error) {
	if t.pin == nil {
		return nil, fmt.Errorf("tlsplain: a server transport cannot dial: %w", sdk.ErrUnsupported)
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, wrap("dial "+addr, err)
	}
	c := tls.Client(raw, &tls.Config{
		ServerName: t.sni,
		MinVersion: tls.VersionTLS13,
		// The pin replaces the CA check.
		InsecureSkipVerify: true, //nolint:gosec // pinned below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("tlsplain: no certificate")
			}
			sum := sha256.Sum256(cs.PeerCertificates[0].RawSubjectPublicKeyInfo)
			if subtle.ConstantTimeCompare(sum[:], t.pin) != 1 {
				return fmt.Errorf("tlsplain: certificate does not match the pin: %w", sdk.ErrRefused)
			}
			return nil
		},
	})
	if err := c.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, wrap("handshake with "+addr, err)
	}
	return c, nil
}

// Listen listens on addr; connections are handed out once their handshake
// is done.
func (t *Transport) Listen(ctx context.Context, addr string) (sdk.Listener, error) {
	if t.cert == nil {
		return nil, fmt.Errorf("tlsplain: a client transport cannot listen: %w", sdk.ErrUnsupported)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, wrap("listen "+addr, err)
	}
	l := &listener{
		ln:    ln,
		cfg:   &tls.Config{Certificates: []tls.Certificate{*t.cert}, MinVersion: tls.VersionTLS13},
		ready: make(chan net.Conn, 64),
		done:  make(chan struct{}),
	}
	l.wg.Add(1)
	go l.loop()
	return l, nil
}

// listener accepts TCP connections and hands out those whose handshake
// succeeds. Close stops its goroutines and waits for them.
type listener struct {
	ln    net.Listener
	cfg   *tls.Config
	ready chan net.Conn
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

func (l *listener) loop() {
	defer l.wg.Done()
	for {
		raw, err := l.ln.Accept()
		if err != nil {
			return // closed
		}
		l.wg.Add(1)
		go l.handshake(raw)
	}
}

func (l *listener) handshake(raw net.Conn) {
	defer l.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	go func() {
		select {
		case <-l.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	c := tls.Server(raw, l.cfg)
	if err := c.HandshakeContext(ctx); err != nil {
		raw.Close() // a probe or a client that gave up
		return
	}
	if !stop() {
		raw.Close()
		return
	}
	select {
	case l.ready <- c:
	case <-l.done:
		c.Close()
	}
}

// Accept returns the next connection whose handshake is done.
func (l *listener) Accept(ctx context.Context) (net.Conn, error) {
	select {
	case <-l.done:
		return nil, fmt.Errorf("tlsplain: accept: %w", sdk.ErrClosed)
	default:
	}
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		return nil, fmt.Errorf("tlsplain: accept: %w", sdk.ErrClosed)
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("tlsplain: accept: %w: %w", sdk.ErrTimeout, ctx.Err())
		}
		return nil, fmt.Errorf("tlsplain: accept: %w", ctx.Err())
	}
}

// Close stops the listener and closes the connections not yet accepted.
func (l *listener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.ln.Close()
		l.wg.Wait()
		for {
			select {
			case c := <-l.ready:
				c.Close()
			default:
				return
			}
		}
	})
	return nil
}

// Addr is the listening address.
func (l *listener) Addr() net.Addr { return l.ln.Addr() }

// wrap adds the sentinel the host maps across the plugin boundary.
func wrap(op string, err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
		return fmt.Errorf("tlsplain: %s: %w: %w", op, sdk.ErrRefused, err)
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("tlsplain: %s: %w: %w", op, sdk.ErrTimeout, err)
	}
	return fmt.Errorf("tlsplain: %s: %w", op, err)
}

// pinOf is the base64url SHA-256 of a certificate's public key.
func pinOf(c *x509.Certificate) string {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// loadOrCreateCert loads dir/tlsplain.pem (key and certificate), creating
// a self-signed one on first use.
func loadOrCreateCert(dir string) (*tls.Certificate, error) {
	path := filepath.Join(dir, "tlsplain.pem")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		b, err = newCert()
		if err == nil {
			err = os.WriteFile(path, b, 0o600)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("tlsplain: certificate: %w", err)
	}
	cert, err := tls.X509KeyPair(b, b)
	if err != nil {
		return nil, fmt.Errorf("tlsplain: %s: %w", path, err)
	}
	return &cert, nil
}

// newCert returns a new self-signed certificate and its key, PEM-encoded.
func newCert() ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "tlsplain"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return append(out, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})...), nil
}
