package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/commucat/commucat/configs"
	"github.com/commucat/commucat/core/client"
	"github.com/commucat/commucat/core/handshake"
	"github.com/commucat/commucat/core/invite"
	"github.com/commucat/commucat/core/padding"
	"github.com/commucat/commucat/core/router"
	"github.com/commucat/commucat/plugins"
	"github.com/spf13/cobra"
)

// gatewayInfo is the part of an invite a client keeps: everything but the
// registration code.
type gatewayInfo struct {
	Gateway   string            `json:"gateway"`
	Signing   string            `json:"signing"`
	Padding   string            `json:"padding,omitempty"`
	Endpoints []invite.Endpoint `json:"endpoints"`
	User      string            `json:"user,omitempty"`
}

// clientState is a registered device's state directory, loaded.
type clientState struct {
	dir     string
	key     *handshake.StaticKey
	info    gatewayInfo
	gateway [32]byte
}

func (c *clientState) wipe() { c.key.Wipe() }

// clientFlags are the flags every client command shares.
type clientFlags struct {
	state, transport, logLevel, hello string
	pt                                []string
	pts                               *ptClients
	plugins                           *plugins.Host
	timeout                           time.Duration
	noProbe, shareProbes              bool
	net                               *netPolicy
	scheduler, fec                    string
	maxPaths                          int
	noDatagrams                       bool
}

func (f *clientFlags) add(cmd *cobra.Command) {
	if run := cmd.RunE; run != nil {
		cmd.RunE = func(c *cobra.Command, args []string) error {
			defer f.close()
			if f.timeout <= 0 {
				return fmt.Errorf("--timeout: want a positive duration, got %v", f.timeout)
			}
			return run(c, args)
		}
	}
	fl := cmd.Flags()
	fl.StringVar(&f.state, "state", "", "the device's state directory (default $COMMUCAT_STATE or $XDG_STATE_HOME/commucat/client)")
	fl.StringVar(&f.transport, "transport", "", "use only this transport (default: every transport of the invite at once, keeping the best paths)")
	fl.StringVar(&f.logLevel, "log-level", "warn", "debug, info, warn or error")
	fl.DurationVar(&f.timeout, "timeout", 30*time.Second, "give up connecting after this long")
	fl.StringSliceVar(&f.pt, "pt", nil, "Tor pluggable-transport binary for a \"pt\" endpoint, as METHOD=BINARY (repeatable; give it to every command that connects)")
	fl.BoolVar(&f.noProbe, "no-probe", false, "do not probe the gateway's transports while connecting")
	fl.BoolVar(&f.shareProbes, "share-probes", false, "send the transport probes' verdicts to the gateway, which answers with the transport order that works best on this network")
	fl.StringVar(&f.scheduler, "scheduler", "auto", "how frames are placed on paths: auto (by frame class), best, redundant or spread")
	fl.StringVar(&f.fec, "fec", "auto", "Reed-Solomon parity: auto (when loss shows), off or always")
	fl.IntVar(&f.maxPaths, "max-paths", 3, "connections to keep open at once (some censors cap them per client)")
	fl.BoolVar(&f.noDatagrams, "no-datagrams", false, "keep media on the paths' streams even where QUIC or KCP carry datagrams")
	fl.StringVar(&f.hello, "fingerprint", "", "TLS ClientHello for reality and websocket: a preset (chrome, firefox, ...) or a file saved by commucat fingerprint capture")
}

// close stops what the flags started (Tor PT processes).
func (f *clientFlags) close() {
	if f.pts != nil {
		f.pts.Close()
	}
	if f.net != nil {
		f.net.close()
	}
	if f.plugins != nil {
		f.plugins.Close()
	}
}

func (f *clientFlags) logger(cmd *cobra.Command) (*slog.Logger, error) {
	return newLogger(cmd.ErrOrStderr(), f.logLevel, "text")
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, b)
}

func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	return nil
}

// loadClient loads a registered device's state.
func loadClient(dirFlag string) (*clientState, error) {
	dir, err := stateDir(dirFlag, "client")
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, gatewayInfoFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s is not registered yet: run commucat register --invite LINE --name NAME --state %s", dir, dir)
	}
	if err != nil {
		return nil, err
	}
	c := &clientState{dir: dir}
	if err := json.Unmarshal(b, &c.info); err != nil {
		return nil, fmt.Errorf("%s: %w", gatewayInfoFile, err)
	}
	if c.gateway, err = handshake.ParsePublic(c.info.Gateway); err != nil {
		return nil, fmt.Errorf("%s: gateway: %w", gatewayInfoFile, err)
	}
	if !fileExists(filepath.Join(dir, certFile)) {
		return nil, fmt.Errorf("%s has no certificate: registration did not finish; register again with a new invite", dir)
	}
	if c.key, _, err = handshake.LoadOrCreateStatic(filepath.Join(dir, deviceKeyFile)); err != nil {
		return nil, err
	}
	return c, nil
}

// connect opens a session to the gateway: gw is its key, pad its padding
// profile seed (may be empty), eps its endpoints.
func connect(ctx context.Context, key *handshake.StaticKey, gw [32]byte, pad string, eps []invite.Endpoint, f *clientFlags, log *slog.Logger) (*router.Session, invite.Endpoint, error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	if f.pts == nil {
		pts, err := newPTClients(f.pt, log)
		if err != nil {
			return nil, invite.Endpoint{}, err
		}
		f.pts = pts
	}
	reg, err := newClientRegistry(f.hello, f.pts)
	if err != nil {
		return nil, invite.Endpoint{}, err
	}
	if f.plugins == nil {
		var names []string
		for _, e := range eps {
			names = append(names, e.Transport)
		}
		dir, err := stateDir(f.state, "client")
		if err != nil {
			return nil, invite.Endpoint{}, err
		}
		if f.plugins, err = addPlugins(dir, names, reg, log); err != nil {
			return nil, invite.Endpoint{}, err
		}
	} else if err := f.plugins.Register(reg); err != nil && !errors.Is(err, plugins.ErrDuplicate) {
		return nil, invite.Endpoint{}, err
	}
	if f.net == nil {
		dir, _ := stateDir(f.state, "client")
		if !fileExists(filepath.Join(dir, gatewayInfoFile)) {
			dir = "" // not registered yet: keep nothing
		}
		f.net = openNetPolicy(dir, reg, log)
	}
	if !f.noProbe {
		f.net.probe(eps)
	}
	cfg := client.Config{
		Static:     key,
		Gateway:    gw,
		Endpoints:  f.net.order(eps),
		Transports: reg,
		Only:       f.transport,
		Router: router.Config{Logger: log, Policy: f.net.pol,
			OnPathFailure: f.net.onPathFailure(eps)},
		Logger: log,
	}
	if err := f.routerFlags(&cfg.Router); err != nil {
		return nil, invite.Endpoint{}, err
	}
	if f.noProbe {
		cfg.Router.OnPathFailure = nil
	}
	if pad != "" {
		p, err := padding.Parse(pad)
		if err != nil {
			return nil, invite.Endpoint{}, fmt.Errorf("gateway padding profile: %w", err)
		}
		cfg.Pad, cfg.Router.Pad = p.Handshake, p.Record
	}
	s, ep, err := client.Dial(ctx, cfg)
	if err != nil {
		return nil, ep, fmt.Errorf("cannot reach the gateway: %w", err)
	}
	if f.shareProbes {
		f.net.share(s)
	}
	return s, ep, nil
}

// routerFlags applies --scheduler, --fec, --max-paths and --no-datagrams.
func (f *clientFlags) routerFlags(rc *router.Config) error {
	var err error
	if rc.Scheduler, err = router.ParseScheduler(f.scheduler); err != nil {
		return fmt.Errorf("--scheduler: want auto, best, redundant or spread, got %q", f.scheduler)
	}
	if rc.FEC, err = router.ParseFEC(f.fec); err != nil {
		return fmt.Errorf("--fec: want auto, off or always, got %q", f.fec)
	}
	if f.maxPaths < 1 || f.maxPaths > configs.MaxPaths {
		return fmt.Errorf("--max-paths: want 1 to %d, got %d", configs.MaxPaths, f.maxPaths)
	}
	rc.MaxPaths, rc.NoDatagrams = f.maxPaths, f.noDatagrams
	return nil
}
