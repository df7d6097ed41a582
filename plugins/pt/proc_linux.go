package pt

import (
	"os"
	"syscall"
)

// sysProcAttr puts the PT in a process group of its own, so that a
// terminal's Ctrl-C reaches only the host (which then stops the PT in
// order) and so that stop can signal the PT's own children too, and asks
// the kernel to send it SIGTERM when the thread that started it dies.
// Pdeathsig follows the starting OS thread, not the host process; the Go
// runtime ends threads only when a goroutine locked to one exits, and the
// closing of the PT's stdin when the host dies backs it up.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

// signalGroup sends sig to the PT's process group.
func signalGroup(p *os.Process, sig syscall.Signal) error {
	return syscall.Kill(-p.Pid, sig)
}
