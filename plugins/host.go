// Package plugins is the core's side of CommuCat's transport plugins: it
// finds plugin binaries (commucat-transport-<name>) in the configured
// folders, checks their SHA-256 against the pins, runs each as a child
// process with hashicorp/go-plugin (gRPC, AutoMTLS, a minimal
// environment, Pdeathsig), restarts it with backoff when it dies, and
// registers its transport with a core/transport.Registry so that the core
// uses it exactly as a built-in one.
//
// Control calls go over gRPC (plugins/proto); bytes never do. Every
// connection crosses the process boundary on its own AF_UNIX socket pair:
// the host creates the pair, keeps one end as the connection the core
// reads and writes (a real socket, so deadlines are the kernel's), and
// passes the other end to the plugin with SCM_RIGHTS over a control socket
// the plugin inherited as file descriptor 3. The plugin splices it to its
// transport's connection or, for a plain TCP connection, hands the TCP
// socket itself over and leaves the data path. For a plugin whose
// connections carry datagrams, each flow also has a SOCK_SEQPACKET pair,
// one datagram per record, and the host's connection implements
// transport.DatagramConn. Errors cross as codes that
// map back to the core/transport sentinels. docs/PLUGINS.md specifies the
// protocol.
//
// Faults stay inside the plugin that has them: a plugin that dies makes
// its own connections fail with an error (never a hang) and is restarted
// with backoff; a call it does not answer in time fails with
// transport.ErrTimeout; a plugin that breaks the protocol, on gRPC or on
// the control socket, is killed and restarted.
package plugins

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/plugins/proto"
)

// Defaults for the zero fields of HostConfig.
const (
	DefaultStartTimeout   = 10 * time.Second
	DefaultCallTimeout    = 10 * time.Second
	DefaultDialTimeout    = 30 * time.Second
	DefaultHealthInterval = 10 * time.Second
	DefaultBackoff        = 500 * time.Millisecond
	DefaultBackoffMax     = 30 * time.Second
	DefaultDrainTimeout   = 5 * time.Second
	DefaultRingFlows      = 64
)

// HostConfig configures a Host. The zero value of each field is its
// documented default.
type HostConfig struct {
	// Dirs are the folders searched for plugin binaries, in order: a name
	// found in an earlier folder shadows the same name in later ones. If
	// nil, DefaultDirs(StateDir).
	Dirs []string
	// StateDir is the gateway's or client's state directory, for
	// DefaultDirs.
	StateDir string
	// Pins maps plugin names to the hex SHA-256 of their binaries. A
	// plugin whose binary does not match its pin is refused.
	Pins map[string]string
	// RequirePinned refuses every plugin without a pin.
	RequirePinned bool
	// Only, if set, names the plugins Discover starts: a process runs
	// only for a transport that is used. Scan still lists every binary.
	Only []string
	// Env is added to the plugins' environment ("KEY=value"), which is
	// otherwise empty but for what the plugin protocol sets.
	Env []string
	// PluginEnv is added to the environment of the plugin each key
	// names, after Env (a variable set in both takes this value), for
	// settings of one plugin such as GOMAXPROCS or GOGC.
	PluginEnv map[string][]string
	// StartTimeout bounds a plugin's start and handshake. If zero,
	// DefaultStartTimeout.
	StartTimeout time.Duration
	// CallTimeout bounds every control call but Dial and Accept
	// (Describe, Configure, Listen, Close, Health, Stats). If zero,
	// DefaultCallTimeout.
	CallTimeout time.Duration
	// DialTimeout bounds a Dial, within the caller's context. If zero,
	// DefaultDialTimeout.
	DialTimeout time.Duration
	// HealthInterval is how often a running plugin's health is checked.
	// If zero, DefaultHealthInterval.
	HealthInterval time.Duration
	// Backoff is the wait before the first restart of a plugin that
	// died; it doubles with each further failure up to BackoffMax. If
	// zero, DefaultBackoff and DefaultBackoffMax.
	Backoff, BackoffMax time.Duration
	// DrainTimeout bounds how long Close waits for open connections to
	// close before it stops the plugins. If zero, DefaultDrainTimeout.
	DrainTimeout time.Duration
	// RingFlows is how many connections at once carry their bytes
	// through shared-memory rings (plugin protocol version 3), one copy
	// across the process boundary instead of two; the others go through
	// their socket. Each ring connection maps 2 × (4 KiB + 1 MiB), which
	// it touches as its bytes pass. If zero, DefaultRingFlows; if negative,
	// none.
	RingFlows int
}

// Validate checks c.
func (c *HostConfig) Validate() error {
	for name, pin := range c.Pins {
		if !ValidName(name) {
			return fmt.Errorf("plugins: pins: %q is not a plugin name", name)
		}
		if !isHexSHA256(pin) {
			return fmt.Errorf("plugins: pins.%s: %q is not a hex SHA-256", name, pin)
		}
	}
	if err := checkEnv("env", c.Env); err != nil {
		return err
	}
	for name, env := range c.PluginEnv {
		if !ValidName(name) {
			// Not quoted: a misplaced KEY=value may be a secret.
			return errors.New("plugins: env: a key is not a plugin name")
		}
		if err := checkEnv("env."+name, env); err != nil {
			return err
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"start_timeout", c.StartTimeout}, {"call_timeout", c.CallTimeout}, {"dial_timeout", c.DialTimeout},
		{"health_interval", c.HealthInterval}, {"backoff", c.Backoff}, {"backoff_max", c.BackoffMax},
		{"drain_timeout", c.DrainTimeout},
	} {
		if d.v < 0 {
			return fmt.Errorf("plugins: %s: negative duration %v", d.name, d.v)
		}
	}
	return nil
}

// checkEnv checks entries of an environment for plugins: each is
// KEY=value without a NUL byte, and none sets a variable of the plugin
// protocol (section 1 of docs/PLUGINS.md): COMMUCAT_PLUGIN_* or
// go-plugin's PLUGIN_*. Its errors never hold a value, which may be a
// secret.
func checkEnv(field string, env []string) error {
	for i, kv := range env {
		k, _, ok := strings.Cut(kv, "=")
		switch {
		case !ok || k == "" || strings.ContainsRune(kv, 0):
			return fmt.Errorf("plugins: %s[%d] is not KEY=value", field, i)
		case strings.HasPrefix(k, "COMMUCAT_PLUGIN_") || strings.HasPrefix(k, "PLUGIN_"):
			return fmt.Errorf("plugins: %s[%d] sets %q, a variable of the plugin protocol", field, i, k)
		}
	}
	return nil
}

func orDefault[T time.Duration | int](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// withDefaults returns c with every zero field set to its default.
func (c HostConfig) withDefaults() HostConfig {
	if c.Dirs == nil {
		c.Dirs = DefaultDirs(c.StateDir)
	}
	c.StartTimeout = orDefault(c.StartTimeout, DefaultStartTimeout)
	c.CallTimeout = orDefault(c.CallTimeout, DefaultCallTimeout)
	c.DialTimeout = orDefault(c.DialTimeout, DefaultDialTimeout)
	c.HealthInterval = orDefault(c.HealthInterval, DefaultHealthInterval)
	c.Backoff = orDefault(c.Backoff, DefaultBackoff)
	c.BackoffMax = max(orDefault(c.BackoffMax, DefaultBackoffMax), c.Backoff)
	c.DrainTimeout = orDefault(c.DrainTimeout, DefaultDrainTimeout)
	c.RingFlows = orDefault(c.RingFlows, DefaultRingFlows)
	return c
}

// DefaultDirs returns the default plugin folders: "plugins" in stateDir
// (if not empty), then "plugins" beside the running executable.
func DefaultDirs(stateDir string) []string {
	var dirs []string
	if stateDir != "" {
		dirs = append(dirs, filepath.Join(stateDir, "plugins"))
	}
	if exe, err := os.Executable(); err == nil {
		if exe, err := filepath.EvalSymlinks(exe); err == nil {
			dirs = append(dirs, filepath.Join(filepath.Dir(exe), "plugins"))
		}
	}
	return dirs
}

// Errors of the host.
var (
	// ErrNotPinned is the reason a plugin without a pin is refused under
	// RequirePinned.
	ErrNotPinned = errors.New("plugins: plugin is not pinned")
	// ErrPinMismatch is the reason a plugin whose binary does not match its
	// pin is refused.
	ErrPinMismatch = errors.New("plugins: binary does not match its pin")
	// ErrDuplicate is returned by Register for a name already registered.
	ErrDuplicate = errors.New("plugins: transport name already registered")
	// ErrNotFound is returned for a plugin name that Discover did not find.
	ErrNotFound = errors.New("plugins: no such plugin")
	// ErrChanged is the reason an unpinned plugin whose binary changed
	// after discovery is not restarted: the host runs only what it found.
	ErrChanged = errors.New("plugins: binary changed")
	// ErrShadowed is the Info.Err of a binary not used because one of the
	// same name comes first in the folders.
	ErrShadowed = errors.New("plugins: shadowed")
)

// VersionError is the reason a plugin speaking another plugin protocol
// version is refused.
type VersionError struct {
	Name    string
	Plugin  int // the version the plugin speaks
	Host    int // the newest version this host speaks
	HostMin int // the oldest version this host speaks; 0 if only Host
}

func (e *VersionError) Error() string {
	host := fmt.Sprintf("version %d", e.Host)
	if e.HostMin != 0 && e.HostMin != e.Host {
		host = fmt.Sprintf("versions %d to %d", e.HostMin, e.Host)
	}
	return fmt.Sprintf("plugins: %s speaks plugin protocol version %d, this host speaks %s; rebuild the plugin against a matching SDK",
		e.Name, e.Plugin, host)
}

// Capabilities are what a plugin's transport can do.
type Capabilities struct {
	Stream   bool // reliable ordered byte streams
	Datagram bool // unreliable datagrams too (protocol version 2 and later)
	Client   bool // has a client side (registered as a Factory)
	Server   bool // has a gateway side (registered as a ServerFactory)
}

// String lists the capabilities, such as "stream,client,server".
func (c Capabilities) String() string {
	var s []string
	for _, f := range []struct {
		on   bool
		name string
	}{{c.Stream, "stream"}, {c.Datagram, "datagram"}, {c.Client, "client"}, {c.Server, "server"}} {
		if f.on {
			s = append(s, f.name)
		}
	}
	return strings.Join(s, ",")
}

// Param documents one parameter a plugin's transport accepts.
type Param struct {
	Name     string
	Doc      string
	Client   bool
	Server   bool
	Required bool
}

// Info describes one plugin binary that Discover found.
type Info struct {
	Name         string // the transport's name, from the file name
	Version      string // the plugin's own version, from Describe
	Capabilities Capabilities
	Params       []Param
	Path         string
	SHA256       string // hex SHA-256 of the binary
	Pinned       bool   // the binary matches a pin
	// Err is why the plugin cannot be used (refused, failed to start),
	// or nil.
	Err error
}

// Host runs transport plugins. It is safe for concurrent use. Close stops
// every plugin.
type Host struct {
	cfg     HostConfig
	log     *slog.Logger
	sockDir string // go-plugin's sockets, removed by Close

	// life is the supervisors' lifetime, cancelled by Close.
	life   context.Context
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	plugins map[string]*plugin
	order   []string // discovery order, for shadowing
	closed  bool
	flows   int           // open connections
	rings   int           // connections with rings
	drained chan struct{} // closed when flows reaches 0 after Close began

	closeDone chan struct{} // closed when the first Close has returned
	closeErr  error         // what the first Close returned
}

// NewHost returns a Host. It starts nothing: Discover finds and starts
// the plugins.
func NewHost(cfg HostConfig, log *slog.Logger) (*Host, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sockDir, err := os.MkdirTemp("", "commucat-plugins-")
	if err != nil {
		return nil, fmt.Errorf("plugins: socket directory: %w", err)
	}
	h := &Host{
		cfg:       cfg.withDefaults(),
		log:       log.With("component", "plugins"),
		sockDir:   sockDir,
		plugins:   make(map[string]*plugin),
		closeDone: make(chan struct{}),
	}
	h.life, h.cancel = context.WithCancelCause(context.Background())
	return h, nil
}

// Discover searches the folders for plugin binaries, starts each one that
// is new, allowed (pins) and wanted (HostConfig.Only), asks it to describe
// itself, and returns what it found, sorted by name. Plugins found by an earlier call keep running
// and are listed again. A folder that does not exist is skipped; other
// errors reading a folder are returned with the rest of the result.
func (h *Host) Discover() ([]Info, error) {
	found, err := scan(h.cfg.Dirs)
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, fmt.Errorf("plugins: discover: %w", transport.ErrClosed)
	}
	var fresh []*plugin
	var shadowed []Info
	for _, f := range found {
		if len(h.cfg.Only) > 0 && !slices.Contains(h.cfg.Only, f.Name) {
			continue
		}
		if p, ok := h.plugins[f.Name]; ok {
			if p.info.Path != f.Path {
				f.Err = fmt.Errorf("%w by %s", ErrShadowed, p.info.Path)
				shadowed = append(shadowed, f)
			}
			continue
		}
		if f.Err == nil {
			f.Pinned, f.Err = h.checkPin(f)
		}
		p := newPlugin(h, f)
		h.plugins[f.Name] = p
		h.order = append(h.order, f.Name)
		if f.Err == nil {
			fresh = append(fresh, p)
		}
	}
	for _, p := range fresh {
		ctx, cancel := context.WithCancelCause(h.life)
		p.stop = cancel
		h.wg.Add(1)
		go p.run(ctx)
	}
	ps := make([]*plugin, 0, len(h.plugins))
	for _, name := range h.order {
		ps = append(ps, h.plugins[name])
	}
	h.mu.Unlock()

	infos := shadowed
	for _, p := range ps {
		infos = append(infos, p.describe())
	}
	sort.SliceStable(infos, func(i, j int) bool { return infos[i].Name < infos[j].Name })
	return infos, err
}

// Scan lists the plugin binaries in the folders with their hashes and
// pin state, without starting them, sorted by name. A binary shadowed by
// an earlier one of the same name is listed with an Err saying so.
func (h *Host) Scan() ([]Info, error) {
	found, err := scan(h.cfg.Dirs)
	seen := make(map[string]string)
	for i, f := range found {
		if first, ok := seen[f.Name]; ok {
			found[i].Err = fmt.Errorf("%w by %s", ErrShadowed, first)
			continue
		}
		seen[f.Name] = f.Path
		if f.Err == nil {
			found[i].Pinned, found[i].Err = h.checkPin(f)
		}
	}
	sort.SliceStable(found, func(i, j int) bool { return found[i].Name < found[j].Name })
	return found, err
}

// checkPin reports whether f matches its pin, and the error that refuses
// it, if any.
func (h *Host) checkPin(f Info) (bool, error) {
	pin, ok := h.cfg.Pins[f.Name]
	switch {
	case ok && strings.EqualFold(pin, f.SHA256):
		return true, nil
	case ok:
		return false, fmt.Errorf("%w: pinned %s, found %s", ErrPinMismatch, strings.ToLower(pin), f.SHA256)
	case h.cfg.RequirePinned:
		return false, fmt.Errorf("%w (require_pinned is set); pin it with: %s", ErrNotPinned, h.pinHint(f.Name))
	}
	return false, nil
}

// pinHint is the command that pins the plugin name in this host's state
// directory.
func (h *Host) pinHint(name string) string {
	if h.cfg.StateDir == "" {
		return "commucat plugin pin " + name
	}
	return fmt.Sprintf("commucat plugin pin %s --state %s", name, h.cfg.StateDir)
}

// Register registers the transport of every usable plugin with r under
// the plugin's name: a client Factory if the plugin has a client side, a
// ServerFactory if it has a gateway side, both proxying to the plugin
// process. A name r already has (for a client) is skipped, its plugin
// process stopped, and reported in the returned error (wrapping
// ErrDuplicate); the others are registered.
func (h *Host) Register(r *transport.Registry) error {
	h.mu.Lock()
	ps := make([]*plugin, 0, len(h.order))
	for _, name := range h.order {
		ps = append(ps, h.plugins[name])
	}
	h.mu.Unlock()
	taken := r.Names()
	var errs []error
	for _, p := range ps {
		info := p.describe()
		if info.Err != nil {
			continue
		}
		if slices.Contains(taken, info.Name) {
			err := fmt.Errorf("%w: %s (%s not used)", ErrDuplicate, info.Name, info.Path)
			p.setFatal(err) // refuse it from now on, not once the process is gone
			p.stop(err)     // no process for a plugin nobody can use
			errs = append(errs, err)
			continue
		}
		if info.Capabilities.Client {
			r.Register(info.Name, p.clientFactory)
		}
		if info.Capabilities.Server {
			r.RegisterServer(info.Name, p.serverFactory)
		}
	}
	return errors.Join(errs...)
}

// Stats are a plugin's counters: the plugin's own and the host's.
type Stats struct {
	Restarts      int    // times the host restarted the plugin
	Instances     uint64 // transport instances configured
	Listeners     uint64 // listeners open
	FlowsOpen     uint64 // connections open, as the plugin counts them
	FlowsTotal    uint64
	Dials         uint64
	DialErrors    uint64
	Accepts       uint64
	BytesToHost   uint64 // of finished connections
	BytesFromHost uint64 // of finished connections
	// Datagrams passed to and from the host (protocol version 2).
	DatagramsToHost, DatagramsFromHost uint64
}

// Stats asks the named plugin for its counters. The counters other than
// Restarts are the current process's: they start again from zero when the
// plugin restarts. If the plugin does not answer, Stats returns its error
// with only Restarts set.
func (h *Host) Stats(ctx context.Context, name string) (Stats, error) {
	p, err := h.plugin(name)
	if err != nil {
		return Stats{}, err
	}
	return p.stats(ctx)
}

// Health checks that the named plugin runs and answers.
func (h *Host) Health(ctx context.Context, name string) error {
	p, err := h.plugin(name)
	if err != nil {
		return err
	}
	return p.health(ctx)
}

// Names returns the names of the plugins the host found, sorted; those it
// refused (Discover's Info.Err) too, whose Stats and Health fail.
func (h *Host) Names() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Sorted(maps.Keys(h.plugins))
}

// RingFlows returns how many connections carry their bytes through
// shared-memory rings now, and how many may at once
// (HostConfig.RingFlows; 0 when rings are off).
func (h *Host) RingFlows() (inUse, limit int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.rings, max(0, h.cfg.RingFlows)
}

func (h *Host) plugin(name string) (*plugin, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p, ok := h.plugins[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return p, nil
}

// addFlow counts an open connection; it fails once Close has begun.
func (h *Host) addFlow() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return fmt.Errorf("plugins: host: %w", transport.ErrClosed)
	}
	h.flows++
	return nil
}

// takeRing reserves a ring connection, if RingFlows allows another.
func (h *Host) takeRing() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.rings >= h.cfg.RingFlows {
		return false
	}
	h.rings++
	return true
}

// ringDone gives back what takeRing reserved.
func (h *Host) ringDone() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rings--
}

// flowDone counts a closed connection.
func (h *Host) flowDone() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.flows--
	if h.flows == 0 && h.drained != nil {
		close(h.drained)
		h.drained = nil
	}
}

func (h *Host) isClosed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closed
}

// Close stops the host: new dials and accepts fail, open connections get
// up to DrainTimeout to close, then every plugin is stopped (asked to exit,
// then killed). It returns once the plugin processes have exited. It is
// idempotent: a second Close waits for the first and returns what it did.
func (h *Host) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		<-h.closeDone
		return h.closeErr
	}
	h.closed = true
	defer close(h.closeDone)
	var drained chan struct{}
	if h.flows > 0 {
		drained = make(chan struct{})
		h.drained = drained
	}
	h.mu.Unlock()
	if drained != nil {
		t := time.NewTimer(h.cfg.DrainTimeout)
		select {
		case <-drained:
		case <-t.C:
			h.log.Warn("connections still open; stopping the plugins anyway")
		}
		t.Stop()
	}
	h.cancel(fmt.Errorf("plugins: host closed: %w", transport.ErrClosed))
	h.wg.Wait()
	if err := os.RemoveAll(h.sockDir); err != nil {
		h.closeErr = fmt.Errorf("plugins: close: %w", err)
	}
	return h.closeErr
}

var nameChars = func() (ok [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		ok[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		ok[c] = true
	}
	ok['-'] = true
	return ok
}()

// ValidName reports whether s is a plugin name: 1 to 63 lowercase
// letters, digits and '-', not starting with '-'.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !nameChars[s[i]] {
			return false
		}
	}
	return true
}

func isHexSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i] | 0x20
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// nameOf returns the transport name in a plugin binary's file name.
func nameOf(file string) (string, bool) {
	name, ok := strings.CutPrefix(file, proto.BinaryPrefix)
	return name, ok && ValidName(name)
}
