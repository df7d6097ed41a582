package main

import "testing"

func TestLoopbackAddr(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:7443": true, "127.8.9.10:1": true, "[::1]:443": true, "localhost:80": true,
		"0.0.0.0:7443": false, ":7443": false, "[::]:443": false, "203.0.113.7:443": false,
		"gw.example:443": false, "nonsense": false,
	} {
		if got := loopbackAddr(addr); got != want {
			t.Errorf("loopbackAddr(%q) = %v, want %v", addr, got, want)
		}
	}
}
