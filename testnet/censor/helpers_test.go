package censor

import (
	"bufio"
	"crypto/aes"
	"crypto/cipher"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	utls "github.com/refraction-networking/utls"
	"go.uber.org/goleak"
)

var update = flag.Bool("update", false, "rewrite golden files and fuzz seeds in testdata")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// readHex reads a testdata file of hex lines; lines starting with # are
// comments.
func readHex(t testing.TB, name string) []byte {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var sb strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sb.WriteString(line)
	}
	b, err := hex.DecodeString(sb.String())
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return b
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sealInitial builds a protected QUIC v1 client Initial packet, the
// inverse of OpenInitial, with the keys of keyDCID, a 2-byte length
// varint and a pnLen-byte packet number.
func sealInitial(t testing.TB, keyDCID, dcid, scid []byte, pn uint32, pnLen int, payload []byte) []byte {
	t.Helper()
	client, _, err := DeriveInitialKeys(keyDCID)
	if err != nil {
		t.Fatal(err)
	}
	hdr := []byte{0xc0 | byte(pnLen-1), 0, 0, 0, 1, byte(len(dcid))}
	hdr = append(hdr, dcid...)
	hdr = append(hdr, byte(len(scid)))
	hdr = append(hdr, scid...)
	hdr = append(hdr, 0) // empty token
	length := pnLen + len(payload) + gcmTagLen
	hdr = binary.BigEndian.AppendUint16(hdr, 0x4000|uint16(length))
	pnOffset := len(hdr)
	for i := pnLen - 1; i >= 0; i-- {
		hdr = append(hdr, byte(pn>>(8*i)))
	}
	block, _ := aes.NewCipher(client.Key)
	aead, _ := cipher.NewGCM(block)
	nonce := append([]byte(nil), client.IV...)
	for i := range 4 {
		nonce[len(nonce)-1-i] ^= byte(pn >> (8 * i))
	}
	pkt := aead.Seal(append([]byte(nil), hdr...), nonce, payload, hdr)
	hp, _ := aes.NewCipher(client.HP)
	var mask [16]byte
	hp.Encrypt(mask[:], pkt[pnOffset+4:pnOffset+20])
	pkt[0] ^= mask[0] & 0x0f
	for i := range pnLen {
		pkt[pnOffset+i] ^= mask[1+i]
	}
	return pkt
}

// cryptoFrame encodes a CRYPTO frame with 2-byte offset and length
// varints (4-byte when needed).
func cryptoFrame(off int, data []byte) []byte {
	b := []byte{0x06}
	b = appendVarint(b, uint64(off))
	b = appendVarint(b, uint64(len(data)))
	return append(b, data...)
}

func appendVarint(b []byte, v uint64) []byte {
	switch {
	case v < 1<<6:
		return append(b, byte(v))
	case v < 1<<14:
		return binary.BigEndian.AppendUint16(b, 0x4000|uint16(v))
	default:
		return binary.BigEndian.AppendUint32(b, 0x80000000|uint32(v))
	}
}

// captureGoHello returns the TLS records of a ClientHello that crypto/tls
// writes for serverName (and alpn), read from the server side of a
// net.Pipe.
func captureGoHello(t testing.TB, serverName string, alpn []string) []byte {
	t.Helper()
	cli, srv := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c := tls.Client(cli, &tls.Config{ServerName: serverName, NextProtos: alpn, InsecureSkipVerify: true})
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Handshake() // fails when the pipe closes
	}()
	raw := readRecords(t, srv)
	srv.Close()
	cli.Close()
	<-done
	return raw
}

// captureChromeHello returns the TLS records of a utls HelloChrome_Auto
// ClientHello for serverName.
func captureChromeHello(t testing.TB, serverName string) []byte {
	t.Helper()
	cli, srv := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c := utls.UClient(cli, &utls.Config{ServerName: serverName, InsecureSkipVerify: true}, utls.HelloChrome_Auto)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Handshake()
	}()
	raw := readRecords(t, srv)
	srv.Close()
	cli.Close()
	<-done
	return raw
}

// readRecords reads handshake records from c until they hold a whole
// ClientHello, using ReassembleClientHello to know when to stop.
func readRecords(t testing.TB, c net.Conn) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var raw []byte
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		raw = append(raw, buf[:n]...)
		if _, rerr := ReassembleClientHello(raw, 64<<10); rerr == nil {
			return raw
		}
		if err != nil {
			t.Fatalf("reading the clienthello: %v (have %d bytes)", err, len(raw))
		}
	}
}
