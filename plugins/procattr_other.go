//go:build !linux

package plugins

import "os/exec"

// setProcAttr does nothing where Pdeathsig does not exist: the plugin
// exits on its own when its control socket reaches EOF.
func setProcAttr(*exec.Cmd) {}
