package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestBenchFlags gives bench counts it cannot measure with: each must be
// refused with the flag's name, not panic or wait for data never sent.
func TestBenchFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no setups", []string{"--setups", "0"}, "--setups: want at least 1, got 0"},
		{"no repeats", []string{"--repeat", "0"}, "--repeat: want at least 1, got 0"},
		{"no bytes", []string{"--bytes", "0"}, "--bytes: want at least 1, got 0"},
		{"negative bytes", []string{"--bytes", "-5"}, "--bytes: want at least 1, got -5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := newRoot()
			var out bytes.Buffer
			root.SetOut(&out)
			root.SetErr(&out)
			root.SetArgs(append([]string{"bench", "--transport", "tcp", "--bytes", "65536", "--setups", "1", "--repeat", "1"}, tt.args...))
			err := root.Execute()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v (output %q), want one containing %q", err, out.String(), tt.want)
			}
		})
	}
}
