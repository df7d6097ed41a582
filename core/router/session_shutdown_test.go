package router

import (
	"net"
	"testing"
)

// TestShutdownManyDeadPaths: closing every path of a session that already
// lists more than maxDeadPaths dead ones must not trip over the list being
// compacted while it is walked.
func TestShutdownManyDeadPaths(t *testing.T) {
	s := &Session{state: stateStopped}
	for i := range maxDeadPaths + 4 {
		a, b := net.Pipe()
		defer b.Close()
		p := &path{id: uint64(i + 1), conn: a, state: PathActive, done: make(chan struct{}), wake: make(chan struct{}, 1), dialer: -1}
		if i < maxDeadPaths {
			p.state = PathDead
		}
		s.paths = append(s.paths, p)
	}
	s.shutdownPaths()
	for _, p := range s.paths {
		if p == nil || p.state != PathDead {
			t.Fatalf("path %v not closed", p)
		}
	}
}
