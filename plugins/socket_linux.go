package plugins

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// checkTCPSocket checks that a descriptor a plugin handed over is a
// connected TCP socket.
func checkTCPSocket(fd int) error {
	dom, err1 := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_DOMAIN)
	typ, err2 := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TYPE)
	lst, err3 := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN)
	if err := errors.Join(err1, err2, err3); err != nil {
		return fmt.Errorf("handed over descriptor: %w", err)
	}
	if dom != syscall.AF_INET && dom != syscall.AF_INET6 || typ != syscall.SOCK_STREAM || lst != 0 {
		return fmt.Errorf("handed over descriptor is not a TCP connection (domain %d, type %d, listening %d)", dom, typ, lst)
	}
	if _, err := syscall.Getpeername(fd); err != nil {
		return fmt.Errorf("handed over socket is not connected: %w", err)
	}
	return nil
}

// hungUp reports whether the peer of a SOCK_SEQPACKET socket has closed
// or shut down its end. A read of zero bytes from such a socket is either
// that or an empty record, which Go reports alike, as io.EOF; only the
// socket's poll state tells them apart.
func hungUp(c *net.UnixConn) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return true
	}
	up := true
	raw.Control(func(fd uintptr) { //nolint:errcheck // up stays true
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}
		if n, err := unix.Poll(fds, 0); err == nil && n == 1 {
			up = fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0
		} else if err == nil {
			up = false
		}
	})
	return up
}
