package pt

import (
	"io"
	"net"
)

// conn is a loopback TCP connection to or from a PT process: a client's
// SOCKS connection after CONNECT, or a server's connection from the PT to
// its ORPort listener. Its errors wrap the core/transport sentinels. It
// embeds net.Conn, not *net.TCPConn, so that CloseWrite is not promoted:
// PTs such as obfs4proxy close both directions when one ends, so a
// half-close would not reach the peer as one.
type conn struct {
	net.Conn
	remote net.Addr // what the client dialed; nil on the server side
}

// Read reads from the connection. io.EOF is returned as is; other errors
// wrap their core/transport sentinel.
func (c *conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil && err != io.EOF {
		err = wrapErr("read", err)
	}
	return n, err
}

// Write writes to the connection; errors wrap their core/transport
// sentinel.
func (c *conn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if err != nil {
		err = wrapErr("write", err)
	}
	return n, err
}

// RemoteAddr is, on the client side, the address dialed through the PT
// (its Network is the method name); on the server side, the PT's end of
// the loopback connection, since plain ORPort carries no client address.
func (c *conn) RemoteAddr() net.Addr {
	if c.remote != nil {
		return c.remote
	}
	return c.Conn.RemoteAddr()
}

// dialAddr is the address of a connection dialed through a PT.
type dialAddr struct {
	method, hostport string
}

// Network is the PT method, such as "obfs4".
func (a dialAddr) Network() string { return a.method }

// String is the "host:port" dialed.
func (a dialAddr) String() string { return a.hostport }
