package main

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os/exec"
	"slices"
	"strings"
	"sync"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/plugins/pt"
)

// ptName is the transport name under which the gateway and clients run Tor
// pluggable-transport v1 managed proxies (obfs4proxy/lyrebird, snowflake,
// webtunnel, ...). The endpoint's "method" parameter names the PT method;
// on the gateway, "binary" names the executable, "ext_orport" ("true",
// the default, or "false") whether the PT forwards through the Extended
// ORPort, and every other parameter is passed to the PT as a server
// option.
const ptName = "pt"

// ptServerFactory returns the factory of the gateway side of a PT
// endpoint; the PT's log lines and its exits and relaunches go to log
// (nil: nowhere).
func ptServerFactory(log *slog.Logger) transport.ServerFactory {
	return func(p transport.Params, dir string) (transport.Transport, transport.Params, error) {
		return ptServer(p, dir, log)
	}
}

func ptServer(p transport.Params, dir string, log *slog.Logger) (transport.Transport, transport.Params, error) {
	binary, method := p["binary"], p["method"]
	if binary == "" || method == "" {
		return nil, nil, fmt.Errorf("pt: parameters binary and method are required: %w", transport.ErrBadParams)
	}
	// The Extended ORPort tells the gateway each client's address, so
	// that its per-source limits (the handshake rate above all) count
	// clients rather than the PT, and keeps other local processes off
	// the PT's loopback port. A PT without it can be run with "false".
	ext := true
	switch p["ext_orport"] {
	case "", "true":
	case "false":
		ext = false
	default:
		return nil, nil, fmt.Errorf("pt: ext_orport: want true or false, got %q: %w", p["ext_orport"], transport.ErrBadParams)
	}
	opts := maps.Clone(p)
	delete(opts, "binary")
	delete(opts, "method")
	delete(opts, "ext_orport")
	t, pub, err := pt.Config{Binary: binary, Method: method, ExtORPort: ext, Logger: log}.ServerFactory()(opts, dir)
	if err != nil {
		return nil, nil, err
	}
	pub = maps.Clone(pub)
	if pub == nil {
		pub = transport.Params{}
	}
	pub["method"] = method
	return t, pub, nil
}

// ptClients runs one PT process per method and parameters for the life of a
// client command, whatever the number of dials; Close stops them.
type ptClients struct {
	binaries map[string]string // method -> binary, from --pt
	log      *slog.Logger      // for the PTs' log lines; nil: nowhere
	mu       sync.Mutex
	running  map[string]*pt.Client
}

func newPTClients(flags []string, log *slog.Logger) (*ptClients, error) {
	c := &ptClients{binaries: map[string]string{}, log: log, running: map[string]*pt.Client{}}
	for _, f := range flags {
		method, bin, ok := strings.Cut(f, "=")
		if !ok || method == "" || bin == "" {
			return nil, fmt.Errorf("--pt %q: want METHOD=BINARY, such as obfs4=/usr/bin/lyrebird", f)
		}
		c.binaries[method] = bin
	}
	return c, nil
}

// binary finds the PT executable for method: --pt, else for obfs4 the usual
// names on PATH.
func (c *ptClients) binary(method string) (string, error) {
	if b, ok := c.binaries[method]; ok {
		return b, nil
	}
	if method == "obfs4" {
		for _, name := range []string{"lyrebird", "obfs4proxy"} {
			if p, err := exec.LookPath(name); err == nil {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("pt: no binary for method %q: pass --pt %s=/path/to/binary: %w", method, method, transport.ErrBadParams)
}

// Factory is the client-side transport factory for "pt" endpoints.
func (c *ptClients) Factory(p transport.Params) (transport.Transport, error) {
	method := p["method"]
	if method == "" {
		return nil, fmt.Errorf("pt: parameter method is required: %w", transport.ErrBadParams)
	}
	bin, err := c.binary(method)
	if err != nil {
		return nil, err
	}
	args := maps.Clone(p)
	delete(args, "method")
	keys := slices.Sorted(maps.Keys(p))
	var id strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&id, "%q=%q;", k, p[k]) // quoted: a value may hold ';' or '='
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl, ok := c.running[id.String()]; ok {
		return sharedPT{cl}, nil
	}
	cl, err := pt.NewClient(pt.Config{Binary: bin, Method: method, Logger: c.log}, args)
	if err != nil {
		return nil, err
	}
	c.running[id.String()] = cl
	return sharedPT{cl}, nil
}

// sharedPT is a PT client as Factory hands it out: one of several uses of
// a process that ptClients owns and stops, so it has no Close for a
// session that stops (core/client closes the transports it was given) to
// end the PT under the next one.
type sharedPT struct{ c *pt.Client }

var (
	_ transport.Transport = sharedPT{}
	_ slog.LogValuer      = sharedPT{}
)

func (s sharedPT) Name() string { return s.c.Name() }

func (s sharedPT) Dial(ctx context.Context, addr string) (net.Conn, error) {
	return s.c.Dial(ctx, addr)
}

func (s sharedPT) Listen(ctx context.Context, addr string) (transport.Listener, error) {
	return s.c.Listen(ctx, addr)
}

// LogValue keeps the PT's parameters out of logs, as pt.Client does.
func (s sharedPT) LogValue() slog.Value { return s.c.LogValue() }

// Close stops every PT process started.
func (c *ptClients) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, cl := range c.running {
		cl.Close()
		delete(c.running, k)
	}
}
