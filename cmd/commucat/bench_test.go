package main

import (
	"path/filepath"
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
			out, err := runRoot(append([]string{"bench", "--transport", "tcp", "--bytes", "65536", "--setups", "1", "--repeat", "1"}, tt.args...)...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v (output %q), want one containing %q", err, out, tt.want)
			}
		})
	}
}

// TestBenchPlugins measures tcp in process and through its plugin binary
// in one run, and refuses a folder without the plugin.
func TestBenchPlugins(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "commucat-transport-tcp")
	goBuild(t, bin, "github.com/commucat/commucat/cmd/commucat-transport-tcp")
	run := func(plugins string) (string, error) {
		return runRoot("bench", "--transport", "tcp", "--bytes", "1048576", "--setups", "2", "--repeat", "1", "--plugins", plugins)
	}
	out, err := run(dir)
	if err != nil {
		t.Fatalf("bench --plugins: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "plugin to in-process") {
		t.Fatalf("output:\n%s\nwant a header with the plugin columns and one row", out)
	}
	if f := strings.Fields(lines[1]); len(f) != 9 || f[0] != "tcp" {
		t.Errorf("row %q: want tcp and 8 figures", lines[1])
	}
	if out, err := run(t.TempDir()); err == nil || !strings.Contains(err.Error(), `no usable plugin "tcp"`) {
		t.Errorf("bench --plugins with an empty folder: %v\n%s", err, out)
	}
}
