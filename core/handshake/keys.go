package handshake

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"

	"github.com/flynn/noise"
)

// ErrKeyFileMode means a key file is accessible by group or others; the
// key is not loaded. Fix it with chmod 600.
var ErrKeyFileMode = errors.New("handshake: key file is accessible by group or others")

// Key file headers: the first line of each key file names what it holds.
const (
	staticFileHeader  = "commucat x25519 static key v1"
	signingFileHeader = "commucat ed25519 signing key v1"
	maxKeyFileSize    = 1024
)

// StaticKey is a long-term X25519 key pair: a device's or a gateway's Noise
// static key. It never prints or logs its private half: String shows a
// fingerprint of the public key and LogValue "[redacted]". Wipe zeroes it.
// A StaticKey is read-only after creation and safe for concurrent use until
// it is wiped.
type StaticKey struct {
	priv [32]byte
	pub  [32]byte
}

// GenerateStatic returns a new random static key.
func GenerateStatic() (*StaticKey, error) { return generateStatic(rand.Reader) }

func generateStatic(r io.Reader) (*StaticKey, error) {
	var priv [32]byte
	defer clear(priv[:])
	if _, err := io.ReadFull(r, priv[:]); err != nil {
		return nil, fmt.Errorf("handshake: generate static key: %w", err)
	}
	return staticFromPrivate(priv[:])
}

// staticFromPrivate derives the public half; priv is copied, not kept.
func staticFromPrivate(priv []byte) (*StaticKey, error) {
	k, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("handshake: static key: %w", err)
	}
	s := new(StaticKey)
	copy(s.priv[:], priv)
	copy(s.pub[:], k.PublicKey().Bytes())
	return s, nil
}

// Public returns the public half.
func (k *StaticKey) Public() [32]byte { return k.pub }

// Wipe zeroes both halves; the key is unusable afterwards.
func (k *StaticKey) Wipe() {
	if k == nil {
		return
	}
	clear(k.priv[:])
	clear(k.pub[:])
}

func (k *StaticKey) isZero() bool { return k.pub == [32]byte{} }

// dhKey returns the key pair for flynn/noise. The slices alias k, so Wipe
// also clears the copy a handshake holds.
func (k *StaticKey) dhKey() noise.DHKey {
	return noise.DHKey{Private: k.priv[:], Public: k.pub[:]}
}

// String returns "x25519:" and the key's fingerprint: the first 8 bytes of
// SHA-256 of the public key, in hex. It never shows the private key.
func (k StaticKey) String() string { return "x25519:" + fingerprint(k.pub[:]) }

// GoString is String, so %#v does not reveal the private key.
func (k StaticKey) GoString() string { return k.String() }

// Format implements fmt.Formatter: every verb formats String, so no verb
// prints the private key.
func (k StaticKey) Format(f fmt.State, verb rune) { formatRedacted(f, verb, k.String()) }

// LogValue implements slog.LogValuer.
func (k StaticKey) LogValue() slog.Value { return slog.StringValue("[redacted]") }

func fingerprint(pub []byte) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// FormatPublic encodes a static public key as unpadded base64url (43
// characters), the form used in invites and bridge lines.
func FormatPublic(k [32]byte) string { return base64.RawURLEncoding.EncodeToString(k[:]) }

// ParsePublic decodes a key written by FormatPublic. It accepts only the
// canonical 43-character encoding of 32 bytes.
func ParsePublic(s string) ([32]byte, error) {
	var k [32]byte
	if len(s) != base64.RawURLEncoding.EncodedLen(len(k)) {
		return k, fmt.Errorf("%w: public key is %d characters, want %d", ErrMalformed, len(s), base64.RawURLEncoding.EncodedLen(len(k)))
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil {
		return k, fmt.Errorf("%w: public key: %w", ErrMalformed, err)
	}
	if len(b) != len(k) {
		return k, fmt.Errorf("%w: public key is %d bytes, want %d", ErrMalformed, len(b), len(k))
	}
	copy(k[:], b)
	return k, nil
}

// LoadOrCreateStatic loads the static key in path, or creates it if the
// file does not exist (created is then true). The file is text: the header
// line "commucat x25519 static key v1", then the 32-byte private key in
// standard base64. It is written with mode 0600 through a temporary file and
// a rename, and the parent directory is created with mode 0700 if missing.
// A file accessible by group or others is refused with ErrKeyFileMode.
func LoadOrCreateStatic(path string) (k *StaticKey, created bool, err error) {
	secret, created, err := loadOrCreateKey(path, staticFileHeader, 32)
	if err != nil {
		return nil, false, err
	}
	defer clear(secret)
	k, err = staticFromPrivate(secret)
	if err != nil {
		return nil, false, err
	}
	return k, created, nil
}

// loadOrCreateKey returns the size-byte secret stored in path under header,
// creating a random one if the file does not exist. The caller wipes it.
func loadOrCreateKey(path, header string, size int) (secret []byte, created bool, err error) {
	secret, err = readKeyFile(path, header, size)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return secret, false, err
	}
	secret = make([]byte, size)
	if _, err := io.ReadFull(rand.Reader, secret); err != nil {
		return nil, false, fmt.Errorf("handshake: key file %s: read random: %w", path, err)
	}
	err = writeKeyFile(path, header, secret)
	if errors.Is(err, fs.ErrExist) {
		// Another process created it first: use theirs.
		clear(secret)
		secret, err = readKeyFile(path, header, size)
		return secret, false, err
	}
	if err != nil {
		clear(secret)
		return nil, false, err
	}
	return secret, true, nil
}

// readKeyFile reads and checks a key file. Errors never quote its content.
func readKeyFile(path, header string, size int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("handshake: key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("handshake: key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("handshake: key file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); runtime.GOOS != "windows" && perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o; run chmod 600 on it", ErrKeyFileMode, path, perm)
	}
	buf, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	defer clear(buf)
	if err != nil {
		return nil, fmt.Errorf("handshake: key file %s: %w", path, err)
	}
	if len(buf) > maxKeyFileSize {
		return nil, fmt.Errorf("%w: key file %s is over %d bytes", ErrMalformed, path, maxKeyFileSize)
	}
	secret, err := parseKeyFile(buf, header, size)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, path)
	}
	return secret, nil
}

// parseKeyFile checks the header line and decodes the base64 body, which
// must hold exactly size bytes. Surrounding blank space and CRLF line ends
// are accepted; anything else is ErrMalformed.
func parseKeyFile(b []byte, header string, size int) ([]byte, error) {
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	if len(lines) != 2 {
		return nil, fmt.Errorf("%w: key file has %d lines, want 2", ErrMalformed, len(lines))
	}
	if got := string(bytes.TrimRight(lines[0], "\r")); got != header {
		return nil, fmt.Errorf("%w: key file header is not %q", ErrMalformed, header)
	}
	body := bytes.TrimRight(lines[1], "\r")
	if len(body) != base64.StdEncoding.EncodedLen(size) {
		return nil, fmt.Errorf("%w: key file body is %d characters, want %d", ErrMalformed, len(body), base64.StdEncoding.EncodedLen(size))
	}
	// Decode needs room for DecodedLen: a body without padding can hold
	// more than size bytes.
	buf := make([]byte, base64.StdEncoding.DecodedLen(len(body)))
	defer clear(buf)
	n, err := base64.StdEncoding.Strict().Decode(buf, body)
	if err != nil || n != size {
		return nil, fmt.Errorf("%w: key file body is not base64 of %d bytes", ErrMalformed, size)
	}
	return bytes.Clone(buf[:n]), nil
}

// formatKeyFile is the inverse of parseKeyFile. The caller wipes the result.
func formatKeyFile(header string, secret []byte) []byte {
	b := make([]byte, 0, len(header)+1+base64.StdEncoding.EncodedLen(len(secret))+1)
	b = append(b, header...)
	b = append(b, '\n')
	b = base64.StdEncoding.AppendEncode(b, secret)
	return append(b, '\n')
}

// writeKeyFile creates path atomically with mode 0600: it writes a
// temporary file in the same directory, syncs it, and links it into place
// (failing with fs.ErrExist if path appeared meanwhile), falling back to a
// rename on file systems without hard links.
func writeKeyFile(path, header string, secret []byte) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("handshake: key file: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("handshake: key file: %w", err)
	}
	name := tmp.Name()
	defer os.Remove(name) // after a successful link or rename: a no-op or the spare link
	content := formatKeyFile(header, secret)
	defer clear(content)
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("handshake: key file: %w", err)
	}
	if _, err := tmp.Write(content); err != nil {
		tmp.Close()
		return fmt.Errorf("handshake: key file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("handshake: key file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("handshake: key file: %w", err)
	}
	if err := os.Link(name, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("handshake: key file: %w", err)
		}
		if err := os.Rename(name, path); err != nil {
			return fmt.Errorf("handshake: key file: %w", err)
		}
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // best effort: make the new name durable
		d.Close()
	}
	return nil
}
