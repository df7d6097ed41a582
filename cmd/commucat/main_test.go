package main

import (
	"bytes"
	"strings"
	"testing"
)

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
			root := newRoot()
			var out bytes.Buffer
			root.SetOut(&out)
			root.SetErr(&out)
			root.SetArgs(tt.args)
			err := root.Execute()
			if tt.want == "" {
				if err != nil || !strings.Contains(out.String(), "Usage:") {
					t.Fatalf("err %v, output %q; want the help and no error", err, out.String())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v (output %q), want one containing %q", err, out.String(), tt.want)
			}
		})
	}
}
