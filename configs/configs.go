// Package configs holds CommuCat's configuration: the Gateway struct, its
// embedded defaults (gateway.yaml) and a strict decoder whose errors name
// the field at fault.
package configs

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/commucat/commucat/core/router"
)

//go:embed gateway.yaml
var defaultGateway []byte

// DefaultGatewayYAML returns the embedded default configuration file.
func DefaultGatewayYAML() []byte { return bytes.Clone(defaultGateway) }

// Gateway is the gateway's configuration.
type Gateway struct {
	Listen       []Listen     `yaml:"listen"`
	Inbox        Inbox        `yaml:"inbox"`
	Registration Registration `yaml:"registration"`
	Handshake    Handshake    `yaml:"handshake"`
	Session      Session      `yaml:"session"`
	Router       Router       `yaml:"router"`
	Decoy        Decoy        `yaml:"decoy"`
	Ops          Ops          `yaml:"ops"`
	Log          Log          `yaml:"log"`
}

// Ops configures the operations endpoint (/livez, /readyz, /metrics).
type Ops struct {
	// Listen is its address; empty turns it off. Keep it private.
	Listen string `yaml:"listen"`
}

// Listen is one endpoint the gateway serves.
type Listen struct {
	Transport string            `yaml:"transport"`
	Address   string            `yaml:"address"`
	Public    string            `yaml:"public"`
	Params    map[string]string `yaml:"params"`
}

// Inbox configures the store-and-forward inbox.
type Inbox struct {
	TTL   Duration `yaml:"ttl"`
	Quota int      `yaml:"quota"`
}

// Registration configures registration codes.
type Registration struct {
	CodeTTL Duration `yaml:"code_ttl"`
}

// Handshake configures handshake limits.
type Handshake struct {
	Timeout  Duration `yaml:"timeout"`
	MaxSkew  Duration `yaml:"max_skew"`
	Rate     float64  `yaml:"rate"`
	Burst    int      `yaml:"burst"`
	MaxConns int      `yaml:"max_conns"`
}

// Session configures sessions.
type Session struct {
	KeepAlive   Duration `yaml:"keepalive"`
	IdleTimeout Duration `yaml:"idle_timeout"`
}

// Router configures how a session uses its paths (core/router).
type Router struct {
	// MaxPaths is how many paths one session keeps at most.
	MaxPaths int `yaml:"max_paths"`
	// ResumeWindow is how long a session outlives its last path.
	ResumeWindow Duration `yaml:"resume_window"`
	// Scheduler is auto (by frame class), best, redundant or spread.
	Scheduler string `yaml:"scheduler"`
	// FEC is auto, off or always.
	FEC string `yaml:"fec"`
	// Datagrams sends media as datagrams on paths that carry them.
	Datagrams bool `yaml:"datagrams"`
}

// Decoy configures the website the gateway shows to everyone who is not a
// client (on websocket, and as reality's cover when it names no dest).
type Decoy struct {
	// Site is a directory with a static site (index.html and 404.html at
	// least); empty means the embedded blog, which every such gateway
	// shares byte for byte.
	Site string `yaml:"site"`
}

// MaxPaths bounds router.max_paths: censors that cap connections per
// client make more paths a liability.
const MaxPaths = 8

// RouterConfig returns the router settings as a router.Config (the rest
// of its fields zero). c must be valid.
func (c *Gateway) RouterConfig() router.Config {
	sched, _ := router.ParseScheduler(c.Router.Scheduler)
	fec, _ := router.ParseFEC(c.Router.FEC)
	return router.Config{
		MaxPaths:     c.Router.MaxPaths,
		ResumeWindow: c.Router.ResumeWindow.D(),
		Scheduler:    sched,
		FEC:          fec,
		NoDatagrams:  !c.Router.Datagrams,
	}
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Duration is a time.Duration written in Go syntax in YAML.
type Duration time.Duration

// UnmarshalYAML parses "90s", "15m" and the like.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("want a duration such as 30s")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration such as 30s, got %q", s)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration in Go syntax.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// FieldError names the configuration field at fault.
type FieldError struct {
	Field string // path such as "listen[0].address"
	Line  int    // line in the file, or 0
	Err   error
}

func (e *FieldError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("config: %s (line %d): %v", e.Field, e.Line, e.Err)
	}
	return fmt.Sprintf("config: %s: %v", e.Field, e.Err)
}

func (e *FieldError) Unwrap() error { return e.Err }

// LoadGateway reads the gateway configuration: the embedded defaults, then
// the file at path (if path is not empty) over them. Unknown fields are
// errors.
func LoadGateway(path string) (*Gateway, error) {
	var c Gateway
	if err := decodeStrict(defaultGateway, &c); err != nil {
		return nil, fmt.Errorf("config: embedded defaults: %w", err)
	}
	if path == "" {
		return &c, c.Validate()
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return ParseGateway(b)
}

// ParseGateway decodes a gateway configuration file over the defaults.
func ParseGateway(b []byte) (*Gateway, error) {
	var c Gateway
	if err := decodeStrict(defaultGateway, &c); err != nil {
		return nil, fmt.Errorf("config: embedded defaults: %w", err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if len(root.Content) > 0 {
		// A list given in the file replaces the default list entirely:
		// the decoder makes a new slice for every sequence.
		if err := checkFields(root.Content[0], "", reflectFields()); err != nil {
			return nil, err
		}
		if err := decodeStrict(b, &c); err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
	}
	return &c, c.Validate()
}

func decodeStrict(b []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// schema lists the known keys at each level, so unknown keys are reported
// with their full path rather than the decoder's Go type names.
type schema map[string]schema

// Leaf markers: the value must be a scalar of this kind.
var (
	durationLeaf = schema{"<duration>": nil}
	intLeaf      = schema{"<int>": nil}
	floatLeaf    = schema{"<float>": nil}
	stringLeaf   = schema{"<string>": nil}
	boolLeaf     = schema{"<bool>": nil}
)

func reflectFields() schema {
	listen := schema{"transport": stringLeaf, "address": stringLeaf, "public": stringLeaf, "params": {"*": nil}}
	return schema{
		"listen":       {"[]": listen},
		"inbox":        {"ttl": durationLeaf, "quota": intLeaf},
		"registration": {"code_ttl": durationLeaf},
		"handshake":    {"timeout": durationLeaf, "max_skew": durationLeaf, "rate": floatLeaf, "burst": intLeaf, "max_conns": intLeaf},
		"session":      {"keepalive": durationLeaf, "idle_timeout": durationLeaf},
		"decoy":        {"site": stringLeaf},
		"router":       {"max_paths": intLeaf, "resume_window": durationLeaf, "scheduler": stringLeaf, "fec": stringLeaf, "datagrams": boolLeaf},
		"ops":          {"listen": stringLeaf},
		"log":          {"level": stringLeaf, "format": stringLeaf},
	}
}

func checkLeaf(n *yaml.Node, path string, s schema) (bool, error) {
	var kind string
	for k := range s {
		if strings.HasPrefix(k, "<") {
			kind = k
		}
	}
	if kind == "" {
		return false, nil
	}
	fail := func(want string) error {
		return &FieldError{Field: path, Line: n.Line, Err: fmt.Errorf("want %s, got %q", want, n.Value)}
	}
	if n.Kind != yaml.ScalarNode {
		return true, &FieldError{Field: path, Line: n.Line, Err: fmt.Errorf("want a single %s value", strings.Trim(kind, "<>"))}
	}
	switch kind {
	case "<duration>":
		if _, err := time.ParseDuration(n.Value); err != nil {
			return true, fail("a duration such as 30s")
		}
	case "<int>":
		var v int
		if n.Decode(&v) != nil || n.ShortTag() != "!!int" { // yaml takes 1.5 as 1
			return true, fail("an integer")
		}
	case "<float>":
		var v float64
		if n.Decode(&v) != nil {
			return true, fail("a number")
		}
	case "<bool>":
		var v bool
		if n.Decode(&v) != nil {
			return true, fail("true or false")
		}
	}
	return true, nil
}

func checkFields(n *yaml.Node, path string, s schema) error {
	if s == nil {
		return nil
	}
	if leaf, err := checkLeaf(n, path, s); leaf {
		return err
	}
	switch n.Kind {
	case yaml.MappingNode:
		if _, any := s["*"]; any {
			return nil
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			p := k
			if path != "" {
				p = path + "." + k
			}
			sub, ok := s[k]
			if !ok {
				return &FieldError{Field: p, Line: n.Content[i].Line, Err: errors.New("unknown field")}
			}
			if err := checkFields(n.Content[i+1], p, sub); err != nil {
				return err
			}
		}
	case yaml.SequenceNode:
		if item, ok := s["[]"]; ok {
			for i, c := range n.Content {
				if err := checkFields(c, fmt.Sprintf("%s[%d]", path, i), item); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// Validate checks every field and names the first one at fault.
func (c *Gateway) Validate() error {
	if len(c.Listen) == 0 {
		return &FieldError{Field: "listen", Err: errors.New("at least one endpoint is needed")}
	}
	for i, l := range c.Listen {
		p := fmt.Sprintf("listen[%d]", i)
		if l.Transport == "" {
			return &FieldError{Field: p + ".transport", Err: errors.New("empty")}
		}
		if _, _, err := net.SplitHostPort(l.Address); err != nil {
			return &FieldError{Field: p + ".address", Err: fmt.Errorf("want host:port, got %q", l.Address)}
		}
		if l.Public != "" {
			if _, _, err := net.SplitHostPort(l.Public); err != nil {
				return &FieldError{Field: p + ".public", Err: fmt.Errorf("want host:port, got %q", l.Public)}
			}
		}
	}
	pos := []struct {
		field string
		v     time.Duration
	}{
		{"inbox.ttl", c.Inbox.TTL.D()},
		{"registration.code_ttl", c.Registration.CodeTTL.D()},
		{"handshake.timeout", c.Handshake.Timeout.D()},
		{"handshake.max_skew", c.Handshake.MaxSkew.D()},
		{"session.keepalive", c.Session.KeepAlive.D()},
		{"session.idle_timeout", c.Session.IdleTimeout.D()},
		{"router.resume_window", c.Router.ResumeWindow.D()},
	}
	for _, d := range pos {
		if d.v <= 0 {
			return &FieldError{Field: d.field, Err: errors.New("must be positive")}
		}
	}
	if c.Session.IdleTimeout.D() <= c.Session.KeepAlive.D() {
		return &FieldError{Field: "session.idle_timeout", Err: errors.New("must be longer than session.keepalive")}
	}
	ints := []struct {
		field string
		v     int
	}{
		{"inbox.quota", c.Inbox.Quota},
		{"handshake.burst", c.Handshake.Burst},
		{"handshake.max_conns", c.Handshake.MaxConns},
		{"router.max_paths", c.Router.MaxPaths},
	}
	for _, n := range ints {
		if n.v <= 0 {
			return &FieldError{Field: n.field, Err: errors.New("must be positive")}
		}
	}
	if c.Router.MaxPaths > MaxPaths {
		return &FieldError{Field: "router.max_paths", Err: fmt.Errorf("at most %d", MaxPaths)}
	}
	if _, err := router.ParseScheduler(c.Router.Scheduler); err != nil {
		return &FieldError{Field: "router.scheduler", Err: fmt.Errorf("want auto, best, redundant or spread, got %q", c.Router.Scheduler)}
	}
	if _, err := router.ParseFEC(c.Router.FEC); err != nil {
		return &FieldError{Field: "router.fec", Err: fmt.Errorf("want auto, off or always, got %q", c.Router.FEC)}
	}
	if c.Handshake.Rate <= 0 {
		return &FieldError{Field: "handshake.rate", Err: errors.New("must be positive")}
	}
	if c.Ops.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Ops.Listen); err != nil {
			return &FieldError{Field: "ops.listen", Err: fmt.Errorf("want host:port or empty, got %q", c.Ops.Listen)}
		}
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		return &FieldError{Field: "log.level", Err: fmt.Errorf("want debug, info, warn or error, got %q", c.Log.Level)}
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return &FieldError{Field: "log.format", Err: fmt.Errorf("want text or json, got %q", c.Log.Format)}
	}
	return nil
}
