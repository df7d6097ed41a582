package session

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/commucat/commucat/core/frame"
)

var update = flag.Bool("update", false, "rewrite the seed files in testdata/fuzz")

type seed struct {
	name string
	b    []byte
}

// mustFrames encodes fs; the frames are valid.
func mustFrames(fs ...frame.Frame) []byte {
	var b []byte
	for _, f := range fs {
		b, _ = frame.Append(b, f)
	}
	return b
}

// peerSealer seals as the peer of a session made with the first of
// pairKeys, so FuzzSessionInput's session opens its records.
func peerSealer() *Sealer {
	_, kb := pairKeys()
	return NewSealer(kb.Send)
}

func mustSeal(s *Sealer, pt []byte) []byte {
	rec, _, err := s.Seal(nil, pt)
	if err != nil {
		panic(err)
	}
	return rec
}

var (
	seedMessage = mustFrames(frame.Frame{Type: frame.Message, Flags: frame.FlagAckRequested, Stream: 7, Seq: 300, Payload: []byte("hello")})
	seedPing    = mustFrames(frame.Frame{Type: frame.Ping, Payload: frame.PingPayload{ID: 1, SentUnixNano: 1700000000e9}.Append(nil)})
	seedControl = mustFrames(
		frame.Frame{Type: frame.Pong, Payload: frame.PingPayload{ID: 1}.Append(nil)},
		frame.Frame{Type: frame.Padding, Payload: make([]byte, 32)},
		frame.Frame{Type: frame.StreamData, Stream: 1, Payload: []byte("data")},
	)
	seedClose = mustFrames(frame.Frame{Type: frame.Close, Payload: frame.ClosePayload{Code: 3, Reason: "bye"}.Append(nil)})
)

// openSeeds are records for an Opener made with testKey.
func openSeeds() []seed {
	s := NewSealer(testKey())
	first := mustSeal(s, seedMessage)
	second := mustSeal(s, nil)
	s.Rekey()
	next := mustSeal(s, seedControl)
	flipped := bytes.Clone(first)
	flipped[HeaderSize] ^= 1
	return []seed{
		{"message", first},
		{"empty", second},
		{"next-epoch", next},
		{"flipped", flipped},
		{"length-mismatch", append(bytes.Clone(first), 0)},
	}
}

// sessionSeeds are byte streams from the peer of a session.
func sessionSeeds() []seed {
	s := peerSealer()
	msg := mustSeal(s, seedMessage)
	ping := mustSeal(s, seedPing)
	ctl := mustSeal(s, seedControl)
	s.Rekey()
	rekeyed := mustSeal(s, seedMessage)
	cls := mustSeal(s, seedClose)
	bad := mustSeal(s, []byte{1, 0x7f, 0, 0, 0, 0})
	return []seed{
		{"conversation", slices.Concat(msg, ping, ctl, rekeyed, cls)},
		{"replay", slices.Concat(msg, msg, ping)},
		{"cut", slices.Concat(msg, ping[:len(ping)-5])},
		{"bad-frame", slices.Concat(msg, bad)},
		{"huge-length", []byte{0xff, 0xff, 0xff, 0}},
	}
}

// TestFuzzSeedFiles keeps testdata/fuzz in step with the encoder; run with
// -update to rewrite it.
func TestFuzzSeedFiles(t *testing.T) {
	for target, seeds := range map[string][]seed{"FuzzOpen": openSeeds(), "FuzzSessionInput": sessionSeeds()} {
		dir := filepath.Join("testdata", "fuzz", target)
		for _, s := range seeds {
			path := filepath.Join(dir, s.name)
			want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s.b)
			if *update {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -run TestFuzzSeedFiles -update)", err)
			}
			if string(got) != want {
				t.Errorf("%s is stale (run go test -run TestFuzzSeedFiles -update)", path)
			}
		}
	}
}

func FuzzOpen(f *testing.F) {
	for _, s := range openSeeds() {
		f.Add(s.b)
	}
	f.Fuzz(func(t *testing.T, rec []byte) {
		o := NewOpener(testKey())
		pt, seq, err := o.Open(nil, rec)
		if err != nil {
			if !errors.Is(err, ErrAuth) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("undocumented error %v", err)
			}
			return
		}
		// Sealing the plaintext again at the record's epoch and seq gives
		// the same record.
		s := NewSealer(testKey())
		for s.Epoch() != rec[3] {
			s.Rekey()
		}
		s.seq = seq
		again, _, err := s.Seal(nil, pt)
		if err != nil || !bytes.Equal(again, rec) {
			t.Fatalf("Seal(Open(rec)) = %x, %v; want %x", again, err, rec)
		}
		if _, _, err := o.Open(nil, rec); !errors.Is(err, ErrReplay) {
			t.Fatalf("second Open: %v, want ErrReplay", err)
		}
		inPlace := bytes.Clone(rec)
		got, _, err := NewOpener(testKey()).Open(inPlace[HeaderSize:HeaderSize], inPlace)
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("Open in place = %x, %v; want %x", got, err, pt)
		}
	})
}

// readConn serves r to a session and discards what it writes.
type readConn struct{ r *bytes.Reader }

func (c readConn) Read(p []byte) (int, error) { return c.r.Read(p) }
func (readConn) Write(p []byte) (int, error)  { return len(p), nil }
func (readConn) Close() error                 { return nil }

func FuzzSessionInput(f *testing.F) {
	for _, s := range sessionSeeds() {
		f.Add(s.b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		ka, _ := pairKeys()
		s := New(readConn{bytes.NewReader(in)}, ka, Config{RecvQueue: 4})
		runErr := make(chan error, 1)
		go func() { runErr <- s.Run(context.Background()) }()
		for {
			f, err := s.Recv(context.Background())
			if err != nil {
				break
			}
			if !f.Type.Known() || len(f.Payload) > f.Type.MaxPayload() {
				t.Fatalf("Recv returned an invalid frame %v", f.Type)
			}
		}
		// The stream ends without a clean close, or with the peer's Close.
		if err := <-runErr; err == nil {
			t.Fatal("Run returned nil for a stream that just ended")
		}
	})
}
