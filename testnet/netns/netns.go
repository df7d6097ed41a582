// Package netns creates the network namespaces that are the testnet's
// hosts, gives each a TUN device, and runs code and programs inside them.
// It needs Linux, root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and /dev/net/tun;
// Check reports what is missing.
//
// A Namespace is named like the ones `ip netns add` makes: a file
// /run/netns/NAME bind-mounted on the namespace, so `ip netns exec NAME`
// and `ip netns list` see it. Create fails if the name is taken, and
// Namespace.Close removes exactly that name: nothing here deletes
// namespaces by pattern.
//
// Code runs inside a namespace on a goroutine locked to an OS thread that
// has been moved into the namespace with setns(2) and moved back before the
// thread is unlocked (Namespace.Do). If moving back fails, the thread stays
// locked and the runtime ends it with the goroutine, so no other goroutine
// ever runs in the wrong namespace. Sockets keep the namespace they were
// created in, so Dial, Listen and ListenPacket return ordinary connections
// usable from any goroutine. A child process inherits the namespace of the
// thread that forks it, so Start starts an exec.Cmd from inside Do: the
// program runs in the namespace without `ip netns exec` (and without its
// /etc/netns bind mounts).
//
// Everything here is safe for concurrent use.
package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// Dir is where named namespaces are bind-mounted, as iproute2 does.
const Dir = "/run/netns"

// Sentinel errors.
var (
	// ErrExists is returned by Create for a name already in Dir.
	ErrExists = errors.New("netns: namespace exists")
	// ErrUnsupported is returned by Check when this process cannot create
	// namespaces or TUN devices.
	ErrUnsupported = errors.New("netns: unsupported here")
	// ErrClosed is returned for a Namespace after Close.
	ErrClosed = errors.New("netns: namespace closed")
	// ErrName is returned for a name that is not a valid namespace name.
	ErrName = errors.New("netns: bad name")
)

// Check reports why this process cannot run the testnet: not root, no
// /dev/net/tun, no namespace support. It returns nil when it can. The
// error wraps ErrUnsupported.
func Check() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("netns: not running as root: %w", ErrUnsupported)
	}
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("netns: open /dev/net/tun: %v: %w", err, ErrUnsupported)
	}
	f.Close()
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		return fmt.Errorf("netns: no network namespaces: %v: %w", err, ErrUnsupported)
	}
	return nil
}

// Namespace is a named network namespace this process created. It holds
// an open handle on the namespace until Close.
type Namespace struct {
	name string

	mu     sync.RWMutex
	fd     int // handle on the namespace; -1 after Close
	closed bool
}

// ValidName reports whether name can name a namespace: 1 to 200 bytes of
// letters, digits, '-', '_' and '.', not starting with '.'.
func ValidName(name string) bool {
	if name == "" || len(name) > 200 || name[0] == '.' {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// Exists reports whether a namespace called name is in Dir.
func Exists(name string) bool {
	if !ValidName(name) {
		return false
	}
	_, err := os.Stat(filepath.Join(Dir, name))
	return err == nil
}

// List returns the names in Dir, as `ip netns list` does.
func List() ([]string, error) {
	ents, err := os.ReadDir(Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("netns: list: %w", err)
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names, nil
}

// Create makes a new network namespace called name, bind-mounted at
// Dir/name, with its loopback interface up. It returns an error wrapping
// ErrExists if the name is taken.
func Create(name string) (*Namespace, error) {
	if !ValidName(name) {
		return nil, fmt.Errorf("netns: create %q: %w", name, ErrName)
	}
	if err := os.MkdirAll(Dir, 0o755); err != nil {
		return nil, fmt.Errorf("netns: create %s: %w", name, err)
	}
	path := filepath.Join(Dir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("netns: create %s: %w", name, ErrExists)
	}
	if err != nil {
		return nil, fmt.Errorf("netns: create %s: %w", name, err)
	}
	f.Close()
	if err := onNewThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind mount: %w", err)
		}
		return nil
	}); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("netns: create %s: %w", name, err)
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		remove(path)
		return nil, fmt.Errorf("netns: create %s: open: %w", name, err)
	}
	ns := &Namespace{name: name, fd: fd}
	if err := ns.setLoopbackUp(); err != nil {
		ns.Close()
		return nil, err
	}
	return ns, nil
}

// remove unmounts and deletes a namespace file.
func remove(path string) error {
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// onNewThread runs fn on a fresh goroutine locked to its OS thread, which
// it may move to another namespace: the thread is never unlocked, so the
// runtime ends it when fn returns.
func onNewThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread dies with the goroutine.
		errc <- fn()
	}()
	return <-errc
}

// Name returns the namespace's name.
func (n *Namespace) Name() string { return n.name }

// Path returns the namespace's file, Dir/Name.
func (n *Namespace) Path() string { return filepath.Join(Dir, n.name) }

// Close removes the namespace's name and closes the handle. The kernel
// frees the namespace, and the interfaces in it, once no process, socket
// or TUN descriptor uses it any more. Close is idempotent.
func (n *Namespace) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	unix.Close(n.fd)
	n.fd = -1
	if err := remove(n.Path()); err != nil {
		return fmt.Errorf("netns: close %s: %w", n.name, err)
	}
	return nil
}

// Do runs fn on an OS thread inside the namespace and returns its error.
// fn must not start goroutines that create sockets or processes: they run
// on other threads, outside the namespace.
func (n *Namespace) Do(fn func() error) error {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.closed {
		return fmt.Errorf("netns: %s: %w", n.name, ErrClosed)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: %s: open own namespace: %w", n.name, err)
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(n.fd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: %s: setns: %w", n.name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: it dies with this goroutine.
			errc <- fmt.Errorf("netns: %s: setns back: %w", n.name, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Start starts cmd inside the namespace (cmd.Start on a thread in it). The
// caller owns the process: it must Wait for it, and kill it when done.
func (n *Namespace) Start(cmd *exec.Cmd) error {
	return n.Do(cmd.Start)
}

// literal checks that addr is host:port with an IP literal host (or an
// empty host for Listen): resolving a name could run on another thread.
func literal(addr string, listen bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("netns: address %q: %w", addr, err)
	}
	if host == "" && listen {
		return nil
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return fmt.Errorf("netns: address %q: host must be an IP address", addr)
	}
	return nil
}

// Dial connects to addr (an IP literal and a port) from inside the
// namespace, as net.Dialer.DialContext does.
func (n *Namespace) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if err := literal(addr, false); err != nil {
		return nil, err
	}
	var c net.Conn
	err := n.Do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netns: %s: %w", n.name, err)
	}
	return c, nil
}

// Listen listens on addr (an IP literal or empty host, and a port) inside
// the namespace.
func (n *Namespace) Listen(ctx context.Context, network, addr string) (net.Listener, error) {
	if err := literal(addr, true); err != nil {
		return nil, err
	}
	var l net.Listener
	err := n.Do(func() error {
		var lc net.ListenConfig
		var err error
		l, err = lc.Listen(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netns: %s: %w", n.name, err)
	}
	return l, nil
}

// ListenPacket opens a packet socket on addr (an IP literal or empty host,
// and a port) inside the namespace.
func (n *Namespace) ListenPacket(ctx context.Context, network, addr string) (net.PacketConn, error) {
	if err := literal(addr, true); err != nil {
		return nil, err
	}
	var pc net.PacketConn
	err := n.Do(func() error {
		var lc net.ListenConfig
		var err error
		pc, err = lc.ListenPacket(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netns: %s: %w", n.name, err)
	}
	return pc, nil
}
