package main

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/commucat/commucat/transports/fingerprint"
	"github.com/spf13/cobra"
)

func newFingerprintCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "fingerprint",
		Short: "Capture and inspect TLS ClientHello fingerprints",
		Long: `Censors block TLS fingerprints that no current browser sends. Besides the
built-in presets (` + strings.Join(fingerprint.PresetNames(), ", ") + `), the reality and websocket
transports can send the exact ClientHello of a real browser, captured here.`,
	}
	return groupCmd(cmd, newFingerprintCaptureCmd(), newFingerprintShowCmd())
}

func newFingerprintCaptureCmd() *cobra.Command {
	var listen, out string
	cmd := &cobra.Command{
		Use:   "capture --out FILE",
		Short: "Save the ClientHello of the next browser that connects",
		Long: `Listen on loopback and save the TLS ClientHello of the first browser that
connects to it. Open the printed https:// address in the browser whose
fingerprint you want (it will show a connection error: that is expected).
Then use the file with --fingerprint FILE on register, send and listen.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return errors.New("capture needs --out FILE")
			}
			host, _, err := net.SplitHostPort(listen)
			if err != nil {
				return fmt.Errorf("--listen: %w", err)
			}
			if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
				return fmt.Errorf("--listen %s: capture listens on loopback only", listen)
			}
			l, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			_, port, _ := net.SplitHostPort(l.Addr().String())
			fmt.Fprintf(cmd.OutOrStdout(), "open https://localhost:%s/ in the browser to capture (Ctrl-C to give up)\n", port)
			if err := fingerprint.CaptureServer(cmd.Context(), l, out); err != nil {
				return err
			}
			h, err := fingerprint.FromFile(out)
			if err != nil {
				return fmt.Errorf("the captured ClientHello cannot be replayed: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "saved %s (%s)\n", out, h)
			return showFingerprint(cmd, out)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:0", "loopback address to listen on")
	cmd.Flags().StringVar(&out, "out", "", "file to write the ClientHello to")
	return cmd
}

func newFingerprintShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show FILE",
		Short: "Print the shape of a captured ClientHello",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return showFingerprint(cmd, args[0])
		},
	}
}

func showFingerprint(cmd *cobra.Command, path string) error {
	raw, err := readSmallFile(path, fingerprint.MaxHelloSize)
	if err != nil {
		return err
	}
	s, err := fingerprint.Summarize(raw)
	if err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "cipher suites:        %s\n", hexList(s.CipherSuites))
	fmt.Fprintf(w, "extensions:           %s\n", hexList(s.Extensions))
	fmt.Fprintf(w, "ALPN:                 %s\n", strings.Join(s.ALPN, ","))
	fmt.Fprintf(w, "supported groups:     %s\n", hexList(s.SupportedGroups))
	fmt.Fprintf(w, "key shares:           %s\n", hexList(s.KeyShareGroups))
	fmt.Fprintf(w, "signature algorithms: %s\n", hexList(s.SignatureAlgorithms))
	fmt.Fprintf(w, "versions:             %s\n", hexList(s.SupportedVersions))
	return nil
}

func hexList(v []uint16) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf("%04x", x)
	}
	return strings.Join(parts, " ")
}
