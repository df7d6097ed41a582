package reality

import (
	"errors"
	"io"
	"net"

	"github.com/commucat/commucat/core/transport"
)

// tlsConn is what conn needs of *tls.Conn and *utls.UConn.
type tlsConn interface {
	net.Conn
	CloseWrite() error
}

// conn is an established reality connection: TLS 1.3 over TCP. Its errors
// wrap the core/transport sentinels (see the package doc); CloseWrite
// sends TLS close_notify, so the peer reads io.EOF while it can still
// write back.
type conn struct {
	tlsConn
}

// Read reads from the connection.
func (c *conn) Read(b []byte) (int, error) {
	n, err := c.tlsConn.Read(b)
	if err != nil && err != io.EOF {
		err = wrapErr("read", err)
	}
	return n, err
}

// Write writes to the connection.
func (c *conn) Write(b []byte) (int, error) {
	n, err := c.tlsConn.Write(b)
	if err != nil {
		err = wrapErr("write", err)
	}
	return n, err
}

// CloseWrite ends the write direction with a TLS close_notify alert.
func (c *conn) CloseWrite() error {
	if err := c.tlsConn.CloseWrite(); err != nil {
		return wrapErr("close write", err)
	}
	return nil
}

// Close closes the connection, sending close_notify first.
func (c *conn) Close() error {
	if err := c.tlsConn.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return wrapErr("close", err)
	}
	return nil
}

// wrapErr wraps err from operation op with the matching core/transport
// sentinel.
func wrapErr(op string, err error) error { return transport.WrapError(Name, op, err) }
