//go:build !linux

package pt

import (
	"os"
	"syscall"
)

// sysProcAttr is nil outside Linux: no Pdeathsig there; the PT learns of
// the host's death from its stdin closing.
func sysProcAttr() *syscall.SysProcAttr { return nil }

// signalGroup sends sig to the PT process (not its children, outside
// Linux).
func signalGroup(p *os.Process, sig syscall.Signal) error {
	if sig == syscall.SIGKILL {
		return p.Kill()
	}
	return p.Signal(sig)
}
