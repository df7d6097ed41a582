package sdk

import "runtime/debug"

// The collector's settings for a plugin process, unless its environment
// sets GOGC or GOMEMLIMIT. A plugin is a small data-plane process: its
// live heap is a few MiB, so at Go's default (collect when the heap has
// doubled) a transport that allocates per frame collects hundreds of times
// a second, where the same transport inside the gateway, with its larger
// heap, collects far less often. Letting the heap grow to five times the
// live heap took obfs4 through a plugin from 0.75 to 1.07 of its goodput
// in process (docs/BENCHMARKS.md); the memory limit keeps that growth
// bounded.
const (
	gcPercent   = 400
	memoryLimit = 512 << 20
)

// tuneGC applies gcPercent and memoryLimit, except where the process's
// environment (HostConfig.Env on the host) sets its own. It returns what
// it set, for tests.
func tuneGC(getenv func(string) string) (percent int, limit int64) {
	percent, limit = -1, -1
	if getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
		percent = gcPercent
	}
	if getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
		limit = memoryLimit
	}
	return percent, limit
}
