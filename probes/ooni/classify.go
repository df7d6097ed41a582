package ooni

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"

	quicgo "github.com/quic-go/quic-go"

	"github.com/commucat/commucat/core/transport"
)

// Failure strings of OONI's df-007-errors that CommuCat's probes write.
const (
	FailureAddressInUse            = "address_in_use"
	FailureAddressNotAvailable     = "address_not_available"
	FailureConnectionAborted       = "connection_aborted"
	FailureConnectionAlreadyClosed = "connection_already_closed"
	FailureConnectionRefused       = "connection_refused"
	FailureConnectionReset         = "connection_reset"
	FailureDNSBogonError           = "dns_bogon_error"
	FailureDNSNXDOMAINError        = "dns_nxdomain_error"
	FailureDNSNoAnswer             = "dns_no_answer"
	FailureDNSRefusedError         = "dns_refused_error"
	FailureDNSServerMisbehaving    = "dns_server_misbehaving"
	FailureDNSServfailError        = "dns_servfail_error"
	FailureDNSWrongQueryID         = "dns_reply_with_wrong_query_id"
	FailureEOFError                = "eof_error"
	FailureGenericTimeoutError     = "generic_timeout_error"
	FailureHostUnreachable         = "host_unreachable"
	FailureInterrupted             = "interrupted"
	FailureNetworkDown             = "network_down"
	FailureNetworkReset            = "network_reset"
	FailureNetworkUnreachable      = "network_unreachable"
	FailureNoBufferSpace           = "no_buffer_space"
	FailurePermissionDenied        = "permission_denied"
	FailureQUICIncompatibleVersion = "quic_incompatible_version"
	FailureSSLFailedHandshake      = "ssl_failed_handshake"
	FailureSSLInvalidCertificate   = "ssl_invalid_certificate"
	FailureSSLInvalidHostname      = "ssl_invalid_hostname"
	FailureSSLUnknownAuthority     = "ssl_unknown_authority"
	FailureTimedOut                = "timed_out"
	// FailureUnknownPrefix starts the failure of an error no rule knows,
	// followed by its scrubbed message, as OONI writes it.
	FailureUnknownPrefix = "unknown_failure: "
	// FailureResidualAvoided is CommuCat's: the probe did not run because
	// its destination was under a residual block it would have extended.
	FailureResidualAvoided = "x_residual_block_avoided"
)

// Operations, as OONI names them in failed_operation and network events.
const (
	OpResolve          = "resolve"
	OpConnect          = "connect"
	OpTLSHandshake     = "tls_handshake"
	OpQUICHandshake    = "quic_handshake"
	OpHTTPRoundTrip    = "http_round_trip"
	OpRead             = "read"
	OpWrite            = "write"
	OpClose            = "close"
	OpSessionHandshake = "x_session_handshake"
	OpTransportDial    = "x_transport_dial"
)

// Errors that CommuCat's own resolvers return, classified to the DNS
// failure strings.
var (
	// ErrDNSNXDOMAIN is returned for a response with rcode NXDOMAIN.
	ErrDNSNXDOMAIN = errors.New("ooni: dns: no such host")
	// ErrDNSNoAnswer is returned for a response without usable answers.
	ErrDNSNoAnswer = errors.New("ooni: dns: no answer from DNS server")
	// ErrDNSRefused is returned for a response with rcode REFUSED.
	ErrDNSRefused = errors.New("ooni: dns: refused")
	// ErrDNSServfail is returned for a response with rcode SERVFAIL.
	ErrDNSServfail = errors.New("ooni: dns: servfail")
	// ErrDNSMisbehaving is returned for a response that cannot be used.
	ErrDNSMisbehaving = errors.New("ooni: dns: server misbehaving")
	// ErrDNSBogon is returned when an answer is a bogon address.
	ErrDNSBogon = errors.New("ooni: dns: bogon address")
	// ErrResidual is returned when a probe declines to touch a
	// destination under a residual block.
	ErrResidual = errors.New("ooni: destination under a residual block")
)

var errnoFailures = map[syscall.Errno]string{
	syscall.ECONNREFUSED:  FailureConnectionRefused,
	syscall.ECONNRESET:    FailureConnectionReset,
	syscall.EHOSTUNREACH:  FailureHostUnreachable,
	syscall.ENETUNREACH:   FailureNetworkUnreachable,
	syscall.ETIMEDOUT:     FailureTimedOut,
	syscall.ECONNABORTED:  FailureConnectionAborted,
	syscall.EADDRINUSE:    FailureAddressInUse,
	syscall.EADDRNOTAVAIL: FailureAddressNotAvailable,
	syscall.EACCES:        FailurePermissionDenied,
	syscall.EPERM:         FailurePermissionDenied,
	syscall.ENETDOWN:      FailureNetworkDown,
	syscall.ENETRESET:     FailureNetworkReset,
	syscall.ENOBUFS:       FailureNoBufferSpace,
	syscall.EINTR:         FailureInterrupted,
	// A write to a connection the peer reset reports EPIPE.
	syscall.EPIPE: FailureConnectionReset,
}

// Classify maps err to an OONI failure string: "" for nil, a known
// failure for system call, timeout, end-of-file and DNS errors, otherwise
// "unknown_failure: " and the error's message with addresses scrubbed.
func Classify(err error) string {
	if err == nil {
		return ""
	}
	if errors.Is(err, ErrResidual) {
		return FailureResidualAvoided
	}
	if s := classifyDNSSentinel(err); s != "" {
		return s
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if s, ok := errnoFailures[errno]; ok {
			return s
		}
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		switch {
		case dnsErr.IsNotFound:
			return FailureDNSNXDOMAINError
		case dnsErr.IsTimeout:
			return FailureGenericTimeoutError
		}
		return FailureDNSServerMisbehaving
	}
	switch {
	case errors.Is(err, context.Canceled):
		return FailureInterrupted
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, transport.ErrTimeout):
		return FailureGenericTimeoutError
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return FailureEOFError
	case errors.Is(err, net.ErrClosed), errors.Is(err, transport.ErrClosed):
		return FailureConnectionAlreadyClosed
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return FailureGenericTimeoutError
	}
	s := err.Error()
	switch {
	case strings.HasSuffix(s, "EOF"):
		return FailureEOFError
	case strings.HasSuffix(s, "i/o timeout"), strings.HasSuffix(s, "context deadline exceeded"), strings.HasSuffix(s, "TLS handshake timeout"):
		return FailureGenericTimeoutError
	case strings.HasSuffix(s, "connection reset by peer"):
		return FailureConnectionReset
	case strings.HasSuffix(s, "connection refused"):
		return FailureConnectionRefused
	case strings.HasSuffix(s, "no such host"):
		return FailureDNSNXDOMAINError
	case strings.HasSuffix(s, "use of closed network connection"):
		return FailureConnectionAlreadyClosed
	}
	return FailureUnknownPrefix + Scrub(s)
}

func classifyDNSSentinel(err error) string {
	switch {
	case errors.Is(err, ErrDNSNXDOMAIN):
		return FailureDNSNXDOMAINError
	case errors.Is(err, ErrDNSNoAnswer):
		return FailureDNSNoAnswer
	case errors.Is(err, ErrDNSRefused):
		return FailureDNSRefusedError
	case errors.Is(err, ErrDNSServfail):
		return FailureDNSServfailError
	case errors.Is(err, ErrDNSMisbehaving):
		return FailureDNSServerMisbehaving
	case errors.Is(err, ErrDNSBogon):
		return FailureDNSBogonError
	}
	return ""
}

// ClassifyTLS maps an error of a TLS handshake: certificate verification
// errors become ssl_invalid_hostname, ssl_unknown_authority or
// ssl_invalid_certificate, alerts and non-TLS replies ssl_failed_handshake,
// and anything else is classified by Classify.
func ClassifyTLS(err error) string {
	if err == nil {
		return ""
	}
	if s := classifyX509(err); s != "" {
		return s
	}
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) {
		return FailureSSLFailedHandshake
	}
	var alert tls.AlertError
	if errors.As(err, &alert) {
		return FailureSSLFailedHandshake
	}
	if strings.Contains(err.Error(), "remote error: tls: ") {
		return FailureSSLFailedHandshake
	}
	return Classify(err)
}

func classifyX509(err error) string {
	var host x509.HostnameError
	if errors.As(err, &host) {
		return FailureSSLInvalidHostname
	}
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) {
		return FailureSSLUnknownAuthority
	}
	var ci x509.CertificateInvalidError
	if errors.As(err, &ci) {
		return FailureSSLInvalidCertificate
	}
	return ""
}

// TLS alerts (RFC 8446, section 6) that QUIC carries as CRYPTO_ERROR
// 0x100 + alert.
const (
	alertHandshakeFailure       = 40
	alertBadCertificate         = 42
	alertUnsupportedCertificate = 43
	alertCertificateRevoked     = 44
	alertCertificateExpired     = 45
	alertCertificateUnknown     = 46
	alertUnknownCA              = 48
	alertDecryptError           = 51
	alertUnrecognizedName       = 112
)

// ClassifyQUIC maps an error of a QUIC handshake as OONI does: a version
// negotiation failure is quic_incompatible_version, a stateless reset
// connection_reset, handshake and idle timeouts generic_timeout_error,
// CONNECTION_REFUSED connection_refused, and TLS alerts the ssl_ failures;
// anything else is classified by ClassifyTLS.
func ClassifyQUIC(err error) string {
	if err == nil {
		return ""
	}
	var (
		vn *quicgo.VersionNegotiationError
		sr *quicgo.StatelessResetError
		ht *quicgo.HandshakeTimeoutError
		it *quicgo.IdleTimeoutError
		te *quicgo.TransportError
	)
	switch {
	case errors.As(err, &vn):
		return FailureQUICIncompatibleVersion
	case errors.As(err, &sr):
		return FailureConnectionReset
	case errors.As(err, &ht), errors.As(err, &it):
		return FailureGenericTimeoutError
	}
	if s := classifyX509(err); s != "" {
		return s
	}
	if errors.As(err, &te) {
		if te.ErrorCode == quicgo.ConnectionRefused {
			return FailureConnectionRefused
		}
		if te.ErrorCode.IsCryptoError() {
			switch uint8(te.ErrorCode) {
			case alertBadCertificate, alertUnsupportedCertificate, alertCertificateRevoked, alertCertificateExpired, alertCertificateUnknown:
				return FailureSSLInvalidCertificate
			case alertUnknownCA:
				return FailureSSLUnknownAuthority
			case alertUnrecognizedName:
				return FailureSSLInvalidHostname
			case alertHandshakeFailure, alertDecryptError:
				return FailureSSLFailedHandshake
			}
			return FailureSSLFailedHandshake
		}
		return FailureUnknownPrefix + Scrub(te.Error())
	}
	return ClassifyTLS(err)
}

// IsTimeout reports whether failure is one of the timeout failures.
func IsTimeout(failure string) bool {
	return failure == FailureGenericTimeoutError || failure == FailureTimedOut
}

// IsInterference reports whether failure is one that censors cause by
// resetting, dropping or ending a flow: connection_reset, a timeout or
// eof_error.
func IsInterference(failure string) bool {
	return failure == FailureConnectionReset || failure == FailureEOFError || IsTimeout(failure)
}
