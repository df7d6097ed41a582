//go:build unix

package tcp

import (
	"net"
	"syscall"
	"testing"
)

func TestNoDelay(t *testing.T) {
	c, s := pair(t)
	for name, conn := range map[string]net.Conn{"dialed": c, "accepted": s} {
		sc, ok := conn.(syscall.Conn)
		if !ok {
			t.Fatalf("%s connection %T has no SyscallConn", name, conn)
		}
		raw, err := sc.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var v int
		var gerr error
		if err := raw.Control(func(fd uintptr) {
			v, gerr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_NODELAY)
		}); err != nil || gerr != nil {
			t.Fatalf("%s: getsockopt: %v, %v", name, err, gerr)
		}
		if v == 0 {
			t.Errorf("%s connection: TCP_NODELAY is off", name)
		}
	}
}
