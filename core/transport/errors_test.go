package transport_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/commucat/commucat/core/transport"
)

// timeoutError is a net.Error that is a timeout, as kcp-go reports one.
type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

func TestClassify(t *testing.T) {
	other := errors.New("something else")
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"refused", syscall.ECONNREFUSED, transport.ErrRefused},
		{"reset", &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, transport.ErrRefused},
		{"broken pipe", fmt.Errorf("write: %w", syscall.EPIPE), transport.ErrRefused},
		{"deadline", os.ErrDeadlineExceeded, transport.ErrTimeout},
		{"context deadline", context.DeadlineExceeded, transport.ErrTimeout},
		{"net.Error timeout", timeoutError{}, transport.ErrTimeout},
		{"net closed", &net.OpError{Op: "accept", Err: net.ErrClosed}, transport.ErrClosed},
		{"closed pipe", io.ErrClosedPipe, transport.ErrClosed},
		{"eof", io.EOF, nil},
		{"canceled", context.Canceled, nil},
		{"other", other, nil},
		{"nil", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := transport.Classify(tt.err); got != tt.want {
				t.Errorf("Classify(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestWrapError(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		wantKind error
		wantMsg  string
	}{
		{"timeout", os.ErrDeadlineExceeded, transport.ErrTimeout, "tcp: read: i/o timeout"},
		{"closed", net.ErrClosed, transport.ErrClosed, "tcp: read: use of closed network connection"},
		{"refused", syscall.ECONNREFUSED, transport.ErrRefused, "tcp: read: connection refused"},
		{"unclassified", io.EOF, nil, "tcp: read: EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := transport.WrapError("tcp", "read", tt.err)
			if got := err.Error(); got != tt.wantMsg {
				t.Errorf("Error() = %q, want %q", got, tt.wantMsg)
			}
			if !errors.Is(err, tt.err) {
				t.Errorf("errors.Is(err, %v) = false, want true", tt.err)
			}
			for _, s := range []error{transport.ErrTimeout, transport.ErrClosed, transport.ErrRefused} {
				if got, want := errors.Is(err, s), s == tt.wantKind; got != want {
					t.Errorf("errors.Is(err, %v) = %v, want %v", s, got, want)
				}
			}
			var oe *transport.OpError
			if !errors.As(err, &oe) {
				t.Fatalf("errors.As(*OpError) = false")
			}
			if oe.Transport != "tcp" || oe.Op != "read" || oe.Kind != tt.wantKind || oe.Err != tt.err {
				t.Errorf("OpError = %+v", *oe)
			}
			var ne net.Error
			if !errors.As(err, &ne) {
				t.Fatalf("errors.As(net.Error) = false")
			}
			if got, want := ne.Timeout(), tt.wantKind == transport.ErrTimeout; got != want {
				t.Errorf("Timeout() = %v, want %v", got, want)
			}
			//lint:ignore SA1019 Temporary is part of net.Error, which OpError implements.
			if ne.Temporary() {
				t.Errorf("Temporary() = true, want false")
			}
		})
	}
}

func TestOpErrorUnwrap(t *testing.T) {
	inner := errors.New("inner")
	tests := []struct {
		name string
		err  *transport.OpError
		want []error
	}{
		{"no kind", &transport.OpError{Transport: "kcp", Op: "dial", Err: inner}, []error{inner}},
		{"kind", &transport.OpError{Transport: "kcp", Op: "dial", Kind: transport.ErrTooLarge, Err: inner}, []error{transport.ErrTooLarge, inner}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, tt.err.Unwrap(), cmpopts.EquateErrors()); diff != "" {
				t.Errorf("Unwrap() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
