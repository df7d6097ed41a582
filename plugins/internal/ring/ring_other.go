//go:build !linux

package ring

import (
	"errors"
	"net"
	"os"
)

var errPlatform = errors.New("ring: shared-memory rings need Linux")

// Conn is a flow's rings; there are none on this platform.
type Conn struct{ net.Conn }

// CloseWrite fails on this platform.
func (c *Conn) CloseWrite() error { return errPlatform }

// Offer fails on this platform.
func Offer(*net.UnixConn, int) (*Conn, []*os.File, error) { return nil, nil, errPlatform }

// Accept fails on this platform; it closes what it was given.
func Accept(sock *net.UnixConn, memfd, roomfd int) (*Conn, error) {
	sock.Close()
	os.NewFile(uintptr(memfd), "memfd").Close()
	os.NewFile(uintptr(roomfd), "room").Close()
	return nil, errPlatform
}
