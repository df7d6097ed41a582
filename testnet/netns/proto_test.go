package netns

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"
)

func TestProtoThroughput(t *testing.T) {
	mtu, _ := strconv.Atoi(os.Getenv("PROTO_MTU"))
	if mtu == 0 {
		t.Skip("proto")
	}
	a, err := Create(fmt.Sprintf("cc-proto-%d-a", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Create(fmt.Sprintf("cc-proto-%d-b", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ta, err := a.AddTUN(TUNConfig{MTU: mtu, Addrs: []netip.Prefix{netip.MustParsePrefix("198.18.0.1/24")}})
	if err != nil {
		t.Fatal(err)
	}
	defer ta.Close()
	tb, err := b.AddTUN(TUNConfig{MTU: mtu, Addrs: []netip.Prefix{netip.MustParsePrefix("198.18.0.2/24")}})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	fwd := func(from, to *TUN) {
		buf := make([]byte, 65536)
		for {
			n, err := from.Read(buf)
			if err != nil {
				return
			}
			to.Write(buf[:n])
		}
	}
	go fwd(ta, tb)
	go fwd(tb, ta)
	ctx := context.Background()
	l, err := b.Listen(ctx, "tcp", "198.18.0.2:5000")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		io.Copy(io.Discard, c)
		c.Close()
	}()
	c, err := a.Dial(ctx, "tcp", "198.18.0.2:5000")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256<<10)
	start := time.Now()
	var total int64
	for time.Since(start) < 3*time.Second {
		n, err := c.Write(buf)
		total += int64(n)
		if err != nil {
			t.Fatal(err)
		}
	}
	el := time.Since(start)
	c.Close()
	t.Logf("mtu %d: %.2f Gbit/s", mtu, float64(total)*8/el.Seconds()/1e9)
}
