package topology

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/commucat/commucat/testnet/link"
	"github.com/commucat/commucat/testnet/netns"
	"github.com/commucat/commucat/testnet/router"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// requireNetns skips loudly when this process cannot create namespaces
// and TUN devices, and fails instead under COMMUCAT_REQUIRE_ALL=1.
func requireNetns(t testing.TB) {
	t.Helper()
	if err := netns.Check(); err != nil {
		msg := fmt.Sprintf("SKIPPING TESTNET INTEGRATION TEST: needs root and /dev/net/tun: %v", err)
		if os.Getenv("COMMUCAT_REQUIRE_ALL") == "1" {
			t.Fatal(msg + " (COMMUCAT_REQUIRE_ALL=1)")
		}
		t.Skip(msg)
	}
}

// up brings spec up and closes it in t.Cleanup, checking that every
// namespace it made is gone afterwards.
func up(t testing.TB, spec Spec) *Net {
	t.Helper()
	requireNetns(t)
	n, err := Up(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	names := NamespaceNames(n.Prefix(), spec)
	for _, name := range names {
		if !netns.Exists(name) {
			t.Errorf("namespace %s missing after Up", name)
		}
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		for _, name := range names {
			if netns.Exists(name) {
				t.Errorf("namespace %s left after Close", name)
			}
		}
	})
	return n
}

func twoHosts(client, server link.Params) Spec {
	return Spec{
		Seed: 1,
		Hosts: []Host{
			{Name: "client", Zone: router.Inside, Up: client},
			{Name: "server", Up: server},
		},
	}
}

// udpEcho serves UDP echo on host at port until the test ends.
func udpEcho(t *testing.T, n *Net, host, network string, addr netip.Addr, port int) netip.AddrPort {
	t.Helper()
	ap := netip.AddrPortFrom(addr, uint16(port))
	pc, err := n.ListenPacket(t.Context(), host, network, ap.String())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:k], from)
		}
	})
	t.Cleanup(func() { pc.Close(); wg.Wait() })
	return ap
}

// ping sends one UDP datagram with seq and waits up to wait for its echo;
// it returns the round trip, or false.
func ping(t *testing.T, c net.Conn, seq uint32, wait time.Duration) (time.Duration, bool) {
	t.Helper()
	msg := binary.BigEndian.AppendUint32(nil, seq)
	start := time.Now()
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	c.SetReadDeadline(start.Add(wait))
	for {
		k, err := c.Read(buf)
		if err != nil {
			return 0, false
		}
		if k == 4 && binary.BigEndian.Uint32(buf) == seq {
			return time.Since(start), true
		}
	}
}

// pingRetry pings up to three times over clean links, where nothing
// should be lost: it logs a retry loudly, with the router's counters, and
// fails after the third loss.
func pingRetry(t *testing.T, n *Net, c net.Conn, seq uint32) time.Duration {
	t.Helper()
	for try := range 3 {
		if rtt, ok := ping(t, c, seq, 2*time.Second); ok {
			return rtt
		}
		t.Logf("LOST PING %d (try %d) over a clean link; router stats %+v", seq, try+1, n.Stats())
	}
	t.Fatalf("ping %d unanswered three times", seq)
	return 0
}

// tcpEcho serves TCP echo on host until the test ends.
func tcpEcho(t *testing.T, n *Net, host, network string, ap netip.AddrPort) {
	t.Helper()
	l, err := n.Listen(t.Context(), host, network, ap.String())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				io.Copy(c, c)
			})
		}
	})
	t.Cleanup(func() { l.Close(); wg.Wait() })
}

func TestUDPAndTCP(t *testing.T) {
	spec := twoHosts(link.Params{}, link.Params{})
	spec.IPv6 = true
	n := up(t, spec)
	for _, fam := range []struct {
		name       string
		udp, tcp   string
		srv, cli   netip.Addr
		wantFamily int
	}{
		{"ipv4", "udp4", "tcp4", n.Addr("server"), n.Addr("client"), 4},
		{"ipv6", "udp6", "tcp6", n.Addr6("server"), n.Addr6("client"), 6},
	} {
		t.Run(fam.name, func(t *testing.T) {
			ap := udpEcho(t, n, "server", fam.udp, fam.srv, 7000)
			c, err := n.Dial(t.Context(), "client", fam.udp, ap.String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for i := range 10 {
				pingRetry(t, n, c, uint32(i))
			}
			if got := c.LocalAddr().(*net.UDPAddr).AddrPort().Addr(); got != fam.cli {
				t.Errorf("client address %s, want %s", got, fam.cli)
			}

			tap := netip.AddrPortFrom(fam.srv, 7001)
			tcpEcho(t, n, "server", fam.tcp, tap)
			tc, err := n.Dial(t.Context(), "client", fam.tcp, tap.String())
			if err != nil {
				t.Fatal(err)
			}
			defer tc.Close()
			want := bytes.Repeat([]byte("commucat"), 128<<10) // 1 MiB
			errc := make(chan error, 1)
			go func() {
				_, err := tc.Write(want)
				errc <- err
			}()
			got := make([]byte, len(want))
			tc.SetReadDeadline(time.Now().Add(30 * time.Second))
			if _, err := io.ReadFull(tc, got); err != nil {
				t.Fatal(err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Error("tcp echo differs")
			}
		})
	}
	st := n.Stats()
	hc, _ := st.Host("client")
	// The only drops allowed are the kernel's own IPv6 chatter (router
	// solicitations, MLD reports to multicast groups no host has).
	if hc.Up.Passed == 0 || hc.Up.Dropped() != hc.Up.Drops[link.ReasonNoRoute] {
		t.Errorf("client up counters %+v", hc.Up)
	}
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestDelay(t *testing.T) {
	const cUp, sUp = 20 * time.Millisecond, 10 * time.Millisecond
	n := up(t, twoHosts(link.Params{Delay: cUp}, link.Params{Delay: sUp}))
	ap := udpEcho(t, n, "server", "udp4", n.Addr("server"), 7000)
	c, err := n.Dial(t.Context(), "client", "udp4", ap.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 5 {
		rtt := pingRetry(t, n, c, uint32(i))
		if rtt < cUp+sUp {
			t.Errorf("ping %d: rtt %s below the configured %s", i, rtt, cUp+sUp)
		}
	}
	tap := netip.AddrPortFrom(n.Addr("server"), 7001)
	tcpEcho(t, n, "server", "tcp4", tap)
	start := time.Now()
	tc, err := n.Dial(t.Context(), "client", "tcp4", tap.String())
	if err != nil {
		t.Fatal(err)
	}
	tc.Close()
	if d := time.Since(start); d < cUp+sUp {
		t.Errorf("tcp connect took %s, below one configured rtt %s", d, cUp+sUp)
	}
}

// TestLoss counts losses from the router's counters: every datagram the
// client sent is either lost on a link or received.
func TestLoss(t *testing.T) {
	n := up(t, twoHosts(link.Params{Loss: 0.3}, link.Params{}))
	srv := netip.AddrPortFrom(n.Addr("server"), 7000)
	pc, err := n.ListenPacket(t.Context(), "server", "udp4", srv.String())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c, err := n.Dial(t.Context(), "client", "udp4", srv.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const sent = 300
	for i := range sent {
		if _, err := c.Write(binary.BigEndian.AppendUint32(nil, uint32(i))); err != nil {
			t.Fatal(err)
		}
	}
	var hc router.HostStats
	waitFor(t, "the router to read every datagram", 10*time.Second, func() bool {
		hc, _ = n.Stats().Host("client")
		return hc.Up.Offered >= sent
	})
	lost := hc.Up.Drops[link.ReasonLoss]
	if hc.Up.Offered != sent || lost == 0 || lost+hc.Up.Passed != sent {
		t.Fatalf("client up counters %+v after %d datagrams", hc.Up, sent)
	}
	// Read exactly what the router passed; nothing more arrives.
	buf := make([]byte, 64)
	for i := range hc.Up.Passed {
		pc.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := pc.ReadFrom(buf); err != nil {
			t.Fatalf("datagram %d of %d passed: %v", i, hc.Up.Passed, err)
		}
	}
	t.Logf("seed %d: %d of %d lost", n.Seed(), lost, sent)
}

func TestBlackholeTimeline(t *testing.T) {
	spec := twoHosts(link.Params{}, link.Params{})
	const at = time.Second
	spec.Timeline = []router.Event{{At: at, Blackhole: &router.Blackhole{Host: "server", Proto: 17, Port: 7000}}}
	n := up(t, spec)
	ap := udpEcho(t, n, "server", "udp4", n.Addr("server"), 7000)
	c, err := n.Dial(t.Context(), "client", "udp4", ap.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Before the timeline blackholes the port, every ping is answered: a
	// slow echo is waited for, not taken for a loss. Once the router
	// holds the blackhole, none is: a short wait only shortens the test.
	blackholed := func() bool { return len(n.Router().Blackholes()) > 0 }
	var answered, lost []int
	deadline := time.Now().Add(at + 20*time.Second)
	for i := 0; len(lost) < 3; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("answered %v, lost %v: the blackhole never began", answered, lost)
		}
		on := blackholed()
		wait := 2 * time.Second
		if on {
			wait = 200 * time.Millisecond
		}
		_, ok := ping(t, c, uint32(i), wait)
		switch {
		case ok && on:
			t.Fatalf("ping %d answered while the port was blackholed", i)
		case ok && len(lost) > 0:
			t.Fatalf("ping %d answered after ping %d was blackholed", i, lost[0])
		case ok:
			answered = append(answered, i)
		case !blackholed():
			t.Fatalf("ping %d lost before the blackhole began", i)
		default:
			lost = append(lost, i)
		}
	}
	if len(answered) == 0 {
		t.Fatalf("answered %v, lost %v: want answers before the blackhole", answered, lost)
	}
	hs, _ := n.Stats().Host("server")
	if hs.Down.Drops[link.ReasonBlackhole] == 0 {
		t.Errorf("server down drops %v, want blackhole", hs.Down.DropMap())
	}
}

func TestExecAndCleanup(t *testing.T) {
	requireNetns(t)
	spec := twoHosts(link.Params{}, link.Params{})
	n, err := Up(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	names := NamespaceNames(n.Prefix(), spec)
	closed := false
	t.Cleanup(func() {
		if !closed {
			n.Close()
		}
	})
	// /proc/net is per namespace: the child sees the host's interfaces.
	out, err := n.Exec(t.Context(), "client", "cat", "/proc/net/dev")
	if err != nil {
		t.Fatalf("exec: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "tun0") {
		t.Errorf("client's /proc/net/dev lacks tun0:\n%s", out)
	}
	sleeper := exec.Command("sleep", "60")
	if err := n.Start("server", sleeper); err != nil {
		t.Fatal(err)
	}
	pid := sleeper.Process.Pid
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	if err := n.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	for _, name := range names {
		if netns.Exists(name) {
			t.Errorf("namespace %s left after Close", name)
		}
	}
	if sleeper.ProcessState == nil {
		t.Error("started process not waited for")
	} else if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process %d still exists: kill 0 = %v", pid, err)
	}
	if err := n.Start("server", exec.Command("true")); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close: %v", err)
	}
}

func TestSpecValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec Spec
		is   error
	}{
		{"no hosts", Spec{}, ErrSpec},
		{"bad name", Spec{Hosts: []Host{{Name: "a b"}}}, ErrSpec},
		{"duplicate", Spec{Hosts: []Host{{Name: "a"}, {Name: "a"}}}, ErrSpec},
		{"bad link", Spec{Hosts: []Host{{Name: "a", Down: link.Params{Loss: -1}}}}, link.ErrParams},
		{"bad mtu", Spec{Hosts: []Host{{Name: "a"}}, MTU: 100}, ErrSpec},
		{"bad prefix", Spec{Hosts: []Host{{Name: "a"}}, Prefix: "/x"}, ErrSpec},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.spec.Validate(); !errors.Is(err, tc.is) {
				t.Errorf("Validate() = %v, want %v", err, tc.is)
			}
			if _, err := Up(context.Background(), tc.spec); !errors.Is(err, tc.is) {
				t.Errorf("Up() = %v, want %v", err, tc.is)
			}
		})
	}
	if got := nth(Prefix4, 2); got != netip.MustParseAddr("198.18.0.2") {
		t.Errorf("nth v4 %s", got)
	}
	if got := nth(Prefix6, 300); got != netip.MustParseAddr("2001:2::12c") {
		t.Errorf("nth v6 %s", got)
	}
}

// BenchmarkTCPGoodput measures TCP goodput from client to server through
// the router over clean links at several TUN MTUs, and over a delayed
// link, where every packet goes through the scheduler.
func BenchmarkTCPGoodput(b *testing.B) {
	for _, bc := range []struct {
		mtu   int
		delay time.Duration
	}{{1500, 0}, {9000, 0}, {65535, 0}, {1500, 5 * time.Millisecond}} {
		name := fmt.Sprintf("mtu%d", bc.mtu)
		if bc.delay > 0 {
			name += "-delay" + bc.delay.String()
		}
		b.Run(name, func(b *testing.B) {
			spec := twoHosts(link.Params{Delay: bc.delay}, link.Params{})
			spec.MTU = bc.mtu
			n := up(b, spec)
			ap := netip.AddrPortFrom(n.Addr("server"), 7002)
			l, err := n.Listen(b.Context(), "server", "tcp4", ap.String())
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			done := make(chan int64, 1)
			go func() {
				c, err := l.Accept()
				if err != nil {
					done <- 0
					return
				}
				k, _ := io.Copy(io.Discard, c)
				c.Close()
				done <- k
			}()
			c, err := n.Dial(b.Context(), "client", "tcp4", ap.String())
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 1<<20)
			b.SetBytes(int64(len(buf)))
			start := time.Now()
			for b.Loop() {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			c.Close()
			got := <-done
			el := time.Since(start)
			b.ReportMetric(float64(got)*8/el.Seconds()/1e9, "Gbit/s")
			if hc, _ := n.Stats().Host("client"); hc.Up.Passed > 0 {
				b.ReportMetric(float64(hc.Up.PassedBytes)/float64(hc.Up.Passed), "B/pkt")
			}
		})
	}
}
