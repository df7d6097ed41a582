package probes

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Limits of ParseTargets.
const (
	// MaxTargetLen bounds one line of a targets file.
	MaxTargetLen = 2048
	// MaxTargets bounds the targets of one file.
	MaxTargets = 4096
)

// ErrBadTarget is wrapped by every target parsing error.
var ErrBadTarget = errors.New("probes: bad target")

// TargetKind says what a Target names.
type TargetKind int

// Target kinds.
const (
	// KindDomain is a bare domain name, for DNS probes.
	KindDomain TargetKind = iota + 1
	// KindEndpoint is "host:port", for TCP, TLS, QUIC, UDP and
	// fully-encrypted-traffic probes.
	KindEndpoint
	// KindURL is an http or https URL, for HTTP and throttling probes.
	KindURL
)

// String returns "domain", "endpoint" or "url".
func (k TargetKind) String() string {
	switch k {
	case KindDomain:
		return "domain"
	case KindEndpoint:
		return "endpoint"
	case KindURL:
		return "url"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Target is one thing to probe, as given by the user.
type Target struct {
	Kind TargetKind
	// Raw is the target as written, trimmed.
	Raw string
	// Host is the domain or the host of the endpoint or URL; Port the
	// endpoint's or URL's port (the scheme's default for a URL without
	// one); empty for a domain.
	Host, Port string
}

// Addr is host:port, or the host alone for a domain.
func (t Target) Addr() string {
	if t.Port == "" {
		return t.Host
	}
	return net.JoinHostPort(t.Host, t.Port)
}

// IsName reports whether the target's host is a name rather than an IP
// address.
func (t Target) IsName() bool { return net.ParseIP(t.Host) == nil }

// ParseTarget parses one target: an http or https URL, "host:port"
// (IPv6 hosts in brackets), or a bare domain name.
func ParseTarget(s string) (Target, error) {
	s = strings.TrimSpace(s)
	bad := func(why string) (Target, error) {
		return Target{}, fmt.Errorf("%w: %q: %s", ErrBadTarget, truncate(s, 80), why)
	}
	switch {
	case s == "":
		return bad("empty")
	case len(s) > MaxTargetLen:
		return bad(fmt.Sprintf("longer than %d bytes", MaxTargetLen))
	case strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return bad("contains spaces or control characters")
	}
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return bad("not a URL")
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return bad("scheme is not http or https")
		}
		if u.Hostname() == "" {
			return bad("URL without a host")
		}
		port := u.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
		}
		if err := checkPort(port); err != nil {
			return bad(err.Error())
		}
		return Target{Kind: KindURL, Raw: s, Host: u.Hostname(), Port: port}, nil
	}
	if host, port, err := net.SplitHostPort(s); err == nil {
		if err := checkHost(host); err != nil {
			return bad(err.Error())
		}
		if err := checkPort(port); err != nil {
			return bad(err.Error())
		}
		return Target{Kind: KindEndpoint, Raw: s, Host: host, Port: port}, nil
	}
	if err := checkName(s); err != nil {
		return bad(err.Error())
	}
	return Target{Kind: KindDomain, Raw: s, Host: strings.TrimSuffix(s, ".")}, nil
}

// ParseTargets reads targets one per line; blank lines and lines starting
// with # are skipped. Errors name the line.
func ParseTargets(r io.Reader) ([]Target, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), MaxTargetLen+2)
	var ts []Target
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		if len(ts) == MaxTargets {
			return nil, fmt.Errorf("%w: more than %d targets", ErrBadTarget, MaxTargets)
		}
		t, err := ParseTarget(s)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		ts = append(ts, t)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("%w: line %d longer than %d bytes", ErrBadTarget, line+1, MaxTargetLen)
		}
		return nil, fmt.Errorf("probes: read targets: %w", err)
	}
	return ts, nil
}

func checkPort(p string) error {
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != p {
		return fmt.Errorf("port %q is not 1-65535", truncate(p, 10))
	}
	return nil
}

func checkHost(h string) error {
	if net.ParseIP(h) != nil {
		return nil
	}
	return checkName(h)
}

// checkName accepts host names of letters, digits, hyphens, underscores
// and dots, 253 bytes at most, labels of 1-63 bytes.
func checkName(s string) error {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return errors.New("not a host name")
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 {
			return errors.New("not a host name")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return errors.New("not a host name")
			}
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
