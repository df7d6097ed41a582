package sdk

import "syscall"

// dupTCP returns a close-on-exec duplicate of fd if it is a TCP socket,
// else -1.
func dupTCP(fd int) int {
	dom, err1 := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_DOMAIN)
	typ, err2 := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TYPE)
	if err1 != nil || err2 != nil || typ != syscall.SOCK_STREAM || dom != syscall.AF_INET && dom != syscall.AF_INET6 {
		return -1
	}
	d, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_DUPFD_CLOEXEC, 0)
	if errno != 0 {
		return -1
	}
	return int(d)
}
