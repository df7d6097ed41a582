package sdk

import (
	"runtime/debug"
	"testing"
)

func TestTuneGC(t *testing.T) {
	oldPercent := debug.SetGCPercent(100)
	oldLimit := debug.SetMemoryLimit(-1)
	t.Cleanup(func() {
		debug.SetGCPercent(oldPercent)
		debug.SetMemoryLimit(oldLimit)
	})

	env := func(m map[string]string) func(string) string {
		return func(k string) string { return m[k] }
	}
	if p, l := tuneGC(env(nil)); p != gcPercent || l != memoryLimit {
		t.Fatalf("empty environment: set %d%%, %d bytes; want %d%%, %d bytes", p, l, gcPercent, memoryLimit)
	}
	if got := debug.SetGCPercent(100); got != gcPercent {
		t.Fatalf("GC percent is %d, want %d", got, gcPercent)
	}
	if got := debug.SetMemoryLimit(-1); got != memoryLimit {
		t.Fatalf("memory limit is %d, want %d", got, memoryLimit)
	}

	// The operator's settings win.
	debug.SetMemoryLimit(1 << 40)
	if p, l := tuneGC(env(map[string]string{"GOGC": "50", "GOMEMLIMIT": "1GiB"})); p != -1 || l != -1 {
		t.Fatalf("GOGC and GOMEMLIMIT set: tuneGC set %d%%, %d bytes", p, l)
	}
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("GC percent changed to %d under GOGC", got)
	}
	if got := debug.SetMemoryLimit(-1); got != 1<<40 {
		t.Fatalf("memory limit changed to %d under GOMEMLIMIT", got)
	}
}
