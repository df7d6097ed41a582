package obfs4

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// maxWrite bounds the payload handed to the library in one call: it builds
// each call's frames in one buffer before sending them.
const maxWrite = 64 << 10

// conn is an obfs4 connection: the library's connection for the frames,
// and the TCP connection under it for deadlines, which the library does
// not pass on. Reads and writes are each serialized, since the library's
// decoder and encoder are not safe for concurrent use; a read and a write
// may run at once.
type conn struct {
	oc  net.Conn // the library's obfs4 connection over raw
	raw net.Conn

	rmu sync.Mutex // serializes Read

	wmu  sync.Mutex // serializes Write; guards werr
	werr error      // the first write error: the stream is broken after it

	wdeadline atomic.Int64 // the write deadline in Unix nanoseconds, 0 for none
}

func newConn(oc, raw net.Conn) *conn { return &conn{oc: oc, raw: raw} }

// Read reads payload from the connection; see the package doc for its
// errors.
func (c *conn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil // the library would wait for a frame
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	n, err := c.oc.Read(b)
	if err != nil && err != io.EOF {
		err = wrapErr("read", err)
	}
	return n, err
}

// Write frames b and sends it; see the package doc for its errors.
func (c *conn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
	// A deadline already past fails before the library encrypts anything,
	// so the stream stays whole.
	if dl := c.wdeadline.Load(); dl != 0 && time.Now().UnixNano() >= dl {
		return 0, wrapErr("write", os.ErrDeadlineExceeded)
	}
	var total int
	for len(b) > 0 {
		chunk := b[:min(len(b), maxWrite)]
		n, err := c.writeChunk(chunk)
		if err != nil {
			c.werr = wrapErr("write", err)
			return total + min(n, len(chunk)), c.werr
		}
		total += len(chunk)
		b = b[len(chunk):]
	}
	return total, nil
}

// writeChunk hands b to the library, turning its panic in paranoid mode
// (see the package doc) into an error.
func (c *conn) writeChunk(b []byte) (n int, err error) {
	defer func() {
		if r := recover(); r != nil {
			n, err = 0, fmt.Errorf("%w: %v", errLibraryPanic, r)
		}
	}()
	return c.oc.Write(b)
}

// errLibraryPanic wraps a panic of the library's Write.
var errLibraryPanic = errors.New("library panic")

// Close closes the connection. A second Close returns an error matching
// net.ErrClosed.
func (c *conn) Close() error {
	if err := c.oc.Close(); err != nil {
		return wrapErr("close", err)
	}
	return nil
}

// LocalAddr is the local TCP address.
func (c *conn) LocalAddr() net.Addr { return c.raw.LocalAddr() }

// RemoteAddr is the peer's TCP address.
func (c *conn) RemoteAddr() net.Addr { return c.raw.RemoteAddr() }

// SetDeadline sets the read and write deadlines.
func (c *conn) SetDeadline(t time.Time) error {
	c.storeWriteDeadline(t)
	return c.raw.SetDeadline(t)
}

// SetReadDeadline sets the read deadline. A Read that times out leaves the
// connection usable.
func (c *conn) SetReadDeadline(t time.Time) error { return c.raw.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline. A Write that times out after
// it started sending breaks the connection for writing; see the package
// doc.
func (c *conn) SetWriteDeadline(t time.Time) error {
	c.storeWriteDeadline(t)
	return c.raw.SetWriteDeadline(t)
}

func (c *conn) storeWriteDeadline(t time.Time) {
	var ns int64
	if !t.IsZero() {
		ns = max(t.UnixNano(), 1)
	}
	c.wdeadline.Store(ns)
}
