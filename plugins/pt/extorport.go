package pt

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
)

// The Extended ORPort protocol (ext-orport-spec.txt, Tor proposals 196
// and 217), server side, as far as a PT's forwarded connection needs it.
// The PT connects and the host opens:
//
//	host → PT   01 00                     auth types: SAFE_COOKIE, end of list
//	PT → host   01                        chosen type
//	PT → host   ClientNonce (32)
//	host → PT   ServerHash (32) ServerNonce (32)
//	PT → host   ClientHash (32)
//	host → PT   01 | 00                   authenticated or not
//
//	ServerHash = HMAC-SHA256(cookie, "ExtORPort authentication server-to-client hash" | ClientNonce | ServerNonce)
//	ClientHash = HMAC-SHA256(cookie, "ExtORPort authentication client-to-server hash" | ClientNonce | ServerNonce)
//
// Then the PT sends commands, each <type:2> <body length:2> <body>, big
// endian: USERADDR (0001, "ip:port" of the client), TRANSPORT (0002, the
// method), others ignored, until DONE (0000); the host answers OKAY
// (1000, empty body) and the stream follows. The 32-byte cookie is in the
// file TOR_PT_AUTH_COOKIE_FILE names: the 32-byte header
// "! Extended ORPort Auth Cookie !\n", then the cookie.

const (
	cookieHeader   = "! Extended ORPort Auth Cookie !\n"
	cookieLen      = 32
	cookieFileName = "extended_orport_auth_cookie"

	extAuthSafeCookie = 1

	extCmdDone      = 0x0000
	extCmdUserAddr  = 0x0001
	extCmdTransport = 0x0002
	extCmdOkay      = 0x1000

	// maxExtCommands bounds the commands before DONE.
	maxExtCommands = 16
)

// errExtOR is wrapped by every failure of an Extended ORPort handshake.
var errExtOR = errors.New("pt: extended orport handshake failed")

// extMeta is what a PT told about a forwarded connection.
type extMeta struct {
	userAddr  string // USERADDR: the client's "ip:port"; "" if not sent
	transport string // TRANSPORT: the method; "" if not sent
}

// newCookie makes a random cookie and writes it, with its header, to
// dir/extended_orport_auth_cookie (mode 0600, replaced atomically). It
// returns the cookie and the file's path.
func newCookie(dir string) ([]byte, string, error) {
	cookie := make([]byte, cookieLen)
	rand.Read(cookie) //nolint:errcheck // crypto/rand.Read never fails
	path, err := filepath.Abs(filepath.Join(dir, cookieFileName))
	if err != nil {
		return nil, "", fmt.Errorf("pt: cookie file: %w", err)
	}
	f, err := os.CreateTemp(dir, cookieFileName+".tmp*")
	if err != nil {
		return nil, "", fmt.Errorf("pt: cookie file: %w", err)
	}
	content := append([]byte(cookieHeader), cookie...)
	_, err = f.Write(content)
	clear(content)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return nil, "", fmt.Errorf("pt: cookie file: %w", err)
	}
	return cookie, path, nil
}

func extHash(cookie []byte, label string, clientNonce, serverNonce []byte) []byte {
	h := hmac.New(sha256.New, cookie)
	h.Write([]byte(label))
	h.Write(clientNonce)
	h.Write(serverNonce)
	return h.Sum(nil)
}

// extServerHandshake runs the host's side of the Extended ORPort
// handshake on rw (see above) and returns what the PT said about the
// connection. It reads no byte past DONE.
func extServerHandshake(rw io.ReadWriter, cookie []byte) (extMeta, error) {
	fail := func(format string, a ...any) (extMeta, error) {
		return extMeta{}, fmt.Errorf("%w: "+format, append([]any{errExtOR}, a...)...)
	}
	if _, err := rw.Write([]byte{extAuthSafeCookie, 0}); err != nil {
		return fail("%v", err)
	}
	var in [1 + 32]byte // chosen type, ClientNonce
	if _, err := io.ReadFull(rw, in[:]); err != nil {
		return fail("reading the client nonce: %v", err)
	}
	if in[0] != extAuthSafeCookie {
		return fail("auth type %d", in[0])
	}
	clientNonce := in[1:]
	serverNonce := make([]byte, 32)
	rand.Read(serverNonce) //nolint:errcheck // crypto/rand.Read never fails
	out := extHash(cookie, "ExtORPort authentication server-to-client hash", clientNonce, serverNonce)
	if _, err := rw.Write(append(out, serverNonce...)); err != nil {
		return fail("%v", err)
	}
	var clientHash [32]byte
	if _, err := io.ReadFull(rw, clientHash[:]); err != nil {
		return fail("reading the client hash: %v", err)
	}
	want := extHash(cookie, "ExtORPort authentication client-to-server hash", clientNonce, serverNonce)
	if !hmac.Equal(clientHash[:], want) {
		rw.Write([]byte{0}) //nolint:errcheck // failing anyway
		return fail("wrong client hash: the peer does not hold the cookie")
	}
	if _, err := rw.Write([]byte{1}); err != nil {
		return fail("%v", err)
	}
	meta, err := readExtCommands(rw)
	if err != nil {
		return extMeta{}, err
	}
	if _, err := rw.Write([]byte{extCmdOkay >> 8, extCmdOkay & 0xff, 0, 0}); err != nil {
		return fail("%v", err)
	}
	return meta, nil
}

// readExtCommands reads Extended ORPort commands up to and including DONE.
// It never panics, whatever r holds, and reads no byte past DONE.
func readExtCommands(r io.Reader) (extMeta, error) {
	var meta extMeta
	var h [4]byte
	for range maxExtCommands {
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return extMeta{}, fmt.Errorf("%w: reading a command: %v", errExtOR, err)
		}
		cmd := binary.BigEndian.Uint16(h[:2])
		body := make([]byte, binary.BigEndian.Uint16(h[2:]))
		if _, err := io.ReadFull(r, body); err != nil {
			return extMeta{}, fmt.Errorf("%w: reading command %#04x: %v", errExtOR, cmd, err)
		}
		switch cmd {
		case extCmdDone:
			return meta, nil
		case extCmdUserAddr:
			// Kept only if it is an address: some PTs send what they
			// have, such as a bare IP.
			if _, err := netip.ParseAddrPort(string(body)); err == nil {
				meta.userAddr = string(body)
			}
		case extCmdTransport:
			meta.transport = string(body)
		}
	}
	return extMeta{}, fmt.Errorf("%w: more than %d commands before DONE", errExtOR, maxExtCommands)
}

// appendExtCommand appends one Extended ORPort command to b; it is the
// encoding readExtCommands reads, used by tests playing a PT.
func appendExtCommand(b []byte, cmd uint16, body []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, cmd)
	b = binary.BigEndian.AppendUint16(b, uint16(len(body)))
	return append(b, body...)
}

// addr is the client address of an Extended ORPort connection, or nil if
// the PT sent none.
func (m extMeta) addr() net.Addr {
	ap, err := netip.ParseAddrPort(m.userAddr)
	if err != nil {
		return nil
	}
	return net.TCPAddrFromAddrPort(ap)
}
