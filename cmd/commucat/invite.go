package main

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/commucat/commucat/backends/messaging"
	"github.com/commucat/commucat/configs"
	"github.com/commucat/commucat/core/invite"
	"github.com/spf13/cobra"
)

func newInviteCmd() *cobra.Command {
	var state, config string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "invite",
		Short: "Print a one-line invite with a single-use registration code",
		Long: `Print a one-line invite (commucat://...) for a new user: the gateway's
addresses and public keys, and a single-use registration code. Run it against
the gateway's state directory, while the gateway runs or not. The invite
contains a secret: hand it over privately.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ttl < 0 {
				return fmt.Errorf("--ttl: want a positive duration, got %v", ttl)
			}
			dir, err := stateDir(state, "gateway")
			if err != nil {
				return err
			}
			cfg, err := loadGatewayConfig(dir, config, nil)
			if err != nil {
				return err
			}
			if ttl > 0 {
				cfg.Registration.CodeTTL = configs.Duration(ttl)
			}
			keys, _, err := loadGatewayKeys(dir)
			if err != nil {
				return err
			}
			defer keys.wipe()
			eps, err := readEndpoints(dir)
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("%s has no endpoints yet: start the gateway once (commucat gateway --state %s), so that its transports publish their keys and addresses", dir, dir)
			}
			if err != nil {
				return err
			}
			in := invite.Invite{
				Gateway:   keys.static.Public(),
				Signing:   keys.signing.Public(),
				Padding:   keys.padding.String(),
				Endpoints: eps,
				// A stand-in of a code's length, so that no code is made
				// for an invite that is refused.
				Code:    strings.Repeat("x", messaging.CodeLen),
				Expires: time.Now().Add(cfg.Registration.CodeTTL.D()),
			}
			if _, err := invite.Parse(in.String()); err != nil {
				return fmt.Errorf("the invite for %s is not one a client can read (%w); drop endpoints or transports from the gateway's configuration", dir, err)
			}
			st, err := openGatewayStore(dir)
			if err != nil {
				return err
			}
			defer st.Close()
			svc := messaging.New(st, nil, messagingConfig(cfg), nil)
			if in.Code, in.Expires, err = svc.NewCode(cmd.Context()); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), in.String())
			fmt.Fprintf(cmd.ErrOrStderr(), "single use, valid until %s; hand it over privately\n", in.Expires.UTC().Format(time.RFC3339))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&state, "state", "", "the gateway's state directory (default $COMMUCAT_STATE or $XDG_STATE_HOME/commucat/gateway)")
	f.StringVar(&config, "config", "", "the gateway's configuration file")
	f.DurationVar(&ttl, "ttl", 0, "lifetime of the registration code (default registration.code_ttl, 24h)")
	return cmd
}
