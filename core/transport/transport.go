// Package transport is the contract between CommuCat's core and the ways it
// moves bytes: every built-in transport (transports/...) and every plugin
// implements Transport. It is a dependency-free leaf package: it imports only
// the standard library, so that transports, plugins and the core can all
// depend on it without cycles.
//
// A Transport is stream-first: Dial and Accept return a net.Conn that carries
// an ordered, reliable byte stream. A connection that can also carry
// unreliable datagrams (QUIC DATAGRAM, KCP over UDP) additionally implements
// DatagramConn, found by a type assertion.
//
// Beside the contract, it holds what the transports share: OpError and
// WrapError for their errors, Deadline for connections that keep their
// own read deadline, and HandshakeListener for servers that run a
// handshake on every connection they accept.
package transport

import (
	"context"
	"errors"
	"net"
)

// Transport dials and listens for connections of one kind. Implementations
// must be safe for concurrent use.
type Transport interface {
	// Name is the transport's registered name, such as "tcp" or "quic".
	Name() string
	// Dial opens a connection to addr. It honours ctx for the whole set-up.
	Dial(ctx context.Context, addr string) (net.Conn, error)
	// Listen starts accepting connections on addr.
	Listen(ctx context.Context, addr string) (Listener, error)
}

// Listener accepts connections of one transport. Close stops it and makes
// pending and later Accept calls return ErrClosed.
type Listener interface {
	// Accept waits for the next connection, or until ctx ends.
	Accept(ctx context.Context) (net.Conn, error)
	// Close stops listening. It is idempotent.
	Close() error
	// Addr is the address the listener is bound to.
	Addr() net.Addr
}

// DatagramConn is implemented by connections that can also carry unreliable,
// unordered datagrams beside their stream.
type DatagramConn interface {
	// SendDatagram sends b as one datagram. It fails with ErrTooLarge when b
	// exceeds MaxDatagramSize.
	SendDatagram(b []byte) error
	// ReceiveDatagram waits for the next datagram, or until ctx ends.
	ReceiveDatagram(ctx context.Context) ([]byte, error)
	// MaxDatagramSize is the largest payload SendDatagram accepts.
	MaxDatagramSize() int
}

// Sentinel errors that callers branch on with errors.Is. Transports (and the
// plugin host, which maps plugin error codes back to these) wrap them with
// context.
var (
	// ErrClosed is returned by operations on a closed listener or connection.
	ErrClosed = errors.New("transport: closed")
	// ErrTimeout is returned when a dial, accept or I/O deadline expires.
	ErrTimeout = errors.New("transport: timeout")
	// ErrRefused is returned when the peer refused or reset the connection.
	ErrRefused = errors.New("transport: connection refused")
	// ErrUnsupported is returned for an operation the transport lacks.
	ErrUnsupported = errors.New("transport: unsupported")
	// ErrBadParams is returned when a transport's parameters are invalid.
	ErrBadParams = errors.New("transport: bad parameters")
	// ErrTooLarge is returned for a datagram larger than MaxDatagramSize.
	ErrTooLarge = errors.New("transport: datagram too large")
	// ErrUnknown is returned by the registry for a name nobody registered.
	ErrUnknown = errors.New("transport: unknown transport")
)
