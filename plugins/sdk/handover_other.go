//go:build !linux

package sdk

// dupTCP hands over nothing where the plugin protocol is not implemented.
func dupTCP(int) int { return -1 }
