package handshake

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"testing/synctest"
	"time"
)

type outcome struct {
	res *Result
	err error
}

// handshakeOver runs Server on sc in a goroutine and Client on cc, and
// returns both outcomes. Each side closes its conn when done, as a real
// caller does on failure.
func handshakeOver(t *testing.T, ctx context.Context, cc, sc net.Conn, c ClientConfig, s ServerConfig) (client, server outcome) {
	t.Helper()
	done := make(chan outcome, 1)
	go func() {
		res, err := Server(ctx, sc, s)
		if err != nil {
			sc.Close()
		}
		done <- outcome{res, err}
	}()
	res, err := Client(ctx, cc, c)
	if err != nil {
		cc.Close()
	}
	client = outcome{res, err}
	server = <-done
	return client, server
}

func checkStreamAgree(t *testing.T, client, server outcome, c ClientConfig) {
	t.Helper()
	if client.err != nil || server.err != nil {
		t.Fatalf("client: %v; server: %v", client.err, server.err)
	}
	checkAgree(t, transcript{client: client.res, server: server.res}, c)
	if !bytes.Equal(server.res.Payload, c.Payload) {
		t.Errorf("payload %q, want %q", server.res.Payload, c.Payload)
	}
}

func TestClientServerPipe(t *testing.T) {
	c, s := newConfigs(t, "pipe")
	c.Payload = []byte("hello gateway")
	c.rand, s.rand = nil, nil // real randomness
	c.Now, s.Now = nil, nil   // real clocks
	cc, sc := net.Pipe()
	defer cc.Close()
	defer sc.Close()
	client, server := handshakeOver(t, context.Background(), cc, sc, c, s)
	checkStreamAgree(t, client, server, c)
	// The deadline is cleared: the conn still works afterwards.
	go sc.Write([]byte("after"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(cc, buf); err != nil || string(buf) != "after" {
		t.Fatalf("conn after handshake: %q %v", buf, err)
	}
}

func TestClientServerTCP(t *testing.T) {
	c, s := newConfigs(t, "tcp")
	c.rand, s.rand, c.Now, s.Now = nil, nil, nil, nil
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- conn
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var d net.Dialer
	cc, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	sc, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	defer sc.Close()
	client, server := handshakeOver(t, ctx, cc, sc, c, s)
	checkStreamAgree(t, client, server, c)
}

func TestStreamWrongServerKey(t *testing.T) {
	c, s := newConfigs(t, "stream wrong key")
	c.ServerPublic = mustStatic(t, "not the gateway").Public()
	cc, sc := net.Pipe()
	defer cc.Close()
	defer sc.Close()
	client, server := handshakeOver(t, context.Background(), cc, sc, c, s)
	if !errors.Is(server.err, ErrAuth) {
		t.Errorf("gateway: %v, want ErrAuth", server.err)
	}
	if client.err == nil || client.res != nil {
		t.Errorf("client got keys (%v) from a gateway that could not decrypt message 1", client.err)
	}
}

func TestStreamReplay(t *testing.T) {
	// Record a real client's message 1, then replay it on a new connection.
	c, s := newConfigs(t, "stream replay")
	cc, sc := net.Pipe()
	rec := &recordingConn{Conn: cc}
	client, server := handshakeOver(t, context.Background(), rec, sc, c, s)
	cc.Close()
	sc.Close()
	checkStreamAgree(t, client, server, c)

	cc2, sc2 := net.Pipe()
	defer cc2.Close()
	defer sc2.Close()
	go func() {
		cc2.Write(rec.written[:2+1243]) // frame of message 1
	}()
	_, err := Server(context.Background(), sc2, s)
	if !errors.Is(err, ErrReplay) {
		t.Fatalf("replayed message 1: %v, want ErrReplay", err)
	}
}

type recordingConn struct {
	net.Conn
	written []byte
}

func (r *recordingConn) Write(p []byte) (int, error) {
	r.written = append(r.written, p...)
	return r.Conn.Write(p)
}

func TestServerRefusesGarbage(t *testing.T) {
	tests := []struct {
		name  string
		bytes []byte
		want  error
	}{
		{"too large", []byte{0x10, 0x01}, ErrTooLarge},
		{"max length field", []byte{0xff, 0xff}, ErrTooLarge},
		{"zero length", []byte{0, 0}, ErrMalformed},
		{"short message", append([]byte{0, 10}, make([]byte, 10)...), ErrMalformed},
		{"random message 1", append([]byte{0x04, 0xdb}, bytes.Repeat([]byte{7}, 1243)...), ErrAuth},
		{"eof in header", []byte{0}, io.ErrUnexpectedEOF},
		{"eof in body", []byte{0, 10, 1}, io.ErrUnexpectedEOF},
		{"eof", nil, io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, s := newConfigs(t, "garbage")
			cc, sc := net.Pipe()
			defer sc.Close()
			go func() {
				cc.Write(tt.bytes)
				cc.Close()
			}()
			_, err := Server(context.Background(), sc, s)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if s.Replay.Len() != 0 {
				t.Error("garbage entered the replay cache")
			}
		})
	}
}

func TestClientCancel(t *testing.T) {
	c, _ := newConfigs(t, "cancel")
	t.Run("cancelled before", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		cc, sc := net.Pipe()
		defer cc.Close()
		defer sc.Close()
		if _, err := Client(ctx, cc, c); !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	})
	t.Run("cancelled while blocked", func(t *testing.T) {
		// The gateway reads message 1 and then goes silent; cancelling
		// must unblock the client's read of message 2.
		ctx, cancel := context.WithCancel(context.Background())
		cc, sc := net.Pipe()
		defer cc.Close()
		defer sc.Close()
		go func() {
			ReadMessage(sc)
			cancel()
		}()
		if _, err := Client(ctx, cc, c); !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	})
	t.Run("server cancelled while blocked", func(t *testing.T) {
		_, s := newConfigs(t, "cancel server")
		ctx, cancel := context.WithCancel(context.Background())
		cc, sc := net.Pipe()
		defer cc.Close()
		defer sc.Close()
		go func() {
			cc.Write([]byte{0x04}) // half a length, then nothing
			cancel()
		}()
		if _, err := Server(ctx, sc, s); !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	})
}

func TestDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, s := newConfigs(t, "deadline")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cc, sc := net.Pipe()
		defer cc.Close()
		defer sc.Close()
		// Nobody answers: the client's read of message 2 times out.
		go ReadMessage(sc)
		_, err := Client(ctx, cc, c)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want context.DeadlineExceeded", err)
		}

		// A handshake that finishes before the deadline leaves the conn
		// without one: it still works after the deadline has passed.
		ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel2()
		cc2, sc2 := net.Pipe()
		defer cc2.Close()
		defer sc2.Close()
		client, server := handshakeOver(t, ctx2, cc2, sc2, c, s)
		checkStreamAgree(t, client, server, c)
		time.Sleep(time.Minute) // synthetic time
		go sc2.Write([]byte("late"))
		buf := make([]byte, 4)
		if _, err := io.ReadFull(cc2, buf); err != nil {
			t.Fatalf("conn after the old deadline: %v", err)
		}
	})
}

func TestFraming(t *testing.T) {
	tests := []struct {
		name string
		msg  []byte
		want error
	}{
		{"one byte", []byte{1}, nil},
		{"max", bytes.Repeat([]byte{2}, MaxMessageSize), nil},
		{"empty", nil, ErrMalformed},
		{"too large", make([]byte, MaxMessageSize+1), ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := WriteMessage(&buf, tt.msg)
			checkErr(t, err, tt.want)
			if tt.want != nil {
				if buf.Len() != 0 {
					t.Error("bytes written despite the error")
				}
				return
			}
			if buf.Len() != 2+len(tt.msg) {
				t.Errorf("frame is %d bytes, want %d", buf.Len(), 2+len(tt.msg))
			}
			got, err := ReadMessage(&buf)
			if err != nil || !bytes.Equal(got, tt.msg) {
				t.Errorf("round trip: %v", err)
			}
		})
	}
}

// oneByteReader returns one byte per Read, to exercise short reads.
type oneByteReader struct{ r io.Reader }

func (o oneByteReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}

func TestReadMessageShortReads(t *testing.T) {
	var buf bytes.Buffer
	WriteMessage(&buf, []byte("abc"))
	WriteMessage(&buf, []byte("de"))
	r := oneByteReader{&buf}
	for _, want := range []string{"abc", "de"} {
		got, err := ReadMessage(r)
		if err != nil || string(got) != want {
			t.Fatalf("got %q %v, want %q", got, err, want)
		}
	}
	if _, err := ReadMessage(r); !errors.Is(err, io.EOF) {
		t.Fatalf("at end: %v, want io.EOF", err)
	}
}
