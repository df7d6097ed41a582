package main

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/commucat/commucat/backends/messaging"
	"github.com/commucat/commucat/core/router"
	"github.com/spf13/cobra"
)

func newStatusCmd() *cobra.Command {
	var f clientFlags
	var watch time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Connect to the gateway and show the session's paths and their live metrics",
		Long: `Connect to the gateway as this device, let the router open its paths over
the invite's transports for a moment (--for), then print the session's
counters and each path's transport, state, smoothed RTT and variance, loss,
delivery rate and score. The best path is marked with *.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cs, err := loadClient(f.state)
			if err != nil {
				return err
			}
			defer cs.wipe()
			log, err := f.logger(cmd)
			if err != nil {
				return err
			}
			s, _, err := connect(cmd.Context(), cs.key, cs.gateway, cs.info.Padding, cs.info.Endpoints, &f, log)
			if err != nil {
				return err
			}
			var st router.Stats
			err = messagingSession(cmd.Context(), s, func(ctx context.Context, _ *messaging.Client) error {
				select {
				case <-ctx.Done():
				case <-time.After(watch):
				}
				st = s.Stats()
				return nil
			})
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			printStatus(cmd, st)
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().DurationVar(&watch, "for", 3*time.Second, "how long to let the paths open and measure before printing")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the statistics as JSON")
	return cmd
}

func printStatus(cmd *cobra.Command, st router.Stats) {
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "\tpath\ttransport\taddress\tstate\tsrtt\trttvar\tloss\trate\tscore\trecords out/in\tdatagrams out/in\tdatagram loss")
	for _, p := range st.Paths {
		best := ""
		if p.Best {
			best = "*"
		}
		rate := "-"
		if p.Rate > 0 {
			rate = fmt.Sprintf("%.1f MB/s", p.Rate/1e6)
		}
		dgrams, dgLoss := "-", "-"
		if p.Datagrams || p.DatagramsSent+p.DatagramsReceived > 0 {
			dgrams = fmt.Sprintf("%d/%d", p.DatagramsSent, p.DatagramsReceived)
			dgLoss = fmt.Sprintf("%.1f%%", 100*p.DatagramLoss)
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%.1f%%\t%s\t%s\t%d/%d\t%s\t%s\n", best, p.ID, p.Transport, p.Addr, p.State,
			p.SRTT.Round(10*time.Microsecond), p.RTTVar.Round(10*time.Microsecond), 100*p.Loss, rate,
			p.Score.Round(10*time.Microsecond), p.RecordsSent, p.RecordsReceived, dgrams, dgLoss)
	}
	w.Flush()
	fmt.Fprintf(cmd.OutOrStdout(), "\nframes sent/received %d/%d, retransmits %d, records by scheduler best/redundant/spread %d/%d/%d, FEC parity/repaired %d/%d, stalls %d, best-path switches %d, joins %d, resumes %d\n",
		st.FramesSent, st.FramesReceived, st.Retransmits, st.Best, st.Redundant, st.Spread, st.ParitySent, st.Repaired, st.Stalls, st.Switches, st.Joins, st.Resumes)
}
