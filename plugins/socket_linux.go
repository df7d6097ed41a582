package plugins

import (
	"errors"
	"fmt"
	"syscall"
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
