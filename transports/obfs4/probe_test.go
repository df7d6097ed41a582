package obfs4

import (
	"bytes"
	"context"
	cryptorand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"gitlab.com/yawning/obfs4.git/common/drbg"
	"golang.org/x/crypto/curve25519"

	"github.com/commucat/commucat/core/transport"
)

// libHandshakeTimeout is the library's server handshake timeout
// (serverHandshakeTimeout in its obfs4.go): a failed handshake closes this
// long after the connection began, plus the server's close delay.
const libHandshakeTimeout = 30 * time.Second

// closeDelayOf is the close delay the library derives from a state's DRBG
// seed (obfs4.go: rand.New(drbg).Intn(maxCloseDelay) seconds).
func closeDelayOf(t testing.TB, seedHex string) time.Duration {
	t.Helper()
	seed, err := drbg.SeedFromHex(seedHex)
	if err != nil {
		t.Fatal(err)
	}
	d, err := drbg.NewHashDrbg(seed)
	if err != nil {
		t.Fatal(err)
	}
	return time.Duration(rand.New(d).Intn(60)) * time.Second //nolint:gosec // as the library does
}

// writeState writes a new state file into dir whose DRBG seed gives the
// close delay delay (0 to 59 s), so that tests know when a failed
// handshake ends.
func writeState(t testing.TB, dir string, delay time.Duration) {
	t.Helper()
	nodeID := make([]byte, nodeIDLen)
	priv := make([]byte, privateKeyLen)
	cryptorand.Read(nodeID)
	cryptorand.Read(priv)
	pub, err := curve25519.X25519(priv, curve25519.Basepoint)
	if err != nil {
		t.Fatal(err)
	}
	st := stateJSON{NodeID: hex.EncodeToString(nodeID), PrivateKey: hex.EncodeToString(priv), PublicKey: hex.EncodeToString(pub)}
	for st.DrbgSeed == "" || closeDelayOf(t, st.DrbgSeed) != delay {
		seed := make([]byte, drbgSeedLen)
		cryptorand.Read(seed)
		st.DrbgSeed = hex.EncodeToString(seed)
	}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, StateFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// recorder is a net.Conn that keeps a copy of what is written to it.
type recorder struct {
	net.Conn
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *recorder) Write(b []byte) (int, error) {
	r.mu.Lock()
	r.buf.Write(b)
	r.mu.Unlock()
	return r.Conn.Write(b)
}

func (r *recorder) written() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.buf.Bytes())
}

// TestCloseDelay checks, on a simulated clock, what a prober sees: the
// server answers nothing but a fresh valid handshake, and closes a failed
// one exactly when the library's handshake timeout plus the server's close
// delay have passed since the connection began, never sooner.
func TestCloseDelay(t *testing.T) {
	const delay = 17 * time.Second
	dir := t.TempDir()
	writeState(t, dir, delay)
	client, server := newServerIn(t, dir, nil)

	// A real client's first flight, recorded on its way to the server.
	var flight []byte
	synctest.Test(t, func(t *testing.T) {
		cEnd, sEnd := net.Pipe()
		rec := &recorder{Conn: cEnd}
		type result struct {
			c   net.Conn
			err error
		}
		accepted := make(chan result, 1)
		go func() {
			c, err := server.serverHandshake(sEnd)
			accepted <- result{c, err}
		}()
		c, err := client.pipeHandshake(t.Context(), rec)
		if err != nil {
			t.Fatalf("real client: %v", err)
		}
		defer c.Close()
		r := <-accepted
		if r.err != nil {
			t.Fatalf("server handshake with a real client: %v", r.err)
		}
		defer r.c.Close()
		go io.Copy(r.c, r.c)
		echoConn(t, c, []byte("real client"))
		flight = rec.written()
	})

	random := func(n int) []byte {
		b := make([]byte, n)
		cryptorand.Read(b)
		return b
	}
	tests := []struct {
		name  string
		probe []byte
	}{
		{"silent", nil},
		{"random 100 bytes", random(100)},
		{"random 9000 bytes", random(9000)}, // beyond the longest handshake
		{"truncated flight", flight[:len(flight)-1]},
		{"replayed flight", flight},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cEnd, sEnd := net.Pipe()
				defer cEnd.Close()
				failed := make(chan error, 1)
				start := time.Now()
				go func() {
					c, err := server.serverHandshake(sEnd)
					if err == nil {
						c.Close()
					}
					failed <- err
				}()
				if _, err := cEnd.Write(tt.probe); err != nil {
					t.Fatalf("writing the probe: %v", err)
				}
				got, err := io.ReadAll(cEnd)
				elapsed := time.Since(start)
				if len(got) > 0 {
					t.Errorf("the server answered %d bytes", len(got))
				}
				if err != nil {
					t.Errorf("read: %v, want io.EOF", err)
				}
				if want := libHandshakeTimeout + delay; elapsed != want {
					t.Errorf("closed after %v, want %v", elapsed, want)
				}
				if err := <-failed; err == nil {
					t.Error("the server handshake succeeded")
				}
			})
		})
	}
}

// TestWrongCert checks that a client with another server's cert fails
// cleanly at its deadline, while the listener serves others.
func TestWrongCert(t *testing.T) {
	t.Parallel()
	client, server := newServer(t, nil)
	other, _ := newServer(t, nil)
	ln := listen(t, server)
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	c, err := other.Dial(ctx, ln.Addr().String())
	if err == nil {
		c.Close()
		t.Fatal("Dial with the wrong cert succeeded")
	}
	if !errors.Is(err, transport.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Dial with the wrong cert: %v, want a timeout", err)
	}
	// The listener still serves the right cert.
	ctx, cancel = context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	c, err = client.Dial(ctx, ln.Addr().String())
	if err != nil {
		t.Fatalf("Dial with the right cert: %v", err)
	}
	defer c.Close()
	s, err := ln.Accept(ctx)
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	defer s.Close()
	echoOnce(t, c, s, []byte("right cert"))
}

// dialRaw opens a plain TCP connection, closed when t ends.
func dialRaw(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// dialRawFrom is dialRaw from the loopback address src.
func dialRawFrom(t testing.TB, addr, src string) *net.TCPConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// TestSlotsPerSource checks that one source holding silent connections
// open cannot take every handshake slot: a client from another source is
// still served.
func TestSlotsPerSource(t *testing.T) {
	client, server := newServer(t, nil)
	server.maxHandshakes = 32 // two per source once half are taken
	ln := listen(t, server)
	addr := ln.Addr().String()
	for range 32 {
		dialRawFrom(t, addr, "127.0.0.2")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, addr)
	if err != nil {
		t.Fatalf("Dial from another source while one holds connections open: %v", err)
	}
	c.Close()
}

// TestHandshakesBounded checks that the listener runs at most
// maxHandshakes handshakes at once, and that a slot is freed when a failed
// handshake ends.
func TestHandshakesBounded(t *testing.T) {
	client, server := newServer(t, nil)
	server.maxHandshakes = 2
	ln := listen(t, server)
	addr := ln.Addr().String()
	// From two sources: one source gets at most half the slots once
	// they are scarce (see TestSlotsPerSource).
	stalled := []*net.TCPConn{dialRawFrom(t, addr, "127.0.0.2"), dialRawFrom(t, addr, "127.0.0.3")}

	// Both slots are taken: a real client is not served.
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if c, err := client.Dial(ctx, addr); !errors.Is(err, transport.ErrTimeout) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("Dial with every slot taken: %v, want a timeout", err)
	}
	// A stalled peer leaves: its handshake fails at once, and the next
	// connections are served (the one that timed out first).
	stalled[0].Close()
	serveEcho(t, ln)
	dialEcho(t, client, addr, "served")
}

// TestCloseInterruptsHandshakes checks that Close ends handshakes waiting
// out their close delay and ones still reading, closes their connections
// without a byte, and waits for its goroutines (goleak checks them).
func TestCloseInterruptsHandshakes(t *testing.T) {
	_, server := newServer(t, nil)
	ln := listen(t, server)
	addr := ln.Addr().String()
	silent := dialRaw(t, addr)
	failed := dialRaw(t, addr)
	// 16 MiB is more than the socket buffers hold: when the write returns,
	// the server has read past the handshake, so it is waiting out its
	// delay.
	junk := make([]byte, 16<<20)
	cryptorand.Read(junk)
	if _, err := failed.Write(junk); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := ln.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for name, c := range map[string]*net.TCPConn{"silent": silent, "failed": failed} {
		got, err := io.ReadAll(c)
		if len(got) > 0 {
			t.Errorf("%s probe received %d bytes", name, len(got))
		}
		if err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
			t.Errorf("%s probe: %v, want EOF or a reset", name, err)
		}
	}
}

// TestManyFailedHandshakes checks that failed handshakes in progress do not
// hold up Accept for a real client.
func TestManyFailedHandshakes(t *testing.T) {
	client, server := newServer(t, nil)
	ln := listen(t, server)
	addr := ln.Addr().String()
	junk := make([]byte, 9000)
	for range 50 {
		cryptorand.Read(junk)
		if _, err := dialRaw(t, addr).Write(junk); err != nil {
			t.Fatal(err)
		}
	}
	serveEcho(t, ln)
	dialEcho(t, client, addr, "not held up")
}

// serveEcho accepts connections on ln and echoes them until ln is closed,
// which it does when t ends.
func serveEcho(t testing.TB, ln transport.Listener) {
	t.Helper()
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	t.Cleanup(func() { ln.Close() }) // runs before wg.Wait
	wg.Go(func() {
		for {
			s, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			wg.Go(func() { defer s.Close(); io.Copy(s, s) })
		}
	})
}

// dialEcho dials addr and checks that msg comes back.
func dialEcho(t testing.TB, client *Transport, addr, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, addr)
	if err != nil {
		t.Fatalf("Dial %s: %v", addr, err)
	}
	defer c.Close()
	echoConn(t, c, []byte(msg))
}

// echoConn writes msg on c and checks that the peer sends it back.
func echoConn(t testing.TB, c net.Conn, msg []byte) {
	t.Helper()
	if _, err := c.Write(msg); err != nil {
		t.Fatalf("Write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("read back %q, %v; want %q", got, err, msg)
	}
}

// pipeHandshake runs the client handshake over raw, such as a net.Pipe end,
// with a fresh session key.
func (t *Transport) pipeHandshake(ctx context.Context, raw net.Conn) (*conn, error) {
	args, err := t.client.ParseArgs(&t.args)
	if err != nil {
		raw.Close()
		return nil, err
	}
	return t.clientHandshake(ctx, raw, args)
}
