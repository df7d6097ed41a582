// Package messagingtest provides an in-memory session for tests of the
// messaging protocol: two connected ends that satisfy messaging.Conn.
package messagingtest

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/commucat/commucat/core/frame"
)

// DefaultDepth is the capacity of each direction of a Pipe when the depth
// given is not positive.
const DefaultDepth = 16

// Conn is one end of a Pipe. Send encodes each frame with frame.Append and
// the other end decodes it with frame.Decode, so limits are enforced as on
// a real session and no payload is shared. Conn is safe for concurrent use.
type Conn struct {
	in     <-chan []byte
	out    chan<- []byte
	closed chan struct{} // shared by both ends
	once   *sync.Once
}

// Pipe returns two connected ends; each direction buffers depth frames and
// then Send blocks. Closing either end closes both: pending and later calls
// return io.EOF once the buffered frames are read.
func Pipe(depth int) (*Conn, *Conn) {
	if depth <= 0 {
		depth = DefaultDepth
	}
	ab := make(chan []byte, depth)
	ba := make(chan []byte, depth)
	closed := make(chan struct{})
	once := new(sync.Once)
	return &Conn{in: ba, out: ab, closed: closed, once: once},
		&Conn{in: ab, out: ba, closed: closed, once: once}
}

// Send sends frames in order, blocking while the pipe is full.
func (c *Conn) Send(ctx context.Context, frames ...frame.Frame) error {
	for _, f := range frames {
		b, err := frame.Append(nil, f)
		if err != nil {
			return fmt.Errorf("messagingtest: send: %w", err)
		}
		select {
		case <-c.closed:
			return io.EOF
		default:
		}
		select {
		case c.out <- b:
		case <-ctx.Done():
			return ctx.Err()
		case <-c.closed:
			return io.EOF
		}
	}
	return nil
}

// Recv returns the next frame, blocking until one arrives, ctx is done or
// the pipe is closed and drained (io.EOF).
func (c *Conn) Recv(ctx context.Context) (frame.Frame, error) {
	var b []byte
	select {
	case b = <-c.in:
	case <-ctx.Done():
		return frame.Frame{}, ctx.Err()
	case <-c.closed:
		select {
		case b = <-c.in:
		default:
			return frame.Frame{}, io.EOF
		}
	}
	f, n, err := frame.Decode(b)
	if err == nil && n != len(b) {
		err = fmt.Errorf("messagingtest: %d trailing bytes", len(b)-n)
	}
	if err != nil {
		return frame.Frame{}, fmt.Errorf("messagingtest: recv: %w", err)
	}
	return f, nil
}

// Close closes both ends. It is idempotent.
func (c *Conn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}
