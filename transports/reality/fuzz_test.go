package reality

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/commucat/commucat/transports/fingerprint"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite the fuzz seed files in testdata/fuzz")

// TestUpdateSeeds writes FuzzParseHello's seeds, sealed by the real
// client, with -update-seeds.
func TestUpdateSeeds(t *testing.T) {
	if !*updateSeeds {
		t.Skip("run with -update-seeds to rewrite testdata/fuzz")
	}
	keys, err := GenerateKeys()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzParseHello")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range fingerprint.PresetNames() {
		h, _ := fingerprint.Preset(name)
		msg := sealedHello(t, &ClientConfig{PublicKey: keys.Static.PublicKey(), ServerNames: []string{"a.example"}, Hello: h})
		rec := append([]byte{0x16, 3, 1, byte(len(msg) >> 8), byte(len(msg))}, msg...)
		for fn, b := range map[string][]byte{name: rec, name + "-message": msg} {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
			if err := os.WriteFile(filepath.Join(dir, fn), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// FuzzParseHello checks that the gateway's hello parser and authenticator
// check never panic on outside bytes, and that what parses is consistent.
func FuzzParseHello(f *testing.F) {
	keys, err := GenerateKeys()
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte{0x16, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, raw []byte) {
		h, err := parseHello(raw)
		if err != nil {
			return
		}
		msg, err := fingerprint.Message(raw)
		if err != nil {
			t.Fatalf("parsed a hello Message rejects: %v", err)
		}
		if len(h.random) != randomLen || len(h.sessionID) != sessionIDLen || len(h.x25519) != x25519KeyLen || len(h.aad) != len(msg) {
			t.Fatalf("field sizes %d %d %d %d", len(h.random), len(h.sessionID), len(h.x25519), len(h.aad))
		}
		// The random key almost never opens it; it must fail cleanly.
		open(keys.Static, [ShortIDLen]byte{}, raw) //nolint:errcheck // only panics matter
	})
}
