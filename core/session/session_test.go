package session

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/commucat/commucat/core/frame"
	"github.com/google/go-cmp/cmp"
)

// pairKeys are the two sides' keys: a's Send is b's Recv and so on.
func pairKeys() (a, b Keys) {
	k1, k2 := testKey(), testKey()
	k2[0] ^= 0xff
	return Keys{Send: k1, Recv: k2}, Keys{Send: k2, Recv: k1}
}

// running is a session whose Run is going in a goroutine.
type running struct {
	*Session
	done chan error
}

func run(s *Session) *running {
	r := &running{Session: s, done: make(chan error, 1)}
	go func() { r.done <- s.Run(context.Background()) }()
	return r
}

// wait returns Run's result.
func (r *running) wait() error { return <-r.done }

// stopped reports whether Run has returned, without waiting.
func (r *running) stopped() bool { return len(r.done) > 0 }

// conns makes connected pairs of connections.
var conns = []struct {
	name string
	pair func(t *testing.T) (net.Conn, net.Conn)
}{
	{"pipe", func(*testing.T) (net.Conn, net.Conn) { return net.Pipe() }},
	{"tcp", tcpPair},
}

func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	type accepted struct {
		c   net.Conn
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		c, err := l.Accept()
		ch <- accepted{c, err}
	}()
	c1, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a := <-ch
	if a.err != nil {
		c1.Close()
		t.Fatal(a.err)
	}
	return c1, a.c
}

// startPair runs two sessions over c1, c2. Cleanup closes both and waits
// for their Run calls.
func startPair(t *testing.T, c1, c2 net.Conn, cfg Config) (a, b *running) {
	t.Helper()
	ka, kb := pairKeys()
	a, b = run(New(c1, ka, cfg)), run(New(c2, kb, cfg))
	t.Cleanup(func() {
		a.Close()
		b.Close()
		a.wait()
		b.wait()
	})
	return a, b
}

// recvN receives n frames from s.
func recvN(t *testing.T, s *running, n int) []frame.Frame {
	t.Helper()
	var got []frame.Frame
	for range n {
		f, err := s.Recv(context.Background())
		if err != nil {
			t.Fatalf("Recv after %d frames: %v", len(got), err)
		}
		got = append(got, f)
	}
	return got
}

func testFrames() []frame.Frame {
	fs := []frame.Frame{
		{Type: frame.Message, Payload: []byte("hello")},
		{Type: frame.StreamData, Flags: frame.FlagFin, Stream: 3, Seq: 9, Payload: bytes.Repeat([]byte{0x5a}, 64<<10)},
		{Type: frame.Media, Flags: frame.FlagUrgent, Stream: 1 << 40},
	}
	for i := range 300 {
		fs = append(fs, frame.Frame{Type: frame.CallSignal, Seq: uint64(i), Payload: bytes.Repeat([]byte{byte(i)}, i*7)})
	}
	return append(fs, frame.Frame{Type: frame.FECParity, Payload: make([]byte, 66<<10)})
}

// frameOpts compares payloads with bytes.Equal: nil equals empty, and
// large payloads compare fast.
var frameOpts = cmp.Comparer(bytes.Equal)

func TestSessionFramesBothWays(t *testing.T) {
	for _, c := range conns {
		t.Run(c.name, func(t *testing.T) {
			c1, c2 := c.pair(t)
			a, b := startPair(t, c1, c2, Config{})
			want := testFrames()
			errc := make(chan error, 1)
			go func() { errc <- a.Send(context.Background(), want...) }()
			for _, f := range want[:10] { // b sends one frame per call
				if err := b.Send(context.Background(), f); err != nil {
					t.Fatalf("b.Send: %v", err)
				}
			}
			if diff := cmp.Diff(want, recvN(t, b, len(want)), frameOpts); diff != "" {
				t.Errorf("b received (-want +got):\n%s", diff)
			}
			if err := <-errc; err != nil {
				t.Fatalf("a.Send: %v", err)
			}
			if diff := cmp.Diff(want[:10], recvN(t, a, 10), frameOpts); diff != "" {
				t.Errorf("a received (-want +got):\n%s", diff)
			}
			// 300 small frames were packed into far fewer records.
			if st := a.Stats(); st.RecordsSent > 30 {
				t.Errorf("a sent %d records for %d frames", st.RecordsSent, len(want))
			}
		})
	}
}

func TestSessionConcurrentSenders(t *testing.T) {
	const senders, each = 4, 200
	for _, c := range conns {
		t.Run(c.name, func(t *testing.T) {
			c1, c2 := c.pair(t)
			a, b := startPair(t, c1, c2, Config{})
			var wg sync.WaitGroup
			errs := make(chan error, senders)
			for id := range senders {
				wg.Go(func() {
					for i := range each {
						f := frame.Frame{Type: frame.Message, Stream: uint64(id), Seq: uint64(i), Payload: fmt.Appendf(nil, "%d/%d", id, i)}
						if err := a.Send(context.Background(), f); err != nil {
							errs <- err
							return
						}
					}
				})
			}
			next := make([]uint64, senders)
			for _, f := range recvN(t, b, senders*each) {
				if f.Seq != next[f.Stream] || string(f.Payload) != fmt.Sprintf("%d/%d", f.Stream, f.Seq) {
					t.Fatalf("from sender %d got seq %d %q, want seq %d", f.Stream, f.Seq, f.Payload, next[f.Stream])
				}
				next[f.Stream]++
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Errorf("Send: %v", err)
			}
		})
	}
}

// latencyConn is one end of an in-memory link that delivers each write
// delay after it was made. It is for synctest bubbles.
type latencyConn struct {
	in, out    chan chunk
	delay      time.Duration
	rest       []byte
	closed     chan struct{}
	peerClosed chan struct{}
	closeOnce  sync.Once
}

type chunk struct {
	at time.Time
	b  []byte
}

func latencyPair(delay time.Duration) (*latencyConn, *latencyConn) {
	ab, ba := make(chan chunk, 1024), make(chan chunk, 1024)
	ca, cb := make(chan struct{}), make(chan struct{})
	return &latencyConn{in: ba, out: ab, delay: delay, closed: ca, peerClosed: cb},
		&latencyConn{in: ab, out: ba, delay: delay, closed: cb, peerClosed: ca}
}

func (c *latencyConn) Read(p []byte) (int, error) {
	if len(c.rest) == 0 {
		var ch chunk
		select {
		case ch = <-c.in: // data written before the peer closed comes first
		default:
			select {
			case ch = <-c.in:
			case <-c.closed:
				return 0, net.ErrClosed
			case <-c.peerClosed:
				return 0, io.EOF
			}
		}
		t := time.NewTimer(time.Until(ch.at))
		defer t.Stop()
		select {
		case <-t.C:
		case <-c.closed:
			return 0, net.ErrClosed
		}
		c.rest = ch.b
	}
	n := copy(p, c.rest)
	c.rest = c.rest[n:]
	return n, nil
}

func (c *latencyConn) Write(p []byte) (int, error) {
	select {
	case c.out <- chunk{at: time.Now().Add(c.delay), b: bytes.Clone(p)}:
		return len(p), nil
	case <-c.closed:
		return 0, net.ErrClosed
	case <-c.peerClosed:
		return 0, io.ErrClosedPipe
	}
}

func (c *latencyConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return nil
}

func TestSessionRTT(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c1, c2 := latencyPair(50 * time.Millisecond)
		ka, kb := pairKeys()
		cfg := Config{KeepAlive: time.Second}
		a, b := run(New(c1, ka, cfg)), run(New(c2, kb, cfg))
		if srtt, rttvar := a.RTT(); srtt != 0 || rttvar != 0 {
			t.Errorf("RTT before any Pong = %v, %v; want zeros", srtt, rttvar)
		}
		// The first Ping goes out at once; its Pong is back after 100ms.
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
		if srtt, rttvar := a.RTT(); srtt != 100*time.Millisecond || rttvar != 50*time.Millisecond {
			t.Errorf("RTT after one sample = %v, %v; want 100ms, 50ms", srtt, rttvar)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if srtt, rttvar := a.RTT(); srtt != 100*time.Millisecond || rttvar != 37500*time.Microsecond {
			t.Errorf("RTT after two samples = %v, %v; want 100ms, 37.5ms", srtt, rttvar)
		}
		a.Close()
		b.Close()
		a.wait()
		b.wait()
	})
}

func TestRTTEstimator(t *testing.T) {
	// RFC 6298 §2: the first sample sets SRTT = R, RTTVAR = R/2; later
	// ones RTTVAR = 3/4 RTTVAR + 1/4 |SRTT-R|, SRTT = 7/8 SRTT + 1/8 R.
	tests := []struct {
		name         string
		samples      []time.Duration
		srtt, rttvar time.Duration
	}{
		{"one", []time.Duration{80 * time.Millisecond}, 80 * time.Millisecond, 40 * time.Millisecond},
		{"steady", []time.Duration{80 * time.Millisecond, 80 * time.Millisecond}, 80 * time.Millisecond, 30 * time.Millisecond},
		{"jump", []time.Duration{80 * time.Millisecond, 160 * time.Millisecond}, 90 * time.Millisecond, 50 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(nopConn{}, Keys{}, Config{})
			base := time.Now()
			for i, r := range tt.samples {
				id := uint64(i + 1)
				s.pending[id%pendingPings] = pendingPing{id: id, sent: base.Add(-r)}
				s.onPongAt(frame.PingPayload{ID: id}, base)
			}
			if srtt, rttvar := s.RTT(); srtt != tt.srtt || rttvar != tt.rttvar {
				t.Errorf("RTT = %v, %v; want %v, %v", srtt, rttvar, tt.srtt, tt.rttvar)
			}
			// A Pong nobody waits for is ignored.
			s.onPongAt(frame.PingPayload{ID: 99}, base)
			if srtt, _ := s.RTT(); srtt != tt.srtt {
				t.Errorf("unexpected Pong changed SRTT to %v", srtt)
			}
		})
	}
}

// nopConn discards writes and has nothing to read.
type nopConn struct{}

func (nopConn) Read([]byte) (int, error)    { return 0, io.EOF }
func (nopConn) Write(p []byte) (int, error) { return len(p), nil }
func (nopConn) Close() error                { return nil }

func TestSessionKeepAlive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c1, c2 := net.Pipe()
		ka, kb := pairKeys()
		cfg := Config{KeepAlive: time.Second, IdleTimeout: 3 * time.Second}
		a, b := run(New(c1, ka, cfg)), run(New(c2, kb, cfg))
		time.Sleep(time.Minute)
		synctest.Wait()
		if a.stopped() || b.stopped() {
			t.Fatal("an idle session with keepalives ended")
		}
		// One Ping at start and one a second: 61 Pings and their Pongs.
		if got := b.Stats().RecordsReceived; got != 2*61 {
			t.Errorf("b received %d records in a minute, want %d", got, 2*61)
		}
		a.Close()
		if err := a.wait(); err != nil {
			t.Errorf("a.Run: %v", err)
		}
		if err := b.wait(); !errors.Is(err, ErrClosedByPeer) {
			t.Errorf("b.Run: %v, want ErrClosedByPeer", err)
		}
	})
}

func TestSessionIdleTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c1, c2 := net.Pipe()
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			io.Copy(io.Discard, c2) // reads the Pings, never answers
		}()
		ka, _ := pairKeys()
		s := New(c1, ka, Config{KeepAlive: time.Second})
		start := time.Now()
		err := s.Run(context.Background())
		if !errors.Is(err, ErrIdle) {
			t.Fatalf("Run: %v, want ErrIdle", err)
		}
		if got := time.Since(start); got != 4*time.Second {
			t.Errorf("Run ended after %v, want the default IdleTimeout 4s", got)
		}
		<-drained
		c2.Close()
		if _, err := s.Recv(context.Background()); !errors.Is(err, ErrIdle) {
			t.Errorf("Recv after the end: %v, want ErrIdle", err)
		}
	})
}

func TestSessionCloseSeenByPeer(t *testing.T) {
	for _, c := range conns {
		t.Run(c.name, func(t *testing.T) {
			c1, c2 := c.pair(t)
			ka, kb := pairKeys()
			a, b := run(New(c1, ka, Config{})), run(New(c2, kb, Config{RecvQueue: 1}))
			want := testFrames()[:20]
			errc := make(chan error, 1)
			go func() {
				if err := a.Send(context.Background(), want...); err != nil {
					errc <- err
					return
				}
				errc <- a.Close()
			}()
			// Frames sent before the Close are all delivered, then the end.
			if diff := cmp.Diff(want, recvN(t, b, len(want)), frameOpts); diff != "" {
				t.Errorf("b received (-want +got):\n%s", diff)
			}
			if err := <-errc; err != nil {
				t.Fatalf("Send or Close: %v", err)
			}
			if err := a.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			if err := a.wait(); err != nil {
				t.Errorf("a.Run after Close: %v, want nil", err)
			}
			berr := b.wait()
			var ce *CloseError
			if !errors.As(berr, &ce) || !errors.Is(berr, ErrClosedByPeer) || ce.Code != CloseNormal {
				t.Fatalf("b.Run: %v, want a *CloseError with CloseNormal", berr)
			}
			if _, err := b.Recv(context.Background()); !errors.Is(err, ErrClosedByPeer) {
				t.Errorf("b.Recv after the frames: %v, want ErrClosedByPeer", err)
			}
			if _, err := a.Recv(context.Background()); !errors.Is(err, ErrClosed) {
				t.Errorf("a.Recv: %v, want ErrClosed", err)
			}
			if err := a.Send(context.Background(), want[0]); !errors.Is(err, ErrClosed) {
				t.Errorf("a.Send: %v, want ErrClosed", err)
			}
			if err := a.Rekey(); !errors.Is(err, ErrClosed) {
				t.Errorf("a.Rekey: %v, want ErrClosed", err)
			}
		})
	}
}

func TestSessionRunContextEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c1, c2 := net.Pipe()
		ka, kb := pairKeys()
		ctx, cancel := context.WithCancel(context.Background())
		a := New(c1, ka, Config{})
		aerr := make(chan error, 1)
		go func() { aerr <- a.Run(ctx) }()
		b := run(New(c2, kb, Config{}))
		synctest.Wait()
		cancel()
		if err := <-aerr; err != nil {
			t.Errorf("Run after its context ended: %v, want nil", err)
		}
		if err := b.wait(); !errors.Is(err, ErrClosedByPeer) {
			t.Errorf("peer's Run: %v, want ErrClosedByPeer", err)
		}
	})
}

func TestSessionPeerConnClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c1, c2 := net.Pipe()
		ka, _ := pairKeys()
		s := run(New(c1, ka, Config{}))
		if _, err := ReadRecord(c2, nil); err != nil { // the first Ping
			t.Fatal(err)
		}
		c2.Close()
		err := s.wait()
		if !errors.Is(err, io.EOF) {
			t.Fatalf("Run: %v, want io.EOF", err)
		}
		if want := "session: connection closed by peer without a close frame: EOF"; err.Error() != want {
			t.Errorf("Run error %q, want %q", err, want)
		}
	})
}

// scriptConn serves a fixed byte stream, then blocks until closed; writes
// are discarded.
type scriptConn struct {
	r      *bytes.Reader
	closed chan struct{}
	once   sync.Once
}

func newScriptConn(b []byte) *scriptConn {
	return &scriptConn{r: bytes.NewReader(b), closed: make(chan struct{})}
}

func (c *scriptConn) Read(p []byte) (int, error) {
	if c.r.Len() > 0 {
		return c.r.Read(p)
	}
	<-c.closed
	return 0, net.ErrClosed
}

func (c *scriptConn) Write(p []byte) (int, error) { return len(p), nil }

func (c *scriptConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

// record seals plaintext for the session side with key kb's Recv (a test
// peer speaking to a session made with ka).
func record(t *testing.T, s *Sealer, plaintext []byte) []byte {
	t.Helper()
	rec, _, err := s.Seal(nil, plaintext)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func frames(t *testing.T, fs ...frame.Frame) []byte {
	t.Helper()
	var b []byte
	for _, f := range fs {
		var err error
		if b, err = frame.Append(b, f); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func TestSessionBadInput(t *testing.T) {
	ka, kb := pairKeys()
	peer := func() *Sealer { return NewSealer(kb.Send) }
	msg := frames(t, frame.Frame{Type: frame.Message, Payload: []byte("hi")})
	rng := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 4096)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	tests := []struct {
		name  string
		input []byte
		want  error
	}{
		{"length over the limit", []byte{0xff, 0xff, 0xff}, ErrTooLarge},
		{"length one over", []byte{(MaxRecordSize - 2) >> 16, (MaxRecordSize - 2) >> 8 & 0xff, (MaxRecordSize - 2) & 0xff}, ErrTooLarge},
		{"length too short", []byte{0, 0, 5}, ErrMalformed},
		{"garbage record", append([]byte{0, 0, 100}, random[:100]...), ErrAuth},
		{"random bytes", random, ErrTooLarge}, // the first three bytes are a huge length
		{"wrong key", record(t, NewSealer(ka.Send), msg), ErrAuth},
		{"epoch two ahead", func() []byte {
			s := peer()
			s.Rekey()
			record(t, s, msg) // epoch 1, never delivered
			s.Rekey()
			return record(t, s, msg)
		}(), ErrAuth},
		{"bad frame version", record(t, peer(), append([]byte{9}, msg[1:]...)), ErrMalformed},
		{"unknown frame type", record(t, peer(), []byte{1, 0x7f, 0, 0, 0, 0}), ErrMalformed},
		{"frame cut by record end", record(t, peer(), msg[:len(msg)-1]), ErrMalformed},
		{"good frame then bad", record(t, peer(), append(bytes.Clone(msg), 1)), ErrMalformed},
		{"short ping", record(t, peer(), frames(t, frame.Frame{Type: frame.Ping, Payload: []byte{1, 2, 3}})), frame.ErrPayload},
		{"bad pong", record(t, peer(), frames(t, frame.Frame{Type: frame.Pong})), frame.ErrPayload},
		{"close reason not UTF-8", record(t, peer(), frames(t, frame.Frame{Type: frame.Close, Payload: []byte{0, 0xff}})), frame.ErrPayload},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := New(newScriptConn(tt.input), ka, Config{})
				err := s.Run(context.Background())
				if !errors.Is(err, tt.want) {
					t.Fatalf("Run: %v, want %v", err, tt.want)
				}
				if _, rerr := s.Recv(context.Background()); rerr == nil {
					t.Errorf("Recv delivered a frame from a bad record")
				}
			})
		})
	}
}

func TestSessionDropsReplays(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ka, kb := pairKeys()
		peer := NewSealer(kb.Send)
		rec := record(t, peer, frames(t, frame.Frame{Type: frame.Message, Payload: []byte("once")}))
		next := record(t, peer, frames(t, frame.Frame{Type: frame.Message, Payload: []byte("next")}))
		in := slicesConcat(rec, rec, next)
		s := run(New(newScriptConn(in), ka, Config{}))
		for _, want := range []string{"once", "next"} {
			f, err := s.Recv(context.Background())
			if err != nil || string(f.Payload) != want {
				t.Fatalf("Recv = %q, %v; want %q", f.Payload, err, want)
			}
		}
		if got := s.Stats(); got.ReplaysDropped != 1 || got.RecordsReceived != 2 || got.BytesReceived != uint64(len(in)) {
			t.Errorf("Stats = %+v, want 1 replay of 3 records, %d bytes", got, len(in))
		}
		s.Close()
		if err := s.wait(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func slicesConcat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

func TestSessionDeliveredFramesDoNotAlias(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c1, c2 := net.Pipe()
		a, b := startPair(t, c1, c2, Config{})
		var got []frame.Frame
		for i := range 10 {
			f := frame.Frame{Type: frame.Message, Payload: bytes.Repeat([]byte{byte('a' + i)}, 100)}
			pad := frame.Frame{Type: frame.Padding, Payload: make([]byte, 50)}
			if err := a.Send(context.Background(), f, pad, f); err != nil {
				t.Fatal(err)
			}
			got = append(got, recvN(t, b, 2)...)
		}
		for i, f := range got {
			want := bytes.Repeat([]byte{byte('a' + i/2)}, 100)
			if !bytes.Equal(f.Payload, want) || cap(f.Payload) != len(f.Payload) {
				t.Fatalf("frame %d: payload %q (cap %d) changed after later records", i, f.Payload[:4], cap(f.Payload))
			}
		}
	})
}

func TestSessionSendRespectsContext(t *testing.T) {
	t.Run("nothing written", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c1, c2 := net.Pipe()
			ka, kb := pairKeys()
			s := New(c1, ka, Config{}) // no Run: nothing else writes
			defer s.Close()
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			m := frame.Frame{Type: frame.Message, Payload: []byte("late")}
			if err := s.Send(ctx, m); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Send to a peer that does not read: %v, want DeadlineExceeded", err)
			}
			// The stream is intact: the next record arrives and opens.
			go s.Send(context.Background(), m)
			rec, err := ReadRecord(c2, nil)
			if err != nil {
				t.Fatal(err)
			}
			pt, seq, err := NewOpener(kb.Recv).Open(nil, rec)
			if err != nil || seq != 1 || !bytes.Equal(pt, frames(t, m)) {
				t.Fatalf("next record: seq %d, %v", seq, err)
			}
			c2.Close()
		})
	})
	t.Run("cancelled part-way", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c1, c2 := net.Pipe()
			ka, _ := pairKeys()
			s := New(c1, ka, Config{})
			defer s.Close()
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			go func() {
				errc <- s.Send(ctx, frame.Frame{Type: frame.Message, Payload: make([]byte, 1000)})
			}()
			if _, err := io.ReadFull(c2, make([]byte, 10)); err != nil {
				t.Fatal(err)
			}
			cancel()
			if err := <-errc; !errors.Is(err, context.Canceled) {
				t.Fatalf("Send: %v, want Canceled", err)
			}
			// Half a record went out: the session cannot go on.
			if err := s.Send(context.Background(), frame.Frame{Type: frame.Message}); err == nil {
				t.Fatal("Send after a half-written record succeeded")
			}
			c2.Close()
		})
	})
}

func TestSessionSendRejectsBadFrames(t *testing.T) {
	s := New(nopConn{}, Keys{}, Config{})
	defer s.Close()
	tests := []struct {
		name string
		f    frame.Frame
		want error
	}{
		{"unknown type", frame.Frame{Type: 0x7f}, frame.ErrType},
		{"too long", frame.Frame{Type: frame.Ping, Payload: make([]byte, 65)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Send(context.Background(), tt.f)
			var tl *frame.TooLargeError
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) || (tt.want == nil && !errors.As(err, &tl)) {
				t.Fatalf("Send: %v", err)
			}
		})
	}
	if st := s.Stats(); st.RecordsSent != 0 {
		t.Errorf("bad frames were sent: %+v", st)
	}
}

func TestSessionBackpressure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c1, c2 := net.Pipe()
		a, b := startPair(t, c1, c2, Config{RecvQueue: 1})
		var want []frame.Frame
		for i := range 100 {
			want = append(want, frame.Frame{Type: frame.Message, Seq: uint64(i), Payload: []byte{byte(i)}})
		}
		errc := make(chan error, 1)
		go func() { errc <- a.Send(context.Background(), want...) }()
		synctest.Wait()
		if n := len(b.recvq); n != 1 {
			t.Errorf("queue holds %d frames, want its limit 1", n)
		}
		if diff := cmp.Diff(want, recvN(t, b, len(want)), frameOpts); diff != "" {
			t.Errorf("received (-want +got):\n%s", diff)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	})
}

func TestSessionSlowReaderIsNotIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c1, c2 := net.Pipe()
		a, b := startPair(t, c1, c2, Config{KeepAlive: time.Second, RecvQueue: 1})
		want := []frame.Frame{
			{Type: frame.Message, Payload: []byte("1")},
			{Type: frame.Message, Payload: []byte("2")},
			{Type: frame.Message, Payload: []byte("3")},
		}
		errc := make(chan error, 1)
		go func() { errc <- a.Send(context.Background(), want...) }()
		// b's application reads nothing for a minute, fifteen idle timeouts.
		time.Sleep(time.Minute)
		synctest.Wait()
		if a.stopped() || b.stopped() {
			t.Fatal("a session ended while its application was slow to read")
		}
		if diff := cmp.Diff(want, recvN(t, b, len(want)), frameOpts); diff != "" {
			t.Errorf("received (-want +got):\n%s", diff)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	})
}

func TestSessionRekey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c1, c2 := net.Pipe()
		a, b := startPair(t, c1, c2, Config{RekeyAfterRecords: 5})
		for i := range 60 {
			if i%20 == 0 {
				if err := a.Rekey(); err != nil {
					t.Fatal(err)
				}
			}
			if err := a.Send(context.Background(), frame.Frame{Type: frame.Message, Seq: uint64(i)}); err != nil {
				t.Fatal(err)
			}
		}
		for i, f := range recvN(t, b, 60) {
			if f.Seq != uint64(i) {
				t.Fatalf("frame %d has seq %d", i, f.Seq)
			}
		}
		synctest.Wait()
		sa, sb := a.Stats(), b.Stats()
		if sa.Rekeys < 12 || sb.PeerRekeys != sa.Rekeys {
			t.Errorf("a rekeyed %d times, b saw %d; want >= 12 and equal", sa.Rekeys, sb.PeerRekeys)
		}
	})
}

// TestSessionRekeyTwice asks for two rekeys with no record in between
// (as a rekey timer and an application request may): the peer, which
// holds only the key one epoch ahead of the last record it saw, must
// still open what follows.
func TestSessionRekeyTwice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c1, c2 := net.Pipe()
		a, b := startPair(t, c1, c2, Config{})
		send := func(p string) {
			t.Helper()
			if err := a.Send(context.Background(), frame.Frame{Type: frame.Message, Payload: []byte(p)}); err != nil {
				t.Fatal(err)
			}
		}
		send("before")
		recvN(t, b, 1)
		synctest.Wait() // the first pings have gone both ways
		for range 2 {
			if err := a.Rekey(); err != nil {
				t.Fatal(err)
			}
		}
		send("after")
		f, err := b.Recv(context.Background())
		if err != nil || string(f.Payload) != "after" {
			t.Fatalf("Recv after two rekeys: %q, %v", f.Payload, err)
		}
		if sa, sb := a.Stats(), b.Stats(); sa.Rekeys != 1 || sb.PeerRekeys != 1 {
			t.Errorf("a rekeyed %d times, b saw %d; want 1 and 1", sa.Rekeys, sb.PeerRekeys)
		}
	})
}

func TestSessionStats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c1, c2 := net.Pipe()
		ka, kb := pairKeys()
		a, b := run(New(c1, ka, Config{})), run(New(c2, kb, Config{}))
		errc := make(chan error, 1)
		go func() { errc <- a.Send(context.Background(), testFrames()...) }()
		recvN(t, b, len(testFrames()))
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		a.Close()
		a.wait()
		b.wait()
		sa, sb := a.Stats(), b.Stats()
		if sa.RecordsSent != sb.RecordsReceived || sa.BytesSent != sb.BytesReceived || sa.RecordsSent < 3 {
			t.Errorf("a sent %d records, %d bytes; b received %d, %d", sa.RecordsSent, sa.BytesSent, sb.RecordsReceived, sb.BytesReceived)
		}
	})
}

func TestSessionLifecycle(t *testing.T) {
	t.Run("Run twice", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c1, c2 := net.Pipe()
			a, _ := startPair(t, c1, c2, Config{})
			synctest.Wait()
			if err := a.Run(context.Background()); err == nil {
				t.Fatal("second Run succeeded")
			}
		})
	})
	t.Run("Close before Run", func(t *testing.T) {
		s := New(nopConn{}, Keys{}, Config{})
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.Run(context.Background()); err != nil {
			t.Errorf("Run after Close: %v, want nil", err)
		}
		if err := s.Send(context.Background(), frame.Frame{Type: frame.Message}); !errors.Is(err, ErrClosed) {
			t.Errorf("Send after Close: %v, want ErrClosed", err)
		}
	})
	t.Run("invalid config", func(t *testing.T) {
		s := New(nopConn{}, Keys{}, Config{KeepAlive: -time.Second})
		if err := s.Run(context.Background()); err == nil {
			t.Error("Run with a negative KeepAlive succeeded")
		}
		if err := s.Send(context.Background(), frame.Frame{Type: frame.Message}); err == nil {
			t.Error("Send with a negative KeepAlive succeeded")
		}
	})
	t.Run("Recv honours its context", func(t *testing.T) {
		s := New(nopConn{}, Keys{}, Config{})
		defer s.Close()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := s.Recv(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("Recv: %v, want Canceled", err)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"zero", Config{}, true},
		{"set", Config{KeepAlive: time.Second, IdleTimeout: time.Minute, RecvQueue: 3}, true},
		{"negative KeepAlive", Config{KeepAlive: -1}, false},
		{"negative IdleTimeout", Config{IdleTimeout: -1}, false},
		{"negative RekeyAfter", Config{RekeyAfter: -1}, false},
		{"negative RekeyGrace", Config{RekeyGrace: -1}, false},
		{"negative RecvQueue", Config{RecvQueue: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate() = %v, want ok %v", err, tt.ok)
			}
		})
	}
}
