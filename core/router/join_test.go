package router

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/commucat/commucat/core/frame"
	"github.com/commucat/commucat/core/handshake"
)

func TestJoinKeyAgrees(t *testing.T) {
	c, g := results(t)
	kc, err := joinKey(Client, c)
	if err != nil {
		t.Fatal(err)
	}
	kg, err := joinKey(Gateway, g)
	if err != nil {
		t.Fatal(err)
	}
	if kc != kg {
		t.Fatal("client and gateway derive different join keys")
	}
	if token(&kc, 1) == token(&kc, 2) {
		t.Fatal("tokens 1 and 2 are equal")
	}
	// Another handshake hash gives other tokens.
	c.Hash[0] ^= 1
	kc2, _ := joinKey(Client, c)
	if token(&kc, 1) == token(&kc2, 1) {
		t.Fatal("the join key does not depend on the handshake hash")
	}
}

// TestTokenVector pins the derivation (checked against an independent
// HKDF and HMAC): client send key 32 x 0x01, receive key 32 x 0x02, hash
// 32 x 0x03, index 1.
func TestTokenVector(t *testing.T) {
	res := &handshake.Result{Hash: bytes.Repeat([]byte{3}, 32)}
	for i := range 32 {
		res.SendKey[i], res.RecvKey[i] = 1, 2
	}
	k, err := joinKey(Client, res)
	if err != nil {
		t.Fatal(err)
	}
	tok := token(&k, 1)
	if tok[31]&0x80 != 0 {
		t.Fatal("token top bit set")
	}
	got := hex.EncodeToString(tok[:])
	const want = "b686b15c8c2faa7d5b1e855ca3fb941ecbd58f2c646e8e82a0e51284ae820526"
	if got != want {
		t.Errorf("token(1) = %s, want %s", got, want)
	}
}

func TestJoinMessage(t *testing.T) {
	tok := [TokenSize]byte{1, 2, 3}
	tests := []struct {
		name    string
		pad     int
		wantLen int
	}{
		{"no padding", 0, TokenSize},
		{"padded like message 1", 1300, TokenSize + 1300},
		{"capped", 10000, MaxJoinMessage},
		{"negative", -5, TokenSize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := AppendJoinMessage(nil, tok, tt.pad)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) != tt.wantLen {
				t.Errorf("length %d, want %d", len(b), tt.wantLen)
			}
			got, err := ParseJoinMessage(b)
			if err != nil || got != tok {
				t.Errorf("ParseJoinMessage = %x, %v", got, err)
			}
		})
	}
	for name, b := range map[string][]byte{
		"short":   make([]byte, TokenSize-1),
		"long":    make([]byte, MaxJoinMessage+1),
		"top bit": append(make([]byte, TokenSize-1), 0x80),
	} {
		if _, err := ParseJoinMessage(b); !errors.Is(err, ErrMalformedJoin) {
			t.Errorf("%s: ParseJoinMessage = %v, want ErrMalformedJoin", name, err)
		}
	}
}

func TestPathJoin(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want PathJoin
		ok   bool
	}{
		{"one", []byte{1}, PathJoin{1}, true},
		{"300", []byte{0xac, 0x02}, PathJoin{300}, true},
		{"zero", []byte{0}, PathJoin{}, false},
		{"empty", nil, PathJoin{}, false},
		{"not minimal", []byte{0x81, 0x00}, PathJoin{}, false},
		{"trailing", []byte{1, 1}, PathJoin{}, false},
		{"too long", bytes.Repeat([]byte{0xff}, 11), PathJoin{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePathJoin(tt.in)
			if (err == nil) != tt.ok {
				t.Fatalf("ParsePathJoin = %v, %v; want ok %v", got, err, tt.ok)
			}
			if !tt.ok {
				if !errors.Is(err, ErrMalformedJoin) {
					t.Errorf("error %v does not match ErrMalformedJoin", err)
				}
				return
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if b := got.Append(nil); !bytes.Equal(b, tt.in) {
				t.Errorf("Append = %x, want %x", b, tt.in)
			}
		})
	}
}

// gatewaySession returns a gateway session over one side of a pipe, not
// running, and its client-side join key.
func gatewaySession(t *testing.T) (*Session, [32]byte) {
	t.Helper()
	c, g := results(t)
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	s := New(Gateway, g, a, Endpoint{Transport: "pipe"}, Config{})
	t.Cleanup(func() { s.Close() })
	k, err := joinKey(Client, c)
	if err != nil {
		t.Fatal(err)
	}
	return s, k
}

func joinMsg(t *testing.T, k *[32]byte, i uint64) []byte {
	t.Helper()
	b, err := AppendJoinMessage(nil, token(k, i), 20)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTableJoin(t *testing.T) {
	var tb Table
	s, k := gatewaySession(t)
	tb.Add(s)
	if n := tb.Len(); n != TokenWindow {
		t.Fatalf("a new session has %d tokens, want %d", n, TokenWindow)
	}
	conn := func() net.Conn {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		go func() { // drain the confirmation
			buf := make([]byte, 4096)
			for {
				if _, err := b.Read(buf); err != nil {
					return
				}
			}
		}()
		return a
	}
	steps := []struct {
		name  string
		index uint64
		want  bool
	}{
		{"first", 1, true},
		{"replayed", 1, false},
		{"out of order within the window", 5, true},
		{"skipped one still valid", 2, true},
		{"beyond the window", 5 + TokenWindow + 1, false},
		{"at the window's edge", 5 + TokenWindow, true},
		{"left behind", 4, false},
		{"replayed again", 5, false},
	}
	for _, st := range steps {
		if got := tb.Join(conn(), Endpoint{Transport: "pipe"}, joinMsg(t, &k, st.index)); got != st.want {
			t.Errorf("%s: Join(token %d) = %v, want %v", st.name, st.index, got, st.want)
		}
	}
	if got := tb.Join(conn(), Endpoint{}, make([]byte, 1300)); got {
		t.Error("a message that is no join joined")
	}
	var hm [1243]byte // a handshake message 1 has a random key there
	hm[0] = 9
	if tb.Join(conn(), Endpoint{}, hm[:]) {
		t.Error("a handshake message joined")
	}
	s.Close()
	// Run was never called: Close ends the session; remove happens in
	// Run, so do what Run does.
	tb.remove(s)
	if n := tb.Len(); n != 0 {
		t.Errorf("%d tokens left after the session ended", n)
	}
	// A join for the ended session is refused (Join closes the
	// connection) without being taken for a handshake, once.
	if !tb.Join(conn(), Endpoint{}, joinMsg(t, &k, 6)) {
		t.Error("a join for a session that just ended went on to the handshake")
	}
	if tb.Join(conn(), Endpoint{}, joinMsg(t, &k, 6)) {
		t.Error("a tombstone was used twice")
	}
}

func TestTableIgnoresClients(t *testing.T) {
	var tb Table
	c, _ := results(t)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	s := New(Client, c, a, Endpoint{}, Config{})
	defer s.Close()
	tb.Add(s)
	if tb.Len() != 0 {
		t.Error("a client session was added")
	}
}

func FuzzJoinMessage(f *testing.F) {
	for _, pad := range []int{0, 1, 1300} {
		b, _ := AppendJoinMessage(nil, [TokenSize]byte{7}, pad)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tok, err := ParseJoinMessage(b)
		if err != nil {
			if !errors.Is(err, ErrMalformedJoin) {
				t.Fatalf("error %v does not match ErrMalformedJoin", err)
			}
			return
		}
		again, err := AppendJoinMessage(nil, tok, len(b)-TokenSize)
		if err != nil || len(again) != len(b) || !bytes.Equal(again[:TokenSize], b[:TokenSize]) {
			t.Fatalf("re-encoding a parsed join message: %x, %v", again, err)
		}
	})
}

func FuzzPathJoin(f *testing.F) {
	for _, i := range []uint64{1, 300, 1 << 63} {
		f.Add(PathJoin{Index: i}.Append(nil))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePathJoin(b)
		if err != nil {
			if !errors.Is(err, ErrMalformedJoin) {
				t.Fatalf("error %v does not match ErrMalformedJoin", err)
			}
			return
		}
		if again := p.Append(nil); !bytes.Equal(again, b) {
			t.Fatalf("Append(Parse(%x)) = %x", b, again)
		}
		if _, err := frame.Append(nil, frame.Frame{Type: frame.PathJoin, Payload: b}); err != nil {
			t.Fatalf("a valid payload does not fit its frame: %v", err)
		}
	})
}

// FuzzDispatch feeds arbitrary record plaintexts, as an authenticated but
// misbehaving peer could send them, to a session: frames with any Seq,
// acknowledgements of anything, pings, parity. Nothing may panic.
func FuzzDispatch(f *testing.F) {
	add := func(fs ...frame.Frame) {
		var b []byte
		for _, fr := range fs {
			b, _ = frame.Append(b, fr)
		}
		f.Add(b)
	}
	add(frame.Frame{Type: frame.Message, Seq: 1, Payload: []byte("hi")}, frame.Frame{Type: frame.Message, Seq: 3})
	add(frame.Frame{Type: frame.Ack, Payload: frame.SackPayload{Cumulative: 5, Window: 10, Ranges: []frame.SackRange{{First: 7, Last: 9}}}.Append(nil)})
	add(frame.Frame{Type: frame.Ping, Payload: make([]byte, 16)}, frame.Frame{Type: frame.Pong, Payload: make([]byte, 16)})
	add(frame.Frame{Type: frame.PathJoin, Payload: []byte{1}}, frame.Frame{Type: frame.Padding, Payload: make([]byte, 10)})
	add(frame.Frame{Type: frame.FECParity, Payload: []byte{0, 0, 1, 1, 1, 28}})
	add(frame.Frame{Type: frame.Close, Seq: 1})
	add(frame.Frame{Type: frame.Media, Payload: []byte{1}})
	add(frame.Frame{Type: frame.Ack, Payload: frame.DatagramAckPayload{Received: 9, Highest: 40}.Append(nil)})
	f.Fuzz(func(t *testing.T, pt []byte) {
		c, _ := results(t)
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		s := New(Client, c, a, Endpoint{}, Config{Window: 64})
		defer s.Close()
		s.mu.Lock()
		// A few frames in flight, so acknowledgements have something to
		// act on.
		for i := range 3 {
			s.queue(msg(i, 8), Best, true)
		}
		s.pump(time.Now())
		p := s.paths[0]
		var repaired [][]byte
		s.dispatch(p, pt, time.Now(), &repaired)
		s.dispatch(nil, pt, time.Now(), &repaired)
		for {
			if _, ok := s.popRecv(); !ok {
				break
			}
		}
		s.mu.Unlock()
	})
}
