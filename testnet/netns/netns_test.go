package netns

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// requireRoot skips loudly without root and /dev/net/tun, and fails
// instead under COMMUCAT_REQUIRE_ALL=1.
func requireRoot(t *testing.T) {
	t.Helper()
	if err := Check(); err != nil {
		msg := fmt.Sprintf("SKIPPING NAMESPACE TEST: needs root and /dev/net/tun: %v", err)
		if os.Getenv("COMMUCAT_REQUIRE_ALL") == "1" {
			t.Fatal(msg + " (COMMUCAT_REQUIRE_ALL=1)")
		}
		t.Skip(msg)
	}
}

// create makes a namespace with a name unique to this test and removes it
// in t.Cleanup.
func create(t *testing.T, suffix string) *Namespace {
	t.Helper()
	name := fmt.Sprintf("cc-%d-nstest-%s", os.Getpid(), suffix)
	ns, err := Create(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ns.Close(); err != nil {
			t.Error(err)
		}
		if Exists(name) {
			t.Errorf("namespace %s left", name)
		}
	})
	return ns
}

func TestValidName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"cc-1-client", true},
		{"a.b_c", true},
		{"", false},
		{".hidden", false},
		{"a/b", false},
		{"a b", false},
		{string(make([]byte, 201)), false},
	} {
		if got := ValidName(tc.name); got != tc.ok {
			t.Errorf("ValidName(%q) = %v, want %v", tc.name, got, tc.ok)
		}
	}
	if _, err := Create("../etc"); !errors.Is(err, ErrName) {
		t.Errorf("Create(../etc) = %v, want ErrName", err)
	}
}

func TestLiteral(t *testing.T) {
	for _, tc := range []struct {
		addr   string
		listen bool
		ok     bool
	}{
		{"198.18.0.1:80", false, true},
		{"[2001:2::1]:80", false, true},
		{":80", true, true},
		{":80", false, false},
		{"example.com:80", false, false},
		{"198.18.0.1", false, false},
	} {
		if err := literal(tc.addr, tc.listen); (err == nil) != tc.ok {
			t.Errorf("literal(%q, %v) = %v, want ok %v", tc.addr, tc.listen, err, tc.ok)
		}
	}
}

// nsInode returns the inode of the calling thread's network namespace.
func nsInode(t *testing.T) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestNamespace(t *testing.T) {
	requireRoot(t)
	ns := create(t, "a")
	if _, err := Create(ns.Name()); !errors.Is(err, ErrExists) {
		t.Errorf("second Create = %v, want ErrExists", err)
	}
	names, err := List()
	if err != nil || !slices.Contains(names, ns.Name()) {
		t.Errorf("List() = %v, %v; want it to hold %s", names, err, ns.Name())
	}
	var st unix.Stat_t
	if err := unix.Stat(ns.Path(), &st); err != nil {
		t.Fatal(err)
	}
	var inside uint64
	if err := ns.Do(func() error { inside = nsInode(t); return nil }); err != nil {
		t.Fatal(err)
	}
	if inside != st.Ino {
		t.Errorf("Do ran in namespace %d, want %d", inside, st.Ino)
	}
	if outside := nsInode(t); outside == st.Ino {
		t.Error("the test's thread is in the new namespace")
	}
	wantErr := errors.New("from fn")
	if err := ns.Do(func() error { return wantErr }); !errors.Is(err, wantErr) {
		t.Errorf("Do error %v", err)
	}
	if _, err := ns.AddTUN(TUNConfig{MTU: 20}); err == nil {
		t.Error("AddTUN with mtu 20 succeeded")
	}
	tun, err := ns.AddTUN(TUNConfig{MTU: 9000, Addrs: []netip.Prefix{netip.MustParsePrefix("198.18.0.1/24")}})
	if err != nil {
		t.Fatal(err)
	}
	if tun.Name() != "tun0" || tun.MTU() != 9000 {
		t.Errorf("tun %s mtu %d", tun.Name(), tun.MTU())
	}
	if err := tun.Close(); err != nil {
		t.Error(err)
	}
	if _, err := ns.Dial(t.Context(), "tcp", "example.com:80"); err == nil {
		t.Error("Dial by name succeeded")
	}
	if err := ns.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ns.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := ns.Do(func() error { return nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("Do after Close = %v, want ErrClosed", err)
	}
}

// TestTUNLoop sends a UDP datagram out of a namespace's TUN and writes it
// back in with the addresses swapped, as the router does.
func TestTUNLoop(t *testing.T) {
	requireRoot(t)
	ns := create(t, "loop")
	tun, err := ns.AddTUN(TUNConfig{Addrs: []netip.Prefix{netip.MustParsePrefix("198.18.0.1/24")}})
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	pc, err := ns.ListenPacket(t.Context(), "udp4", "198.18.0.1:9000")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c, err := ns.Dial(t.Context(), "udp4", "198.18.0.2:9001")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	tun.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := tun.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	p := buf[:n]
	if p[0]>>4 != 4 || p[9] != 17 || string(p[n-5:]) != "hello" {
		t.Fatalf("read from tun: % x", p)
	}
	// Rewrite 198.18.0.1:port -> 198.18.0.2:9001 into
	// 198.18.0.2:9001 -> 198.18.0.1:9000; the address swap keeps the
	// checksums, the port change is patched in the UDP checksum by
	// zeroing it (allowed for IPv4).
	copy(p[12:16], []byte{198, 18, 0, 2})
	copy(p[16:20], []byte{198, 18, 0, 1})
	p[20], p[21] = 0x23, 0x29 // 9001
	p[22], p[23] = 0x23, 0x28 // 9000
	p[26], p[27] = 0, 0
	if _, err := tun.Write(p); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	k, from, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if string(buf[:k]) != "hello" || from.String() != "198.18.0.2:9001" {
		t.Errorf("got %q from %s", buf[:k], from)
	}
}
