package obfs4

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
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
