package fingerprint

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Capture reads one whole ClientHello from conn, a fresh connection whose
// peer speaks TLS first, and returns the raw bytes of the record(s) that
// carried it. A ClientHello split over several records and TCP segments is
// read whole; Capture reads exactly those records and nothing after them,
// so the connection can be handed on. The hello may take at most
// MaxHelloSize bytes. ctx bounds the read (through conn's read deadline,
// which Capture clears before it returns).
//
// On error, Capture also returns the bytes it read before failing, so that
// a caller relaying the connection elsewhere can pass them on. Errors wrap
// ErrNotClientHello, ErrTooLarge, ctx's error, io.ErrUnexpectedEOF or the
// read error.
func Capture(ctx context.Context, conn net.Conn) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("fingerprint: capture: %w", err)
	}
	if d, ok := ctx.Deadline(); ok {
		if err := conn.SetReadDeadline(d); err != nil {
			return nil, fmt.Errorf("fingerprint: capture: %w", err)
		}
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		conn.SetReadDeadline(time.Unix(1, 0)) // wake the read; error checked below
	})
	defer func() {
		if !stop() {
			<-fired
		}
		conn.SetReadDeadline(time.Time{}) // best effort; the conn is the caller's
	}()
	raw, err := readHello(conn)
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			err = cerr
		}
		return raw, fmt.Errorf("fingerprint: capture: %w", err)
	}
	return raw, nil
}

// readHello reads ClientHello records from r up to the end of the message.
func readHello(r io.Reader) ([]byte, error) {
	raw := make([]byte, 0, 2048)
	var msg []byte
	for {
		if len(raw)+recordHeaderLen > MaxHelloSize {
			return raw, fmt.Errorf("more than %d bytes: %w", MaxHelloSize, ErrTooLarge)
		}
		hdr, err := readN(r, raw, recordHeaderLen)
		raw = hdr
		if err != nil {
			return raw, err
		}
		h := raw[len(raw)-recordHeaderLen:]
		if err := checkRecordHeader(h); err != nil {
			return raw, err
		}
		n := int(h[3])<<8 | int(h[4])
		if len(raw)+n > MaxHelloSize {
			return raw, fmt.Errorf("more than %d bytes: %w", MaxHelloSize, ErrTooLarge)
		}
		raw, err = readN(r, raw, n)
		if err != nil {
			return raw, err
		}
		msg = append(msg, raw[len(raw)-n:]...)
		if err := checkMessageHeader(msg); err != nil {
			return raw, err
		}
		if want := messageLen(msg); want >= 0 && len(msg) >= want {
			if len(msg) > want {
				return raw, notHello("data after the clienthello in its record")
			}
			if _, err := parseClientHello(msg); err != nil {
				return raw, err
			}
			return raw, nil
		}
	}
}

// readN appends exactly n bytes from r to b; on error, b holds what was
// read.
func readN(r io.Reader, b []byte, n int) ([]byte, error) {
	start := len(b)
	b = append(b, make([]byte, n)...)
	got, err := io.ReadFull(r, b[start:])
	b = b[:start+got]
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return b, err
}

// alertHandshakeFailure is a fatal handshake_failure alert record.
var alertHandshakeFailure = []byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28}

// CaptureServer accepts connections on l until one of them sends a valid
// ClientHello, writes that hello's raw records to the file out (mode
// 0644, replaced atomically), answers the client with a TLS
// handshake_failure alert, closes the connection and returns nil.
// Connections that send anything else are closed and ignored. It takes
// ownership of l and closes it before returning; it returns ctx's error if
// ctx ends first. Each connection gets at most 10 s to send its hello.
//
// It serves `commucat fingerprint capture`: listen on 127.0.0.1:PORT, tell
// the user to open https://localhost:PORT/ in the browser to imitate, and
// pass the listener here.
func CaptureServer(ctx context.Context, l net.Listener, out string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	defer l.Close()
	for {
		c, err := l.Accept()
		if err != nil {
			if cerr := ctx.Err(); cerr != nil {
				return fmt.Errorf("fingerprint: capture server: %w", cerr)
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("fingerprint: capture server: accept: %w", err)
		}
		raw, err := captureOne(ctx, c)
		if err != nil {
			continue
		}
		if err := writeFileAtomic(out, raw, 0o644); err != nil {
			return fmt.Errorf("fingerprint: capture server: %w", err)
		}
		return nil
	}
}

// captureOne captures one hello from c, answers with an alert and closes c.
func captureOne(ctx context.Context, c net.Conn) ([]byte, error) {
	defer c.Close()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	raw, err := Capture(cctx, c)
	if err != nil {
		return nil, err
	}
	c.SetWriteDeadline(time.Now().Add(time.Second))
	c.Write(alertHandshakeFailure) // a courtesy to the browser; failure is harmless
	return raw, nil
}

// writeFileAtomic writes b to a temporary file beside path and renames it.
func writeFileAtomic(path string, b []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
