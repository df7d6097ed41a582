package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/commucat/commucat/core/handshake"
	"github.com/commucat/commucat/core/padding"
	"github.com/commucat/commucat/core/session"
	"github.com/commucat/commucat/probes"
	dnsprobe "github.com/commucat/commucat/probes/dns"
	"github.com/commucat/commucat/probes/endpoint"
	"github.com/commucat/commucat/probes/fet"
	quicprobe "github.com/commucat/commucat/probes/quic"
	"github.com/commucat/commucat/probes/sni"
	tcpprobe "github.com/commucat/commucat/probes/tcp"
	"github.com/commucat/commucat/probes/throttle"
	udpprobe "github.com/commucat/commucat/probes/udp"
	"github.com/commucat/commucat/probes/web"
)

// probeKinds are the censorship probes `commucat probe --probes` selects
// from, and defaultProbes those it runs unless told otherwise.
var (
	probeKinds    = []string{"dns", "tcp", "tls", "quic", "http", "udp", "fet", "throttle", "age"}
	defaultProbes = []string{"dns", "tcp", "tls", "http"}
)

// probeFlags are the flags of `commucat probe`.
type probeFlags struct {
	targets, urls, patterns                  []string
	targetsFile, kinds                       string
	sni, controlSNI, resolver, systemDNS     string
	controlURL, downloadControlURL           string
	insecure                                 bool
	state                                    string
	transportsOnly                           bool
	report                                   string
	shareLocation                            bool
	asn, cc                                  string
	timeout, budget, interval, residualWait  time.Duration
	maxProbes, parallel, fetRepeats          int
	minRate                                  float64
	maxAge                                   time.Duration
	logLevel                                 string
	handshakeTimeout, dnsDuplicateWindow     time.Duration
	downloadStall, downloadMaxTime, fetDelay time.Duration
	dnsPublic                                []string
}

func newProbeCmd() *cobra.Command {
	var f probeFlags
	cmd := &cobra.Command{
		Use:   "probe",
		Short: "Find out what this network blocks and how, and which transports reach the gateway",
		Long: `probe runs censorship probes against targets and transport probes against
the gateway's endpoints, prints one line per probe, and writes the
measurements in OONI's format (JSON lines) to --report.

Targets come from --target (repeatable), --url, or --targets FILE (one
per line, # comments): a domain (DNS probe), host:port (TCP, TLS, QUIC,
UDP, fully-encrypted-traffic and connection-age probes) or an http(s) URL
(HTTP fetch and download probes). --probes picks the techniques:
` + strings.Join(probeKinds, ", ") + ` (default: ` + strings.Join(defaultProbes, ",") + `).

With --state DIR (a registered client's state directory) every endpoint
of its gateway is probed too: transport dial time, and, when the device
is registered, the session handshake and RTT. --transports-only probes
the endpoints alone.

Your location is withheld from reports (AS0, ZZ) unless --share-location
is given with --asn and --cc. Reports name the targets you probed: keep
them private where that matters.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runProbe(cmd, &f) },
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&f.targets, "target", nil, "a target: domain, host:port or URL (repeatable)")
	fl.StringArrayVar(&f.urls, "url", nil, "an http(s) URL to fetch (repeatable)")
	fl.StringVar(&f.targetsFile, "targets", "", "a file of targets, one per line")
	fl.StringVar(&f.kinds, "probes", strings.Join(defaultProbes, ","), "the probes to run, comma-separated: "+strings.Join(probeKinds, ","))
	fl.StringVar(&f.sni, "sni", "", "the server name of TLS and QUIC probes (default: the target's host name)")
	fl.StringVar(&f.controlSNI, "control-sni", "", "a server name the network is not expected to block, tried first to the same address")
	fl.StringVar(&f.resolver, "resolver", "", "the control resolver: ip:port (UDP) or an https:// DNS-over-HTTPS URL")
	fl.StringVar(&f.systemDNS, "system-resolver", "", "the network's resolver as ip:port (default: the system's)")
	fl.DurationVar(&f.dnsDuplicateWindow, "dns-wait-duplicates", 0, "keep listening this long after a UDP DNS answer to catch injected duplicates")
	fl.StringArrayVar(&f.dnsPublic, "dns-public-range", nil, "an address range DNS answers may fall in although it is private or reserved, such as a test network's (repeatable)")
	fl.StringVar(&f.controlURL, "control-url", "", "a control URL for HTTP probes, serving what the target should")
	fl.StringArrayVar(&f.patterns, "block-pattern", nil, "text that marks a block page (repeatable)")
	fl.StringVar(&f.downloadControlURL, "download-control-url", "", "a large file elsewhere to compare download rates with")
	fl.Float64Var(&f.minRate, "min-rate", 0, "bytes per second below which a download counts as throttled")
	fl.DurationVar(&f.downloadStall, "stall", throttle.DefaultStall, "how long without a byte ends a download as cut off")
	fl.DurationVar(&f.downloadMaxTime, "download-time", 20*time.Second, "how long a download probe runs at most")
	fl.DurationVar(&f.maxAge, "max-age", 60*time.Second, "how long the connection-age probe keeps a connection open")
	fl.IntVar(&f.fetRepeats, "fet-repeats", fet.DefaultRepeats, "random first packets the fully-encrypted-traffic probe sends at most")
	fl.DurationVar(&f.fetDelay, "fet-max-residual", 200*time.Second, "how long the fully-encrypted-traffic probe follows a residual block")
	fl.DurationVar(&f.handshakeTimeout, "handshake-timeout", 10*time.Second, "bound on each TLS or QUIC handshake and transport dial")
	fl.BoolVar(&f.insecure, "insecure", false, "do not verify the targets' certificates (a MITM then goes unnoticed)")
	fl.StringVar(&f.state, "state", "", "a registered client's state directory: probe its gateway's endpoints too")
	fl.BoolVar(&f.transportsOnly, "transports-only", false, "probe only the gateway's endpoints (needs a state directory)")
	fl.StringVar(&f.report, "report", "", "append the measurements as OONI JSON lines to this file (- for standard output)")
	fl.BoolVar(&f.shareLocation, "share-location", false, "write --asn and --cc into the reports instead of AS0 and ZZ")
	fl.StringVar(&f.asn, "asn", "", "your network's AS number (AS1234), written only with --share-location")
	fl.StringVar(&f.cc, "cc", "", "your country code (two letters), written only with --share-location")
	fl.DurationVar(&f.timeout, "timeout", probes.DefaultTimeout, "bound on each probe")
	fl.DurationVar(&f.budget, "budget", probes.DefaultBudget, "bound on the whole run")
	fl.DurationVar(&f.interval, "interval", probes.DefaultInterval, "least time between the starts of two probes")
	fl.DurationVar(&f.residualWait, "max-residual-wait", probes.DefaultMaxResidualWait, "longest wait for a residual block to end before a probe is skipped (negative: never wait)")
	fl.IntVar(&f.maxProbes, "max-probes", probes.DefaultMaxProbes, "most probes one run accepts")
	fl.IntVar(&f.parallel, "parallel", probes.DefaultParallel, "probes run at once")
	fl.StringVar(&f.logLevel, "log-level", "warn", "debug, info, warn or error")
	return cmd
}

func runProbe(cmd *cobra.Command, f *probeFlags) error {
	log, err := newLogger(cmd.ErrOrStderr(), f.logLevel, "text")
	if err != nil {
		return err
	}
	kinds, err := parseKinds(f.kinds)
	if err != nil {
		return err
	}
	if f.transportsOnly && f.state == "" && os.Getenv("COMMUCAT_STATE") == "" {
		return errors.New("--transports-only needs --state (a registered client's state directory)")
	}
	var ps []probes.Probe
	if !f.transportsOnly {
		targets, err := collectTargets(f)
		if err != nil {
			return err
		}
		if len(targets) == 0 && f.state == "" {
			return errors.New("nothing to probe: give --target, --url, --targets or --state")
		}
		if ps, err = censorshipProbes(targets, kinds, f); err != nil {
			return err
		}
	}
	if f.state != "" || f.transportsOnly {
		tps, cleanup, err := transportProbes(f, log)
		if err != nil {
			return err
		}
		defer cleanup()
		ps = append(ps, tps...)
	}
	if len(ps) == 0 {
		return errors.New("no probe applies to the targets given (see --probes)")
	}
	var report io.Writer
	table := cmd.OutOrStdout()
	switch f.report {
	case "":
	case "-":
		report, table = cmd.OutOrStdout(), cmd.ErrOrStderr()
	default:
		file, err := os.OpenFile(f.report, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("--report: %w", err)
		}
		defer file.Close()
		report = file
	}
	r, err := probes.New(probes.Config{
		MaxProbes:       f.maxProbes,
		Interval:        f.interval,
		Parallel:        f.parallel,
		Timeout:         f.timeout,
		Budget:          f.budget,
		MaxResidualWait: f.residualWait,
		SoftwareVersion: version,
		Location:        probes.Location{Share: f.shareLocation, ASN: f.asn, CC: strings.ToUpper(f.cc)},
		Report:          report,
		Logger:          log,
	})
	if err != nil {
		return err
	}
	outs, runErr := r.Run(cmd.Context(), ps)
	if err := probes.WriteTable(table, outs); err != nil {
		return err
	}
	return runErr
}

func parseKinds(s string) (map[string]bool, error) {
	kinds := map[string]bool{}
	for _, k := range strings.Split(s, ",") {
		k = strings.TrimSpace(k)
		if k == "" {
			continue
		}
		if !slices.Contains(probeKinds, k) {
			return nil, fmt.Errorf("--probes: unknown probe %q (want some of %s)", k, strings.Join(probeKinds, ","))
		}
		kinds[k] = true
	}
	return kinds, nil
}

func collectTargets(f *probeFlags) ([]probes.Target, error) {
	var ts []probes.Target
	for _, s := range append(slices.Clone(f.targets), f.urls...) {
		t, err := probes.ParseTarget(s)
		if err != nil {
			return nil, err
		}
		ts = append(ts, t)
	}
	for _, u := range f.urls {
		if t, _ := probes.ParseTarget(u); t.Kind != probes.KindURL {
			return nil, fmt.Errorf("--url %q is not an http or https URL", u)
		}
	}
	if f.targetsFile != "" {
		file, err := os.Open(f.targetsFile)
		if err != nil {
			return nil, fmt.Errorf("--targets: %w", err)
		}
		defer file.Close()
		more, err := probes.ParseTargets(file)
		if err != nil {
			return nil, fmt.Errorf("--targets %s: %w", f.targetsFile, err)
		}
		ts = append(ts, more...)
	}
	return ts, nil
}

// censorshipProbes builds the selected probes for every target.
func censorshipProbes(targets []probes.Target, kinds map[string]bool, f *probeFlags) ([]probes.Probe, error) {
	var ps []probes.Probe
	add := func(p probes.Probe, err error) error {
		if err != nil {
			return err
		}
		ps = append(ps, p)
		return nil
	}
	domains := map[string]bool{}
	dns := func(host string) error {
		if !kinds["dns"] || domains[host] || net.ParseIP(host) != nil {
			return nil
		}
		domains[host] = true
		var public []netip.Prefix
		for _, r := range f.dnsPublic {
			p, err := netip.ParsePrefix(r)
			if err != nil {
				return fmt.Errorf("--dns-public-range %q: want an address range such as 198.18.0.0/15", r)
			}
			public = append(public, p.Masked())
		}
		return add(dnsprobe.New(dnsprobe.Config{Domain: host, System: f.systemDNS, Control: f.resolver, DuplicateWindow: f.dnsDuplicateWindow, Public: public}))
	}
	for _, t := range targets {
		if err := dns(t.Host); err != nil {
			return nil, err
		}
		name := f.sni
		if name == "" && t.IsName() {
			name = t.Host
		}
		addr := t.Addr()
		switch t.Kind {
		case probes.KindEndpoint:
			if kinds["tcp"] {
				if err := add(tcpprobe.New(addr)); err != nil {
					return nil, err
				}
			}
			if kinds["tls"] && name != "" {
				if err := add(sni.New(sni.Config{Addr: addr, SNI: name, ControlSNI: f.controlSNI, NoVerify: f.insecure, HandshakeTimeout: f.handshakeTimeout})); err != nil {
					return nil, err
				}
			}
			if kinds["quic"] && name != "" {
				if err := add(quicprobe.New(quicprobe.Config{Addr: addr, SNI: name, ControlSNI: f.controlSNI, NoVerify: f.insecure, HandshakeTimeout: f.handshakeTimeout})); err != nil {
					return nil, err
				}
			}
			if kinds["udp"] {
				if err := add(udpprobe.New(udpprobe.Config{Addr: addr, SNI: name, Timeout: f.handshakeTimeout})); err != nil {
					return nil, err
				}
			}
			if kinds["fet"] {
				if err := add(fet.New(fet.Config{Addr: addr, Repeats: f.fetRepeats, MaxResidual: f.fetDelay})); err != nil {
					return nil, err
				}
			}
			if kinds["age"] {
				if err := add(throttle.NewAge(throttle.AgeConfig{Addr: addr, MaxAge: f.maxAge})); err != nil {
					return nil, err
				}
			}
		case probes.KindURL:
			if kinds["http"] {
				if err := add(web.New(web.Config{URL: t.Raw, ControlURL: f.controlURL, BlockPatterns: f.patterns, Timeout: f.timeout})); err != nil {
					return nil, err
				}
			}
			if kinds["throttle"] {
				if err := add(throttle.NewDownload(throttle.DownloadConfig{URL: t.Raw, ControlURL: f.downloadControlURL,
					MinRate: f.minRate, Stall: f.downloadStall, MaxTime: f.downloadMaxTime})); err != nil {
					return nil, err
				}
			}
		}
	}
	return ps, nil
}

// transportProbes builds a probe for every endpoint of the gateway in the
// state directory. When the device is registered there, the probes also
// complete the session handshake; cleanup wipes the device key.
func transportProbes(f *probeFlags, log *slog.Logger) ([]probes.Probe, func(), error) {
	nothing := func() {}
	dir, err := stateDir(f.state, "client")
	if err != nil {
		return nil, nothing, err
	}
	b, err := os.ReadFile(filepath.Join(dir, gatewayInfoFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nothing, fmt.Errorf("%s has no %s: register first (commucat register --invite LINE --state %s)", dir, gatewayInfoFile, dir)
	}
	if err != nil {
		return nil, nothing, err
	}
	var info gatewayInfo
	if err := json.Unmarshal(b, &info); err != nil {
		return nil, nothing, fmt.Errorf("%s: %w", gatewayInfoFile, err)
	}
	if len(info.Endpoints) == 0 {
		return nil, nothing, fmt.Errorf("%s lists no endpoint", gatewayInfoFile)
	}
	// The built-in transports; endpoints of Tor pluggable transports
	// are reported as x_bad_endpoint.
	cfg := endpoint.Config{Transports: newRegistry(nil), DialTimeout: f.handshakeTimeout, Pings: 1}
	cleanup := nothing
	if fileExists(filepath.Join(dir, deviceKeyFile)) && fileExists(filepath.Join(dir, certFile)) {
		gw, err := handshake.ParsePublic(info.Gateway)
		if err != nil {
			return nil, nothing, fmt.Errorf("%s: gateway: %w", gatewayInfoFile, err)
		}
		key, _, err := handshake.LoadOrCreateStatic(filepath.Join(dir, deviceKeyFile))
		if err != nil {
			return nil, nothing, err
		}
		h, err := sessionHandshake(key, gw, info.Padding, log)
		if err != nil {
			key.Wipe()
			return nil, nothing, err
		}
		cfg.Handshake, cleanup = h, key.Wipe
	} else {
		log.Info("the device is not registered in the state directory: probing transport dials only", "dir", dir)
	}
	ps, err := endpoint.ForInvite(info.Endpoints, cfg)
	if err != nil {
		cleanup()
		return nil, nothing, err
	}
	return ps, cleanup, nil
}

// sessionHandshake returns an endpoint.Handshake that runs the device's
// hybrid handshake with the gateway over the dialled connection and
// measures the RTT of the session's first keep-alive.
func sessionHandshake(key *handshake.StaticKey, gw [32]byte, pad string, log *slog.Logger) (endpoint.Handshake, error) {
	hcfg := handshake.ClientConfig{Static: key, ServerPublic: gw}
	scfg := session.Config{KeepAlive: 2 * time.Second, Logger: log}
	if pad != "" {
		p, err := padding.Parse(pad)
		if err != nil {
			return nil, fmt.Errorf("gateway padding profile: %w", err)
		}
		hcfg.Pad, scfg.Pad = p.Handshake, p.Record
	}
	return func(ctx context.Context, conn net.Conn) (endpoint.Link, error) {
		res, err := handshake.Client(ctx, conn, hcfg)
		if err != nil {
			conn.Close()
			return nil, err
		}
		keys := session.Keys{Send: res.SendKey, Recv: res.RecvKey}
		res.Wipe()
		s := session.New(conn, keys, scfg)
		keys.Wipe()
		rctx, cancel := context.WithCancel(context.Background())
		l := &sessionLink{s: s, cancel: cancel}
		l.wg.Go(func() { s.Run(rctx) })
		return l, nil
	}, nil
}

// sessionLink is a running session seen as an endpoint.Link.
type sessionLink struct {
	s      *session.Session
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Ping waits for the session's first keep-alive round trip (sent as the
// session starts) and returns its smoothed RTT.
func (l *sessionLink) Ping(ctx context.Context) (time.Duration, error) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if srtt, _ := l.s.RTT(); srtt > 0 {
			return srtt, nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("session ping: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// Close ends the session and waits for it.
func (l *sessionLink) Close() error {
	err := l.s.Close()
	l.cancel()
	l.wg.Wait()
	return err
}
