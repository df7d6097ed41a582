//go:build !linux

package ctl

import (
	"errors"
	"net"
	"os"
	"time"
)

// errPlatform is returned where the control socket is not implemented.
var errPlatform = errors.New("ctl: transport plugins need Linux")

// Handler handles one message and the descriptors that came with it.
type Handler func(m Msg, fds []int) error

// Conn is one end of a control socket; on this platform, none.
type Conn struct{}

// ViolationError is a protocol violation by the other side.
type ViolationError struct{ Reason string }

func (e *ViolationError) Error() string { return "ctl: protocol violation: " + e.Reason }

// Pair fails on this platform.
func Pair() (a, b *os.File, err error) { return nil, nil, errPlatform }

// FlowPair fails on this platform.
func FlowPair() (*net.UnixConn, *os.File, error) { return nil, nil, errPlatform }

// DatagramPair fails on this platform.
func DatagramPair() (*net.UnixConn, *os.File, error) { return nil, nil, errPlatform }

// FlowConn fails on this platform.
func FlowConn(int) (*net.UnixConn, error) { return nil, errPlatform }

// BellPair fails on this platform.
func BellPair() (*net.UnixConn, *os.File, error) { return nil, nil, errPlatform }

// BellConn fails on this platform.
func BellConn(int) (*net.UnixConn, error) { return nil, errPlatform }

// DatagramConn fails on this platform.
func DatagramConn(int) (*net.UnixConn, error) { return nil, errPlatform }

// New fails on this platform.
func New(*os.File, Handler) (*Conn, error) { return nil, errPlatform }

// Run fails on this platform.
func (*Conn) Run() error { return errPlatform }

// Sync fails on this platform.
func (*Conn) Sync() error { return errPlatform }

// Send fails on this platform.
func (*Conn) Send(Msg, time.Time, ...*os.File) error { return errPlatform }

// Close does nothing.
func (*Conn) Close() error { return nil }
