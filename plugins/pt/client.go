package pt

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/commucat/commucat/core/transport"
)

// Client is the client side of a PT method: it dials through the PT's
// SOCKS5 listener. It starts the PT process at the first Dial or Start
// and owns it until Close; if the PT has exited, the next Dial starts a
// new one. A Client is safe for concurrent use. It holds the
// per-connection arguments, which may be secret: it logs as "[redacted]".
type Client struct {
	cfg  Config
	args string // encoded per-connection arguments; may be secret

	// life ends when Close is called; it cancels a launch in progress.
	life    context.Context
	endLife context.CancelFunc

	mu     sync.Mutex // held during a launch, so that concurrent Dials share it
	p      *proc
	socks  string // the CMETHOD's address
	closed bool
}

var _ transport.Transport = (*Client)(nil)

// NewClient returns a Client for cfg with the per-connection arguments p.
// It checks cfg and p but does not start the PT. Errors about p wrap
// transport.ErrBadParams and name the parameter.
func NewClient(cfg Config, p transport.Params) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	args, err := encodeClientArgs(p)
	if err != nil {
		return nil, err
	}
	cfg.Args = append([]string(nil), cfg.Args...)
	cfg.Env = append([]string(nil), cfg.Env...)
	life, endLife := context.WithCancel(context.Background())
	return &Client{cfg: cfg, args: args, life: life, endLife: endLife}, nil
}

// LogValue hides the arguments from logs.
func (c *Client) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// Name is the PT method, such as "obfs4".
func (c *Client) Name() string { return c.cfg.Method }

// Start launches the PT now, if it is not running, rather than at the
// first Dial, so that a broken binary is reported early. ctx bounds the
// launch, as does Config.StartTimeout. Errors are *StartError, or wrap
// transport.ErrClosed after Close.
func (c *Client) Start(ctx context.Context) error {
	_, err := c.ensure(ctx)
	return err
}

// ensure returns the address of a running PT's SOCKS listener, launching
// the PT if needed.
func (c *Client) ensure(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return "", fmt.Errorf("pt: %s client: %w", c.cfg.Method, transport.ErrClosed)
	}
	if c.p != nil && !c.p.hasExited() {
		return c.socks, nil
	}
	if c.p != nil {
		c.p.stop()
		c.p = nil
		c.cfg.logger().Info("restarting pt")
	}
	env := []string{"TOR_PT_CLIENT_TRANSPORTS=" + c.cfg.Method}
	if c.cfg.Proxy != "" {
		env = append(env, "TOR_PT_PROXY="+c.cfg.Proxy)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(c.life, cancel)
	defer stop()
	p, m, err := launch(ctx, &c.cfg, env, false)
	if err != nil {
		return "", err
	}
	if m.proto != "socks5" {
		p.stop()
		return "", &StartError{Binary: p.binary, Method: p.method, Err: ErrProtocol,
			Detail: fmt.Sprintf("CMETHOD offers %q; this host speaks only socks5", m.proto)}
	}
	c.p, c.socks = p, m.addr
	return c.socks, nil
}

// Dial connects to addr ("host:port") through the PT: it connects to the
// PT's SOCKS5 listener (starting the PT if needed), passes the
// per-connection arguments, and asks for a CONNECT to addr. ctx bounds
// all of it. The PT answers once its transport has reached addr, so a
// target that refuses yields an error wrapping transport.ErrRefused
// (through *SOCKSError), and a ctx deadline one wrapping
// transport.ErrTimeout. The connection's RemoteAddr is addr, with the
// method as its Network.
func (c *Client) Dial(ctx context.Context, addr string) (net.Conn, error) {
	op := "dial " + c.cfg.Method + " " + addr
	if ctx.Err() != nil {
		return nil, ctxErr(op, ctx)
	}
	socks, err := c.ensure(ctx)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", socks)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctxErr(op, ctx)
		}
		// The PT's own listener failed: not the target's refusal.
		return nil, &opError{op: op + ": PT socks listener " + socks, err: err}
	}
	if dl, ok := ctx.Deadline(); ok {
		raw.SetDeadline(dl) //nolint:errcheck // a fresh TCP connection
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		raw.SetDeadline(pastDeadline) //nolint:errcheck // as above
	})
	err = socksDial(raw, addr, c.args)
	if !stop() {
		<-fired
		raw.Close()
		return nil, ctxErr(op, ctx)
	}
	if err != nil {
		raw.Close()
		return nil, wrapErr(op, err)
	}
	if err := raw.SetDeadline(time.Time{}); err != nil {
		raw.Close()
		return nil, wrapErr(op, err)
	}
	return &conn{Conn: raw, remote: dialAddr{method: c.cfg.Method, hostport: addr}}, nil
}

// Listen is not supported on the client side: it returns an error
// wrapping transport.ErrUnsupported. Use a Server.
func (c *Client) Listen(context.Context, string) (transport.Listener, error) {
	return nil, fmt.Errorf("pt: %s client cannot listen: %w", c.cfg.Method, transport.ErrUnsupported)
}

// Close stops the PT, if it runs, waiting for it to exit (see the package
// doc); connections through it end. A launch in progress is cancelled.
// Later Dials fail with transport.ErrClosed. Close is idempotent and
// returns nil.
func (c *Client) Close() error {
	c.endLife()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.p != nil {
		c.p.stop()
		c.p = nil
	}
	return nil
}
