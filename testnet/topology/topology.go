// Package topology brings a testnet up and down: one network namespace per
// host, each with a TUN device addressed from 198.18.0.0/24 (and
// 2001:2::/64 with IPv6, the IPv6 benchmarking prefix), and one
// testnet/router forwarding between them inside this process. It is the
// Go API behind `commucat testnet` and the scenario runner:
//
//	n, err := topology.Up(ctx, topology.Spec{
//		Hosts: []topology.Host{
//			{Name: "client", Zone: router.Inside, Up: link.Params{Delay: 20 * time.Millisecond}},
//			{Name: "gateway"},
//		},
//		Seed: 1,
//	})
//	defer n.Close()
//	cmd := exec.Command("commucat", "gateway", ...)
//	err = n.Start("gateway", cmd)            // runs in the gateway's namespace
//	c, err := n.Dial(ctx, "client", "tcp", n.Addr("gateway").String()+":443")
//
// # Names and addresses
//
// Host i (from 0, in Spec order) gets 198.18.0.(i+1)/24 and, with
// Spec.IPv6, 2001:2::(i+1)/64, on an interface "tun0" with a default
// route through it, in a namespace named Spec.Prefix + host name. The
// prefix defaults to "cc-<pid>-<k>-" (k counts the nets this process
// made), so concurrent runs and test processes never share names. Close
// removes exactly the namespaces Up created; a process that dies without
// Close leaves them, and they can be removed by name (`ip netns del`).
//
// # Lifetime
//
// Up returns with the router running on its own goroutines. Close kills
// the processes Start started (SIGKILL, then waits for them), stops the
// router, closes the TUN devices and removes the namespaces. Up's ctx only
// bounds the set-up.
//
// Net's methods are safe for concurrent use. Everything here needs root
// and /dev/net/tun (netns.Check).
package topology

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"

	"github.com/commucat/commucat/testnet/link"
	"github.com/commucat/commucat/testnet/netns"
	"github.com/commucat/commucat/testnet/router"
)

// Address plan.
var (
	// Prefix4 holds the hosts' IPv4 addresses, inside the benchmarking
	// range 198.18.0.0/15 (RFC 2544).
	Prefix4 = netip.MustParsePrefix("198.18.0.0/24")
	// Prefix6 holds the hosts' IPv6 addresses, inside the benchmarking
	// range 2001:2::/48 (RFC 5180).
	Prefix6 = netip.MustParsePrefix("2001:2::/64")
)

// MaxHosts is the most hosts one Net has (one /24).
const MaxHosts = 253

// Sentinel errors.
var (
	// ErrSpec is wrapped by errors for an invalid Spec.
	ErrSpec = errors.New("topology: bad spec")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("topology: closed")
)

// Host describes one host.
type Host struct {
	// Name is unique in the Spec: letters, digits, '-' and '_'.
	Name string
	// Zone is the host's side of the censor's border.
	Zone router.Zone
	// Up is the link from the host to the router, Down the link back.
	Up, Down link.Params
}

// Spec describes a testnet.
type Spec struct {
	// Hosts are the hosts, 1 to MaxHosts.
	Hosts []Host
	// Prefix starts every namespace name. If empty, "cc-<pid>-<k>-".
	Prefix string
	// Seed seeds the links (see router.Config.Seed). If zero, a random
	// seed is drawn; Net.Seed reports the one in use.
	Seed uint64
	// MTU is the MTU of every host's TUN. If zero, netns.DefaultMTU
	// (1500).
	MTU int
	// IPv6 gives every host an IPv6 address too.
	IPv6 bool
	// Censor inspects packets crossing between zones; if nil, none does.
	Censor router.Censor
	// CensorOff starts with the censor switched off.
	CensorOff bool
	// Timeline are events applied after Up returns, at their times.
	Timeline []router.Event
	// MaxInFlight bounds the router's delayed bytes; see
	// router.Config.MaxInFlight.
	MaxInFlight int64
	// Logger receives the router's log; if nil, nothing is logged.
	Logger *slog.Logger
}

// netCount numbers the nets of this process, for default prefixes.
var netCount atomic.Uint64

// Net is a running testnet.
type Net struct {
	spec   Spec
	hosts  map[string]*netHost
	order  []*netHost
	router *router.Router
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	procs  map[*exec.Cmd]struct{}
	closed bool
}

// netHost is one host of a Net.
type netHost struct {
	name  string
	ns    *netns.Namespace
	tun   *netns.TUN
	addr4 netip.Addr
	addr6 netip.Addr
}

// validName reports whether a host name is usable in a namespace name.
func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Validate checks the spec without touching the system. Errors wrap
// ErrSpec, or link.ErrParams for a link's parameters.
func (s Spec) Validate() error {
	if len(s.Hosts) == 0 || len(s.Hosts) > MaxHosts {
		return fmt.Errorf("topology: %d hosts, want 1 to %d: %w", len(s.Hosts), MaxHosts, ErrSpec)
	}
	seen := make(map[string]bool)
	for i, h := range s.Hosts {
		if !validName(h.Name) {
			return fmt.Errorf("topology: hosts[%d]: name %q: %w", i, h.Name, ErrSpec)
		}
		if seen[h.Name] {
			return fmt.Errorf("topology: hosts[%d]: name %q twice: %w", i, h.Name, ErrSpec)
		}
		seen[h.Name] = true
		if err := h.Up.Validate(); err != nil {
			return fmt.Errorf("topology: hosts[%d] (%s).up: %w", i, h.Name, err)
		}
		if err := h.Down.Validate(); err != nil {
			return fmt.Errorf("topology: hosts[%d] (%s).down: %w", i, h.Name, err)
		}
	}
	if s.Prefix != "" && !netns.ValidName(s.Prefix) {
		return fmt.Errorf("topology: prefix %q: %w", s.Prefix, ErrSpec)
	}
	if s.MTU != 0 && (s.MTU < 1280 || s.MTU > 65535) {
		return fmt.Errorf("topology: mtu %d, want 1280 to 65535: %w", s.MTU, ErrSpec)
	}
	return nil
}

// DefaultPrefix returns the prefix Up would give the next Net of this
// process: "cc-<pid>-<k>-".
func DefaultPrefix() string {
	return fmt.Sprintf("cc-%d-%d-", os.Getpid(), netCount.Load()+1)
}

// NamespaceNames returns the namespace names Up gives spec's hosts with
// the given prefix, in host order.
func NamespaceNames(prefix string, spec Spec) []string {
	names := make([]string, len(spec.Hosts))
	for i, h := range spec.Hosts {
		names[i] = prefix + h.Name
	}
	return names
}

// Up creates the namespaces and TUN devices of spec and starts the
// router. On error it removes whatever it created.
func Up(ctx context.Context, spec Spec) (n *Net, err error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if err := netns.Check(); err != nil {
		return nil, fmt.Errorf("topology: %w", err)
	}
	k := netCount.Add(1)
	if spec.Prefix == "" {
		spec.Prefix = fmt.Sprintf("cc-%d-%d-", os.Getpid(), k)
	}
	if spec.Seed == 0 {
		var b [8]byte
		rand.Read(b[:])
		spec.Seed = binary.LittleEndian.Uint64(b[:]) | 1
	}
	n = &Net{spec: spec, hosts: make(map[string]*netHost), procs: make(map[*exec.Cmd]struct{}), done: make(chan struct{})}
	defer func() {
		if err != nil {
			n.teardown()
		}
	}()
	rhosts := make([]router.Host, 0, len(spec.Hosts))
	for i, hs := range spec.Hosts {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("topology: up: %w", err)
		}
		h := &netHost{name: hs.Name, addr4: nth(Prefix4, i+1)}
		addrs := []netip.Prefix{netip.PrefixFrom(h.addr4, Prefix4.Bits())}
		raddrs := []netip.Addr{h.addr4}
		if spec.IPv6 {
			h.addr6 = nth(Prefix6, i+1)
			addrs = append(addrs, netip.PrefixFrom(h.addr6, Prefix6.Bits()))
			raddrs = append(raddrs, h.addr6)
		}
		ns, err := netns.Create(spec.Prefix + hs.Name)
		if err != nil {
			return nil, fmt.Errorf("topology: host %s: %w", hs.Name, err)
		}
		h.ns = ns
		n.hosts[hs.Name] = h
		n.order = append(n.order, h)
		tun, err := ns.AddTUN(netns.TUNConfig{MTU: spec.MTU, Addrs: addrs})
		if err != nil {
			return nil, fmt.Errorf("topology: host %s: %w", hs.Name, err)
		}
		h.tun = tun
		rhosts = append(rhosts, router.Host{Name: hs.Name, Addrs: raddrs, Zone: hs.Zone, Device: tun, Up: hs.Up, Down: hs.Down})
	}
	r, err := router.New(router.Config{
		Hosts:       rhosts,
		Censor:      spec.Censor,
		CensorOff:   spec.CensorOff,
		Seed:        spec.Seed,
		Timeline:    spec.Timeline,
		MaxInFlight: spec.MaxInFlight,
		Logger:      spec.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("topology: %w", err)
	}
	n.router = r
	if spec.Logger != nil {
		spec.Logger.Info("testnet up", "component", "testnet/topology", "prefix", spec.Prefix, "hosts", len(spec.Hosts), "seed", spec.Seed)
	}
	rctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	go func() {
		defer close(n.done)
		r.Run(rctx)
	}()
	return n, nil
}

// nth returns the i-th address of p.
func nth(p netip.Prefix, i int) netip.Addr {
	b := p.Addr().AsSlice()
	for j := len(b) - 1; j >= 0 && i > 0; j-- {
		v := int(b[j]) + i
		b[j] = byte(v)
		i = v >> 8
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Seed returns the seed of the links' generators.
func (n *Net) Seed() uint64 { return n.spec.Seed }

// Prefix returns the namespace name prefix.
func (n *Net) Prefix() string { return n.spec.Prefix }

// Router returns the router, for link changes, blackholes, the censor
// switch and counters.
func (n *Net) Router() *router.Router { return n.router }

// Stats returns the router's counters.
func (n *Net) Stats() router.Stats { return n.router.Stats() }

// Hosts returns the host names in Spec order.
func (n *Net) Hosts() []string {
	out := make([]string, len(n.order))
	for i, h := range n.order {
		out[i] = h.name
	}
	return out
}

// Addr returns host's IPv4 address, or the zero Addr for an unknown host.
func (n *Net) Addr(host string) netip.Addr {
	if h, ok := n.hosts[host]; ok {
		return h.addr4
	}
	return netip.Addr{}
}

// Addr6 returns host's IPv6 address, or the zero Addr without Spec.IPv6.
func (n *Net) Addr6(host string) netip.Addr {
	if h, ok := n.hosts[host]; ok {
		return h.addr6
	}
	return netip.Addr{}
}

// Namespace returns host's namespace, or nil for an unknown host.
func (n *Net) Namespace(host string) *netns.Namespace {
	if h, ok := n.hosts[host]; ok {
		return h.ns
	}
	return nil
}

// host returns the named host or an error.
func (n *Net) host(name string) (*netHost, error) {
	h, ok := n.hosts[name]
	if !ok {
		return nil, fmt.Errorf("topology: host %q: %w", name, router.ErrHost)
	}
	return h, nil
}

// Start starts cmd in host's namespace and tracks it: Close kills it if it
// still runs. The caller still calls cmd.Wait (Close does it for the
// processes it kills).
func (n *Net) Start(host string, cmd *exec.Cmd) error {
	h, err := n.host(host)
	if err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return ErrClosed
	}
	if err := h.ns.Start(cmd); err != nil {
		return fmt.Errorf("topology: start on %s: %w", host, err)
	}
	n.procs[cmd] = struct{}{}
	return nil
}

// Forget stops tracking cmd, once the caller has waited for it.
func (n *Net) Forget(cmd *exec.Cmd) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.procs, cmd)
}

// Exec runs argv in host's namespace to completion and returns its
// combined output. ctx kills the process.
func (n *Net) Exec(ctx context.Context, host string, argv ...string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("topology: exec: no command: %w", ErrSpec)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out syncBuffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := n.Start(host, cmd); err != nil {
		return nil, err
	}
	err := cmd.Wait()
	n.Forget(cmd)
	if err != nil {
		return out.Bytes(), fmt.Errorf("topology: exec %s on %s: %w", argv[0], host, err)
	}
	return out.Bytes(), nil
}

// Dial connects from host to addr (an IP literal and a port).
func (n *Net) Dial(ctx context.Context, host, network, addr string) (net.Conn, error) {
	h, err := n.host(host)
	if err != nil {
		return nil, err
	}
	return h.ns.Dial(ctx, network, addr)
}

// Listen listens on host at addr (an IP literal or empty host, and a
// port).
func (n *Net) Listen(ctx context.Context, host, network, addr string) (net.Listener, error) {
	h, err := n.host(host)
	if err != nil {
		return nil, err
	}
	return h.ns.Listen(ctx, network, addr)
}

// ListenPacket opens a packet socket on host at addr (an IP literal or
// empty host, and a port).
func (n *Net) ListenPacket(ctx context.Context, host, network, addr string) (net.PacketConn, error) {
	h, err := n.host(host)
	if err != nil {
		return nil, err
	}
	return h.ns.ListenPacket(ctx, network, addr)
}

// Close kills the started processes, stops the router, and removes the
// TUN devices and namespaces. It is idempotent and returns the first
// error.
func (n *Net) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	procs := n.procs
	n.procs = nil
	n.mu.Unlock()
	for cmd := range procs {
		if cmd.Process != nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}
	return n.teardown()
}

// teardown stops the router and removes devices and namespaces.
func (n *Net) teardown() error {
	var errs []error
	if n.cancel != nil {
		n.cancel()
		<-n.done
	}
	for _, h := range n.order {
		if h.tun != nil {
			// Already closed by the router when it ran; closing again
			// returns an error only then.
			if err := h.tun.Close(); err != nil && n.router == nil {
				errs = append(errs, err)
			}
		}
		if err := h.ns.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a
// process's stdout and stderr copiers.
type syncBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.buf...)
}
