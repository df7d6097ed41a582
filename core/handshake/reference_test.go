package handshake

import (
	"bytes"
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/mlkem"
	"crypto/mlkem/mlkemtest"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"os"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"
)

// refState is an independent, minimal implementation of the Noise
// symmetric state for Noise_XKpsk3_25519_ChaChaPoly_SHA256, written from
// the Noise specification (revision 34) and docs/PROTOCOL.md
// rather than from flynn/noise. TestReferenceVectors uses it, with the
// standard library's ML-KEM, to rebuild every vector byte for byte.
type refState struct {
	ck, h, k []byte
	n        uint64
}

func refHMAC(key []byte, data ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	for _, d := range data {
		m.Write(d)
	}
	return m.Sum(nil)
}

// refHKDF is the Noise HKDF returning n outputs of 32 bytes.
func refHKDF(ck, ikm []byte, n int) [][]byte {
	temp := refHMAC(ck, ikm)
	var out [][]byte
	prev := []byte{}
	for i := 1; i <= n; i++ {
		prev = refHMAC(temp, prev, []byte{byte(i)})
		out = append(out, prev)
	}
	return out
}

func newRefState(name, prologue string) *refState {
	var h []byte
	if len(name) <= sha256.Size {
		h = make([]byte, sha256.Size)
		copy(h, name)
	} else {
		s := sha256.Sum256([]byte(name))
		h = s[:]
	}
	s := &refState{ck: bytes.Clone(h), h: h}
	s.mixHash([]byte(prologue))
	return s
}

func (s *refState) mixHash(data []byte) {
	sum := sha256.Sum256(append(bytes.Clone(s.h), data...))
	s.h = sum[:]
}

func (s *refState) mixKey(ikm []byte) {
	out := refHKDF(s.ck, ikm, 2)
	s.ck, s.k, s.n = out[0], out[1], 0
}

func (s *refState) mixKeyAndHash(ikm []byte) {
	out := refHKDF(s.ck, ikm, 3)
	s.ck = out[0]
	s.mixHash(out[1])
	s.k, s.n = out[2], 0
}

func (s *refState) nonce() []byte {
	var n [12]byte
	binary.LittleEndian.PutUint64(n[4:], s.n)
	return n[:]
}

func (s *refState) encryptAndHash(t *testing.T, p []byte) []byte {
	t.Helper()
	aead, err := chacha20poly1305.New(s.k)
	if err != nil {
		t.Fatal(err)
	}
	c := aead.Seal(nil, s.nonce(), p, s.h)
	s.n++
	s.mixHash(c)
	return c
}

func refDH(t *testing.T, priv, pub []byte) []byte {
	t.Helper()
	k, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ecdh.X25519().NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	out, err := k.ECDH(p)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func refPub(t *testing.T, priv []byte) []byte {
	t.Helper()
	k, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey().Bytes()
}

// TestReferenceVectors rebuilds each vector in testdata/vectors.json with
// the reference implementation above: the messages, the ML-KEM secret,
// the keys and the hash must match byte for byte. It checks that the
// construction is exactly the documented one, independently of the code
// under test.
func TestReferenceVectors(t *testing.T) {
	raw, err := os.ReadFile(vectorsPath)
	if err != nil {
		t.Fatal(err)
	}
	var f vectorFile
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	for _, v := range f.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			p1, p2, p3 := v.Padding[0], v.Padding[1], v.Padding[2]
			cr, sr := []byte(v.ClientRandom), []byte(v.ServerRandom)
			kemSeed, pad1, ce, pad3 := cr[:64], cr[64:64+p1], cr[64+p1:96+p1], cr[96+p1:]
			encSeed, pad2, se := sr[:32], sr[32:32+p2], sr[32+p2:]
			cs, ss := []byte(v.ClientStaticPrivate), []byte(v.ServerStaticPrivate)
			csPub, ssPub := refPub(t, cs), refPub(t, ss)
			cePub, sePub := refPub(t, ce), refPub(t, se)

			st := newRefState("Noise_XKpsk3_25519_ChaChaPoly_SHA256", "CommuCat handshake v1")
			st.mixHash(ssPub) // pre-message: <- s

			// Message 1: -> e, es
			dk, err := mlkem.NewDecapsulationKey768(kemSeed)
			if err != nil {
				t.Fatal(err)
			}
			var pl1 []byte
			pl1 = append(pl1, 1)
			pl1 = binary.BigEndian.AppendUint64(pl1, uint64(v.TimestampUnixNano))
			pl1 = append(pl1, dk.EncapsulationKey().Bytes()...)
			pl1 = binary.BigEndian.AppendUint16(pl1, uint16(p1))
			pl1 = append(pl1, pad1...)
			st.mixHash(cePub)
			st.mixKey(cePub) // psk handshakes mix e into the key too
			st.mixKey(refDH(t, ce, ssPub))
			m1 := append(bytes.Clone(cePub), st.encryptAndHash(t, pl1)...)

			// Message 2: <- e, ee
			secret, ct, err := mlkemtest.Encapsulate768(dk.EncapsulationKey(), encSeed)
			if err != nil {
				t.Fatal(err)
			}
			pl2 := append(bytes.Clone(ct), byte(p2>>8), byte(p2))
			pl2 = append(pl2, pad2...)
			st.mixHash(sePub)
			st.mixKey(sePub)
			st.mixKey(refDH(t, se, cePub))
			m2 := append(bytes.Clone(sePub), st.encryptAndHash(t, pl2)...)

			// Message 3: -> s, se, psk
			m3 := st.encryptAndHash(t, csPub)
			st.mixKey(refDH(t, cs, sePub))
			st.mixKeyAndHash(secret)
			pl3 := binary.BigEndian.AppendUint16(nil, uint16(len(v.Payload)))
			pl3 = append(pl3, v.Payload...)
			pl3 = binary.BigEndian.AppendUint16(pl3, uint16(p3))
			pl3 = append(pl3, pad3...)
			m3 = append(m3, st.encryptAndHash(t, pl3)...)

			split := refHKDF(st.ck, nil, 2)
			checks := []struct {
				name      string
				got, want []byte
			}{
				{"message 1", m1, v.Message1},
				{"message 2", m2, v.Message2},
				{"message 3", m3, v.Message3},
				{"ML-KEM secret", secret, v.MLKEMSharedSecret},
				{"client send key", split[0], v.ClientSendKey},
				{"client recv key", split[1], v.ClientRecvKey},
				{"handshake hash", st.h, v.HandshakeHash},
				{"client static public", csPub, v.ClientStaticPublic},
				{"server static public", ssPub, v.ServerStaticPublic},
			}
			for _, c := range checks {
				if !bytes.Equal(c.got, c.want) {
					t.Errorf("%s differs from the reference construction", c.name)
				}
			}
		})
	}
}
