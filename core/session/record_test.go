package session

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/flynn/noise"
	"github.com/google/go-cmp/cmp"
)

// testKey is a fixed key: byte i is i+1 (seed files depend on it).
func testKey() [32]byte {
	var k [32]byte
	for i := range k {
		k[i] = byte(i + 1)
	}
	return k
}

// sealAll seals each plaintext in order and returns the records.
func sealAll(t testing.TB, s *Sealer, pts ...[]byte) [][]byte {
	t.Helper()
	var recs [][]byte
	for _, pt := range pts {
		rec, _, err := s.Seal(nil, pt)
		if err != nil {
			t.Fatalf("Seal: %v", err)
		}
		recs = append(recs, rec)
	}
	return recs
}

// openOK opens rec and fails the test unless it opens to want with seq.
func openOK(t *testing.T, o *Opener, rec []byte, wantSeq uint64, want []byte) {
	t.Helper()
	pt, seq, err := o.Open(nil, rec)
	if err != nil {
		t.Fatalf("Open seq %d: %v", wantSeq, err)
	}
	if seq != wantSeq || !bytes.Equal(pt, want) {
		t.Fatalf("Open = seq %d, %d bytes; want seq %d, %d bytes", seq, len(pt), wantSeq, len(want))
	}
}

func TestSealOpenRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		size int
	}{
		{"empty", 0},
		{"one byte", 1},
		{"1KiB", 1 << 10},
		{"max", MaxPlaintext},
	}
	s, o := NewSealer(testKey()), NewOpener(testKey())
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pt := bytes.Repeat([]byte{byte(i + 7)}, tt.size)
			prefix := []byte("prefix")
			rec, seq, err := s.Seal(prefix, pt)
			if err != nil {
				t.Fatalf("Seal: %v", err)
			}
			if seq != uint64(i) {
				t.Errorf("seq = %d, want %d", seq, i)
			}
			if !bytes.HasPrefix(rec, prefix) {
				t.Fatalf("Seal did not append to dst")
			}
			rec = rec[len(prefix):]
			if len(rec) != tt.size+Overhead {
				t.Fatalf("record is %d bytes, want %d", len(rec), tt.size+Overhead)
			}
			wantHdr := []byte{byte((len(rec) - 3) >> 16), byte((len(rec) - 3) >> 8), byte(len(rec) - 3), 0, 0, 0, 0, 0, 0, 0, 0, byte(i)}
			if diff := cmp.Diff(wantHdr, rec[:HeaderSize]); diff != "" {
				t.Errorf("header (-want +got):\n%s", diff)
			}
			openOK(t, o, rec, uint64(i), pt)
		})
	}
}

func TestOpenInPlace(t *testing.T) {
	s, o := NewSealer(testKey()), NewOpener(testKey())
	pt := []byte("in place")
	rec := sealAll(t, s, pt)[0]
	got, _, err := o.Open(rec[HeaderSize:HeaderSize], rec)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("Open in place = %q, %v", got, err)
	}
}

func TestSealLimits(t *testing.T) {
	s := NewSealer(testKey())
	if _, _, err := s.Seal(nil, make([]byte, MaxPlaintext+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Seal of MaxPlaintext+1 bytes: %v, want ErrTooLarge", err)
	}
	s.seq = math.MaxUint64 - 1
	if _, seq, err := s.Seal(nil, nil); err != nil || seq != math.MaxUint64-1 {
		t.Fatalf("last Seal = %d, %v", seq, err)
	}
	if _, _, err := s.Seal(nil, nil); !errors.Is(err, ErrExhausted) {
		t.Errorf("Seal past the last seq: %v, want ErrExhausted", err)
	}
	s.Wipe()
	if _, _, err := s.Seal(nil, nil); err == nil {
		t.Error("Seal after Wipe succeeded")
	}
}

func TestOpenEveryBitFlip(t *testing.T) {
	s := NewSealer(testKey())
	rec := sealAll(t, s, []byte("sixteen bytes!!!"))[0]
	for i := range len(rec) * 8 {
		o := NewOpener(testKey())
		bad := bytes.Clone(rec)
		bad[i/8] ^= 1 << (i % 8)
		if _, _, err := o.Open(nil, bad); !errors.Is(err, ErrAuth) {
			t.Errorf("bit %d flipped: err = %v, want ErrAuth", i, err)
		}
	}
}

func TestOpenRejects(t *testing.T) {
	rec := sealAll(t, NewSealer(testKey()), []byte("x"))[0]
	tests := []struct {
		name string
		rec  []byte
		want error
	}{
		{"empty", nil, ErrAuth},
		{"header only", rec[:HeaderSize], ErrAuth},
		{"truncated", rec[:len(rec)-1], ErrAuth},
		{"trailing byte", append(bytes.Clone(rec), 0), ErrAuth},
		{"over the limit", make([]byte, MaxRecordSize+1), ErrTooLarge},
		{"reserved seq", func() []byte {
			b := bytes.Clone(rec)
			copy(b[4:HeaderSize], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
			return b
		}(), ErrAuth},
		{"unknown epoch", func() []byte { b := bytes.Clone(rec); b[3] = 7; return b }(), ErrAuth},
		{"wrong key", sealAll(t, NewSealer([32]byte{}), []byte("x"))[0], ErrAuth},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := NewOpener(testKey()).Open(nil, tt.rec); !errors.Is(err, tt.want) {
				t.Errorf("Open: %v, want %v", err, tt.want)
			}
		})
	}
}

func TestOpenReplay(t *testing.T) {
	s, o := NewSealer(testKey()), NewOpener(testKey())
	var recs [][]byte
	for i := range ReplayWindow + 10 {
		recs = append(recs, sealAll(t, s, []byte{byte(i)})...)
	}
	openOK(t, o, recs[5], 5, []byte{5})
	if _, _, err := o.Open(nil, recs[5]); !errors.Is(err, ErrReplay) {
		t.Fatalf("duplicate: %v, want ErrReplay", err)
	}
	openOK(t, o, recs[3], 3, []byte{3}) // reordered, within the window
	openOK(t, o, recs[4], 4, []byte{4})
	last := len(recs) - 1
	openOK(t, o, recs[last], uint64(last), []byte{byte(last)})
	// last-ReplayWindow is the oldest seq still accepted.
	old := last - ReplayWindow
	openOK(t, o, recs[old], uint64(old), []byte{byte(old)})
	if _, seq, err := o.Open(nil, recs[old-1]); !errors.Is(err, ErrReplay) || seq != uint64(old-1) {
		t.Fatalf("older than the window: seq %d, %v; want ErrReplay", seq, err)
	}
}

func TestWindowEdges(t *testing.T) {
	const w = ReplayWindow
	tests := []struct {
		name string
		seen []uint64 // accepted first, in order
		seq  uint64
		want bool
	}{
		{"first zero", nil, 0, true},
		{"first far", nil, 1 << 40, true},
		{"duplicate zero", []uint64{0}, 0, false},
		{"next", []uint64{0}, 1, true},
		{"reordered", []uint64{10}, 9, true},
		{"duplicate last", []uint64{10}, 10, false},
		{"duplicate reordered", []uint64{10, 9}, 9, false},
		{"oldest in window", []uint64{w + 100}, 100, true},
		{"just too old", []uint64{w + 100}, 99, false},
		{"oldest at block edge", []uint64{w + 64}, 64, true},
		{"too old at block edge", []uint64{w + 64}, 63, false},
		{"last of ring block", []uint64{w + 63}, 63, true},
		{"seen then window slides", []uint64{100, w + 100}, 100, false},
		{"unseen after one block", []uint64{0, 64}, 1, true},
		{"bit cleared by jump", []uint64{5, 5 + 2*w}, 5 + w, true},
		{"seen behind jump", []uint64{3 * w, 4 * w}, 3 * w, false},
		{"seen in oldest block", []uint64{63, w + 63}, 63, false},
		{"jump past ring", []uint64{7, 7 + 1000*w}, 7 + 1000*w - 1, true},
		{"huge", []uint64{math.MaxUint64 - 1}, math.MaxUint64 - 1 - w, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var win window
			for _, s := range tt.seen {
				if !win.check(s) {
					t.Fatalf("setup: %d rejected", s)
				}
			}
			if got := win.check(tt.seq); got != tt.want {
				t.Errorf("check(%d) after %v = %v, want %v", tt.seq, tt.seen, got, tt.want)
			}
		})
	}
}

// TestWindowModel checks the window against a map on a pseudo-random walk.
func TestWindowModel(t *testing.T) {
	var win window
	seen := map[uint64]bool{}
	var last uint64
	x := uint64(1)
	for range 200000 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		var seq uint64
		switch x % 4 {
		case 0:
			seq = last + x%100
		default:
			seq = last - min(last, x%(ReplayWindow+200))
		}
		want := !seen[seq] && (seq >= last || last-seq <= ReplayWindow)
		if got := win.check(seq); got != want {
			t.Fatalf("check(%d) with last %d = %v, want %v", seq, last, got, want)
		}
		if want {
			seen[seq] = true
			last = max(last, seq)
		}
	}
}

// TestRekeyMatchesNoise checks the derivation against flynn/noise's
// CipherState.Rekey (Noise specification §4.2).
func TestRekeyMatchesNoise(t *testing.T) {
	s, err := newAEAD(&[32]byte{1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	next, err := nextAEAD(s)
	if err != nil {
		t.Fatal(err)
	}
	cs := noise.UnsafeNewCipherState(noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s), [32]byte{1, 2, 3}, 0)
	cs.Rekey()
	k := cs.UnsafeKey()
	ref, err := newAEAD(&k)
	if err != nil {
		t.Fatal(err)
	}
	var nonce [12]byte
	if got, want := next.Seal(nil, nonce[:], []byte("probe"), nil), ref.Seal(nil, nonce[:], []byte("probe"), nil); !bytes.Equal(got, want) {
		t.Fatalf("next key differs from Noise REKEY")
	}
}

func TestRekeyAcrossEpochs(t *testing.T) {
	s, o := NewSealer(testKey()), NewOpener(testKey())
	s.SetRekeyPolicy(3, time.Hour)
	for i := range 20 {
		rec := sealAll(t, s, []byte{byte(i)})[0]
		if got, want := rec[3], byte(i/3); got != want {
			t.Fatalf("record %d has epoch %d, want %d", i, got, want)
		}
		openOK(t, o, rec, uint64(i), []byte{byte(i)})
	}
	if s.Rekeys() != 6 || o.Rekeys() != 6 || o.Epoch() != 6 {
		t.Errorf("rekeys: sealer %d, opener %d (epoch %d); want 6", s.Rekeys(), o.Rekeys(), o.Epoch())
	}
}

func TestRekeyEpochWraps(t *testing.T) {
	s, o := NewSealer(testKey()), NewOpener(testKey())
	for i := range 600 {
		if err := s.Rekey(); err != nil {
			t.Fatal(err)
		}
		openOK(t, o, sealAll(t, s, []byte("x"))[0], uint64(i), []byte("x"))
	}
	if s.Epoch() != 600%256 || o.Epoch() != 600%256 {
		t.Errorf("epochs %d, %d; want %d", s.Epoch(), o.Epoch(), 600%256)
	}
}

func TestRekeyReorderedAcrossBoundary(t *testing.T) {
	tests := []struct {
		name  string
		order []int // indexes into 10 records; epoch 1 starts at record 5
	}{
		{"in order", []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{"old after new", []int{0, 1, 2, 5, 6, 3, 4, 7, 8, 9}},
		{"new first", []int{5, 9, 0, 4, 1, 3, 2, 6, 8, 7}},
		{"old last", []int{5, 6, 7, 8, 9, 4, 3, 2, 1, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, o := NewSealer(testKey()), NewOpener(testKey())
			s.SetRekeyPolicy(5, time.Hour)
			var recs [][]byte
			for i := range 10 {
				recs = append(recs, sealAll(t, s, []byte{byte(i)})...)
			}
			for _, i := range tt.order {
				openOK(t, o, recs[i], uint64(i), []byte{byte(i)})
			}
		})
	}
}

func TestRekeyPreviousEpochDropped(t *testing.T) {
	t.Run("after grace", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s, o := NewSealer(testKey()), NewOpener(testKey())
			o.SetGrace(time.Minute)
			s.SetRekeyPolicy(2, time.Hour)
			recs := sealAll(t, s, []byte("a"), []byte("b"), []byte("c"), []byte("d"))
			openOK(t, o, recs[2], 2, []byte("c")) // epoch 1
			time.Sleep(time.Minute - time.Nanosecond)
			openOK(t, o, recs[0], 0, []byte("a")) // within grace
			time.Sleep(time.Nanosecond + 1)
			if _, _, err := o.Open(nil, recs[1]); !errors.Is(err, ErrAuth) {
				t.Fatalf("epoch 0 after grace: %v, want ErrAuth", err)
			}
			openOK(t, o, recs[3], 3, []byte("d"))
		})
	})
	t.Run("after the window moved on", func(t *testing.T) {
		s, o := NewSealer(testKey()), NewOpener(testKey())
		var recs [][]byte
		for i := range 10 + ReplayWindow + 1 {
			if i == 10 {
				if err := s.Rekey(); err != nil {
					t.Fatal(err)
				}
			}
			recs = append(recs, sealAll(t, s, nil)...)
		}
		openOK(t, o, recs[10], 10, nil) // epoch 1 starts at seq 10
		openOK(t, o, recs[8], 8, nil)
		openOK(t, o, recs[len(recs)-2], uint64(len(recs)-2), nil)
		if o.prev == nil {
			t.Fatal("previous key dropped while seq 9 can still pass the window")
		}
		openOK(t, o, recs[len(recs)-1], uint64(len(recs)-1), nil)
		if o.prev != nil {
			t.Fatal("previous key kept after the window moved past its records")
		}
		if _, _, err := o.Open(nil, recs[9]); !errors.Is(err, ErrAuth) {
			t.Fatalf("record of a dropped epoch: %v, want ErrAuth", err)
		}
	})
	t.Run("two epochs behind", func(t *testing.T) {
		s, o := NewSealer(testKey()), NewOpener(testKey())
		s.SetRekeyPolicy(1, time.Hour)
		recs := sealAll(t, s, []byte("0"), []byte("1"), []byte("2"))
		openOK(t, o, recs[1], 1, []byte("1"))
		openOK(t, o, recs[2], 2, []byte("2"))
		if _, _, err := o.Open(nil, recs[0]); !errors.Is(err, ErrAuth) {
			t.Fatalf("record two epochs old: %v, want ErrAuth", err)
		}
	})
}

// TestRekeyNeverTwoAhead checks that the Sealer does not move two epochs
// without sealing a record in between, whether asked twice or asked once
// and then reaching RekeyAfter: the Opener holds only the next epoch's key.
func TestRekeyNeverTwoAhead(t *testing.T) {
	tests := []struct {
		name string
		move func(s *Sealer)
	}{
		{"Rekey twice", func(s *Sealer) {
			s.Rekey()
			s.Rekey()
		}},
		{"Rekey, then RekeyAfter passes", func(s *Sealer) {
			s.Rekey()
			time.Sleep(time.Hour)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s, o := NewSealer(testKey()), NewOpener(testKey())
				s.SetRekeyPolicy(0, time.Minute)
				openOK(t, o, sealAll(t, s, []byte("a"))[0], 0, []byte("a"))
				tt.move(s)
				rec := sealAll(t, s, []byte("b"))[0]
				if rec[3] != 1 || s.Rekeys() != 1 {
					t.Fatalf("record sealed at epoch %d after %d rekeys, want epoch 1 after 1", rec[3], s.Rekeys())
				}
				openOK(t, o, rec, 1, []byte("b"))
				// A record sealed in the epoch lets the next request move on.
				if err := s.Rekey(); err != nil {
					t.Fatal(err)
				}
				openOK(t, o, sealAll(t, s, []byte("c"))[0], 2, []byte("c"))
				if s.Epoch() != 2 || o.Epoch() != 2 {
					t.Errorf("epochs %d, %d; want 2", s.Epoch(), o.Epoch())
				}
			})
		})
	}
}

func TestRekeyAfterTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := NewSealer(testKey())
		s.SetRekeyPolicy(0, time.Minute)
		sealAll(t, s, nil)
		time.Sleep(time.Minute - 1)
		if rec := sealAll(t, s, nil)[0]; rec[3] != 0 {
			t.Fatalf("epoch %d before RekeyAfter, want 0", rec[3])
		}
		time.Sleep(time.Nanosecond) // synctest: exactly RekeyAfter has passed
		if rec := sealAll(t, s, nil)[0]; rec[3] != 1 {
			t.Fatalf("epoch %d after RekeyAfter, want 1", rec[3])
		}
	})
}

func TestKeysRedacted(t *testing.T) {
	k := Keys{Send: [32]byte{0xab, 0xab, 0xab}, Recv: [32]byte{0xcd, 0xcd, 0xcd}}
	var logged bytes.Buffer
	// Without the time, whose digits can hold "171" (0xab) by chance.
	noTime := func(groups []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey && len(groups) == 0 {
			return slog.Attr{}
		}
		return a
	}
	slog.New(slog.NewJSONHandler(&logged, &slog.HandlerOptions{ReplaceAttr: noTime})).Info("x", "keys", k, "ptr", &k)
	outs := []string{logged.String()}
	for _, verb := range []string{"%v", "%+v", "%#v", "%x", "%s", "%d"} {
		outs = append(outs, fmt.Sprintf(verb, k), fmt.Sprintf(verb, &k))
	}
	for _, out := range outs {
		if !strings.Contains(out, "[redacted]") || strings.Contains(out, "171") || strings.Contains(strings.ToLower(out), "abab") {
			t.Errorf("keys printed as %q", out)
		}
	}
	k.Wipe()
	if k != (Keys{}) {
		t.Error("Wipe left key bytes")
	}
}

// strictReader serves b and fails the test if it is read past the end.
type strictReader struct {
	t *testing.T
	b []byte
}

func (r *strictReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		r.t.Fatal("read past the length field")
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

func TestReadRecord(t *testing.T) {
	rec := sealAll(t, NewSealer(testKey()), []byte("hello"))[0]
	tests := []struct {
		name string
		in   io.Reader
		want error
	}{
		{"whole", bytes.NewReader(rec), nil},
		{"nothing", bytes.NewReader(nil), io.EOF},
		{"inside length", bytes.NewReader(rec[:2]), io.ErrUnexpectedEOF},
		{"inside record", bytes.NewReader(rec[:len(rec)-1]), io.ErrUnexpectedEOF},
		{"over the limit", &strictReader{t, []byte{0xff, 0xff, 0xff}}, ErrTooLarge},
		{"one over", &strictReader{t, []byte{(MaxRecordSize - 2) >> 16, (MaxRecordSize - 2) >> 8 & 0xff, (MaxRecordSize - 2) & 0xff}}, ErrTooLarge},
		{"too short", &strictReader{t, []byte{0, 0, Overhead - 4}}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadRecord(tt.in, nil)
			if !errors.Is(err, tt.want) {
				t.Fatalf("ReadRecord: %v, want %v", err, tt.want)
			}
			if err == nil && !bytes.Equal(got, rec) {
				t.Fatalf("ReadRecord = %x, want %x", got, rec)
			}
		})
	}
}

func TestReadRecordReusesBuffer(t *testing.T) {
	rec := sealAll(t, NewSealer(testKey()), []byte("hello"))[0]
	buf := make([]byte, 0, 256)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := ReadRecord(bytes.NewReader(rec), buf); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 1 { // the bytes.Reader
		t.Errorf("ReadRecord into a large enough buffer: %v allocs", allocs)
	}
}

// TestVectors pins the record format to the test vectors in
// docs/PROTOCOL.md: key 01 02 ... 20, plaintext one Message frame
// carrying "hello".
func TestVectors(t *testing.T) {
	pt := unhex(t, "01010000000568656c6c6f")
	tests := []struct {
		name   string
		rekey  bool // call Rekey before sealing
		record string
	}{
		{"seq 0", false, "000024000000000000000000628bd71667c7c15cf7275967d67e796281038e92c7a80f86ee986c"},
		{"seq 1", false, "000024000000000000000001155d7aab88f9ed31ee670bfa996e39353f0ae055687be005aa6f7d"},
		{"seq 2, epoch 1", true, "0000240100000000000000025af18e7ea492c1794a97252899a228ea2fd414e4bc4a24d2886600"},
	}
	s, o := NewSealer(testKey()), NewOpener(testKey())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.rekey {
				if err := s.Rekey(); err != nil {
					t.Fatal(err)
				}
			}
			rec, seq, err := s.Seal(nil, pt)
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(rec); got != tt.record {
				t.Errorf("record\n got %s\nwant %s", got, tt.record)
			}
			openOK(t, o, unhex(t, tt.record), seq, pt)
		})
	}
	t.Run("next key", func(t *testing.T) {
		k := testKey()
		a, err := newAEAD(&k)
		if err != nil {
			t.Fatal(err)
		}
		var zeros [32]byte
		got := a.Seal(nil, rekeyNonce[:], zeros[:], nil)[:32]
		if want := "7f637be6f9d22510eccc1e8a598740cec00b4bb7657d85fe79833cfa50d09601"; hex.EncodeToString(got) != want {
			t.Errorf("REKEY(key) = %x, want %s", got, want)
		}
	})
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
