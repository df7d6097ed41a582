package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/commucat/commucat/backends/messaging"
	"github.com/commucat/commucat/backends/store"
	"github.com/commucat/commucat/backends/tactics"
	"github.com/commucat/commucat/configs"
	"github.com/commucat/commucat/core/gateway"
	"github.com/commucat/commucat/core/handshake"
	"github.com/commucat/commucat/core/invite"
	"github.com/commucat/commucat/core/ops"
	"github.com/commucat/commucat/core/padding"
	"github.com/commucat/commucat/core/router"
	"github.com/commucat/commucat/core/transport"
	"github.com/spf13/cobra"
)

// certLifetime is how long a device certificate is valid.
const certLifetime = 365 * 24 * time.Hour

func newGatewayCmd() *cobra.Command {
	var (
		state, config, logLevel, logFormat string
		listen                             []string
		unsafeLogging                      bool
	)
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Run the gateway",
		Long: `Run the gateway on the configuration in --config (or gateway.yaml in the
state directory, or the embedded defaults). Keys are generated in the state
directory on first start; storage is SQLite in the same directory.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := stateDir(state, "gateway")
			if err != nil {
				return err
			}
			cfg, err := loadGatewayConfig(dir, config, listen)
			if err != nil {
				return err
			}
			if logLevel != "" {
				cfg.Log.Level = logLevel
			}
			if logFormat != "" {
				cfg.Log.Format = logFormat
			}
			log, err := newLogger(cmd.ErrOrStderr(), cfg.Log.Level, cfg.Log.Format)
			if err != nil {
				return err
			}
			return runGateway(cmd.Context(), cmd, dir, cfg, log, unsafeLogging)
		},
	}
	f := cmd.Flags()
	f.StringVar(&state, "state", "", "state directory (default $COMMUCAT_STATE or $XDG_STATE_HOME/commucat/gateway)")
	f.StringVar(&config, "config", "", "configuration file (default gateway.yaml in the state directory, else the embedded defaults)")
	f.StringSliceVar(&listen, "listen", nil, "endpoint transport@host:port, replacing the configured ones (repeatable)")
	f.StringVar(&logLevel, "log-level", "", "debug, info, warn or error (overrides the config)")
	f.StringVar(&logFormat, "log-format", "", "text or json (overrides the config)")
	f.Bool("collect-probes", false, "aggregate the transport verdicts clients share (--share-probes) per network and answer with the transport order that works best there")
	f.BoolVar(&unsafeLogging, "unsafe-logging", false, "log peer addresses (off: they are scrubbed)")
	return cmd
}

func loadGatewayConfig(dir, path string, listen []string) (*configs.Gateway, error) {
	if path == "" {
		if p := filepath.Join(dir, gatewayConfigYML); fileExists(p) {
			path = p
		}
	}
	cfg, err := configs.LoadGateway(path)
	if err != nil {
		return nil, err
	}
	if len(listen) > 0 {
		cfg.Listen = nil
		for _, l := range listen {
			name, addr, ok := strings.Cut(l, "@")
			if !ok {
				return nil, fmt.Errorf("--listen %q: want transport@host:port", l)
			}
			cfg.Listen = append(cfg.Listen, configs.Listen{Transport: name, Address: addr})
		}
		if err := cfg.Validate(); err != nil {
			return nil, fmt.Errorf("--listen: %w", err)
		}
	}
	return cfg, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// gatewayKeys are the gateway's long-term keys and its padding profile.
type gatewayKeys struct {
	static  *handshake.StaticKey
	signing *handshake.SigningKey
	padding padding.Profile
}

func (k *gatewayKeys) wipe() {
	k.static.Wipe()
	k.signing.Wipe()
}

func loadGatewayKeys(dir string) (*gatewayKeys, bool, error) {
	static, created1, err := handshake.LoadOrCreateStatic(filepath.Join(dir, gatewayKeyFile))
	if err != nil {
		return nil, false, err
	}
	signing, created2, err := handshake.LoadOrCreateSigning(filepath.Join(dir, signingKeyFile))
	if err != nil {
		static.Wipe()
		return nil, false, err
	}
	pad, err := loadOrCreatePadding(filepath.Join(dir, paddingFile))
	if err != nil {
		static.Wipe()
		signing.Wipe()
		return nil, false, err
	}
	return &gatewayKeys{static: static, signing: signing, padding: pad}, created1 || created2, nil
}

// loadOrCreatePadding reads the gateway's padding-profile seed, creating it
// on first use. The seed is public (invites carry it) but is kept 0600 like
// everything in the state directory.
func loadOrCreatePadding(path string) (padding.Profile, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		p, err := padding.Parse(strings.TrimSpace(string(b)))
		if err != nil {
			return p, fmt.Errorf("%s: %w", path, err)
		}
		return p, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return padding.Profile{}, err
	}
	seed, err := padding.NewSeed()
	if err != nil {
		return padding.Profile{}, err
	}
	p := padding.New(seed)
	if err := writeFileAtomic(path, []byte(p.String()+"\n")); err != nil {
		return p, err
	}
	return p, nil
}

func openGatewayStore(dir string) (*store.SQLite, error) {
	return store.OpenSQLite(filepath.Join(dir, gatewayDBFile))
}

func messagingConfig(cfg *configs.Gateway) messaging.Config {
	return messaging.Config{
		InboxTTL:   cfg.Inbox.TTL.D(),
		InboxQuota: cfg.Inbox.Quota,
		CodeTTL:    cfg.Registration.CodeTTL.D(),
	}
}

// issuer signs device certificates with the gateway's signing key.
type issuer struct {
	keys *gatewayKeys
	now  func() time.Time
}

func (is issuer) Issue(user string, deviceID [16]byte, deviceKey [32]byte) ([]byte, error) {
	now := is.now()
	c := handshake.Certificate{
		Version:    1,
		User:       user,
		DeviceID:   deviceID,
		DeviceKey:  deviceKey,
		GatewayKey: is.keys.static.Public(),
		NotBefore:  now.Add(-time.Minute),
		NotAfter:   now.Add(certLifetime),
	}
	if _, err := rand.Read(c.Serial[:]); err != nil {
		return nil, err
	}
	return c.Sign(is.keys.signing)
}

// sessionHandler adapts the messaging service to the gateway's Handler.
type sessionHandler struct {
	svc *messaging.Service
	// tactics, if set, answers the clients' probe reports.
	tactics *tactics.Collector
}

func (h sessionHandler) ServeSession(ctx context.Context, peer [32]byte, s *router.Session) error {
	p, err := h.svc.Authenticate(ctx, peer)
	if errors.Is(err, messaging.ErrUnknownDevice) {
		// A device that is not registered yet may only register.
		p, err = h.svc.ServeRegistration(ctx, peer, s)
	}
	if err != nil {
		return err
	}
	var conn messaging.Conn = s
	if h.tactics != nil {
		conn = h.tactics.Wrap(s, tactics.SessionRemote(s))
	}
	return h.svc.ServeSession(ctx, p, conn)
}

func runGateway(ctx context.Context, cmd *cobra.Command, dir string, cfg *configs.Gateway, log *slog.Logger, unsafeLogging bool) error {
	keys, created, err := loadGatewayKeys(dir)
	if err != nil {
		return err
	}
	defer keys.wipe()
	st, err := openGatewayStore(dir)
	if err != nil {
		return err
	}
	defer st.Close()
	svc := messaging.New(st, issuer{keys: keys, now: time.Now}, messagingConfig(cfg), log)
	var collector *tactics.Collector
	if on, _ := cmd.Flags().GetBool("collect-probes"); on {
		collector = tactics.NewCollector(tactics.Config{Logger: log})
	}

	cover, err := prepareCover(dir, cfg, log)
	if err != nil {
		return err
	}
	if cover != nil {
		defer cover.Close()
	}
	reg := newRegistry(log)
	var names []string
	for _, l := range cfg.Listen {
		names = append(names, l.Transport)
	}
	host, err := addPlugins(dir, names, reg, log)
	if err != nil {
		return err
	}
	if host != nil {
		defer host.Close()
	}
	var eps []gateway.Endpoint
	var public []transport.Params
	var served []configs.Listen // the entries of cfg.Listen in eps
	var unserved []string       // the transports of the others
	for i, l := range cfg.Listen {
		tdir := filepath.Join(dir, "transports", l.Transport)
		if err := os.MkdirAll(tdir, 0o700); err != nil {
			return fmt.Errorf("transport state: %w", err)
		}
		t, pub, err := reg.NewServer(l.Transport, transport.Params(l.Params), tdir)
		if errors.Is(err, errPluginRefused) && len(cfg.Listen) > 1 {
			// A plugin that was refused or crashed must not take the
			// other transports down with it.
			log.Error("endpoint not served", "listen", i, "transport", l.Transport, "err", err)
			unserved = append(unserved, l.Transport)
			continue
		}
		if err != nil {
			return fmt.Errorf("config: listen[%d] (%s): %w", i, l.Transport, err)
		}
		eps = append(eps, gateway.Endpoint{Transport: t, Addr: l.Address})
		public = append(public, pub)
		served = append(served, l)
	}
	if len(eps) == 0 {
		return errors.New("config: no endpoint can be served (their plugins were refused; see above)")
	}
	srv, err := gateway.New(gateway.Config{
		Static:           keys.static,
		Endpoints:        eps,
		HandshakeTimeout: cfg.Handshake.Timeout.D(),
		MaxSkew:          cfg.Handshake.MaxSkew.D(),
		Rate:             cfg.Handshake.Rate,
		Burst:            cfg.Handshake.Burst,
		MaxConns:         cfg.Handshake.MaxConns,
		Pad:              keys.padding.Handshake,
		Router:           routerConfig(cfg, log, keys.padding.Record),
		Logger:           log,
		UnsafeLogging:    unsafeLogging,
	}, sessionHandler{svc: svc, tactics: collector})
	if err != nil {
		return err
	}
	// The ops endpoint binds before the transports, so that a gateway
	// that cannot serve it fails before it has announced addresses or
	// published them in endpoints.json for invites.
	var o *ops.Server
	if cfg.Ops.Listen != "" {
		var more []prometheus.Collector
		if host != nil {
			more = append(more, pluginCollector{host})
		}
		if o, err = ops.New(ops.Config{Addr: cfg.Ops.Listen, Ready: st.Ping, Stats: srv.Stats, Collectors: more, Logger: log}); err != nil {
			return err
		}
	}
	stopOps := func() {
		if o != nil {
			done, cancel := context.WithCancel(ctx)
			cancel()
			o.Run(done) // closes the listener
		}
	}
	addrs, err := srv.Listen(ctx)
	if err != nil {
		stopOps()
		return err
	}
	bound := make([]invite.Endpoint, len(addrs))
	for i, a := range addrs {
		l := served[i]
		pub := l.Public
		if pub == "" {
			pub = a.String()
		}
		bound[i] = invite.Endpoint{Transport: l.Transport, Addr: pub, Params: public[i]}
	}
	if err := writeEndpoints(dir, bound); err != nil {
		stopOps()
		return err
	}

	out := cmd.OutOrStdout()
	if created {
		fmt.Fprintf(out, "generated gateway keys in %s\n", dir)
	}
	fmt.Fprintf(out, "commucat gateway %s\n", version)
	fmt.Fprintf(out, "state:     %s\n", dir)
	fmt.Fprintf(out, "identity:  %s\n", handshake.FormatPublic(keys.static.Public()))
	fmt.Fprintf(out, "signing:   %s\n", base64.RawURLEncoding.EncodeToString(keys.signing.Public()))
	for i, a := range addrs {
		fmt.Fprintf(out, "listening: %s %s\n", served[i].Transport, a)
	}
	for _, name := range unserved {
		fmt.Fprintf(out, "not serving: %s (its plugin was refused or could not start; see the log)\n", name)
	}
	var wg sync.WaitGroup
	if o != nil {
		fmt.Fprintf(out, "ops:       http://%s/metrics (/livez, /readyz)\n", o.Addr())
		wg.Go(func() { o.Run(ctx) })
	}
	fmt.Fprintf(out, "make an invite with: commucat invite --state %s\n", dir)
	log.Info("gateway started", "endpoints", len(addrs))

	var svcErr error
	wg.Go(func() { svcErr = svc.Run(ctx) })
	err = srv.Run(ctx)
	wg.Wait()
	log.Info("gateway stopped")
	if err != nil {
		return err
	}
	if svcErr != nil && !errors.Is(svcErr, context.Canceled) {
		return svcErr
	}
	return nil
}

// writeEndpoints records the endpoints the gateway serves (addresses and the
// transports' public parameters, which stay the same across restarts), so
// that `commucat invite` can put them into invites, also while the gateway
// is stopped.
func writeEndpoints(dir string, eps []invite.Endpoint) error {
	b, err := json.MarshalIndent(eps, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, endpointsFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write endpoints: %w", err)
	}
	return os.Rename(tmp, filepath.Join(dir, endpointsFile))
}

func readEndpoints(dir string) ([]invite.Endpoint, error) {
	b, err := os.ReadFile(filepath.Join(dir, endpointsFile))
	if err != nil {
		return nil, err
	}
	var eps []invite.Endpoint
	if err := json.Unmarshal(b, &eps); err != nil {
		return nil, fmt.Errorf("%s: %w", endpointsFile, err)
	}
	return eps, nil
}

// routerConfig is the gateway's router configuration from cfg.
func routerConfig(cfg *configs.Gateway, log *slog.Logger, pad func(uint64, int) int) router.Config {
	rc := cfg.RouterConfig()
	rc.KeepAlive = cfg.Session.KeepAlive.D()
	rc.PathTimeout = cfg.Session.IdleTimeout.D()
	rc.Logger = log
	rc.Pad = pad
	return rc
}
