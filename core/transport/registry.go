package transport

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
)

// Params are a transport's parameters as strings, as carried in an invite
// line and in the gateway config. Each transport validates its own.
type Params map[string]string

// Factory builds the client side of a Transport from the parameters an
// invite carries. The caller owns the result and releases it with Close;
// a factory that shares one instance among callers hands out handles
// whose release does not end it.
type Factory func(p Params) (Transport, error)

// ServerFactory builds the gateway side of a Transport from the parameters
// in the gateway's config and a private state directory (created 0700 by the
// caller, one per transport), where the transport keeps what must survive a
// restart (certificates, keys). It returns the parameters clients need,
// which the gateway publishes in its invites.
type ServerFactory func(p Params, dir string) (t Transport, public Params, err error)

// Registry maps transport names to factories. The zero value is empty and
// ready to use; a Registry is safe for concurrent use.
type Registry struct {
	mu sync.RWMutex
	m  map[string]Factory
	s  map[string]ServerFactory
}

// RegisterServer adds a server factory under name. It panics if name is
// empty or already registered as a server.
func (r *Registry) RegisterServer(name string, f ServerFactory) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if name == "" || f == nil {
		panic("transport: RegisterServer with empty name or nil factory")
	}
	if r.s == nil {
		r.s = make(map[string]ServerFactory)
	}
	if _, dup := r.s[name]; dup {
		panic("transport: duplicate server registration of " + name)
	}
	r.s[name] = f
}

// NewServer builds the gateway side of the transport registered under name.
func (r *Registry) NewServer(name string, p Params, dir string) (Transport, Params, error) {
	r.mu.RLock()
	f, ok := r.s[name]
	r.mu.RUnlock()
	if !ok {
		return nil, nil, fmt.Errorf("%w: %q", ErrUnknown, name)
	}
	t, pub, err := f(p, dir)
	if err != nil {
		return nil, nil, fmt.Errorf("transport %s: %w", name, err)
	}
	if err := CheckPublic(pub); err != nil {
		Close(t) //nolint:errcheck // refused anyway
		return nil, nil, fmt.Errorf("transport %s publishes what no invite should carry: %w", name, err)
	}
	return t, pub, nil
}

// Bounds of the parameters a server publishes for its invites.
const (
	MaxPublicParams = 16   // parameters per transport
	MaxPublicKey    = 64   // bytes of a key
	MaxPublicValue  = 1024 // bytes of a value
)

// CheckPublic checks parameters a server published for its clients: at
// most MaxPublicParams of them, keys of 1 to MaxPublicKey bytes and values
// of at most MaxPublicValue, all printable ASCII (0x20 to 0x7e). They go
// into invite lines that people copy, print and read out; an invite
// escapes what it carries, so this is about what a person can handle, not
// about the invite's syntax. (The whole invite line has a length limit
// of its own, which `commucat invite` checks.)
func CheckPublic(p Params) error {
	if len(p) > MaxPublicParams {
		return fmt.Errorf("transport: %d public parameters, more than %d", len(p), MaxPublicParams)
	}
	for k, v := range p {
		switch {
		case k == "" || len(k) > MaxPublicKey:
			return fmt.Errorf("transport: a public parameter's name of %d bytes, want 1 to %d", len(k), MaxPublicKey)
		case len(v) > MaxPublicValue:
			return fmt.Errorf("transport: public parameter %q has %d bytes, more than %d", k, len(v), MaxPublicValue)
		}
		if i := strings.IndexFunc(k+v, NotPrintable); i >= 0 {
			return fmt.Errorf("transport: public parameter %q has byte %#x, not printable ASCII", k, (k + v)[i])
		}
	}
	return nil
}

// Close closes t if it is an io.Closer, as transports that hold sockets,
// connections or processes are; the others hold nothing to release. The
// caller of a Factory or ServerFactory owns what it returns, and closes
// it this way when done.
func Close(t Transport) error {
	if c, ok := t.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// NotPrintable reports whether r is outside printable ASCII.
func NotPrintable(r rune) bool { return r < 0x20 || r > 0x7e }

// Register adds a factory under name. It panics if name is empty or already
// registered: that is a programmer error at start-up.
func (r *Registry) Register(name string, f Factory) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if name == "" || f == nil {
		panic("transport: Register with empty name or nil factory")
	}
	if r.m == nil {
		r.m = make(map[string]Factory)
	}
	if _, dup := r.m[name]; dup {
		panic("transport: duplicate registration of " + name)
	}
	r.m[name] = f
}

// New builds the transport registered under name.
func (r *Registry) New(name string, p Params) (Transport, error) {
	r.mu.RLock()
	f, ok := r.m[name]
	r.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknown, name)
	}
	t, err := f(p)
	if err != nil {
		return nil, fmt.Errorf("transport %s: %w", name, err)
	}
	return t, nil
}

// Names lists the registered names in sorted order.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.m))
	for n := range r.m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
