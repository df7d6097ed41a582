package obfs4

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"slices"

	"gitlab.com/yawning/obfs4.git/common/drbg"
	"gitlab.com/yawning/obfs4.git/transports/obfs4/framing"
)

// ErrBadState is wrapped by the error ServerFactory returns for a state
// file it cannot use.
var ErrBadState = errors.New("obfs4: bad state file")

// Field lengths in the state file, in bytes once hex-decoded.
const (
	nodeIDLen     = 20
	privateKeyLen = 32
	drbgSeedLen   = 24 // longer seeds are truncated by the library
)

// stateJSON is the state file as obfs4proxy writes it. The private key and
// the seed are secret: it redacts itself in logs.
type stateJSON struct {
	NodeID     string `json:"node-id"`
	PrivateKey string `json:"private-key"`
	PublicKey  string `json:"public-key"`
	DrbgSeed   string `json:"drbg-seed"`
	IATMode    int    `json:"iat-mode"`
}

// String hides the secrets from fmt's verbs.
func (stateJSON) String() string { return "[redacted]" }

// checkState checks a state file's contents the way the library will read
// them: a JSON object whose node-id, private-key and drbg-seed hold hex of
// the right length and whose iat-mode is 0, 1 or 2. The library derives
// the public key from the private one and rewrites public-key, so that
// field is not checked. Errors name the field, never its value.
func checkState(b []byte) error {
	var st stateJSON
	if err := json.Unmarshal(b, &st); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn):
			return fmt.Errorf("%w: %s: not JSON (offset %d)", ErrBadState, StateFile, syn.Offset)
		case errors.As(err, &typ):
			return fmt.Errorf("%w: %s: field %s is not a JSON %s", ErrBadState, StateFile, typ.Field, typ.Type)
		default:
			return fmt.Errorf("%w: %s: not a JSON object", ErrBadState, StateFile)
		}
	}
	fields := []struct {
		name    string
		v       string
		n       int
		atLeast bool
	}{
		{"node-id", st.NodeID, nodeIDLen, false},
		{"private-key", st.PrivateKey, privateKeyLen, false},
		{"drbg-seed", st.DrbgSeed, drbgSeedLen, true},
	}
	for _, f := range fields {
		raw, err := hex.DecodeString(f.v)
		n := len(raw)
		clear(raw)
		ok := err == nil && (n == f.n || f.atLeast && n > f.n)
		if !ok {
			return fmt.Errorf("%w: %s: field %s is not %d bytes of hex", ErrBadState, StateFile, f.name, f.n)
		}
	}
	if st.IATMode < 0 || st.IATMode > 2 {
		return fmt.Errorf("%w: %s: field iat-mode is %d, not 0, 1 or 2", ErrBadState, StateFile, st.IATMode)
	}
	return nil
}

// The library's paranoid mode (iat-mode 2) panics in Write when it draws a
// write length of 0, which it can when 0 is one of the values of its length
// table ("BUG: Write(), iat length was 0"). The table comes from a DRBG
// seed: about 3.5% of seeds put 0 in it. ServerFactory gives a server in
// iat-mode 2 with such a seed a new one, and conn.Write turns the panic
// into an error for the seeds it cannot choose (a client's own, before the
// server's arrives, or another server's).

// zeroInLengthTable reports whether the length table the library builds
// from seed (probdist.New(seed, 0, framing.MaximumSegmentLength, false),
// its genValues) holds 0.
func zeroInLengthTable(seed *drbg.Seed) bool {
	d, err := drbg.NewHashDrbg(seed)
	if err != nil { // not reached: NewHashDrbg fails on no seed
		return true
	}
	rng := rand.New(d) //nolint:gosec // the library's table, not a secret
	values := rng.Perm(framing.MaximumSegmentLength + 1)
	n := rng.Intn(min(len(values), 100)) + 1
	return slices.Contains(values[:n], 0)
}

// reseedIfNeeded gives the state in dir a new DRBG seed if its iat-mode
// is 2 and its seed puts 0 in the length table, and reports whether it
// did. The node ID and the key, and so the cert, stay. The file is
// replaced atomically.
func reseedIfNeeded(dir string) (bool, error) {
	b, err := os.ReadFile(statePath(dir))
	if err != nil {
		return false, fmt.Errorf("obfs4: read state: %w", err)
	}
	defer clear(b)
	var st stateJSON
	if err := json.Unmarshal(b, &st); err != nil {
		return false, fmt.Errorf("%w: %s: not JSON", ErrBadState, StateFile)
	}
	seed, err := drbg.SeedFromHex(st.DrbgSeed)
	if err != nil {
		return false, fmt.Errorf("%w: %s: field drbg-seed is not hex", ErrBadState, StateFile)
	}
	if st.IATMode != 2 || !zeroInLengthTable(seed) {
		return false, nil
	}
	for zeroInLengthTable(seed) {
		if seed, err = drbg.NewSeed(); err != nil {
			return false, fmt.Errorf("obfs4: new drbg seed: %w", err)
		}
	}
	st.DrbgSeed = seed.Hex()
	out, err := json.Marshal(st)
	if err != nil {
		return false, fmt.Errorf("obfs4: encode state: %w", err)
	}
	defer clear(out)
	if err := writeFileAtomic(statePath(dir), out); err != nil {
		return false, err
	}
	return true, nil
}

// writeFileAtomic writes b to path through a temporary file in the same
// directory, synced and renamed over path, with mode 0600.
func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("obfs4: write state: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("obfs4: write state: %w", err)
	}
	return nil
}
