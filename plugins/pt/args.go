package pt

import (
	"fmt"
	"slices"
	"strings"

	"github.com/commucat/commucat/core/transport"
)

// maxClientArgs is the longest encoded per-connection argument string that
// fits SOCKS5 username/password authentication: 255 bytes of username and
// 255 of password (RFC 1929).
const maxClientArgs = 2 * 255

// escape backslash-escapes every backslash and every byte of special in s.
func escape(s, special string) string {
	if !strings.ContainsAny(s, special+`\`) {
		return s
	}
	var b strings.Builder
	for i := range len(s) {
		if s[i] == '\\' || strings.IndexByte(special, s[i]) >= 0 {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// sortedKeys returns p's keys in order, so that encodings are
// deterministic.
func sortedKeys(p transport.Params) []string {
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// checkParams rejects parameters no encoding can carry: an empty key, or a
// NUL byte (a lone NUL password means "no arguments" to PTs). Errors wrap
// transport.ErrBadParams and name the parameter.
func checkParams(p transport.Params) error {
	for _, k := range sortedKeys(p) {
		switch {
		case k == "":
			return fmt.Errorf("pt: parameter with an empty name: %w", transport.ErrBadParams)
		case strings.IndexByte(k, 0) >= 0:
			return fmt.Errorf("pt: parameter name %q has a NUL byte: %w", k, transport.ErrBadParams)
		case strings.IndexByte(p[k], 0) >= 0:
			return fmt.Errorf("pt: parameter %q has a NUL byte: %w", k, transport.ErrBadParams)
		}
	}
	return nil
}

// encodeClientArgs encodes a client's per-connection arguments as
// pt-spec.txt 3.5 says: "k=v" pairs with every backslash, equal sign and
// semicolon escaped by a backslash, joined by semicolons, in key order:
//
//	cert=AbC\=\=;iat-mode=0
//
// Errors wrap transport.ErrBadParams.
func encodeClientArgs(p transport.Params) (string, error) {
	if err := checkParams(p); err != nil {
		return "", err
	}
	var b strings.Builder
	for i, k := range sortedKeys(p) {
		if i > 0 {
			b.WriteByte(';')
		}
		b.WriteString(escape(k, "=;"))
		b.WriteByte('=')
		b.WriteString(escape(p[k], "=;"))
	}
	if b.Len() > maxClientArgs {
		return "", fmt.Errorf("pt: parameters %s encode to %d bytes, more than SOCKS5 carries (%d): %w",
			strings.Join(sortedKeys(p), ", "), b.Len(), maxClientArgs, transport.ErrBadParams)
	}
	return b.String(), nil
}

// splitSOCKSAuth splits encoded client arguments into the SOCKS5 username
// and password as pt-spec.txt 3.5 and tor do: up to 255 bytes go in the
// username with a password of one NUL byte; longer arguments fill the
// username with their first 255 bytes and the password with the rest. The
// PT joins the two before parsing, so a split inside an escape is fine.
func splitSOCKSAuth(args string) (user, pass string) {
	if len(args) <= 255 {
		return args, "\x00"
	}
	return args[:255], args[255:]
}

// encodeServerOptions encodes a server's options for method as
// TOR_PT_SERVER_TRANSPORT_OPTIONS wants (pt-spec.txt 3.2.3):
// "<method>:<k>=<v>" with every colon, semicolon, equal sign and backslash
// escaped, joined by semicolons, in key order. Errors wrap
// transport.ErrBadParams.
func encodeServerOptions(method string, p transport.Params) (string, error) {
	if err := checkParams(p); err != nil {
		return "", err
	}
	var b strings.Builder
	for i, k := range sortedKeys(p) {
		if i > 0 {
			b.WriteByte(';')
		}
		b.WriteString(escape(method, ":;="))
		b.WriteByte(':')
		b.WriteString(escape(k, ":;="))
		b.WriteByte('=')
		b.WriteString(escape(p[k], ":;="))
	}
	return b.String(), nil
}

// parseSmethodArgs parses the value of an SMETHOD line's ARGS option
// (pt-spec.txt 3.3.3): "k=v" pairs joined by commas, with equal signs,
// commas and backslashes escaped by a backslash. Keys must be non-empty
// and unique, and keys and values must be printable ASCII: they are the
// parameters the gateway publishes to its clients, in invites that people
// copy and print.
func parseSmethodArgs(s string) (transport.Params, error) {
	p := transport.Params{}
	if s == "" {
		return p, nil
	}
	for {
		key, n, err := unescapeUntil(s, "=,")
		if err != nil {
			return nil, err
		}
		if n >= len(s) || s[n] != '=' {
			return nil, lineError("ARGS pair %q without an equal sign", key)
		}
		if key == "" {
			return nil, lineError("ARGS pair with an empty key")
		}
		s = s[n+1:]
		val, n, err := unescapeUntil(s, ",")
		if err != nil {
			return nil, err
		}
		if _, dup := p[key]; dup {
			return nil, lineError("ARGS key %q twice", key)
		}
		if i := strings.IndexFunc(key+val, transport.NotPrintable); i >= 0 {
			return nil, lineError("ARGS pair %q has byte %#x, not printable ASCII", key, (key + val)[i])
		}
		p[key] = val
		if n >= len(s) {
			return p, nil
		}
		s = s[n+1:]
	}
}

// unescapeUntil unescapes s up to its first unescaped byte of stop, and
// returns the unescaped text and the index of that byte (len(s) if none).
func unescapeUntil(s, stop string) (string, int, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if strings.IndexByte(stop, c) >= 0 {
			return b.String(), i, nil
		}
		if c == '\\' {
			i++
			if i >= len(s) {
				return "", 0, lineError("ARGS end in a backslash")
			}
			c = s[i]
		}
		b.WriteByte(c)
	}
	return b.String(), len(s), nil
}
