// Command commucat is CommuCat's one user binary: the gateway, the client
// commands (register, send, listen) and the operator's tools (invite).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "commucat:", err)
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}

// groupCmd makes cmd, which only holds subcommands, print its help when
// run alone and refuse an unknown subcommand: without a Run of its own,
// cobra prints the help for `commucat plugin bogus` and exits 0.
func groupCmd(cmd *cobra.Command, subs ...*cobra.Command) *cobra.Command {
	cmd.Args = cobra.NoArgs
	cmd.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	cmd.AddCommand(subs...)
	return cmd
}

// exitError carries a specific exit status.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "commucat",
		Short:         "CommuCat: censorship-resistant messaging gateway and client",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.AddCommand(
		newGatewayCmd(),
		newInviteCmd(),
		newRegisterCmd(),
		newSendCmd(),
		newListenCmd(),
		newFingerprintCmd(),
		newBenchCmd(),
		newStatusCmd(),
		newProbeCmd(),
		newPluginCmd(),
		newTestnetCmd(),
	)
	return root
}
