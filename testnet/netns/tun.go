package netns

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultMTU is the MTU of a TUN whose config leaves it zero: Ethernet's.
const DefaultMTU = 1500

// TUNConfig describes a TUN device to create inside a namespace.
type TUNConfig struct {
	// Name is the interface name inside the namespace. If empty, "tun0".
	Name string
	// MTU is the interface MTU, 68 to 65535. If zero, DefaultMTU.
	MTU int
	// Addrs are assigned to the interface. IPv6 addresses skip duplicate
	// address detection, so they are usable at once. Without an IPv6
	// address, IPv6 is disabled on the interface; with one, router
	// solicitations are, but the kernel still sends MLD reports.
	Addrs []netip.Prefix
	// NoDefaultRoute leaves out the default route through the interface
	// that each address family of Addrs otherwise gets.
	NoDefaultRoute bool
}

// TUN is a TUN device (IFF_TUN | IFF_NO_PI) living in a namespace, whose
// descriptor this process holds: each Read returns one IP packet the
// namespace's kernel sent out of the interface, each Write hands one IP
// packet to that kernel as if it had arrived on it. Read and Write may be
// called concurrently; Close unblocks a pending Read. Closing the
// descriptor deletes the interface.
type TUN struct {
	f    *os.File
	name string
	mtu  int
}

// AddTUN creates a TUN device inside the namespace as cfg says, brings it
// up, assigns its addresses and adds the default routes.
func (n *Namespace) AddTUN(cfg TUNConfig) (*TUN, error) {
	if cfg.Name == "" {
		cfg.Name = "tun0"
	}
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	if cfg.MTU < 68 || cfg.MTU > 65535 {
		return nil, fmt.Errorf("netns: %s: tun mtu %d out of range 68..65535", n.name, cfg.MTU)
	}
	var t *TUN
	err := n.Do(func() error {
		var err error
		t, err = openTUN(cfg.Name)
		if err != nil {
			return err
		}
		if err := configure(cfg); err != nil {
			t.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("netns: %s: %w", n.name, err)
	}
	t.mtu = cfg.MTU
	return t, nil
}

// openTUN creates the device in the calling thread's namespace.
func openTUN(name string) (*TUN, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun name %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tunsetiff %s: %w", name, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun %s: nonblock: %w", name, err)
	}
	// A non-blocking descriptor joins the runtime poller, so Close
	// unblocks Read.
	return &TUN{f: os.NewFile(uintptr(fd), "tun:"+name), name: name}, nil
}

// configure sets up the calling thread's namespace: loopback and the TUN
// up, MTU, addresses, default routes.
func configure(cfg TUNConfig) error {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	lnk, err := h.LinkByName(cfg.Name)
	if err != nil {
		return fmt.Errorf("link %s: %w", cfg.Name, err)
	}
	if err := h.LinkSetMTU(lnk, cfg.MTU); err != nil {
		return fmt.Errorf("link %s: mtu %d: %w", cfg.Name, cfg.MTU, err)
	}
	// Queue length: the default 500 packets drops bursts the router
	// writes faster than the kernel takes them.
	if err := h.LinkSetTxQLen(lnk, 1000); err != nil {
		return fmt.Errorf("link %s: txqueuelen: %w", cfg.Name, err)
	}
	v4, v6 := false, false
	for _, p := range cfg.Addrs {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
			v6 = true
		} else {
			v4 = true
		}
		if err := h.AddrAdd(lnk, a); err != nil {
			return fmt.Errorf("link %s: addr %s: %w", cfg.Name, p, err)
		}
	}
	// Keep the kernel's own IPv6 chatter (router solicitations, and
	// everything else when the host has no IPv6 address) off the wire:
	// the router would count it as noroute and a censor would see it.
	if v6 {
		sysctl6(cfg.Name, "router_solicitations", "0")
		sysctl6(cfg.Name, "accept_ra", "0")
	} else {
		sysctl6(cfg.Name, "disable_ipv6", "1")
	}
	if err := h.LinkSetUp(lnk); err != nil {
		return fmt.Errorf("link %s: up: %w", cfg.Name, err)
	}
	if cfg.NoDefaultRoute {
		return nil
	}
	for _, fam := range []struct {
		on  bool
		dst *net.IPNet
	}{
		{v4, &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}},
		{v6, &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}},
	} {
		if !fam.on {
			continue
		}
		r := &netlink.Route{LinkIndex: lnk.Attrs().Index, Dst: fam.dst, Scope: netlink.SCOPE_LINK}
		if err := h.RouteAdd(r); err != nil {
			return fmt.Errorf("link %s: default route %s: %w", cfg.Name, fam.dst, err)
		}
	}
	return nil
}

// sysctl6 sets net.ipv6.conf.<dev>.<key> in the calling thread's
// namespace, ignoring a kernel without IPv6.
func sysctl6(dev, key, val string) {
	os.WriteFile("/proc/sys/net/ipv6/conf/"+dev+"/"+key, []byte(val), 0)
}

// setLoopbackUp brings lo up inside the namespace.
func (n *Namespace) setLoopbackUp() error {
	err := n.Do(func() error {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return fmt.Errorf("netlink: %w", err)
		}
		defer h.Close()
		lo, err := h.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("link lo: %w", err)
		}
		if err := h.LinkSetUp(lo); err != nil {
			return fmt.Errorf("link lo: up: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("netns: %s: %w", n.name, err)
	}
	return nil
}

// Name returns the interface name inside the namespace.
func (t *TUN) Name() string { return t.name }

// MTU returns the interface MTU.
func (t *TUN) MTU() int { return t.mtu }

// Read reads one IP packet into b. A packet longer than b is truncated.
func (t *TUN) Read(b []byte) (int, error) { return t.f.Read(b) }

// Write sends the IP packet b into the namespace.
func (t *TUN) Write(b []byte) (int, error) { return t.f.Write(b) }

// SetReadDeadline sets the deadline of pending and future Reads, as
// os.File.SetReadDeadline does.
func (t *TUN) SetReadDeadline(d time.Time) error { return t.f.SetReadDeadline(d) }

// Close closes the descriptor, which deletes the interface.
func (t *TUN) Close() error { return t.f.Close() }
