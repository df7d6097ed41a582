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
	"github.com/spf13/cobra"
)

func newBenchCmd() *cobra.Command {
	var size int64
	var runs, repeat int
	var only []string
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure every transport end to end on loopback, against raw TCP",
		Long: `Measure each built-in transport on loopback through the real session
layer (hybrid handshake, sealed records, CCP-1 frames): single-stream goodput
as a ratio of raw loopback TCP measured in the same run, and the time to set
up a session (dial plus handshake, median). Everything runs in this process
on 127.0.0.1; nothing else is contacted.`,
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
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "transport\tgoodput MB/s\traw TCP MB/s\tratio to raw TCP\tratio to tcp+session\tsession set-up\n")
			var tcpRatio float64
			for _, name := range names {
				// Each measurement is paired with a raw TCP one taken just
				// before it; the ratio is the median of the pairs.
				var ratios, goodputs, bases []float64
				var setup time.Duration
				for range repeat {
					base, err := benchRawTCP(ctx, size)
					if err != nil {
						return fmt.Errorf("raw tcp: %w", err)
					}
					r, err := benchTransport(ctx, dir, name, size, runs, log)
					if err != nil {
						return fmt.Errorf("%s: %w", name, err)
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
				fmt.Fprintf(w, "%s\t%.0f\t%.0f\t%.2f\t%s\t%s\n", name, median(goodputs), median(bases), ratio, rel, setup.Round(10*time.Microsecond))
			}
			return w.Flush()
		},
	}
	cmd.Flags().Int64Var(&size, "bytes", 64<<20, "bytes to send per goodput measurement")
	cmd.Flags().IntVar(&runs, "setups", 10, "session set-ups to time per transport (the median is shown)")
	cmd.Flags().IntVar(&repeat, "repeat", 3, "paired measurements per transport (the median is shown)")
	cmd.Flags().StringSliceVar(&only, "transport", nil, "measure only these transports")
	return cmd
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

// benchTransport serves name on loopback and measures it.
func benchTransport(ctx context.Context, dir, name string, size int64, runs int, log *slog.Logger) (benchResult, error) {
	var r benchResult
	cfg := &configs.Gateway{Listen: []configs.Listen{{Transport: name, Address: "127.0.0.1:0"}}}
	cover, err := prepareCover(dir, cfg, log)
	if err != nil {
		return r, err
	}
	if cover != nil {
		defer cover.Close()
	}
	reg := newRegistry()
	tdir := filepath.Join(dir, name)
	if err := os.MkdirAll(tdir, 0o700); err != nil {
		return r, err
	}
	srvT, pub, err := reg.NewServer(name, transport.Params(cfg.Listen[0].Params), tdir)
	if err != nil {
		return r, err
	}
	if c, ok := srvT.(io.Closer); ok {
		defer c.Close()
	}
	cliT, err := reg.New(name, pub)
	if err != nil {
		return r, err
	}
	if c, ok := cliT.(io.Closer); ok {
		defer c.Close()
	}
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
