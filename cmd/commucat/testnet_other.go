//go:build !linux

package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newTestnetCmd returns `commucat testnet`, which needs Linux (network
// namespaces, TUN, netlink).
func newTestnetCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "testnet",
		Short: "Run the emulated test network (Linux only)",
		RunE: func(*cobra.Command, []string) error {
			return errors.New("testnet: the test network needs Linux (network namespaces and TUN)")
		},
	}
}
