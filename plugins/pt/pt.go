// Package pt hosts unmodified Tor pluggable-transport (PT) binaries, such
// as lyrebird/obfs4proxy, snowflake and webtunnel, as CommuCat transports.
// It speaks the managed-proxy protocol of Tor's "Pluggable Transport
// Specification (Version 1)" (pt-spec.txt): it starts the PT with a
// minimal environment of TOR_PT_* variables, reads the lines the PT writes
// to its stdout, and then carries streams through it. A Client implements
// core/transport's Dial through the PT's SOCKS5 listener; a Server
// implements Listen, with the PT forwarding de-obfuscated streams to a
// loopback listener of this package.
//
// # Launch and set-up
//
// The PT is started with exactly these variables (plus Config.Env):
//
//	TOR_PT_MANAGED_TRANSPORT_VER=1
//	TOR_PT_STATE_LOCATION=<Config.StateDir, or a temporary directory for a client>
//	TOR_PT_EXIT_ON_STDIN_CLOSE=1
//	client: TOR_PT_CLIENT_TRANSPORTS=<method>  [TOR_PT_PROXY=<Config.Proxy>]
//	server: TOR_PT_SERVER_TRANSPORTS=<method>  TOR_PT_SERVER_BINDADDR=<method>-<ip:port>
//	        TOR_PT_ORPORT=127.0.0.1:<port of this package's listener>
//	        TOR_PT_EXTENDED_SERVER_PORT=   (empty: no Extended ORPort)
//	  or, with Config.ExtORPort, instead of those two:
//	        TOR_PT_EXTENDED_SERVER_PORT=127.0.0.1:<port of this package's listener>
//	        TOR_PT_AUTH_COOKIE_FILE=<state dir>/extended_orport_auth_cookie
//	        [TOR_PT_SERVER_TRANSPORT_OPTIONS=<method>:<k>=<v>;...]
//
// Its stdin is a pipe the host holds; its stdout and stderr are pipes the
// host reads. On Linux it runs in a process group of its own with
// Pdeathsig SIGTERM. The host reads stdout until CMETHODS DONE (client) or
// SMETHODS DONE (server), for at most Config.StartTimeout. Lines (at most
// 16 KiB each; longer ones are dropped) are, one per line:
//
//	VERSION 1                               the only version offered
//	VERSION-ERROR <msg> | ENV-ERROR <msg>    fatal: ErrVersion, ErrEnv
//	PROXY DONE | PROXY-ERROR <msg>           required when Config.Proxy is set: ErrProxy
//	CMETHOD <method> socks5 <ip:port>        the SOCKS5 listener to dial through
//	CMETHOD-ERROR <method> <msg>             fatal for our method: ErrMethod
//	SMETHOD <method> <ip:port> [ARGS:k=v,k=v]  the public address and client parameters
//	SMETHOD-ERROR <method> <msg>             fatal for our method: ErrMethod
//	CMETHODS DONE | SMETHODS DONE            end of set-up
//	LOG SEVERITY=<s> MESSAGE=<cstring>      re-logged at the matching slog level
//	STATUS [TRANSPORT=<method>] <k>=<v>...  logged at debug level (a version report at info)
//
// A malformed line of a known kind fails the set-up with ErrProtocol;
// lines with unknown keywords, and garbage, are logged at debug level and
// ignored, as the spec asks. A set-up that fails returns a *StartError
// naming the binary, the method, the PT's own words, its exit status and
// the last line of its stderr. The PT's stderr and its later LOG lines go
// to Config.Logger with the attributes component=pt, pt=<method> and
// binary=<base name>.
//
// # Client: per-connection arguments over SOCKS5
//
// A Client's parameters (transport.Params, such as obfs4's "cert" and
// "iat-mode") are the PT's per-connection arguments. They are encoded as
// pt-spec.txt 3.5 says, "k=v" pairs joined by ";" with "\", "=" and ";"
// escaped by "\", keys in order, and sent with SOCKS5 username/password
// authentication (RFC 1929): up to 255 bytes in the username with a
// one-NUL password, longer ones split at byte 255 (at most 510 bytes in
// all). Without parameters the client offers no authentication. Dial then
// sends CONNECT for the address (an IPv4 or IPv6 literal, or a host name
// the PT resolves) and returns the connection once the PT has granted it,
// which PTs do after their own handshake with the server. A failure reply
// is a *SOCKSError ("connection refused" wraps transport.ErrRefused).
//
// # Server: the loopback ORPort
//
// A Server launches one PT process per Listen, bound to the address given
// to Listen (an IP literal and port; port 0 lets the PT choose). The PT
// forwards each de-obfuscated stream to a loopback TCP listener that
// Listen creates (TOR_PT_ORPORT); Accept hands out those connections.
// Plain ORPort carries no client address, so an accepted connection's
// RemoteAddr is the PT's end of the loopback connection, and any local
// process could connect to that port and skip the PT (the sessions above
// authenticate their peers, so it gains nothing beyond that);
// Config.ExtORPort closes both gaps. The listener's Addr is the address of
// the PT's SMETHOD line.
//
// # Extended ORPort
//
// With Config.ExtORPort, the server PT gets TOR_PT_EXTENDED_SERVER_PORT
// (the loopback listener) and TOR_PT_AUTH_COOKIE_FILE instead of
// TOR_PT_ORPORT. The host writes a new random 32-byte cookie to
// extended_orport_auth_cookie in the state directory (mode 0600) when the
// Server first listens, and runs the Extended ORPort handshake
// (ext-orport-spec.txt; the byte layout is in extorport.go) on every
// connection the PT makes: a peer that does not prove it holds the cookie
// is dropped, so other local processes cannot reach the listener, and the
// USERADDR the PT sends becomes the accepted connection's RemoteAddr.
// Handshakes run in goroutines the listener owns, at most 64 at once and
// each bounded by 10 s, so that a stalled local peer cannot hold up Accept;
// connections that passed wait in a queue of 64 for Accept.
//
// # Public parameters
//
// The parameters clients need are the SMETHOD line's ARGS. Because the
// gateway publishes what the ServerFactory returns before it listens,
// ServerFactory launches the PT once, bound to 127.0.0.1:0, reads its
// ARGS and stops it (Server.Prepare). PTs whose ARGS depend only on their
// state directory (obfs4proxy keeps its identity in obfs4_state.json and
// writes obfs4_bridgeline.txt there) give the same ARGS on every later
// launch, relaunches included; if a launch reports other ARGS, it is
// logged as an error (existing invites no longer work; the values are not
// logged, since they may be secret) and Server.Params returns the newest.
//
// # Lifecycle
//
// A Client starts its PT at the first Dial (or Start) and keeps it until
// Close; if the PT has exited, the next Dial starts a new one. A Server's
// listener owns its PT: Close stops it, which also ends the connections it
// carries. If a listener's PT exits on its own (logged as a warning), the
// listener launches it again with the same environment: the same bind
// address (with the port the first PT chose, if Listen was given port 0),
// state directory, server options and loopback listener. It waits 100 ms
// before the first attempt, twice as long after each failed attempt
// (logged as a warning) and each PT that exits again within 30 s, at most
// 30 s, and 100 ms again once a PT has run for 30 s; a relaunch that
// succeeds is logged at info level with the number of restarts. Meanwhile
// Accept waits, honouring its ctx; only Close ends it, and Close also ends
// a wait or a relaunch in progress. The connections the dead PT carried
// end with it, since they ran through its process; the relaunch touches
// no connection already accepted, and new ones are accepted as before.
// Stopping follows pt-spec.txt 3.4: close stdin, wait Config.StopTimeout,
// SIGTERM, wait again, SIGKILL.
//
// Connections carry no CloseWrite: PTs such as obfs4proxy close both
// directions when one ends, so a half-close would not reach the peer as
// one. Their errors wrap the core/transport sentinels as transports/tcp's
// do.
package pt

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/commucat/commucat/core/transport"
)

// Defaults for the zero values of Config's durations.
const (
	DefaultStartTimeout = 30 * time.Second
	DefaultStopTimeout  = 3 * time.Second
)

// Config describes a PT binary and the method to run. The zero value of
// each optional field is its documented default.
type Config struct {
	// Binary is the PT executable: a path, or a name looked up in PATH.
	Binary string
	// Method is the transport method to request, such as "obfs4",
	// "snowflake" or "webtunnel". It must match [a-zA-Z_][a-zA-Z0-9_]*.
	Method string
	// Args are command-line arguments for the PT, such as obfs4proxy's
	// "-enableLogging".
	Args []string
	// StateDir is TOR_PT_STATE_LOCATION, where the PT keeps state across
	// launches. A Server needs it (ServerFactory passes its directory); if
	// it is empty for a Client, each launch gets a new temporary directory
	// that is removed when the PT stops.
	StateDir string
	// Env holds extra environment variables ("KEY=value") for the PT.
	// Variables starting with TOR_PT_ are set by this package and are
	// rejected here.
	Env []string
	// Proxy is a Client's upstream proxy (TOR_PT_PROXY), a URL such as
	// "socks5://127.0.0.1:1080"; empty means none. When set, a PT that
	// does not confirm it with PROXY DONE fails to start (ErrProxy), so
	// that it cannot connect around the proxy.
	Proxy string
	// Logger receives the PT's stderr and LOG lines and this package's
	// notes on the process. If nil, they are discarded.
	Logger *slog.Logger
	// StartTimeout bounds a launch, from exec to CMETHODS/SMETHODS DONE.
	// If zero, DefaultStartTimeout.
	StartTimeout time.Duration
	// StopTimeout is how long stopping waits after closing the PT's stdin,
	// and again after SIGTERM. If zero, DefaultStopTimeout.
	StopTimeout time.Duration
	// ExtORPort makes a Server's PT forward streams with the Extended
	// ORPort protocol instead of plain ORPort (see the package doc): the
	// PT proves with a cookie that it is the PT, and tells each client's
	// address. PTs built on goptlib (obfs4proxy, lyrebird, snowflake,
	// webtunnel) support it; one that does not fails to start with
	// ErrEnv. If false, plain ORPort.
	ExtORPort bool
}

// methodName is pt-spec.txt 3.1's rule for PT names.
var methodName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// Validate reports a configuration that cannot work, naming the field.
func (c *Config) Validate() error {
	switch {
	case c.Binary == "":
		return fmt.Errorf("pt: Binary is empty")
	case !methodName.MatchString(c.Method):
		return fmt.Errorf("pt: Method %q is not a PT name ([a-zA-Z_][a-zA-Z0-9_]*)", c.Method)
	case c.StartTimeout < 0:
		return fmt.Errorf("pt: StartTimeout %v is negative", c.StartTimeout)
	case c.StopTimeout < 0:
		return fmt.Errorf("pt: StopTimeout %v is negative", c.StopTimeout)
	}
	for i, kv := range c.Env {
		k, _, ok := strings.Cut(kv, "=")
		switch {
		case !ok || k == "":
			return fmt.Errorf("pt: Env[%d] is not KEY=value", i)
		case strings.HasPrefix(k, "TOR_PT_"):
			return fmt.Errorf("pt: Env[%d]: %s is set by the host", i, k)
		}
	}
	if c.Proxy != "" {
		u, err := url.Parse(c.Proxy)
		if err != nil || u.Scheme == "" || u.Host == "" || u.Port() == "" {
			return fmt.Errorf("pt: Proxy is not a URL of the form scheme://host:port")
		}
	}
	return nil
}

func (c *Config) logger() *slog.Logger {
	l := c.Logger
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return l.With("component", "pt", "pt", c.Method, "binary", baseName(c.Binary))
}

func baseName(p string) string {
	if i := strings.LastIndexAny(p, `/\`); i >= 0 {
		return p[i+1:]
	}
	return p
}

func (c *Config) startTimeout() time.Duration {
	if c.StartTimeout == 0 {
		return DefaultStartTimeout
	}
	return c.StartTimeout
}

func (c *Config) stopTimeout() time.Duration {
	if c.StopTimeout == 0 {
		return DefaultStopTimeout
	}
	return c.StopTimeout
}

// Factory returns a transport.Factory for the client side of method
// served by the PT executable binary, with the defaults of Config. The
// parameters it is given become the PT's per-connection arguments.
func Factory(binary, method string) transport.Factory {
	return Config{Binary: binary, Method: method}.Factory()
}

// ServerFactory returns a transport.ServerFactory for the server side of
// method served by the PT executable binary, with the defaults of Config.
// See Config.ServerFactory.
func ServerFactory(binary, method string) transport.ServerFactory {
	return Config{Binary: binary, Method: method}.ServerFactory()
}

// Factory returns a transport.Factory that builds a *Client from c and
// the parameters of an invite.
func (c Config) Factory() transport.Factory {
	return func(p transport.Params) (transport.Transport, error) {
		return NewClient(c, p)
	}
}

// ServerFactory returns a transport.ServerFactory that builds a *Server
// from c with the state directory it is given and the gateway's
// parameters as the PT's server options
// (TOR_PT_SERVER_TRANSPORT_OPTIONS). It launches the PT once (Prepare,
// bounded by c.StartTimeout) to learn the public parameters it returns.
func (c Config) ServerFactory() transport.ServerFactory {
	return func(p transport.Params, dir string) (transport.Transport, transport.Params, error) {
		c := c
		c.StateDir = dir
		s, err := NewServer(c, p)
		if err != nil {
			return nil, nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.startTimeout())
		defer cancel()
		pub, err := s.Prepare(ctx)
		if err != nil {
			return nil, nil, err
		}
		return s, pub, nil
	}
}
