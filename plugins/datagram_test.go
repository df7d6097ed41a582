package plugins

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/plugins/internal/ctl"
	"github.com/commucat/commucat/transports/quic"
)

// datagramConn is a connection that carries datagrams.
type datagramConn interface {
	net.Conn
	transport.DatagramConn
}

// dgramPair returns both ends of a connection over the named transport,
// which must carry datagrams.
func dgramPair(t testing.TB, client, server transport.Transport) (c, s datagramConn) {
	t.Helper()
	ctx := testCtx(t)
	ln, err := server.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		sc, err := ln.Accept(ctx)
		if err != nil {
			t.Errorf("Accept: %v", err)
		}
		acc <- sc
	}()
	cc, err := client.Dial(ctx, ln.Addr().String())
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { cc.Close() })
	sc := <-acc
	if sc == nil {
		t.FailNow()
	}
	t.Cleanup(func() { sc.Close() })
	var ok bool
	if c, ok = cc.(datagramConn); !ok {
		t.Fatalf("client connection is a %T, without datagrams", cc)
	}
	if s, ok = sc.(datagramConn); !ok {
		t.Fatalf("server connection is a %T, without datagrams", sc)
	}
	return c, s
}

// echoDatagrams echoes the datagrams s receives until it fails, and
// returns a channel that gets that error.
func echoDatagrams(s datagramConn) <-chan error {
	done := make(chan error, 1)
	go func() {
		for {
			b, err := s.ReceiveDatagram(context.Background())
			if err != nil {
				done <- err
				return
			}
			if err := s.SendDatagram(b); err != nil {
				done <- err
				return
			}
		}
	}()
	return done
}

// datagram returns datagram i of size bytes (at least 8): its number,
// then a pattern.
func datagram(i, size int) []byte {
	b := make([]byte, size)
	binary.BigEndian.PutUint64(b, uint64(i))
	for j := 8; j < size; j++ {
		b[j] = byte(i + j)
	}
	return b
}

// exchange sends n datagrams of the given sizes over c, one at a time, and
// checks that each comes back whole from the echo at the other end. A
// datagram lost on the way is sent again (at most 20 times): datagrams
// are unreliable, even on loopback.
func exchange(t testing.TB, c datagramConn, n int, sizes []int) {
	t.Helper()
	for i := range n {
		want := datagram(i, sizes[i%len(sizes)])
		back := false
		for try := 0; try < 20 && !back; try++ {
			if err := c.SendDatagram(want); err != nil {
				t.Fatalf("SendDatagram(%d bytes): %v", len(want), err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second) // then send again
			for !back {
				got, err := c.ReceiveDatagram(ctx)
				if err != nil {
					if !errors.Is(err, transport.ErrTimeout) {
						t.Fatalf("ReceiveDatagram: %v", err)
					}
					break
				}
				if len(got) < 8 || binary.BigEndian.Uint64(got) != uint64(i) {
					continue // a late copy of an earlier datagram
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("datagram %d: sent %d bytes, got %d that differ", i, len(want), len(got))
				}
				back = true
			}
			cancel()
		}
		if !back {
			t.Fatalf("datagram %d (%d bytes) never came back", i, len(want))
		}
	}
}

// TestDatagrams sends datagrams both ways through the plugins of the
// transports whose connections carry them, and checks the limits,
// cancellation and closing.
func TestDatagrams(t *testing.T) {
	for _, name := range []string{"quic", "kcp"} {
		t.Run(name, func(t *testing.T) {
			h, r := startHost(t, HostConfig{}, pluginDir(t, map[string]string{
				name: buildPlugin(t, name, "./cmd/commucat-transport-"+name),
			}))
			infos, err := h.Discover()
			if err != nil || len(infos) != 1 || !infos[0].Capabilities.Datagram {
				t.Fatalf("Discover = %+v, %v; want datagram capability", infos, err)
			}
			client, server := serverAndClient(t, r, name)
			c, s := dgramPair(t, client, server)
			limit := c.MaxDatagramSize()
			if limit <= 0 || limit > ctl.MaxDatagram || s.MaxDatagramSize() != limit {
				t.Fatalf("MaxDatagramSize = %d and %d", limit, s.MaxDatagramSize())
			}
			if name == "quic" && limit != quic.MaxDatagramSize {
				t.Errorf("MaxDatagramSize = %d, want quic's %d", limit, quic.MaxDatagramSize)
			}
			echoed := echoDatagrams(s)

			t.Run("exchange", func(t *testing.T) {
				exchange(t, c, 300, []int{8, 9, 100, 1000, limit - 1, limit})
			})
			t.Run("too large", func(t *testing.T) {
				for _, side := range []datagramConn{c, s} {
					if err := side.SendDatagram(make([]byte, limit+1)); !errors.Is(err, transport.ErrTooLarge) {
						t.Errorf("SendDatagram(%d bytes) = %v, want transport.ErrTooLarge", limit+1, err)
					}
				}
				exchange(t, c, 1, []int{limit}) // still in use
			})
			t.Run("context", func(t *testing.T) {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				if _, err := c.ReceiveDatagram(ctx); !errors.Is(err, context.Canceled) {
					t.Errorf("ReceiveDatagram(cancelled) = %v, want context.Canceled", err)
				}
				ctx, cancel = context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
				defer cancel()
				if _, err := c.ReceiveDatagram(ctx); !errors.Is(err, transport.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("ReceiveDatagram(expired) = %v, want transport.ErrTimeout", err)
				}
				// Cancelled while waiting (nothing comes: the echo
				// answers only what c sends).
				ctx, cancel = context.WithCancel(context.Background())
				got := make(chan error, 1)
				go func() {
					_, err := c.ReceiveDatagram(ctx)
					got <- err
				}()
				cancel()
				if err := <-got; !errors.Is(err, context.Canceled) {
					t.Errorf("ReceiveDatagram cancelled while waiting = %v, want context.Canceled", err)
				}
				exchange(t, c, 3, []int{8, limit}) // still in use
			})
			t.Run("stats", func(t *testing.T) {
				st, err := h.Stats(testCtx(t), name)
				if err != nil {
					t.Fatal(err)
				}
				if st.DatagramsToHost < 300 || st.DatagramsFromHost < 300 {
					t.Errorf("Stats = %+v, want at least 300 datagrams each way", st)
				}
			})
			t.Run("close", func(t *testing.T) {
				// Closing the server's end ends its datagrams, which ends
				// the echo; then the client's.
				s.Close()
				if err := <-echoed; !errors.Is(err, transport.ErrClosed) {
					t.Errorf("ReceiveDatagram after Close = %v, want transport.ErrClosed", err)
				}
				if err := s.SendDatagram([]byte("x")); !errors.Is(err, transport.ErrClosed) {
					t.Errorf("SendDatagram after Close = %v, want transport.ErrClosed", err)
				}
				c.Close()
				if _, err := c.ReceiveDatagram(testCtx(t)); !errors.Is(err, transport.ErrClosed) {
					t.Errorf("ReceiveDatagram after Close = %v, want transport.ErrClosed", err)
				}
			})
		})
	}
}

// TestDatagramsPluginKilled kills a plugin while datagrams flow through
// it: waits in ReceiveDatagram end with an error, and so do sends.
func TestDatagramsPluginKilled(t *testing.T) {
	for _, name := range []string{"quic", "kcp"} {
		t.Run(name, func(t *testing.T) { testDatagramsPluginKilled(t, name) })
	}
}

func testDatagramsPluginKilled(t *testing.T, name string) {
	h, r := startHost(t, HostConfig{Backoff: 10 * time.Millisecond}, pluginDir(t, map[string]string{
		name:   buildPlugin(t, name, "./cmd/commucat-transport-"+name),
		"good": faultyBin(t),
	}))
	other, _, _ := echoConn(t, r, "good")
	client, server := serverAndClient(t, r, name)
	c, s := dgramPair(t, client, server)
	echoDatagrams(s)
	exchange(t, c, 5, []int{8, c.MaxDatagramSize()})

	received := make(chan struct{})
	recvErr := make(chan error, 1)
	sendErr := make(chan error, 1)
	go func() {
		signal := received
		for n := 0; ; n++ {
			_, err := c.ReceiveDatagram(context.Background())
			if err != nil {
				recvErr <- err
				return
			}
			if n == 100 {
				close(signal)
			}
		}
	}()
	go func() {
		b := datagram(1, 1000)
		for range 10_000_000 {
			if err := c.SendDatagram(b); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- errors.New("the sends never failed")
	}()
	select {
	case <-received:
	case err := <-recvErr:
		t.Fatalf("ReceiveDatagram before the kill: %v", err)
	case <-testCtx(t).Done():
		t.Fatal("no 100 datagrams came back within a minute")
	}
	g := currentGen(t, h, name)
	if err := syscall.Kill(g.pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for what, ch := range map[string]chan error{"ReceiveDatagram": recvErr, "SendDatagram": sendErr} {
		err := <-ch
		if !errors.Is(err, transport.ErrClosed) || !errors.Is(err, transport.ErrRefused) {
			t.Errorf("%s after the plugin died = %v; want transport.ErrClosed and transport.ErrRefused", what, err)
		}
		t.Logf("%s: %v", what, err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, transport.ErrRefused) {
		t.Errorf("Read after the plugin died = %v; want transport.ErrRefused", err)
	}
	roundTrip(t, other, "undisturbed")
}

// TestGarbageDatagram checks that a plugin that writes a malformed record
// on a datagram socket is cut off and restarted, and that the host's
// ReceiveDatagram fails instead of passing the garbage on.
func TestGarbageDatagram(t *testing.T) {
	// garbagedgram writes a record of an unknown kind; emptydgram an empty
	// record, which reads like the end of the socket, then a good one.
	for _, mode := range []string{"garbagedgram", "emptydgram"} {
		t.Run(mode, func(t *testing.T) { testGarbageDatagram(t, mode) })
	}
}

func testGarbageDatagram(t *testing.T, mode string) {
	h, r := startHost(t, HostConfig{Backoff: 10 * time.Millisecond}, pluginDir(t, map[string]string{
		mode:   faultyBin(t),
		"good": faultyBin(t),
	}))
	other, _, ln := echoConn(t, r, "good")
	client, err := r.New(mode, nil)
	if err != nil {
		t.Fatal(err)
	}
	old := currentGen(t, h, mode)
	ctx := testCtx(t)
	nc, err := client.Dial(ctx, ln.Addr().String())
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer nc.Close()
	c, ok := nc.(transport.DatagramConn)
	if !ok {
		t.Fatalf("connection is a %T, without datagrams", nc)
	}
	b, err := c.ReceiveDatagram(ctx)
	if !errors.Is(err, transport.ErrClosed) || !errors.Is(err, transport.ErrRefused) {
		t.Fatalf("ReceiveDatagram = %q, %v; want an error", b, err)
	}
	t.Logf("ReceiveDatagram: %v", err)
	checkCutOff(t, h, old, mode, "protocol violation")
	if b, err := c.ReceiveDatagram(ctx); err == nil {
		t.Errorf("a datagram (%q) came after the violation", b)
	}
	roundTrip(t, other, "undisturbed")
}

func TestProtocolVersion1(t *testing.T) {
	h, r := startHost(t, HostConfig{}, pluginDir(t, map[string]string{"proto1": faultyBin(t)}))
	c, _, _ := echoConn(t, r, "proto1")
	if g := currentGen(t, h, "proto1"); g.version != 1 || g.datagram.Load() {
		t.Errorf("negotiated version %d, datagrams %v; want 1, false", g.version, g.datagram.Load())
	}
	if _, ok := c.(transport.DatagramConn); ok {
		t.Errorf("connection is a %T, with datagrams", c)
	}
	roundTrip(t, c, "version 1")
}

// TestDatagramsEndCleanly checks that datagrams that end with their
// connection (both directions half closed, so the plugin closes the flow)
// end with an error matching transport.ErrClosed only: the plugin
// announced the end.
func TestDatagramsEndCleanly(t *testing.T) {
	_, r := startHost(t, HostConfig{}, pluginDir(t, map[string]string{
		"quic": buildPlugin(t, "quic", "./cmd/commucat-transport-quic"),
	}))
	client, server := serverAndClient(t, r, "quic")
	c, s := dgramPair(t, client, server)
	echoed := echoDatagrams(s)
	exchange(t, c, 3, []int{8, 1000})
	for _, side := range []datagramConn{c, s} {
		if err := side.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
			t.Fatalf("CloseWrite: %v", err)
		}
	}
	for _, side := range []datagramConn{c, s} {
		if b, err := io.ReadAll(side); err != nil || len(b) != 0 {
			t.Fatalf("read %q, %v; want the end of the stream", b, err)
		}
	}
	for what, err := range map[string]error{"client": receiveErr(t, c), "server": <-echoed} {
		if !errors.Is(err, transport.ErrClosed) || errors.Is(err, transport.ErrRefused) {
			t.Errorf("%s: ReceiveDatagram at the end = %v; want transport.ErrClosed alone", what, err)
		}
		t.Logf("%s: %v", what, err)
	}
}

// receiveErr waits for the error that ends c's datagrams, dropping the
// datagrams that come before it.
func receiveErr(t testing.TB, c datagramConn) error {
	t.Helper()
	ctx := testCtx(t)
	for {
		if _, err := c.ReceiveDatagram(ctx); err != nil {
			return err
		}
	}
}
