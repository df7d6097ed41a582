package fingerprint

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite the fuzz seed files in testdata/fuzz from live captures")

// seedHellos returns ClientHellos captured from the real encoders: utls
// presets and crypto/tls.
func seedHellos(t testing.TB) map[string][]byte {
	tt, ok := t.(*testing.T)
	if !ok {
		return nil
	}
	out := make(map[string][]byte)
	for _, name := range PresetNames() {
		h, _ := Preset(name)
		out[name] = captureFrom(tt, utlsDial(tt, h, nil))
	}
	return out
}

// TestUpdateSeeds writes the fuzz seed corpora with -update-seeds.
func TestUpdateSeeds(t *testing.T) {
	if !*updateSeeds {
		t.Skip("run with -update-seeds to rewrite testdata/fuzz")
	}
	for name, raw := range seedHellos(t) {
		msg, err := handshakeMessage(raw)
		if err != nil {
			t.Fatal(err)
		}
		for target, files := range map[string]map[string][]byte{
			"FuzzSummarize": {name: raw, name + "-message": msg, name + "-fragmented": fragment(t, raw, 97)},
			"FuzzFromFile":  {name: raw},
		} {
			dir := filepath.Join("testdata", "fuzz", target)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			for fn, b := range files {
				body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
				if err := os.WriteFile(filepath.Join(dir, fn), []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

// FuzzSummarize checks Summarize never panics and that a hello it accepts
// summarises the same once re-encoded as one record, as a bare message and
// as 1-byte fragments.
func FuzzSummarize(f *testing.F) {
	f.Add([]byte{0x16, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Add([]byte{1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, raw []byte) {
		s, err := Summarize(raw)
		if err != nil {
			if !errors.Is(err, ErrNotClientHello) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error without a sentinel: %v", err)
			}
			return
		}
		msg, err := handshakeMessage(raw)
		if err != nil {
			t.Fatalf("Summarize accepted what handshakeMessage rejects: %v", err)
		}
		forms := [][]byte{msg, wrapRecord(msg)}
		if len(msg) <= MaxHelloSize/6-1 {
			forms = append(forms, fragment(t, msg, 1))
		}
		for _, form := range forms {
			s2, err := Summarize(form)
			if err != nil {
				t.Fatalf("re-encoded hello rejected: %v", err)
			}
			if diff := cmp.Diff(s, s2); diff != "" {
				t.Fatalf("re-encoded hello differs:\n%s", diff)
			}
		}
		if !s.SameOrder(s) {
			t.Fatal("summary not the same shape as itself")
		}
	})
}

// FuzzFromFile checks that loading a capture never panics and that a
// loaded capture builds a ClientHello of its own shape.
func FuzzFromFile(f *testing.F) {
	f.Add([]byte("hello"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		h, err := fromBytes(raw)
		if err != nil {
			return
		}
		uc, err := h.Client(nil, nil, []string{"http/1.1"})
		if err != nil {
			return
		}
		_ = uc
	})
}
