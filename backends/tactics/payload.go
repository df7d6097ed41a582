// Package tactics lets clients share what their transport probes found
// and gives them back the transport order that works best on their
// network ("tactics").
//
// A client that opted in sends, over its authenticated session, a
// frame.ProbeReport frame whose payload is a Payload with Verdicts; a
// gateway running a Collector aggregates the verdicts per coarse network
// key and answers with a frame.ProbeReport frame whose Payload carries
// Order. A gateway without a collector ignores the frame.
//
// # Payload
//
// The payload is a JSON object of at most MaxPayload bytes, decoded
// strictly (unknown fields, trailing data, more than MaxVerdicts verdicts,
// bad transport names or a transport named twice in the verdicts or in the
// order are errors):
//
//	report (client to gateway): {"v":1,"verdicts":[{"transport":"quic","state":"blocked"},{"transport":"reality","state":"ok"}]}
//	tactics (gateway to client): {"v":1,"order":["reality","tcp"]}
//
// A transport is named by its registered name only (1 to 32 of a-z, 0-9,
// "-", "_", "."): a report carries no address, no server name and no
// timing, so it tells the gateway nothing the session's own endpoint did
// not.
//
// # Network keys and privacy
//
// The collector never keeps a client address. It keys its counts by
// NetworkKey: the first 16 bytes of SHA-256(salt || prefix), where prefix
// is the client's IPv4 /16 or IPv6 /32 as the gateway sees it and salt is
// random per collector (per gateway run). A /16 or /32 is shared by many
// subscribers of one network (an ISP, a mobile operator), which is the
// scale at which censors apply a policy, and is too coarse to single a
// client out; the salt keeps the keys from being matched against a
// precomputed table of prefixes, and since it lives only in memory the
// keys cannot be linked across restarts. Counts decay (HalfLife) and the
// number of networks is bounded (MaxNetworks), least recently reported
// first out.
package tactics

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Version is the payload version this package writes and reads.
const Version = 1

// MaxPayload bounds a payload's size in bytes.
const MaxPayload = 4096

// MaxVerdicts bounds the verdicts of a report and the transports of an
// order.
const MaxVerdicts = 32

// ErrPayload is wrapped by every payload decoding error.
var ErrPayload = errors.New("tactics: bad payload")

// State is what a client's probe found about a transport.
type State string

// States a verdict may carry.
const (
	StateOK        State = "ok"
	StateThrottled State = "throttled"
	StateBlocked   State = "blocked"
)

// Verdict is one transport's state in a report.
type Verdict struct {
	Transport string `json:"transport"`
	State     State  `json:"state"`
}

// Payload is a frame.ProbeReport payload: a report (Verdicts) from a
// client, or tactics (Order) from the gateway.
type Payload struct {
	V        int       `json:"v"`
	Verdicts []Verdict `json:"verdicts,omitempty"`
	Order    []string  `json:"order,omitempty"`
}

// Marshal encodes p, setting its version, after checking it.
func (p Payload) Marshal() ([]byte, error) {
	p.V = Version
	if err := p.check(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("tactics: %w", err)
	}
	if len(b) > MaxPayload {
		return nil, fmt.Errorf("%w: %d bytes > %d", ErrPayload, len(b), MaxPayload)
	}
	return b, nil
}

// Parse decodes a payload strictly.
func Parse(b []byte) (Payload, error) {
	var p Payload
	if len(b) > MaxPayload {
		return p, fmt.Errorf("%w: %d bytes > %d", ErrPayload, len(b), MaxPayload)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&p); err != nil {
		return Payload{}, fmt.Errorf("%w: %w", ErrPayload, err)
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return Payload{}, fmt.Errorf("%w: trailing data", ErrPayload)
	}
	if p.V != Version {
		return Payload{}, fmt.Errorf("%w: version %d, want %d", ErrPayload, p.V, Version)
	}
	if err := p.check(); err != nil {
		return Payload{}, err
	}
	return p, nil
}

func (p Payload) check() error {
	if len(p.Verdicts) > MaxVerdicts || len(p.Order) > MaxVerdicts {
		return fmt.Errorf("%w: more than %d entries", ErrPayload, MaxVerdicts)
	}
	seen := make(map[string]bool, len(p.Verdicts))
	for _, v := range p.Verdicts {
		if !validName(v.Transport) {
			return fmt.Errorf("%w: bad transport name %q", ErrPayload, v.Transport)
		}
		if seen[v.Transport] {
			return fmt.Errorf("%w: two verdicts for %q", ErrPayload, v.Transport)
		}
		seen[v.Transport] = true
		switch v.State {
		case StateOK, StateThrottled, StateBlocked:
		default:
			return fmt.Errorf("%w: bad state %q", ErrPayload, v.State)
		}
	}
	clear(seen)
	for _, t := range p.Order {
		if !validName(t) {
			return fmt.Errorf("%w: bad transport name %q", ErrPayload, t)
		}
		if seen[t] {
			return fmt.Errorf("%w: %q twice in the order", ErrPayload, t)
		}
		seen[t] = true
	}
	return nil
}

// validName reports whether s may name a transport in a payload.
func validName(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}
