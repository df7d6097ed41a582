package handshake

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"flag"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cloudflare/circl/kem/mlkem/mlkem768"
	"github.com/flynn/noise"
	"go.uber.org/goleak"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json and the fuzz seed corpora")

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fixedNow is the clock of most tests.
var fixedNow = time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)

func clock(t time.Time) func() time.Time { return func() time.Time { return t } }

// detRand is a deterministic random stream named by seed.
func detRand(seed string) io.Reader {
	return rand.NewChaCha8(sha256.Sum256([]byte(seed)))
}

// recorder keeps every byte read through it.
type recorder struct {
	r   io.Reader
	buf bytes.Buffer
}

func (r *recorder) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.buf.Write(p[:n])
	return n, err
}

func mustStatic(t testing.TB, seed string) *StaticKey {
	t.Helper()
	k, err := generateStatic(detRand(seed))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newConfigs returns matching deterministic client and server configs.
func newConfigs(t testing.TB, seed string) (ClientConfig, ServerConfig) {
	t.Helper()
	cs := mustStatic(t, seed+"/client static")
	ss := mustStatic(t, seed+"/server static")
	c := ClientConfig{Static: cs, ServerPublic: ss.Public(), Now: clock(fixedNow), rand: detRand(seed + "/client")}
	s := ServerConfig{Static: ss, Replay: NewReplayCache(0), Now: clock(fixedNow), rand: detRand(seed + "/server")}
	return c, s
}

// transcript is the outcome of a message-level handshake.
type transcript struct {
	m1, m2, m3     []byte
	client, server *Result
}

// runHandshake runs the three steps in memory and returns the first error.
func runHandshake(t testing.TB, c ClientConfig, s ServerConfig) (transcript, error) {
	t.Helper()
	var tr transcript
	ini, err := NewInitiator(c)
	if err != nil {
		return tr, err
	}
	resp, err := NewResponder(s)
	if err != nil {
		return tr, err
	}
	if tr.m1, err = ini.WriteMessage1(); err != nil {
		return tr, err
	}
	if err = resp.ReadMessage1(tr.m1); err != nil {
		return tr, err
	}
	if tr.m2, err = resp.WriteMessage2(); err != nil {
		return tr, err
	}
	if err = ini.ReadMessage2(tr.m2); err != nil {
		return tr, err
	}
	if tr.m3, tr.client, err = ini.WriteMessage3(); err != nil {
		return tr, err
	}
	tr.server, err = resp.ReadMessage3(tr.m3)
	return tr, err
}

// rawClient speaks the handshake with hand-made plaintexts, to reach the
// parsers that sit behind the AEAD.
type rawClient struct {
	hs  *noise.HandshakeState
	kem *mlkem768.PrivateKey
	ek  []byte
}

func newRawClient(t testing.TB, static *StaticKey, server [32]byte) *rawClient {
	t.Helper()
	return newRawClientProto(t, static, server, Prologue, cipherSuite)
}

func newRawClientProto(t testing.TB, static *StaticKey, server [32]byte, prologue string, suite noise.CipherSuite) *rawClient {
	t.Helper()
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:           suite,
		Random:                detRand("raw client"),
		Pattern:               noise.HandshakeXK,
		Initiator:             true,
		Prologue:              []byte(prologue),
		PresharedKeyPlacement: 3,
		StaticKeypair:         static.dhKey(),
		PeerStatic:            server[:],
	})
	if err != nil {
		t.Fatal(err)
	}
	var seed [mlkem768.KeySeedSize]byte
	pk, sk := mlkem768.NewKeyFromSeed(seed[:])
	ek := make([]byte, mlkem768.PublicKeySize)
	pk.Pack(ek)
	return &rawClient{hs: hs, kem: sk, ek: ek}
}

// plain1 builds a message 1 plaintext.
func plain1(version byte, ts time.Time, ek []byte, padLen int, pad []byte) []byte {
	b := []byte{version}
	b = binary.BigEndian.AppendUint64(b, uint64(ts.UnixNano()))
	b = append(b, ek...)
	b = binary.BigEndian.AppendUint16(b, uint16(padLen))
	return append(b, pad...)
}

func (r *rawClient) write(t testing.TB, plain []byte) []byte {
	t.Helper()
	msg, _, _, err := r.hs.WriteMessage(nil, plain)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// read2 reads message 2 and installs the PSK.
func (r *rawClient) read2(t testing.TB, msg []byte) {
	t.Helper()
	plain, _, _, err := r.hs.ReadMessage(nil, msg)
	if err != nil {
		t.Fatal(err)
	}
	var ss [32]byte
	r.kem.DecapsulateTo(ss[:], plain[:mlkem768.CiphertextSize])
	if err := r.hs.SetPresharedKey(ss[:]); err != nil {
		t.Fatal(err)
	}
}
