// Package invite encodes and parses the one-line invites that a gateway
// operator hands to a new user:
//
//	commucat://invite?v=1&gw=<noise key>&sig=<signing key>&pad=<seed>&t=<endpoint>&t=...&code=<code>&exp=<unix>
//
// gw is the gateway's Noise static X25519 public key and sig its Ed25519
// certificate-signing key, both base64url without padding. pad is the
// gateway's padding-profile seed (see core/padding), optional. Each t names one
// endpoint as transport@host:port, optionally followed by ;key=value
// transport parameters (values query-escaped), in the order the client
// should try them. code is a single-use registration code and exp its expiry
// in Unix seconds; both are absent from an invite that only describes a
// gateway. The registration code is a secret: Invite's LogValue redacts it.
//
// The package keeps no state and is safe for concurrent use.
package invite

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/commucat/commucat/core/padding"
)

// Version is the invite format version.
const Version = 1

// Scheme is the URL scheme of an invite line.
const Scheme = "commucat"

// MaxLen bounds the length of an invite line accepted by Parse.
const MaxLen = 8 << 10

// ErrInvalid is wrapped by every Parse error.
var ErrInvalid = errors.New("invite: invalid")

// Endpoint is one way to reach the gateway.
type Endpoint struct {
	Transport string
	Addr      string
	Params    map[string]string
}

// String formats the endpoint as transport@addr;k=v;...
func (e Endpoint) String() string {
	var b strings.Builder
	b.WriteString(e.Transport)
	b.WriteByte('@')
	b.WriteString(e.Addr)
	keys := make([]string, 0, len(e.Params))
	for k := range e.Params {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		b.WriteByte(';')
		b.WriteString(url.QueryEscape(k))
		b.WriteByte('=')
		b.WriteString(url.QueryEscape(e.Params[k]))
	}
	return b.String()
}

// Invite is a decoded invite line.
type Invite struct {
	Gateway   [32]byte          // Noise static public key
	Signing   ed25519.PublicKey // certificate-signing public key
	Padding   string            // padding-profile seed (core/padding), or empty
	Endpoints []Endpoint
	Code      string    // registration code, secret; empty if none
	Expires   time.Time // expiry of Code
}

// LogValue implements slog.LogValuer; it never reveals the code.
func (in Invite) LogValue() slog.Value {
	eps := make([]string, len(in.Endpoints))
	for i, e := range in.Endpoints {
		eps[i] = e.Transport + "@" + e.Addr
	}
	return slog.GroupValue(
		slog.String("gateway", b64(in.Gateway[:])),
		slog.Any("endpoints", eps),
		slog.String("code", "[redacted]"),
	)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// String formats the invite as one line.
func (in Invite) String() string {
	var b strings.Builder
	b.WriteString(Scheme + "://invite?v=" + strconv.Itoa(Version))
	b.WriteString("&gw=" + b64(in.Gateway[:]))
	b.WriteString("&sig=" + b64(in.Signing))
	if in.Padding != "" {
		b.WriteString("&pad=" + url.QueryEscape(in.Padding))
	}
	for _, e := range in.Endpoints {
		b.WriteString("&t=" + url.QueryEscape(e.String()))
	}
	if in.Code != "" {
		b.WriteString("&code=" + url.QueryEscape(in.Code))
		b.WriteString("&exp=" + strconv.FormatInt(in.Expires.Unix(), 10))
	}
	return b.String()
}

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
}

// Parse decodes an invite line. Errors never contain the registration code.
func Parse(line string) (Invite, error) {
	var in Invite
	line = strings.TrimSpace(line)
	if len(line) > MaxLen {
		return in, invalid("longer than %d bytes", MaxLen)
	}
	prefix := Scheme + "://invite?"
	if !strings.HasPrefix(line, prefix) {
		return in, invalid("does not start with %q", prefix)
	}
	q, err := url.ParseQuery(line[len(prefix):])
	if err != nil {
		return in, invalid("bad encoding; is it cut off? copy the whole line")
	}
	for k, v := range q {
		switch k {
		case "v", "gw", "sig", "pad", "code", "exp":
			if len(v) != 1 {
				return in, invalid("field %s given %d times", k, len(v))
			}
		case "t":
		default:
			return in, invalid("unknown field %q", k)
		}
	}
	if v := q.Get("v"); v != strconv.Itoa(Version) {
		return in, invalid("version %q, this build reads version %d", v, Version)
	}
	gw, err := base64.RawURLEncoding.DecodeString(q.Get("gw"))
	if err != nil || len(gw) != 32 {
		return in, invalid("gw: want a 32-byte base64url key")
	}
	copy(in.Gateway[:], gw)
	sig, err := base64.RawURLEncoding.DecodeString(q.Get("sig"))
	if err != nil || len(sig) != ed25519.PublicKeySize {
		return in, invalid("sig: want a 32-byte base64url key")
	}
	in.Signing = ed25519.PublicKey(sig)
	if q.Has("pad") {
		in.Padding = q.Get("pad")
		if _, err := padding.Parse(in.Padding); err != nil {
			return in, invalid("pad: not a padding-profile seed (%d bytes of base64url)", padding.SeedSize)
		}
	}
	if len(q["t"]) == 0 {
		return in, invalid("no endpoint (t=)")
	}
	if len(q["t"]) > 16 {
		return in, invalid("too many endpoints (%d > 16)", len(q["t"]))
	}
	for i, t := range q["t"] {
		e, err := parseEndpoint(t)
		if err != nil {
			return in, fmt.Errorf("t[%d]: %w", i, err)
		}
		in.Endpoints = append(in.Endpoints, e)
	}
	if c := q.Get("code"); c != "" || q.Has("code") {
		if c == "" || len(c) > 128 {
			return in, invalid("code: empty or too long")
		}
		exp, err := strconv.ParseInt(q.Get("exp"), 10, 64)
		if err != nil || exp <= 0 {
			return in, invalid("exp: want Unix seconds")
		}
		in.Code = c
		in.Expires = time.Unix(exp, 0)
	} else if q.Has("exp") {
		return in, invalid("exp without code")
	}
	return in, nil
}

func parseEndpoint(s string) (Endpoint, error) {
	var e Endpoint
	parts := strings.Split(s, ";")
	name, addr, ok := strings.Cut(parts[0], "@")
	if !ok || name == "" || addr == "" {
		return e, invalid("endpoint %q: want transport@host:port", parts[0])
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return e, invalid("endpoint %q: bad address", parts[0])
	}
	e.Transport, e.Addr = name, addr
	for _, p := range parts[1:] {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			return e, invalid("endpoint %s: parameter %q lacks '='", name, p)
		}
		k, err1 := url.QueryUnescape(k)
		v, err2 := url.QueryUnescape(v)
		if err1 != nil || err2 != nil || k == "" {
			return e, invalid("endpoint %s: bad parameter encoding", name)
		}
		if e.Params == nil {
			e.Params = make(map[string]string)
		}
		if _, dup := e.Params[k]; dup {
			return e, invalid("endpoint %s: parameter %q repeated", name, k)
		}
		e.Params[k] = v
	}
	return e, nil
}
