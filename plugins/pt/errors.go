package pt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/commucat/commucat/core/transport"
)

// Sentinel errors of a PT's set-up, wrapped by *StartError.
var (
	// ErrVersion means the PT speaks no protocol version we offered: it
	// wrote VERSION-ERROR, or a VERSION other than "1".
	ErrVersion = errors.New("pt: no common protocol version")
	// ErrEnv means the PT rejected the environment it was given: it
	// wrote ENV-ERROR.
	ErrEnv = errors.New("pt: environment rejected")
	// ErrProxy means the PT cannot use the upstream proxy of
	// Config.Proxy: it wrote PROXY-ERROR, or finished without PROXY DONE.
	ErrProxy = errors.New("pt: upstream proxy rejected")
	// ErrMethod means the PT did not launch the requested method: it
	// wrote CMETHOD-ERROR or SMETHOD-ERROR, or finished without a line for
	// the method (a PT ignores methods it does not know).
	ErrMethod = errors.New("pt: method not available")
	// ErrProtocol means the PT broke the managed-proxy protocol: a
	// malformed line of a known kind, or a method whose proxy protocol
	// this host does not speak.
	ErrProtocol = errors.New("pt: protocol violation")
	// ErrExited means the PT process exited before its set-up finished.
	// (A listener whose PT exits while it serves launches it again.)
	ErrExited = errors.New("pt: process exited")
)

// StartError reports a PT that failed to finish its set-up. Its Error text
// names the binary and method and quotes what the PT said; it never holds
// the per-connection arguments.
type StartError struct {
	// Binary is the base name of the PT executable.
	Binary string
	// Method is the transport method requested, such as "obfs4".
	Method string
	// Err is why: one of ErrVersion, ErrEnv, ErrProxy, ErrMethod,
	// ErrProtocol, ErrExited, transport.ErrTimeout, a context error, or
	// the error of starting the executable.
	Err error
	// Detail is what the PT said (the text of its *-ERROR line), or the
	// offending line, or what was missing.
	Detail string
	// Exit is the process's exit error (*exec.ExitError) when it had
	// exited, else nil.
	Exit error
	// Stderr is the last line the PT wrote to its stderr, if any.
	Stderr string
}

// Error describes the failure in one line.
func (e *StartError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "pt: start %s (%s): %s", e.Binary, e.Method, strings.TrimPrefix(e.Err.Error(), "pt: "))
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	if e.Exit != nil && !errors.Is(e.Err, e.Exit) {
		fmt.Fprintf(&b, " (%v)", e.Exit)
	}
	if e.Stderr != "" {
		fmt.Fprintf(&b, "; last stderr line: %q", e.Stderr)
	}
	return b.String()
}

// Unwrap returns Err and, if the process exited, Exit.
func (e *StartError) Unwrap() []error {
	if e.Exit == nil {
		return []error{e.Err}
	}
	return []error{e.Err, e.Exit}
}

// SOCKSError is a SOCKS5 reply other than success from a client PT's
// SOCKS listener: the PT could not open the connection it was asked for.
// It wraps transport.ErrRefused for "connection refused" (5) and
// transport.ErrTimeout for "TTL expired" (6, which PTs send for a connect
// timeout).
type SOCKSError struct {
	// Code is the SOCKS5 reply code (RFC 1928, section 6).
	Code byte
}

var socksReplyText = [...]string{
	1: "general failure",
	2: "connection not allowed by ruleset",
	3: "network unreachable",
	4: "host unreachable",
	5: "connection refused",
	6: "TTL expired",
	7: "command not supported",
	8: "address type not supported",
}

// Error names the reply code.
func (e *SOCKSError) Error() string {
	if int(e.Code) < len(socksReplyText) && socksReplyText[e.Code] != "" {
		return fmt.Sprintf("pt: socks reply %d (%s)", e.Code, socksReplyText[e.Code])
	}
	return fmt.Sprintf("pt: socks reply %d", e.Code)
}

// Unwrap returns the core/transport sentinel the code maps to, if any.
func (e *SOCKSError) Unwrap() error {
	switch e.Code {
	case 5:
		return transport.ErrRefused
	case 6:
		return transport.ErrTimeout
	}
	return nil
}

// opError is an I/O or dial error of this package: it matches both its
// core/transport sentinel (if any) and the error it wraps, as
// transports/tcp's errors do.
type opError struct {
	op   string
	kind error // a core/transport sentinel, or nil
	err  error
}

func (e *opError) Error() string {
	return "pt: " + e.op + ": " + strings.TrimPrefix(e.err.Error(), "pt: ")
}

func (e *opError) Unwrap() []error {
	if e.kind == nil {
		return []error{e.err}
	}
	return []error{e.kind, e.err}
}

// Timeout reports whether the error is a timeout, as net.Error does.
func (e *opError) Timeout() bool { return e.kind == transport.ErrTimeout }

// Temporary is false: it is part of net.Error only for compatibility.
func (e *opError) Temporary() bool { return false }

var _ net.Error = (*opError)(nil)

// wrapErr wraps err from operation op with the matching core/transport
// sentinel.
func wrapErr(op string, err error) error {
	var ne net.Error
	var se *SOCKSError
	var kind error
	switch {
	case errors.As(err, &se):
		kind = se.Unwrap()
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		kind = transport.ErrRefused
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		kind = transport.ErrTimeout
	case errors.Is(err, net.ErrClosed), errors.Is(err, io.ErrClosedPipe):
		kind = transport.ErrClosed
	}
	return &opError{op: op, kind: kind, err: err}
}

// ctxErr reports why ctx ended: a deadline also wraps transport.ErrTimeout.
func ctxErr(op string, ctx context.Context) error {
	err := ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		return &opError{op: op, kind: transport.ErrTimeout, err: err}
	}
	return &opError{op: op, err: err}
}
