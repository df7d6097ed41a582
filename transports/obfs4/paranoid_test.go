package obfs4

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"gitlab.com/yawning/obfs4.git/common/drbg"
	"gitlab.com/yawning/obfs4.git/common/probdist"
	obfs4lib "gitlab.com/yawning/obfs4.git/transports/obfs4"
	"gitlab.com/yawning/obfs4.git/transports/obfs4/framing"
	pt "gitlab.torproject.org/tpo/anti-censorship/pluggable-transports/goptlib"

	"github.com/commucat/commucat/core/transport"
)

// zeroSeed is a DRBG seed whose length table is {0}: in paranoid mode the
// library's first Write with it panics.
const zeroSeed = "10346f61d4ea5f14be812d709a1fd442253543a84d41bfc8"

func mustSeed(t *testing.T, h string) *drbg.Seed {
	t.Helper()
	s, err := drbg.SeedFromHex(h)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestZeroInLengthTable checks zeroInLengthTable against the library's own
// length distribution.
func TestZeroInLengthTable(t *testing.T) {
	seed := mustSeed(t, zeroSeed)
	if !zeroInLengthTable(seed) {
		t.Fatal("zeroInLengthTable(zeroSeed) = false")
	}
	dist := probdist.New(seed, 0, framing.MaximumSegmentLength, false)
	if got := dist.Sample(); got != 0 {
		t.Fatalf("the library's table for zeroSeed sampled %d, want 0", got)
	}
	found := 0
	for range 100 {
		seed, err := drbg.NewSeed()
		if err != nil {
			t.Fatal(err)
		}
		if zeroInLengthTable(seed) {
			found++
			continue
		}
		dist := probdist.New(seed, 0, framing.MaximumSegmentLength, false)
		for range 300 {
			if dist.Sample() == 0 {
				t.Fatalf("seed %s: the library sampled 0 from a table without it", seed.Hex())
			}
		}
	}
	t.Logf("%d of 100 random seeds put 0 in the table", found)
}

// writeStateSeed writes the golden state with seed and iat-mode into dir.
func writeStateSeed(t *testing.T, dir, seed string, mode int) stateJSON {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", StateFile))
	if err != nil {
		t.Fatal(err)
	}
	var st stateJSON
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	st.DrbgSeed, st.IATMode = seed, mode
	if b, err = json.Marshal(st); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, StateFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return st
}

func readState(t *testing.T, dir string) stateJSON {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	var st stateJSON
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestReseed checks that a server in iat-mode 2 leaves a seed that would
// crash the library behind, keeping its cert, and that other modes keep
// their seed.
func TestReseed(t *testing.T) {
	tests := []struct {
		name       string
		fileMode   int
		params     transport.Params
		wantReseed bool
	}{
		{"mode 2 in the file", 2, nil, true},
		{"mode 2 in the config", 0, transport.Params{"iat-mode": "2"}, true},
		{"mode 1", 1, nil, false},
		{"mode 0", 0, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			before := writeStateSeed(t, dir, zeroSeed, tt.fileMode)
			wantCert := certOfState(t, before)
			_, pub, err := ServerFactory(tt.params, dir)
			if err != nil {
				t.Fatal(err)
			}
			if pub["cert"] != wantCert {
				t.Errorf("cert changed to %s, want %s", pub["cert"], wantCert)
			}
			after := readState(t, dir)
			if reseeded := after.DrbgSeed != zeroSeed; reseeded != tt.wantReseed {
				t.Errorf("reseeded = %v, want %v", reseeded, tt.wantReseed)
			}
			if zeroInLengthTable(mustSeed(t, after.DrbgSeed)) && tt.wantReseed {
				t.Error("the new seed puts 0 in the table")
			}
			if after.NodeID != before.NodeID || after.PrivateKey != before.PrivateKey {
				t.Error("the identity changed")
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 2 {
				t.Errorf("state directory holds %d files, want %s and %s", len(entries), StateFile, BridgeLineFile)
			}
		})
	}
}

// TestWritePanicRecovered checks that the library's panic in paranoid mode
// reaches the caller as an error, and breaks the connection for writing.
func TestWritePanicRecovered(t *testing.T) {
	dir := t.TempDir()
	writeStateSeed(t, dir, zeroSeed, 2)
	// The library's server, without ServerFactory's reseeding.
	args := pt.Args{}
	sf, err := (&obfs4lib.Transport{}).ServerFactory(dir, &args)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := sf.Args().Get(paramCert)
	cargs := pt.Args{}
	cargs.Add(paramCert, cert)
	cargs.Add(paramIATMode, "2")
	server, err := newTransport(cargs, sf)
	if err != nil {
		t.Fatal(err)
	}
	client, err := newTransport(cargs, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, s := pair(t, client, server)
	_, err = s.Write([]byte("boom"))
	if !errors.Is(err, errLibraryPanic) {
		t.Fatalf("Write = %v, want the library's panic as an error", err)
	}
	if _, err2 := s.Write([]byte("again")); err2 != err {
		t.Errorf("second Write = %v, want the same error", err2)
	}
	t.Logf("Write: %v", err)
}
