// Package proto is CommuCat's transport plugin protocol: the gRPC control
// API (transport.proto and the code generated from it), the go-plugin
// handshake constants, the protocol version and the error codes that carry
// core/transport's sentinel errors across the process boundary.
//
// The host (package plugins) and the SDK (package plugins/sdk) both build
// on it; a plugin written without the SDK needs only what this package and
// docs/PLUGINS.md describe. Regenerate the .pb.go files with `make proto`.
//
// # Versions
//
// ProtocolVersion is go-plugin's application protocol version. The host
// and the SDK each speak every version from MinProtocolVersion to
// ProtocolVersion; the handshake picks the highest one both speak, and a
// plugin that shares none with the host is refused. Version 1 is the
// first; version 2 adds datagrams (a SOCK_SEQPACKET socket per flow
// beside the stream, see docs/PLUGINS.md); version 3 adds rings (a flow's
// bytes through shared memory, with its socket as the doorbell; see
// plugins/internal/ring). An older peer is served as before: without
// what later versions add.
package proto

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"unicode/utf8"

	"github.com/commucat/commucat/core/transport"
)

// ProtocolVersion is the plugin protocol version this package describes,
// the newest one.
const ProtocolVersion = 3

// MinProtocolVersion is the oldest plugin protocol version still spoken.
const MinProtocolVersion = 1

// DatagramVersion is the first protocol version with datagrams.
const DatagramVersion = 2

// RingVersion is the first protocol version in which a FLOW may carry a
// ring memfd.
const RingVersion = 3

// The go-plugin handshake: a plugin started without this variable set to
// this value refuses to run, which keeps the binary from being run by hand
// by mistake. It is a usability check, not a security measure.
const (
	MagicCookieKey   = "COMMUCAT_PLUGIN_MAGIC_COOKIE"
	MagicCookieValue = "a7f3c2e1-commucat-transport-plugin"
)

// PluginName is the key of the transport service in go-plugin's plugin
// set.
const PluginName = "transport"

// ControlFDEnv is the environment variable that holds the number of the
// inherited control socket's file descriptor in the plugin (3).
const ControlFDEnv = "COMMUCAT_PLUGIN_CONTROL_FD"

// BinaryPrefix starts the file name of every plugin binary: the rest of the
// name is the transport's name, as in commucat-transport-quic.
const BinaryPrefix = "commucat-transport-"

// MaxMessage is the largest error message, name, version, address or
// parameter value a host accepts from a plugin, in bytes.
const MaxMessage = 4096

// Clip returns msg as valid UTF-8 (each invalid byte sequence replaced by
// U+FFFD) of at most MaxMessage bytes, cut before a character rather than
// inside one: gRPC refuses to send a string that is not valid UTF-8.
func Clip(msg string) string {
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	if len(msg) <= MaxMessage {
		return msg
	}
	n := MaxMessage
	for n > 0 && !utf8.RuneStart(msg[n]) {
		n--
	}
	return msg[:n]
}

// RemoteError is an error a plugin reported. It matches (errors.Is) the
// core/transport sentinel of its code.
type RemoteError struct {
	Code    ErrorCode
	Message string
}

// Error returns the plugin's message.
func (e *RemoteError) Error() string { return e.Message }

// Unwrap returns the sentinel of the code, or nil for ERROR_CODE_INTERNAL.
func (e *RemoteError) Unwrap() error { return sentinel(e.Code) }

// Timeout reports whether the error is a timeout, as net.Error does.
func (e *RemoteError) Timeout() bool { return e.Code == ErrorCode_ERROR_CODE_TIMEOUT }

// Temporary is false: it is part of net.Error only for compatibility.
func (e *RemoteError) Temporary() bool { return false }

var _ net.Error = (*RemoteError)(nil)

func sentinel(c ErrorCode) error {
	switch c {
	case ErrorCode_ERROR_CODE_TIMEOUT:
		return transport.ErrTimeout
	case ErrorCode_ERROR_CODE_REFUSED:
		return transport.ErrRefused
	case ErrorCode_ERROR_CODE_CLOSED, ErrorCode_ERROR_CODE_NOT_FOUND:
		return transport.ErrClosed
	case ErrorCode_ERROR_CODE_BAD_PARAMS:
		return transport.ErrBadParams
	case ErrorCode_ERROR_CODE_UNSUPPORTED:
		return transport.ErrUnsupported
	case ErrorCode_ERROR_CODE_TOO_LARGE:
		return transport.ErrTooLarge
	case ErrorCode_ERROR_CODE_CANCELED:
		return context.Canceled
	}
	return nil
}

// CodeOf returns the code that carries err: the first core/transport
// sentinel or context error err matches, else ERROR_CODE_INTERNAL; nil for
// a nil error gives ERROR_CODE_UNSPECIFIED.
func CodeOf(err error) ErrorCode {
	switch {
	case err == nil:
		return ErrorCode_ERROR_CODE_UNSPECIFIED
	case errors.Is(err, transport.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return ErrorCode_ERROR_CODE_TIMEOUT
	case errors.Is(err, context.Canceled):
		return ErrorCode_ERROR_CODE_CANCELED
	case errors.Is(err, transport.ErrRefused):
		return ErrorCode_ERROR_CODE_REFUSED
	case errors.Is(err, transport.ErrClosed):
		return ErrorCode_ERROR_CODE_CLOSED
	case errors.Is(err, transport.ErrBadParams):
		return ErrorCode_ERROR_CODE_BAD_PARAMS
	case errors.Is(err, transport.ErrUnsupported):
		return ErrorCode_ERROR_CODE_UNSUPPORTED
	case errors.Is(err, transport.ErrTooLarge):
		return ErrorCode_ERROR_CODE_TOO_LARGE
	}
	return ErrorCode_ERROR_CODE_INTERNAL
}

// NewError returns the Error message that carries err, or nil for nil.
func NewError(err error) *Error {
	if err == nil {
		return nil
	}
	return &Error{Code: CodeOf(err), Message: Clip(err.Error())}
}

// Err returns the error e carries: nil for a nil Error or code
// ERROR_CODE_UNSPECIFIED, else a *RemoteError. An unknown code (from a
// newer plugin) is kept as is and matches no sentinel.
func (e *Error) Err() error {
	if e == nil || e.Code == ErrorCode_ERROR_CODE_UNSPECIFIED {
		return nil
	}
	msg := Clip(e.Message)
	if msg == "" {
		msg = fmt.Sprintf("plugin error %s", e.Code)
	}
	return &RemoteError{Code: e.Code, Message: msg}
}
