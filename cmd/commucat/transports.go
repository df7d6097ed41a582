package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/commucat/commucat/configs"
	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/plugins"
	"github.com/commucat/commucat/plugins/proto"
	"github.com/commucat/commucat/transports/decoy"
	"github.com/commucat/commucat/transports/fingerprint"
	"github.com/commucat/commucat/transports/kcp"
	"github.com/commucat/commucat/transports/obfs4"
	"github.com/commucat/commucat/transports/quic"
	"github.com/commucat/commucat/transports/reality"
	"github.com/commucat/commucat/transports/tcp"
	"github.com/commucat/commucat/transports/websocket"
)

// builtin lists the built-in transports, client and gateway sides.
var builtin = []struct {
	name   string
	client transport.Factory
	server transport.ServerFactory
}{
	{tcp.Name, tcp.Factory, tcp.ServerFactory},
	{quic.Name, quic.Factory, quic.ServerFactory},
	{kcp.Name, kcp.Factory, kcp.ServerFactory},
	{websocket.Name, websocket.Factory, websocket.ServerFactory},
	{obfs4.Name, obfs4.Factory, obfs4.ServerFactory},
	{reality.Name, reality.Factory, reality.ServerFactory},
}

// newRegistry returns the built-in transports, client and gateway sides,
// and the gateway side of Tor PT managed proxies.
func newRegistry(log *slog.Logger) *transport.Registry {
	r := new(transport.Registry)
	for _, t := range builtin {
		r.Register(t.name, t.client)
		r.RegisterServer(t.name, t.server)
	}
	r.RegisterServer(ptName, ptServerFactory(log))
	return r
}

// newClientRegistry returns the client sides; hello, if not empty, is a
// preset name or a captured ClientHello file that the TLS-camouflage
// transports (reality, websocket) send instead of the invite's preset.
func newClientRegistry(hello string, pts *ptClients) (*transport.Registry, error) {
	if hello == "" {
		r := newRegistry(nil)
		r.Register(ptName, pts.Factory)
		return r, nil
	}
	spec := hello
	if _, err := os.Stat(hello); err == nil {
		abs, err := filepath.Abs(hello)
		if err != nil {
			return nil, err
		}
		spec = "file:" + abs
	}
	h, err := fingerprint.Parse(spec)
	if err != nil {
		return nil, fmt.Errorf("--fingerprint: %w", err)
	}
	r := new(transport.Registry)
	for _, t := range builtin {
		switch t.name {
		case reality.Name:
			r.Register(t.name, reality.FactoryWithHello(h))
		case websocket.Name:
			r.Register(t.name, func(p transport.Params) (transport.Transport, error) {
				q := transport.Params{}
				for k, v := range p {
					q[k] = v
				}
				q["fp"] = spec
				return websocket.Factory(q)
			})
		default:
			r.Register(t.name, t.client)
		}
	}
	r.Register(ptName, pts.Factory)
	return r, nil
}

// defaultCoverSNI is the cover name of reality when the config names none:
// with the embedded defaults the cover is the gateway's own decoy site on
// loopback, so the name is a placeholder. A deployment sets dest and sni to
// a real site.
const defaultCoverSNI = "www.example.com"

// coverSite is the gateway's own decoy HTTPS site, started on loopback as
// the reality transport's cover when the config names no real one.
type coverSite struct {
	srv  *http.Server
	ln   net.Listener
	wg   sync.WaitGroup
	addr string
}

func startCoverSite(dir string, names []string, site http.Handler, log *slog.Logger) (*coverSite, error) {
	cert, err := decoy.LoadOrCreateCert(dir, names)
	if err != nil {
		return nil, fmt.Errorf("decoy site: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("decoy site: %w", err)
	}
	c := &coverSite{
		ln:   ln,
		addr: ln.Addr().String(),
		srv: &http.Server{
			Handler:           site,
			TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}},
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       60 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		},
	}
	c.wg.Go(func() {
		if err := c.srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("decoy site stopped", "err", err)
		}
	})
	return c, nil
}

func (c *coverSite) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.srv.Shutdown(ctx)
	c.wg.Wait()
}

// prepareCover fills in the reality endpoints' cover site: when an endpoint
// names no dest, the gateway's own decoy site is started (once) and used.
// It also hands decoy.site to the websocket endpoints that name no site,
// and warns when a gateway on a public address shows the embedded blog.
func prepareCover(dir string, cfg *configs.Gateway, log *slog.Logger) (*coverSite, error) {
	site := decoy.Handler()
	if cfg.Decoy.Site != "" {
		var err error
		if site, err = decoy.LoadDir(cfg.Decoy.Site); err != nil {
			return nil, fmt.Errorf("config: decoy.site: %w", err)
		}
	}
	var cover *coverSite
	for i := range cfg.Listen {
		l := &cfg.Listen[i]
		ws, rl := l.Transport == websocket.Name && l.Params["site"] == "", l.Transport == reality.Name && l.Params["dest"] == ""
		if !ws && !rl {
			continue
		}
		if cfg.Decoy.Site == "" && !loopbackAddr(l.Address) {
			log.Warn("this endpoint shows the embedded decoy blog, the same on every gateway that does: set decoy.site to a site of your own (or reality's dest to a real site)",
				"transport", l.Transport)
		}
		if l.Params == nil {
			l.Params = map[string]string{}
		}
		if ws {
			if cfg.Decoy.Site != "" {
				l.Params["site"] = cfg.Decoy.Site
			}
			continue
		}
		if l.Params["sni"] == "" {
			l.Params["sni"] = defaultCoverSNI
		}
		if cover == nil {
			var err error
			cover, err = startCoverSite(filepath.Join(dir, "transports", "decoy"), strings.Split(l.Params["sni"], ","), site, log)
			if err != nil {
				return nil, err
			}
			log.Info("reality cover: the gateway's own decoy site", "addr", cover.addr)
		}
		l.Params["dest"] = cover.addr
	}
	return cover, nil
}

// isBuiltin reports whether name is a transport of this binary (the six
// built-ins and Tor PT endpoints); other names are looked up as plugins.
func isBuiltin(name string) bool {
	if name == ptName {
		return true
	}
	for _, t := range builtin {
		if t.name == name {
			return true
		}
	}
	return false
}

// addPlugins starts the plugin host of state directory dir and registers
// its transports with r when one of names is not built in; it returns the
// host to close, or nil when no plugin was needed.
func addPlugins(dir string, names []string, r *transport.Registry, log *slog.Logger) (*plugins.Host, error) {
	var need []string
	for _, n := range names {
		if !isBuiltin(n) && !slices.Contains(need, n) {
			need = append(need, n)
		}
	}
	if len(need) == 0 {
		return nil, nil
	}
	h, infos, cfg, err := newPluginHost(dir, need, log)
	if err != nil {
		return nil, fmt.Errorf("plugins: %w", err)
	}
	if err := h.Register(r); err != nil {
		if !errors.Is(err, plugins.ErrDuplicate) {
			h.Close()
			return nil, fmt.Errorf("plugins: %w", err)
		}
		// Plugin builds of built-in transports: the built-in is used.
		log.Debug("plugins shadowed by built-in transports", "err", err)
	}
	for _, n := range need {
		if err := unusablePlugin(n, infos, pluginDirs(cfg)); err != nil && !slices.Contains(r.Names(), n) {
			r.Register(n, func(transport.Params) (transport.Transport, error) { return nil, err })
			r.RegisterServer(n, func(transport.Params, string) (transport.Transport, transport.Params, error) { return nil, nil, err })
		}
	}
	return h, nil
}

// errPluginRefused marks a transport whose plugin binary was found but
// refused or could not start: the gateway serves its other endpoints.
var errPluginRefused = errors.New("refused")

// unusablePlugin says why transport name, which is not built in, has no
// plugin to serve it: none found in dirs, or the one found was refused
// (infos are Discover's). It returns nil for a usable plugin. Without it a
// refused plugin's name would be reported as an unknown transport.
func unusablePlugin(name string, infos []plugins.Info, dirs []string) error {
	for _, in := range infos {
		if in.Name != name || errors.Is(in.Err, plugins.ErrShadowed) {
			continue // the binary used comes first in the folders
		}
		if in.Err != nil {
			return fmt.Errorf("plugin %s %w: %w", in.Path, errPluginRefused, in.Err)
		}
		return nil
	}
	return fmt.Errorf("%w: no plugin binary %s%s in %s", transport.ErrUnknown, proto.BinaryPrefix, name, strings.Join(dirs, ", "))
}

// loopbackAddr reports whether host:port addr listens on loopback only.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
