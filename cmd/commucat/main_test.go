package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// goBuild builds the Go package pkg into the executable out.
func goBuild(t *testing.T, out, pkg string) {
	t.Helper()
	if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
}

// runRoot runs the commucat command with args and returns what it printed
// (standard output and error together) and its error.
func runRoot(args ...string) (string, error) {
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

// TestUnknownSubcommand runs commands that only hold subcommands with a
// name they do not have: each must fail and name it, not print the help
// and succeed.
func TestUnknownSubcommand(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // in the error; "" means no error
	}{
		{"plugin bogus", []string{"plugin", "bogus"}, `unknown command "bogus" for "commucat plugin"`},
		{"fingerprint bogus", []string{"fingerprint", "bogus"}, `unknown command "bogus" for "commucat fingerprint"`},
		{"testnet bogus", []string{"testnet", "bogus"}, `unknown command "bogus" for "commucat testnet"`},
		{"root bogus", []string{"bogus"}, `unknown command "bogus" for "commucat"`},
		{"plugin alone prints its help", []string{"plugin"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runRoot(tt.args...)
			if tt.want == "" {
				if err != nil || !strings.Contains(out, "Usage:") {
					t.Fatalf("err %v, output %q; want the help and no error", err, out)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v (output %q), want one containing %q", err, out, tt.want)
			}
		})
	}
}

// TestDurationFlags gives commands durations they cannot use: each must
// be refused with the flag's name before anything else happens.
func TestDurationFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"send --timeout 0", []string{"send", "--to", "bob", "--timeout", "0", "hi"}, "--timeout: want a positive duration, got 0s"},
		{"listen --timeout -1s", []string{"listen", "--timeout", "-1s"}, "--timeout: want a positive duration, got -1s"},
		{"register --timeout 0", []string{"register", "--invite", "x", "--name", "a", "--timeout", "0"}, "--timeout: want a positive duration"},
		{"status --timeout 0", []string{"status", "--timeout", "0"}, "--timeout: want a positive duration"},
		{"invite --ttl -1h", []string{"invite", "--ttl", "-1h"}, "--ttl: want a positive duration, got -1h0m0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A state directory that does not exist: the flag must be
			// refused before it is looked at, and it is not created.
			dir := t.TempDir() + "/state"
			out, err := runRoot(append(tt.args, "--state", dir)...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v (output %q), want one containing %q", err, out, tt.want)
			}
			if _, err := os.Stat(dir); err == nil {
				t.Errorf("%s was created", dir)
			}
		})
	}
}
