package messaging

import (
	"errors"
	"fmt"

	"github.com/commucat/commucat/backends/store"
	"github.com/commucat/commucat/core/frame"
)

// Sentinel errors. The registration-code and name errors are the store's
// own values, so errors.Is works whichever package a caller checks.
var (
	// ErrPayload is matched by every *PayloadError: a messaging payload is
	// malformed.
	ErrPayload = errors.New("messaging: bad payload")
	// ErrBadName means a user name breaks the rules of ValidName.
	ErrBadName = errors.New("messaging: invalid name")
	// ErrTooLarge means a message body is over MaxBody.
	ErrTooLarge = errors.New("messaging: message too large")
	// ErrUnknownDevice means a device key belongs to no registered device.
	ErrUnknownDevice = errors.New("messaging: unknown device")
	// ErrUnknownRecipient means no user has the recipient's name.
	ErrUnknownRecipient = errors.New("messaging: unknown recipient")
	// ErrQuotaExceeded means the recipient's inbox is full.
	ErrQuotaExceeded = errors.New("messaging: recipient inbox full")
	// ErrRegistrationRefused is matched by every refused registration
	// (see *RefusedError and *ProblemError).
	ErrRegistrationRefused = errors.New("messaging: registration refused")
	// ErrClosed means the session ended (the Client's Run returned).
	ErrClosed = errors.New("messaging: session closed")

	// ErrCodeUnknown is store.ErrCodeUnknown: no such registration code.
	ErrCodeUnknown = store.ErrCodeUnknown
	// ErrCodeUsed is store.ErrCodeUsed: the registration code was used.
	ErrCodeUsed = store.ErrCodeUsed
	// ErrCodeExpired is store.ErrCodeExpired: the registration code expired.
	ErrCodeExpired = store.ErrCodeExpired
	// ErrNameTaken is store.ErrNameTaken: the name belongs to another user.
	ErrNameTaken = store.ErrNameTaken
	// ErrDeviceRegistered is store.ErrDuplicate: the device key is already
	// registered.
	ErrDeviceRegistered = store.ErrDuplicate
)

// PayloadError reports a malformed Envelope or RegisterRequest. It matches
// ErrPayload, and also ErrTooLarge when the body is over MaxBody.
type PayloadError struct {
	Reason   string
	tooLarge bool
}

func (e *PayloadError) Error() string { return "messaging: bad payload: " + e.Reason }

// Is reports whether target is ErrPayload, or ErrTooLarge for an oversized
// body.
func (e *PayloadError) Is(target error) bool {
	return target == ErrPayload || (e.tooLarge && target == ErrTooLarge)
}

func payloadErr(format string, args ...any) error {
	return &PayloadError{Reason: fmt.Sprintf(format, args...)}
}

// RefusedError is what Service.Register returns when it refuses a
// registration for a reason the client may be told: Reason is one of
// ErrCodeUnknown, ErrCodeUsed, ErrCodeExpired, ErrNameTaken,
// ErrDeviceRegistered or ErrBadName, and Detail the human text sent to the
// client (which never contains the code). It matches ErrRegistrationRefused
// and Reason.
type RefusedError struct {
	Reason error
	Detail string
}

func (e *RefusedError) Error() string { return "messaging: registration refused: " + e.Detail }

// Unwrap returns ErrRegistrationRefused and Reason.
func (e *RefusedError) Unwrap() []error { return []error{ErrRegistrationRefused, e.Reason} }

// Problem is the CCP-1 problem code the client is sent.
func (e *RefusedError) Problem() frame.Problem {
	if errors.Is(e.Reason, ErrBadName) {
		return frame.ProblemBadRequest
	}
	return frame.ProblemRegistrationRefused
}

// ProblemError is an Error frame the gateway sent a Client. Ref is the id
// of the message it concerns, if any. It matches the sentinel for its
// problem: ErrUnknownRecipient, ErrQuotaExceeded, ErrTooLarge or
// ErrRegistrationRefused.
type ProblemError struct {
	Problem frame.Problem
	Ref     []byte
	Detail  string
}

func (e *ProblemError) Error() string {
	return fmt.Sprintf("messaging: gateway: %s: %s", e.Problem, e.Detail)
}

// Is reports whether target is the sentinel for e's problem.
func (e *ProblemError) Is(target error) bool {
	switch e.Problem {
	case frame.ProblemUnknownRecipient:
		return target == ErrUnknownRecipient
	case frame.ProblemQuotaExceeded:
		return target == ErrQuotaExceeded
	case frame.ProblemTooLarge:
		return target == ErrTooLarge
	case frame.ProblemRegistrationRefused:
		return target == ErrRegistrationRefused
	}
	return false
}

// refusal maps a store error from Register to the text a client may see.
var refusals = []struct {
	err    error
	detail string
}{
	{ErrCodeUnknown, "registration code unknown"},
	{ErrCodeUsed, "registration code already used"},
	{ErrCodeExpired, "registration code expired"},
	{ErrNameTaken, "name already taken"},
	{ErrDeviceRegistered, "device already registered"},
}
