package plugins

import (
	"os/exec"
	"syscall"
)

// setProcAttr makes the plugin die with the host: the kernel sends it
// SIGKILL when the thread that started it exits. (Go threads do not exit
// while the process runs, except those locked with runtime.LockOSThread.)
// The plugin also exits on its own when its control socket reaches EOF.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
