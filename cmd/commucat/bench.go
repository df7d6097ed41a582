package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/commucat/commucat/configs"
	"github.com/commucat/commucat/core/frame"
	"github.com/commucat/commucat/core/handshake"
	"github.com/commucat/commucat/core/session"
	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/plugins"
	"github.com/spf13/cobra"
)

func newBenchCmd() *cobra.Command {
	var size int64
	var runs, repeat int
	var only []string
	var pluginDir string
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure every transport end to end on loopback, against raw TCP",
		Long: `Measure each built-in transport on loopback through the real session
layer (hybrid handshake, sealed records, CCP-1 frames): single-stream goodput
as a ratio of raw loopback TCP measured in the same run, and the time to set
up a session (dial plus handshake, median). Everything runs in this process
on 127.0.0.1; nothing else is contacted.

With --plugins DIR, each transport is measured a second time in the same
run with its client side through the plugin binary of the same name in
DIR (such as bin/plugins), the gateway side in process, and the plugin's
goodput is shown as a ratio of the in-process one.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case size < 1:
				return fmt.Errorf("--bytes: want at least 1, got %d", size)
			case runs < 1:
				return fmt.Errorf("--setups: want at least 1, got %d", runs)
			case repeat < 1:
				return fmt.Errorf("--repeat: want at least 1, got %d", repeat)
			}
			names := only
			if len(names) == 0 {
				for _, t := range builtin {
					names = append(names, t.name)
				}
			}
			dir, err := os.MkdirTemp("", "commucat-bench-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			log := slog.New(slog.DiscardHandler)
			ctx := cmd.Context()
			var plugReg *transport.Registry
			if pluginDir != "" {
				h, reg, err := benchPlugins(pluginDir, names, log)
				if err != nil {
					return err
				}
				defer h.Close()
				plugReg = reg
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "transport\tgoodput MB/s\traw TCP MB/s\tratio to raw TCP\tratio to tcp+session\tsession set-up")
			if plugReg != nil {
				fmt.Fprintf(w, "\tplugin MB/s\tplugin to in-process\tplugin set-up")
			}
			fmt.Fprintln(w)
			var tcpRatio float64
			for _, name := range names {
				// Each measurement is paired with a raw TCP one taken just
				// before it; the ratio is the median of the pairs.
				var ratios, goodputs, bases, plugRatios, plugGoodputs []float64
				var setup, plugSetup time.Duration
				for range repeat {
					base, err := benchRawTCP(ctx, size)
					if err != nil {
						return fmt.Errorf("raw tcp: %w", err)
					}
					r, err := benchTransport(ctx, dir, name, size, runs, log, nil)
					if err != nil {
						return fmt.Errorf("%s: %w", name, err)
					}
					if plugReg != nil {
						rp, err := benchTransport(ctx, dir, name, size, runs, log, plugReg)
						if err != nil {
							return fmt.Errorf("%s as a plugin: %w", name, err)
						}
						plugRatios = append(plugRatios, rp.goodput/r.goodput)
						plugGoodputs = append(plugGoodputs, rp.goodput)
						plugSetup = rp.setup
					}
					ratios = append(ratios, r.goodput/base)
					goodputs = append(goodputs, r.goodput)
					bases = append(bases, base)
					setup = r.setup
				}
				ratio := median(ratios)
				if name == "tcp" {
					tcpRatio = ratio
				}
				rel := "-"
				if tcpRatio > 0 {
					rel = fmt.Sprintf("%.2f", ratio/tcpRatio)
				}
				fmt.Fprintf(w, "%s\t%.0f\t%.0f\t%.2f\t%s\t%s", name, median(goodputs), median(bases), ratio, rel, setup.Round(10*time.Microsecond))
				if plugReg != nil {
					fmt.Fprintf(w, "\t%.0f\t%.2f\t%s", median(plugGoodputs), median(plugRatios), plugSetup.Round(10*time.Microsecond))
				}
				fmt.Fprintln(w)
			}
			return w.Flush()
		},
	}
	cmd.Flags().Int64Var(&size, "bytes", 64<<20, "bytes to send per goodput measurement")
	cmd.Flags().IntVar(&runs, "setups", 10, "session set-ups to time per transport (the median is shown)")
	cmd.Flags().IntVar(&repeat, "repeat", 3, "paired measurements per transport (the median is shown)")
	cmd.Flags().StringSliceVar(&only, "transport", nil, "measure only these transports")
	cmd.Flags().StringVar(&pluginDir, "plugins", "", "also measure each transport's client side through its plugin binary in this folder")
	return cmd
}

// benchPlugins starts the plugins named names found in dir and returns
// their host and a registry of their transports.
func benchPlugins(dir string, names []string, log *slog.Logger) (*plugins.Host, *transport.Registry, error) {
	h, err := plugins.NewHost(plugins.HostConfig{Dirs: []string{dir}, Only: names}, log)
	if err != nil {
		return nil, nil, err
	}
	infos, err := h.Discover()
	if err == nil {
		for _, name := range names {
			if !slices.ContainsFunc(infos, func(i plugins.Info) bool { return i.Name == name && i.Err == nil }) {
				err = fmt.Errorf("--plugins: no usable plugin %q in %s", name, dir)
				break
			}
		}
	}
	reg := new(transport.Registry)
	if err == nil {
		err = h.Register(reg)
	}
	if err != nil {
		h.Close()
		return nil, nil, err
	}
	return h, reg, nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// mbps is a goodput in MB/s (10^6 bytes).
func mbps(n int64, d time.Duration) float64 { return float64(n) / d.Seconds() / 1e6 }

func benchRawTCP(ctx context.Context, size int64) (float64, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		_, err = io.CopyN(io.Discard, c, size)
		done <- err
	}()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		return 0, err
	}
	defer c.Close()
	buf := make([]byte, 64<<10)
	start := time.Now()
	for sent := int64(0); sent < size; sent += int64(len(buf)) {
		if _, err := c.Write(buf); err != nil {
			return 0, err
		}
	}
	if err := <-done; err != nil {
		return 0, err
	}
	return mbps(size, time.Since(start)), nil
}

type benchResult struct {
	goodput float64
	setup   time.Duration
}

// benchTransport serves name on loopback and measures it; the client
// side comes from cliReg if it is not nil (the plugins), else in process.
func benchTransport(ctx context.Context, dir, name string, size int64, runs int, log *slog.Logger, cliReg *transport.Registry) (benchResult, error) {
	var r benchResult
	cfg := &configs.Gateway{Listen: []configs.Listen{{Transport: name, Address: "127.0.0.1:0"}}}
	cover, err := prepareCover(dir, cfg, log)
	if err != nil {
		return r, err
	}
	if cover != nil {
		defer cover.Close()
	}
	reg := newRegistry(nil)
	tdir := filepath.Join(dir, name)
	if err := os.MkdirAll(tdir, 0o700); err != nil {
		return r, err
	}
	srvT, pub, err := reg.NewServer(name, transport.Params(cfg.Listen[0].Params), tdir)
	if err != nil {
		return r, err
	}
	defer transport.Close(srvT) //nolint:errcheck // the measurement is done
	if cliReg == nil {
		cliReg = reg
	}
	cliT, err := cliReg.New(name, pub)
	if err != nil {
		return r, err
	}
	defer transport.Close(cliT) //nolint:errcheck // the measurement is done
	gw, err := handshake.GenerateStatic()
	if err != nil {
		return r, err
	}
	defer gw.Wipe()
	dev, err := handshake.GenerateStatic()
	if err != nil {
		return r, err
	}
	defer dev.Wipe()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ln, err := srvT.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		return r, err
	}
	defer ln.Close()
	replay := handshake.NewReplayCache(1024)
	// The server side: accept, handshake, then count received bytes and
	// report when size bytes of stream data arrived.
	received := make(chan error, 1)
	go func() {
		for {
			c, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			go func() {
				res, err := handshake.Server(ctx, c, handshake.ServerConfig{Static: gw, Replay: replay})
				if err != nil {
					c.Close()
					return
				}
				s := session.New(c, session.Keys{Send: res.SendKey, Recv: res.RecvKey}, session.Config{})
				res.Wipe()
				go s.Run(ctx)
				defer s.Close()
				var got int64
				for {
					f, err := s.Recv(ctx)
					if err != nil {
						return
					}
					got += int64(len(f.Payload))
					if f.Type == frame.StreamData && got >= size {
						received <- nil
						return
					}
				}
			}()
		}
	}()
	dial := func() (*session.Session, error) {
		c, err := cliT.Dial(ctx, ln.Addr().String())
		if err != nil {
			return nil, err
		}
		res, err := handshake.Client(ctx, c, handshake.ClientConfig{Static: dev, ServerPublic: gw.Public()})
		if err != nil {
			c.Close()
			return nil, err
		}
		s := session.New(c, session.Keys{Send: res.SendKey, Recv: res.RecvKey}, session.Config{})
		res.Wipe()
		return s, nil
	}
	var setups []time.Duration
	for range runs {
		start := time.Now()
		s, err := dial()
		if err != nil {
			return r, fmt.Errorf("set-up: %w", err)
		}
		setups = append(setups, time.Since(start))
		s.Close()
	}
	slices.Sort(setups)
	r.setup = setups[len(setups)/2]

	s, err := dial()
	if err != nil {
		return r, err
	}
	defer s.Close()
	go s.Run(ctx)
	payload := make([]byte, 16<<10)
	start := time.Now()
	for sent := int64(0); sent < size; sent += int64(len(payload)) {
		if err := s.Send(ctx, frame.Frame{Type: frame.StreamData, Stream: 1, Payload: payload}); err != nil {
			return r, fmt.Errorf("send: %w", err)
		}
	}
	select {
	case err := <-received:
		if err != nil {
			return r, err
		}
	case <-time.After(5 * time.Minute):
		return r, errors.New("timed out waiting for the data to arrive")
	case <-ctx.Done():
		return r, fmt.Errorf("waiting for the data to arrive: %w", ctx.Err())
	}
	r.goodput = mbps(size, time.Since(start))
	return r, nil
}
