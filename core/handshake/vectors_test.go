package handshake

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cloudflare/circl/kem/mlkem/mlkem768"
	"github.com/google/go-cmp/cmp"
)

const vectorsPath = "testdata/vectors.json"

// hexBytes is a byte string written as lowercase hex in JSON.
type hexBytes []byte

func (h hexBytes) MarshalText() ([]byte, error) { return []byte(hex.EncodeToString(h)), nil }

func (h *hexBytes) UnmarshalText(b []byte) error {
	d, err := hex.DecodeString(string(b))
	*h = d
	return err
}

// vector is one handshake test vector. The random streams are given as the
// exact bytes each side draws, in the documented order, so another
// implementation can replay them.
type vector struct {
	Name                string   `json:"name"`
	ClientStaticPrivate hexBytes `json:"client_static_private"`
	ClientStaticPublic  hexBytes `json:"client_static_public"`
	ServerStaticPrivate hexBytes `json:"server_static_private"`
	ServerStaticPublic  hexBytes `json:"server_static_public"`
	TimestampUnixNano   int64    `json:"timestamp_unix_nano"`
	ClientRandom        hexBytes `json:"client_random"`
	ServerRandom        hexBytes `json:"server_random"`
	Padding             [3]int   `json:"padding"`
	Payload             hexBytes `json:"payload"`
	Message1            hexBytes `json:"message1"`
	Message2            hexBytes `json:"message2"`
	Message3            hexBytes `json:"message3"`
	MLKEMSharedSecret   hexBytes `json:"mlkem_shared_secret"`
	ClientSendKey       hexBytes `json:"client_send_key"`
	ClientRecvKey       hexBytes `json:"client_recv_key"`
	HandshakeHash       hexBytes `json:"handshake_hash"`
}

type vectorFile struct {
	Protocol     string   `json:"protocol"`
	Prologue     string   `json:"prologue"`
	Version      int      `json:"version"`
	ClientRandom string   `json:"client_random_order"`
	ServerRandom string   `json:"server_random_order"`
	Notes        []string `json:"notes"`
	Vectors      []vector `json:"vectors"`
}

var vectorCases = []struct {
	name    string
	payload []byte
	pad     [3]int
}{
	{"no padding, empty payload", nil, [3]int{0, 0, 0}},
	{"padding and payload", []byte("CommuCat test payload"), [3]int{17, 300, 5}},
}

func fixedPad(p [3]int) func(msg, n int) int {
	return func(msg, n int) int { return p[msg-1] }
}

func makeVectors(t *testing.T) vectorFile {
	t.Helper()
	f := vectorFile{
		Protocol:     ProtocolName,
		Prologue:     Prologue,
		Version:      Version,
		ClientRandom: "ML-KEM-768 key generation seed d||z (64) | message 1 padding | ephemeral X25519 private key (32) | message 3 padding",
		ServerRandom: "ML-KEM-768 encapsulation seed m (32) | message 2 padding | ephemeral X25519 private key (32)",
		Notes: []string{
			"all byte strings are hex; messages are without the 2-byte stream length prefix",
			"client_send_key equals the gateway's receive key and client_recv_key its send key",
			"regenerate with: go test ./core/handshake -run TestVectors -update",
		},
	}
	for _, vc := range vectorCases {
		seed := "vector/" + vc.name
		cs := mustStatic(t, seed+"/client static")
		ss := mustStatic(t, seed+"/server static")
		crand := &recorder{r: detRand(seed + "/client")}
		srand := &recorder{r: detRand(seed + "/server")}
		c := ClientConfig{Static: cs, ServerPublic: ss.Public(), Payload: vc.payload, Pad: fixedPad(vc.pad), Now: clock(fixedNow), rand: crand}
		s := ServerConfig{Static: ss, Replay: NewReplayCache(0), Pad: fixedPad(vc.pad), Now: clock(fixedNow), rand: srand}
		tr, err := runHandshake(t, c, s)
		if err != nil {
			t.Fatal(err)
		}
		cr, sr := crand.buf.Bytes(), srand.buf.Bytes()
		// The ML-KEM secret, recomputed from the random streams.
		pk, _ := mlkem768.NewKeyFromSeed(cr[:64])
		ct, kemSecret := make([]byte, mlkem768.CiphertextSize), make([]byte, 32)
		pk.EncapsulateTo(ct, kemSecret, sr[:32])
		cpub, spub := cs.Public(), ss.Public()
		f.Vectors = append(f.Vectors, vector{
			Name:                vc.name,
			ClientStaticPrivate: cs.priv[:],
			ClientStaticPublic:  cpub[:],
			ServerStaticPrivate: ss.priv[:],
			ServerStaticPublic:  spub[:],
			TimestampUnixNano:   fixedNow.UnixNano(),
			ClientRandom:        cr,
			ServerRandom:        sr,
			Padding:             vc.pad,
			Payload:             append(hexBytes{}, vc.payload...),
			Message1:            tr.m1,
			Message2:            tr.m2,
			Message3:            tr.m3,
			MLKEMSharedSecret:   kemSecret,
			ClientSendKey:       tr.client.SendKey[:],
			ClientRecvKey:       tr.client.RecvKey[:],
			HandshakeHash:       tr.client.Hash,
		})
	}
	return f
}

// TestVectors regenerates testdata/vectors.json from the deterministic
// streams and compares it with the file (-update rewrites it).
func TestVectors(t *testing.T) {
	b, err := json.MarshalIndent(makeVectors(t), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, '\n')
	if *update {
		if err := os.MkdirAll(filepath.Dir(vectorsPath), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vectorsPath, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(vectorsPath)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(b)); diff != "" {
		t.Errorf("%s is out of date (-file +regenerated):\n%s", vectorsPath, diff)
	}
}

// TestVectorsFromFile replays each vector from the file alone: the static
// keys, the clock and the recorded random bytes must reproduce the
// messages and keys, and every recorded byte must be consumed.
func TestVectorsFromFile(t *testing.T) {
	raw, err := os.ReadFile(vectorsPath)
	if err != nil {
		t.Fatal(err)
	}
	var f vectorFile
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	if f.Protocol != ProtocolName || f.Prologue != Prologue || len(f.Vectors) == 0 {
		t.Fatalf("file header: %q %q %d vectors", f.Protocol, f.Prologue, len(f.Vectors))
	}
	for _, v := range f.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			cs, err := staticFromPrivate(v.ClientStaticPrivate)
			if err != nil {
				t.Fatal(err)
			}
			ss, err := staticFromPrivate(v.ServerStaticPrivate)
			if err != nil {
				t.Fatal(err)
			}
			cpub, spub := cs.Public(), ss.Public()
			if !bytes.Equal(cpub[:], v.ClientStaticPublic) || !bytes.Equal(spub[:], v.ServerStaticPublic) {
				t.Fatal("static public keys do not match the private keys")
			}
			now := time.Unix(0, v.TimestampUnixNano)
			crand, srand := bytes.NewReader(v.ClientRandom), bytes.NewReader(v.ServerRandom)
			c := ClientConfig{Static: cs, ServerPublic: spub, Payload: v.Payload, Pad: fixedPad(v.Padding), Now: clock(now), rand: crand}
			s := ServerConfig{Static: ss, Replay: NewReplayCache(0), Pad: fixedPad(v.Padding), Now: clock(now), rand: srand}
			tr, err := runHandshake(t, c, s)
			if err != nil {
				t.Fatal(err)
			}
			got := vector{
				Message1: tr.m1, Message2: tr.m2, Message3: tr.m3,
				ClientSendKey: tr.client.SendKey[:], ClientRecvKey: tr.client.RecvKey[:], HandshakeHash: tr.client.Hash,
				Payload: tr.server.Payload,
			}
			want := vector{
				Message1: v.Message1, Message2: v.Message2, Message3: v.Message3,
				ClientSendKey: v.ClientSendKey, ClientRecvKey: v.ClientRecvKey, HandshakeHash: v.HandshakeHash,
				Payload: v.Payload,
			}
			if len(want.Payload) == 0 {
				want.Payload, got.Payload = nil, nil
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("replayed vector differs (-file +got):\n%s", diff)
			}
			if crand.Len() != 0 || srand.Len() != 0 {
				t.Errorf("unused random bytes: client %d, server %d", crand.Len(), srand.Len())
			}
			if tr.server.SendKey != [32]byte(v.ClientRecvKey) || tr.server.RecvKey != [32]byte(v.ClientSendKey) {
				t.Error("gateway keys do not mirror the client's")
			}
			if len(v.ClientRandom) != 64+v.Padding[0]+32+v.Padding[2] || len(v.ServerRandom) != 32+v.Padding[1]+32 {
				t.Error("random streams do not have the documented lengths")
			}
		})
	}
}
