package plugins

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/plugins/internal/ctl"
	"github.com/commucat/commucat/plugins/internal/ring"
	"github.com/commucat/commucat/plugins/proto"
)

// Transport is a plugin's transport as the core uses it: one instance in
// the plugin process, configured for the client or the gateway side.
// After the plugin restarts, the instance is configured again from the
// same parameters on first use. A Transport is safe for concurrent use.
type Transport struct {
	p   *plugin
	in  *instance
	pub transport.Params // public parameters, for a server
}

var _ transport.Transport = (*Transport)(nil)

// instance is a Transport's instance in the current generation. It is
// apart from Transport so that a cleanup can release it once the
// Transport is garbage.
type instance struct {
	role   proto.Role
	params transport.Params
	dir    string

	// lock holds a token while the fields below are read or the instance
	// is configured: unlike a mutex, waiting for it honours a context, so
	// a plugin that hangs in Configure holds up no caller past its own
	// deadline.
	lock chan struct{}
	gen  *generation
	id   uint64
	pub  transport.Params
}

// acquire takes in's lock, or fails when ctx ends first.
func (in *instance) acquire(ctx context.Context) error {
	select {
	case in.lock <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (in *instance) unlock() { <-in.lock }

// checkParams refuses parameters that are not valid UTF-8, which gRPC
// cannot send: the call would fail as if the plugin had broken the
// protocol. The error names the key, never the value.
func (p *plugin) checkParams(params transport.Params) error {
	for k, v := range params {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return &opError{name: p.info.Name, op: "configure", kind: transport.ErrBadParams, err: fmt.Errorf("parameter %q is not valid UTF-8", k)}
		}
	}
	return nil
}

// checkText refuses an address or a path (what) that is not valid UTF-8,
// as checkParams.
func (p *plugin) checkText(op, what, s string) error {
	if !utf8.ValidString(s) {
		return &opError{name: p.info.Name, op: op, kind: transport.ErrBadParams, err: fmt.Errorf("%s %q is not valid UTF-8", what, s)}
	}
	return nil
}

// clientFactory is the plugin's transport.Factory.
func (p *plugin) clientFactory(params transport.Params) (transport.Transport, error) {
	if err := p.checkParams(params); err != nil {
		return nil, err
	}
	t := p.newTransport(proto.Role_ROLE_CLIENT, params, "")
	ctx, cancel := withTimeout(context.Background(), p.h.cfg.CallTimeout)
	defer cancel()
	if _, _, err := t.instance(ctx); err != nil {
		return nil, err
	}
	return t, nil
}

// serverFactory is the plugin's transport.ServerFactory.
func (p *plugin) serverFactory(params transport.Params, dir string) (transport.Transport, transport.Params, error) {
	if err := p.checkParams(params); err != nil {
		return nil, nil, err
	}
	if err := p.checkText("configure", "state directory", dir); err != nil {
		return nil, nil, err
	}
	t := p.newTransport(proto.Role_ROLE_SERVER, params, dir)
	ctx, cancel := withTimeout(context.Background(), p.h.cfg.CallTimeout)
	defer cancel()
	if _, _, err := t.instance(ctx); err != nil {
		return nil, nil, err
	}
	return t, maps.Clone(t.pub), nil
}

func (p *plugin) newTransport(role proto.Role, params transport.Params, dir string) *Transport {
	t := &Transport{p: p, in: &instance{role: role, params: maps.Clone(params), dir: dir, lock: make(chan struct{}, 1)}}
	runtime.AddCleanup(t, func(in *instance) {
		select {
		case p.release <- in:
		default: // the plugin keeps the instance until it restarts
		}
	}, t.in)
	return t
}

// instance returns the live generation and the Transport's instance in
// it, configuring one if needed.
func (t *Transport) instance(ctx context.Context) (*generation, uint64, error) {
	for try := 0; ; try++ {
		g, id, err := t.instanceOnce(ctx)
		if err != nil && try == 0 && g != nil && diedUnder(ctx, g, err) {
			continue
		}
		return g, id, err
	}
}

func (t *Transport) instanceOnce(ctx context.Context) (*generation, uint64, error) {
	g, err := t.p.live(ctx)
	if err != nil {
		return nil, 0, err
	}
	in := t.in
	if err := in.acquire(ctx); err != nil {
		return nil, 0, ctxErr(t.p.info.Name, "configure", ctx)
	}
	defer in.unlock()
	if in.gen == g {
		return g, in.id, nil
	}
	ctx, cancel := withTimeout(ctx, t.p.h.cfg.CallTimeout)
	defer cancel()
	r, err := g.rpc.Configure(ctx, &proto.ConfigureRequest{Role: in.role, Params: in.params, StateDir: in.dir})
	if err == nil {
		err = r.GetError().Err()
	}
	if err != nil {
		return g, 0, g.callErr(ctx, "configure", err)
	}
	if r.GetInstance() == 0 || !smallParams(r.GetPublicParams()) {
		err := g.violation("configure", fmt.Errorf("instance %d, %d public parameters", r.GetInstance(), len(r.GetPublicParams())))
		return g, 0, &opError{name: t.p.info.Name, op: "configure", kind: transport.ErrRefused, err: err}
	}
	pub := transport.Params(r.GetPublicParams())
	if in.gen != nil && in.role == proto.Role_ROLE_SERVER && !maps.Equal(pub, in.pub) {
		t.p.log.Warn("public parameters changed after a restart; issued invites may not work")
	}
	in.gen, in.id, in.pub = g, r.GetInstance(), pub
	if t.pub == nil {
		t.pub = pub
	}
	return g, in.id, nil
}

// closeOn closes the instance in g, if it lives there; g nil (no process
// running) only forgets the instance. It waits at most CallTimeout.
func (in *instance) closeOn(ctx context.Context, g *generation, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if in.acquire(ctx) != nil {
		return // a Configure in a hung plugin holds it; the plugin is cut off for that
	}
	id := in.id
	live := g != nil && in.gen == g
	in.gen = nil
	in.unlock()
	if !live {
		return
	}
	g.rpc.Close(ctx, &proto.CloseRequest{Target: &proto.CloseRequest_Instance{Instance: id}}) //nolint:errcheck // best effort
}

func smallParams(m map[string]string) bool {
	if len(m) > 64 {
		return false
	}
	for k, v := range m {
		if len(k) > 256 || len(v) > proto.MaxMessage {
			return false
		}
	}
	return true
}

// Name returns the plugin's name.
func (t *Transport) Name() string { return t.p.info.Name }

// Close releases the transport's instance in the plugin now, which closes
// the plugin-side transport if it has a Close (for some transports, such
// as quic and kcp, that closes its connections too). Without Close, the
// instance is released once the Transport and every connection and
// listener it opened are unreachable.
func (t *Transport) Close() error {
	// No waiting for a restart: an instance dies with its process.
	t.in.closeOn(context.Background(), t.p.running(), t.p.h.cfg.CallTimeout)
	return nil
}

// Dial connects to addr through the plugin. ctx and DialTimeout bound the
// whole set-up; a plugin that does not answer in time gives an error
// wrapping transport.ErrTimeout.
func (t *Transport) Dial(ctx context.Context, addr string) (net.Conn, error) {
	if err := t.p.checkText("dial", "address", addr); err != nil {
		return nil, err
	}
	h := t.p.h
	if err := h.addFlow(); err != nil {
		return nil, err
	}
	c, err := t.dial(ctx, addr)
	if err != nil {
		h.flowDone()
		return nil, err
	}
	return c.netConn(), nil
}

func (t *Transport) dial(ctx context.Context, addr string) (flowConn, error) {
	ctx, cancel := withTimeout(ctx, t.p.h.cfg.DialTimeout)
	defer cancel()
	for try := 0; ; try++ {
		g, inst, err := t.instance(ctx)
		if err != nil {
			return nil, err
		}
		c, err := t.dialOn(ctx, g, inst, addr)
		if err != nil && try == 0 && diedUnder(ctx, g, err) {
			continue // once more, in the restarted plugin
		}
		return c, err
	}
}

// diedUnder reports whether a call on g failed because g died (not
// because of the plugin's answer or the caller's context).
func diedUnder(ctx context.Context, g *generation, err error) bool {
	var re *proto.RemoteError
	if ctx.Err() != nil || !g.isDead() || errors.As(err, &re) || errors.Is(err, errViolation) {
		return false
	}
	var v *ctl.ViolationError
	return !errors.As(g.reason, &v) && !errors.Is(g.reason, errViolation)
}

// withTimeout bounds ctx by d; the cause of the deadline names d.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, d, fmt.Errorf("no answer from the plugin within %v: %w", d, context.DeadlineExceeded))
}

func (t *Transport) dialOn(ctx context.Context, g *generation, inst uint64, addr string) (flowConn, error) {
	id, uc, dc, err := g.openFlow(ctx)
	if err != nil {
		return nil, err
	}
	r, err := g.rpc.Dial(ctx, &proto.DialRequest{Instance: inst, Flow: id, Addr: addr})
	if err == nil {
		err = r.GetError().Err()
	}
	if err == nil {
		err = g.checkAddrs("dial", r.GetLocal(), r.GetRemote())
	}
	if err == nil {
		err = g.checkDatagrams("dial", r.GetMaxDatagramSize(), r.GetHandedOver())
	}
	if err != nil {
		uc.Close()
		closeConns(dc)
		g.abandon(id)
		return nil, g.callErr(ctx, "dial "+addr, err)
	}
	if r.GetHandedOver() {
		closeConns(dc)
		return g.handedOver(ctx, t, "dial "+addr, id, uc)
	}
	return newConn(t, g, id, uc, dc, r.GetLocal(), r.GetRemote(), r.GetHalfClose(), r.GetMaxDatagramSize()), nil
}

// flowConn is a connection through a plugin before it is handed out.
type flowConn interface {
	// netConn returns the connection to hand out.
	netConn() net.Conn
	// release closes a connection that is not handed out.
	release()
}

// handedOver takes the TCP socket the plugin handed over for flow id in
// place of the socket pair uc.
func (g *generation) handedOver(ctx context.Context, t *Transport, op string, id uint64, uc stream) (flowConn, error) {
	uc.Close()
	f, err := g.takeSocket(id)
	if err != nil {
		g.abandon(id)
		return nil, g.callErr(ctx, op, g.violation(op, err))
	}
	g.forget(id)
	defer f.Close()
	nc, err := net.FileConn(f)
	if err != nil {
		return nil, &opError{name: g.p.info.Name, op: op, err: err}
	}
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		nc.Close()
		return nil, &opError{name: g.p.info.Name, op: op, err: fmt.Errorf("handed over a %T", nc)}
	}
	return &sockConn{TCPConn: tc, t: t, name: g.p.info.Name, h: g.p.h}, nil
}

// Listen starts a listener in the plugin. ctx and CallTimeout bound the
// call. The listener survives a restart of the plugin: it listens again
// on the address it was bound to.
func (t *Transport) Listen(ctx context.Context, addr string) (transport.Listener, error) {
	if err := t.p.checkText("listen", "address", addr); err != nil {
		return nil, err
	}
	if t.p.h.isClosed() {
		return nil, &opError{name: t.p.info.Name, op: "listen", kind: transport.ErrClosed, err: errors.New("host closed")}
	}
	ctx, cancel := withTimeout(ctx, t.p.h.cfg.CallTimeout)
	defer cancel()
	var (
		g    *generation
		id   uint64
		a    netAddr
		err  error
		inst uint64
	)
	for try := 0; ; try++ {
		g, inst, err = t.instance(ctx)
		if err != nil {
			return nil, err
		}
		id, a, err = g.listen(ctx, inst, addr)
		if err != nil && try == 0 && diedUnder(ctx, g, err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		break
	}
	l := &listener{t: t, gen: g, id: id, addr: a, relisten: make(chan struct{}, 1)}
	l.life, l.stop = context.WithCancel(context.Background())
	return l, nil
}

// listen opens a listener in g.
func (g *generation) listen(ctx context.Context, inst uint64, addr string) (uint64, netAddr, error) {
	r, err := g.rpc.Listen(ctx, &proto.ListenRequest{Instance: inst, Addr: addr})
	if err == nil {
		err = r.GetError().Err()
	}
	if err == nil {
		err = g.checkAddrs("listen", r.GetAddr())
	}
	if err == nil && r.GetListener() == 0 {
		err = g.violation("listen", errors.New("listener id 0"))
	}
	if err != nil {
		return 0, netAddr{}, g.callErr(ctx, "listen "+addr, err)
	}
	return r.GetListener(), addrFrom(r.GetAddr()), nil
}

// listener is a listener in a plugin.
type listener struct {
	t    *Transport
	addr netAddr

	// life ends when the listener is closed; it cancels pending Accepts.
	life context.Context
	stop context.CancelFunc

	relisten chan struct{} // holds a token while an Accept listens again

	mu     sync.Mutex
	gen    *generation // where id lives
	id     uint64
	closed bool
}

// Accept waits for the next connection. If the plugin restarts meanwhile,
// Accept listens again in the new process and goes on waiting; once the
// plugin will not run again (refused at a restart), Accept fails with an
// error wrapping transport.ErrClosed.
func (l *listener) Accept(ctx context.Context) (net.Conn, error) {
	name := l.t.p.info.Name
	if err := ctx.Err(); err != nil {
		return nil, ctxErr(name, "accept", ctx)
	}
	if l.isClosed() {
		return nil, l.closedErr()
	}
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(l.life, cancel)
	defer stop()
	h := l.t.p.h
	for {
		c, err := l.acceptOnce(actx)
		switch {
		case err == nil:
			if err := h.addFlow(); err != nil {
				c.release()
				return nil, err
			}
			return c.netConn(), nil
		case l.isClosed():
			err = l.closedErr()
		case ctx.Err() != nil:
			err = ctxErr(name, "accept", ctx)
		case errors.Is(err, errGenDied):
			continue // listen again in the restarted plugin
		case l.t.p.fatalErr() != nil && !errors.Is(err, transport.ErrClosed):
			// The plugin will not run again (refused at a restart, or
			// the host closed): this listener is over for good.
			err = fmt.Errorf("plugins: %s listener on %s: %w: %w", name, l.addr.address, transport.ErrClosed, err)
		}
		return nil, err
	}
}

var errGenDied = errors.New("plugin died")

func (l *listener) acceptOnce(ctx context.Context) (flowConn, error) {
	g, lid, err := l.current(ctx)
	if err != nil {
		return nil, err
	}
	id, uc, dc, err := g.openFlow(ctx)
	if err != nil {
		if g.isDead() {
			return nil, errGenDied
		}
		return nil, err
	}
	r, err := g.rpc.Accept(ctx, &proto.AcceptRequest{Listener: lid, Flow: id})
	if err == nil {
		err = r.GetError().Err()
	}
	if err == nil {
		err = g.checkAddrs("accept", r.GetLocal(), r.GetRemote())
	}
	if err == nil {
		err = g.checkDatagrams("accept", r.GetMaxDatagramSize(), r.GetHandedOver())
	}
	if err != nil {
		uc.Close()
		closeConns(dc)
		g.abandon(id)
		err = g.callErr(ctx, "accept", err)
		if g.isDead() && ctx.Err() == nil {
			return nil, errGenDied
		}
		return nil, err
	}
	if r.GetHandedOver() {
		closeConns(dc)
		return g.handedOver(ctx, l.t, "accept", id, uc)
	}
	return newConn(l.t, g, id, uc, dc, r.GetLocal(), r.GetRemote(), r.GetHalfClose(), r.GetMaxDatagramSize()), nil
}

// current returns the generation and the listener's id in it, listening
// again on the bound address after a restart (one Accept at a time does;
// the others wait for it). l.mu is never held across a call to the
// plugin, so Close is never held up by one.
func (l *listener) current(ctx context.Context) (*generation, uint64, error) {
	select {
	case l.relisten <- struct{}{}:
	case <-ctx.Done():
		return nil, 0, ctxErr(l.t.p.info.Name, "accept", ctx)
	}
	defer func() { <-l.relisten }()
	l.mu.Lock()
	g, id, closed := l.gen, l.id, l.closed
	l.mu.Unlock()
	switch {
	case closed:
		return nil, 0, l.closedErr()
	case g != nil && !g.isDead():
		return g, id, nil
	}
	ctx, cancel := withTimeout(ctx, l.t.p.h.cfg.CallTimeout)
	defer cancel()
	g, inst, err := l.t.instance(ctx)
	if err != nil {
		return nil, 0, err
	}
	id, _, err = g.listen(ctx, inst, l.addr.address)
	if err != nil {
		return nil, 0, err
	}
	l.mu.Lock()
	closed = l.closed
	if !closed {
		l.gen, l.id = g, id
	}
	l.mu.Unlock()
	if closed { // Close ran meanwhile: the new listener is nobody's
		closeListener(g, id, l.t.p.h.cfg.CallTimeout) //nolint:errcheck // best effort
		return nil, 0, l.closedErr()
	}
	l.t.p.log.Info("listening again after a restart", "addr", l.addr.address)
	return g, id, nil
}

// closeListener closes listener id in g, waiting at most timeout.
func closeListener(g *generation, id uint64, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	r, err := g.rpc.Close(ctx, &proto.CloseRequest{Target: &proto.CloseRequest_Listener{Listener: id}})
	if err == nil {
		err = r.GetError().Err()
	}
	if err != nil && !g.isDead() {
		return g.callErr(ctx, "close listener", err)
	}
	return nil
}

func (l *listener) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

func (l *listener) closedErr() error {
	return &opError{name: l.t.p.info.Name, op: "accept on " + l.addr.address, kind: transport.ErrClosed, err: net.ErrClosed}
}

// Close stops the listener in the plugin; pending Accepts return
// transport.ErrClosed. It is idempotent.
func (l *listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	g, id := l.gen, l.id
	l.mu.Unlock()
	l.stop()
	if g == nil || g.isDead() {
		return nil
	}
	return closeListener(g, id, l.t.p.h.cfg.CallTimeout)
}

// Addr is the address the plugin's listener is bound to.
func (l *listener) Addr() net.Addr { return l.addr }

// netAddr is an address a plugin reported.
type netAddr struct{ network, address string }

func (a netAddr) Network() string { return a.network }
func (a netAddr) String() string  { return a.address }

func addrFrom(a *proto.Addr) netAddr {
	return netAddr{network: a.GetNetwork(), address: a.GetAddress()}
}

// checkAddrs cuts the plugin off if an address it reported is oversized.
func (g *generation) checkAddrs(op string, addrs ...*proto.Addr) error {
	for _, a := range addrs {
		if len(a.GetNetwork()) > 64 || len(a.GetAddress()) > 1024 {
			return g.violation(op, fmt.Errorf("address of %d bytes", len(a.GetAddress())))
		}
	}
	return nil
}

// checkDatagrams cuts the plugin off if a flow's datagram limit breaks
// the protocol: datagrams the plugin never announced, on a handed-over
// socket, or above ctl.MaxDatagram.
func (g *generation) checkDatagrams(op string, limit uint32, handedOver bool) error {
	switch {
	case limit == 0:
		return nil
	case !g.datagram.Load():
		return g.violation(op, fmt.Errorf("max_datagram_size %d without datagram capability", limit))
	case handedOver:
		return g.violation(op, fmt.Errorf("max_datagram_size %d on a handed-over socket", limit))
	case limit > ctl.MaxDatagram:
		return g.violation(op, fmt.Errorf("max_datagram_size %d above %d", limit, ctl.MaxDatagram))
	}
	return nil
}

// errViolation marks a protocol violation by a plugin.
var errViolation = errors.New("protocol violation")

// violation cuts g off for breaking the protocol in op.
func (g *generation) violation(op string, err error) error {
	err = fmt.Errorf("%w in %s: %w", errViolation, op, err)
	g.cut(err)
	return err
}

// callErr turns a failed control call into the error the caller sees. A
// plugin's own error keeps its code; a call that timed out or was
// cancelled matches the context's error (and transport.ErrTimeout for a
// deadline); a gRPC failure that is not the caller's means the plugin died
// or broke the protocol, and it is cut off.
func (g *generation) callErr(ctx context.Context, op string, err error) error {
	name := g.p.info.Name
	var re *proto.RemoteError
	switch {
	case errors.As(err, &re):
		return &opError{name: name, op: op, err: err}
	case errors.Is(err, errViolation):
		return &opError{name: name, op: op, kind: transport.ErrRefused, err: err}
	case ctx.Err() != nil:
		return ctxErr(name, op, ctx)
	}
	err = boundStatus(err)
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.DeadlineExceeded:
		return &opError{name: name, op: op, kind: transport.ErrTimeout, err: err}
	case codes.Canceled:
		if g.isDead() {
			// Not the caller's context: the plugin was cut off or exited
			// during the call, which closed its client connection.
			return &opError{name: name, op: op, kind: transport.ErrRefused, err: fmt.Errorf("plugin stopped: %w", g.reason)}
		}
		return &opError{name: name, op: op, kind: context.Canceled, err: err}
	case codes.Unimplemented:
		return &opError{name: name, op: op, kind: transport.ErrUnsupported, err: err}
	case codes.Unavailable:
		if g.isDead() {
			return &opError{name: name, op: op, kind: transport.ErrRefused, err: fmt.Errorf("plugin stopped: %w", g.reason)}
		}
		g.cut(fmt.Errorf("control connection lost in %s: %w", op, err))
		return &opError{name: name, op: op, kind: transport.ErrRefused, err: err}
	}
	return &opError{name: name, op: op, kind: transport.ErrRefused, err: g.violation(op, err)}
}

// boundStatus returns err with its gRPC status message, which the plugin
// writes, cut to proto.MaxMessage bytes, as the plugin's own errors are.
func boundStatus(err error) error {
	st, ok := status.FromError(err)
	if !ok || len(st.Message()) <= proto.MaxMessage {
		return err
	}
	return status.Error(st.Code(), proto.Clip(st.Message())+" [cut]")
}

// ctxErr reports why ctx ended: a deadline also wraps transport.ErrTimeout.
func ctxErr(name, op string, ctx context.Context) error {
	err := context.Cause(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return &opError{name: name, op: op, kind: transport.ErrTimeout, err: err}
	}
	return &opError{name: name, op: op, err: err}
}

// conn is the host's end of a flow: a real AF_UNIX socket, so reads,
// writes and deadlines are the kernel's, or rings over it; and, if the
// flow carries datagrams, its datagram socket.
type conn struct {
	t             *Transport // keeps the instance in the plugin alive
	uc            stream
	g             *generation
	id            uint64
	local, remote netAddr
	half          bool

	dc    *net.UnixConn // the datagram socket, or nil
	dmax  int           // the largest datagram SendDatagram takes
	dsend sync.Mutex    // serializes SendDatagram; guards dbuf
	dbuf  []byte
	drecv chan struct{}           // holds a token while a ReceiveDatagram reads
	dbad  atomic.Pointer[opError] // set when the plugin broke the protocol on dc

	shut      atomic.Bool // CloseWrite done
	closed    atomic.Bool // Close called
	closeOnce sync.Once
	closeErr  error
}

// halfConn is a conn whose transport honours a half close.
type halfConn struct{ *conn }

// CloseWrite ends the stream towards the peer; reading goes on.
func (c halfConn) CloseWrite() error { return c.closeWrite() }

// dgramConn is a conn whose flow carries datagrams.
type dgramConn struct{ *conn }

// SendDatagram sends b as one datagram. It fails with an error matching
// transport.ErrTooLarge above MaxDatagramSize. It waits while the
// datagram socket's buffer is full (the plugin forwards what it holds
// first), until the connection's write deadline.
func (c dgramConn) SendDatagram(b []byte) error { return c.sendDatagram(b) }

// ReceiveDatagram waits for the next datagram until ctx ends. Once the
// flow's datagrams are over it fails with an error matching
// transport.ErrClosed (and transport.ErrRefused as well if the plugin
// died or broke the protocol).
func (c dgramConn) ReceiveDatagram(ctx context.Context) ([]byte, error) {
	return c.receiveDatagram(ctx)
}

// MaxDatagramSize is the largest datagram SendDatagram takes, as the
// plugin announced for the connection.
func (c dgramConn) MaxDatagramSize() int { return c.dmax }

// halfDgramConn is a dgramConn whose transport honours a half close.
type halfDgramConn struct{ dgramConn }

// CloseWrite ends the stream towards the peer; reading goes on.
func (c halfDgramConn) CloseWrite() error { return c.closeWrite() }

var (
	_ net.Conn               = halfConn{}
	_ transport.DatagramConn = dgramConn{}
	_ transport.DatagramConn = halfDgramConn{}
)

// newConn returns the conn of flow id; dc and dmax are its datagram
// socket and limit, or nil and 0.
func newConn(t *Transport, g *generation, id uint64, uc stream, dc *net.UnixConn, local, remote *proto.Addr, half bool, dmax uint32) *conn {
	c := &conn{t: t, uc: uc, g: g, id: id, local: addrFrom(local), remote: addrFrom(remote), half: half}
	if dc != nil && dmax > 0 {
		c.dc, c.dmax, c.drecv = dc, int(dmax), make(chan struct{}, 1)
	} else {
		closeConns(dc)
	}
	return c
}

// netConn returns c with CloseWrite if the transport honours it, and the
// methods of transport.DatagramConn if the flow carries datagrams.
func (c *conn) netConn() net.Conn {
	switch {
	case c.dc != nil && c.half:
		return halfDgramConn{dgramConn{c}}
	case c.dc != nil:
		return dgramConn{c}
	case c.half:
		return halfConn{c}
	}
	return c
}

// release closes a conn that was never handed out.
func (c *conn) release() {
	c.uc.Close()
	closeConns(c.dc)
	c.g.abandon(c.id)
}

func (c *conn) name() string { return c.g.p.info.Name }

// Read reads from the flow. The end of the plugin's stream is io.EOF only
// if the plugin announced it; otherwise the plugin died or its
// connection failed, and Read returns an error wrapping
// transport.ErrRefused.
func (c *conn) Read(b []byte) (int, error) {
	n, err := c.uc.Read(b)
	if err == io.EOF {
		clean, ctlErr := c.g.cleanEOF(c.id)
		if clean {
			return n, io.EOF
		}
		return n, c.abnormal("read", ctlErr)
	}
	if err != nil {
		err = c.wrap("read", err)
	}
	return n, err
}

// abnormal is the error of a flow that ended without an announced EOF.
func (c *conn) abnormal(op string, ctlErr error) error {
	return &opError{name: c.g.p.info.Name, op: op, kind: transport.ErrRefused, err: fmt.Errorf("flow %d ended abnormally (%s)", c.id, c.why(ctlErr))}
}

// why explains the abnormal end of the flow.
func (c *conn) why(ctlErr error) string {
	if ctlErr != nil || c.g.isDead() {
		return "the plugin exited"
	}
	// A dying process's sockets close one by one, and its control socket
	// (whose end tells the host) need not be the first: a flow that ended
	// abnormally waits a moment for it. Only such ends pay the wait.
	t := time.NewTimer(whyWait)
	defer t.Stop()
	select {
	case <-c.g.ctlDone:
		return "the plugin exited"
	case <-t.C:
		return "the plugin's connection failed"
	}
}

// whyWait bounds how long why waits to learn whether the plugin died: far
// longer than a process's exit takes to close its descriptors.
const whyWait = 100 * time.Millisecond

// Write writes to the flow. Once the plugin's process is gone it fails
// at once, as a socket whose other end closed would: a ring would take
// bytes until it is full, with nobody left to read them.
func (c *conn) Write(b []byte) (int, error) {
	// After Close or CloseWrite, the stream's own error (net.ErrClosed,
	// EPIPE) says more than the plugin's end.
	if c.g.gone() && !c.closed.Load() && !c.shut.Load() {
		return 0, c.abnormal("write", nil)
	}
	n, err := c.uc.Write(b)
	if err != nil {
		err = c.wrap("write", err)
	}
	return n, err
}

func (c *conn) closeWrite() error {
	if err := c.g.send(ctlEOF, c.id); err != nil {
		return c.wrap("close write", err)
	}
	c.shut.Store(true)
	if err := c.uc.CloseWrite(); err != nil {
		return c.wrap("close write", err)
	}
	return nil
}

// Close closes the flow; the plugin closes its connection once it has
// delivered what was written before.
func (c *conn) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		if c.shut.Load() {
			c.g.send(ctlClose, c.id) //nolint:errcheck // a dead plugin needs no CLOSE
		}
		if err := c.uc.Close(); err != nil {
			c.closeErr = c.wrap("close", err)
		}
		closeConns(c.dc)
		c.g.forget(c.id)
		c.g.p.h.flowDone()
	})
	return c.closeErr
}

// LocalAddr is the local address of the plugin's connection.
func (c *conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr is the remote address of the plugin's connection.
func (c *conn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets the read and write deadlines. The write deadline also
// bounds SendDatagram; ReceiveDatagram has its context instead.
func (c *conn) SetDeadline(t time.Time) error {
	if c.dc != nil {
		c.dc.SetWriteDeadline(t) //nolint:errcheck // fails only once closed, as uc's does
	}
	return c.uc.SetDeadline(t)
}

// SetReadDeadline sets the read deadline of the stream.
func (c *conn) SetReadDeadline(t time.Time) error { return c.uc.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline of the stream and of
// SendDatagram.
func (c *conn) SetWriteDeadline(t time.Time) error {
	if c.dc != nil {
		c.dc.SetWriteDeadline(t) //nolint:errcheck // fails only once closed, as uc's does
	}
	return c.uc.SetWriteDeadline(t)
}

func (c *conn) sendDatagram(b []byte) error {
	const op = "send datagram"
	if len(b) > c.dmax {
		return &opError{name: c.name(), op: op, kind: transport.ErrTooLarge, err: fmt.Errorf("datagram of %d bytes exceeds %d", len(b), c.dmax)}
	}
	if e := c.dbad.Load(); e != nil {
		return e
	}
	c.dsend.Lock()
	defer c.dsend.Unlock()
	c.dbuf = ctl.AppendDatagram(c.dbuf[:0], b)
	if _, err := c.dc.Write(c.dbuf); err != nil {
		return c.datagramErr(op, err)
	}
	return nil
}

// recordBufs holds buffers for one datagram record and a byte more, to
// see a record that is too long.
var recordBufs = sync.Pool{New: func() any {
	b := make([]byte, ctl.MaxRecord+1)
	return &b
}}

// aLongTimeAgo is a deadline that has passed.
var aLongTimeAgo = time.Unix(1, 0)

// receiveDatagram reads the next record. One call reads at a time, and
// ctx's end interrupts it with a read deadline in the past.
func (c *conn) receiveDatagram(ctx context.Context) ([]byte, error) {
	const op = "receive datagram"
	select {
	case c.drecv <- struct{}{}:
	case <-ctx.Done():
		return nil, ctxErr(c.name(), op, ctx)
	}
	defer func() { <-c.drecv }()
	if ctx.Err() != nil {
		return nil, ctxErr(c.name(), op, ctx)
	}
	if e := c.dbad.Load(); e != nil {
		return nil, e
	}
	if ctx.Done() != nil {
		fired := make(chan struct{})
		stop := context.AfterFunc(ctx, func() {
			c.dc.SetReadDeadline(aLongTimeAgo) //nolint:errcheck // fails only once closed
			close(fired)
		})
		defer func() {
			if !stop() {
				<-fired
				c.dc.SetReadDeadline(time.Time{}) //nolint:errcheck // fails only once closed
			}
		}()
	}
	bp := recordBufs.Get().(*[]byte)
	defer recordBufs.Put(bp)
	n, err := c.dc.Read(*bp)
	switch {
	case err != nil && ctx.Err() != nil && errors.Is(err, os.ErrDeadlineExceeded):
		return nil, ctxErr(c.name(), op, ctx)
	case err == io.EOF && n == 0 && !hungUp(c.dc):
		err = nil // an empty record, which ParseDatagram refuses
	case err != nil:
		return nil, c.datagramErr(op, err)
	}
	p, err := ctl.ParseDatagram((*bp)[:n])
	if err != nil {
		err = c.g.violation(op, err) // the plugin is cut off; its sockets close
		e := &opError{name: c.name(), op: op, kind: transport.ErrClosed,
			err: fmt.Errorf("flow %d: datagrams ended: %w: %w", c.id, transport.ErrRefused, err)}
		// Nothing more is read from a plugin that broke the protocol,
		// not even records it wrote before it was cut off.
		c.dbad.Store(e)
		return nil, e
	}
	return append(make([]byte, 0, len(p)), p...), nil
}

// datagramErr is the error of a datagram operation that failed with err.
// The plugin's end of the datagram socket closes when the flow's
// datagrams are over, which the plugin announces first (DGRAM_EOF), or
// when the plugin dies. Either way the error matches transport.ErrClosed;
// an end that was not announced also matches transport.ErrRefused, as a
// stream's abnormal end does.
func (c *conn) datagramErr(op string, err error) error {
	if err != io.EOF && !isReset(err) {
		return wrapIO(c.name(), op, err)
	}
	if clean, ctlErr := c.g.cleanDgramEOF(c.id); clean {
		err = fmt.Errorf("flow %d: the connection's datagrams ended", c.id)
	} else {
		err = fmt.Errorf("flow %d: datagrams ended abnormally (%s): %w", c.id, c.why(ctlErr), transport.ErrRefused)
	}
	return &opError{name: c.name(), op: op, kind: transport.ErrClosed, err: err}
}

// wrap wraps an I/O error with its core/transport sentinel.
func (c *conn) wrap(op string, err error) error {
	if errors.Is(err, ring.ErrCorrupt) {
		// The plugin is cut off; the ring stays broken.
		return &opError{name: c.name(), op: op, kind: transport.ErrRefused, err: c.g.violation(fmt.Sprintf("%s on flow %d", op, c.id), err)}
	}
	if isReset(err) {
		err = fmt.Errorf("flow %d ended abnormally (%s): %w", c.id, c.why(c.g.ctl.Sync()), err)
	}
	return wrapIO(c.g.p.info.Name, op, err)
}

func isReset(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED)
}

// wrapIO wraps an I/O error with its core/transport sentinel.
func wrapIO(name, op string, err error) error {
	var ne net.Error
	var kind error
	switch {
	case isReset(err):
		kind = transport.ErrRefused
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		kind = transport.ErrTimeout
	case errors.Is(err, net.ErrClosed):
		kind = transport.ErrClosed
	}
	return &opError{name: name, op: op, kind: kind, err: err}
}

// sockConn is a TCP connection a plugin handed over: the core reads and
// writes the socket itself. Its errors wrap the core/transport sentinels
// as a conn's do; the rest of *net.TCPConn's methods are promoted.
type sockConn struct {
	*net.TCPConn
	t         *Transport // keeps the instance in the plugin alive
	name      string
	h         *Host
	closeOnce sync.Once
	closeErr  error
}

func (c *sockConn) netConn() net.Conn { return c }

func (c *sockConn) release() { c.TCPConn.Close() }

// Read reads from the connection.
func (c *sockConn) Read(b []byte) (int, error) {
	n, err := c.TCPConn.Read(b)
	if err != nil && err != io.EOF {
		err = wrapIO(c.name, "read", err)
	}
	return n, err
}

// Write writes to the connection.
func (c *sockConn) Write(b []byte) (int, error) {
	n, err := c.TCPConn.Write(b)
	if err != nil {
		err = wrapIO(c.name, "write", err)
	}
	return n, err
}

// ReadFrom copies r into the connection, with splice where the kernel can.
func (c *sockConn) ReadFrom(r io.Reader) (int64, error) {
	n, err := c.TCPConn.ReadFrom(r)
	if err != nil {
		err = wrapIO(c.name, "write", err)
	}
	return n, err
}

// WriteTo copies the connection into w until EOF.
func (c *sockConn) WriteTo(w io.Writer) (int64, error) {
	n, err := c.TCPConn.WriteTo(w)
	if err != nil {
		err = wrapIO(c.name, "read", err)
	}
	return n, err
}

// CloseWrite ends the stream towards the peer.
func (c *sockConn) CloseWrite() error {
	if err := c.TCPConn.CloseWrite(); err != nil {
		return wrapIO(c.name, "close write", err)
	}
	return nil
}

// Close closes the connection.
func (c *sockConn) Close() error {
	c.closeOnce.Do(func() {
		if err := c.TCPConn.Close(); err != nil {
			c.closeErr = wrapIO(c.name, "close", err)
		}
		c.h.flowDone()
	})
	return c.closeErr
}

// opError is an error of a plugin transport: it matches both its
// core/transport sentinel (if any) and the error it wraps.
type opError struct {
	name string
	op   string
	kind error // a core/transport sentinel, context.Canceled, or nil
	err  error
}

func (e *opError) Error() string { return "plugins: " + e.name + ": " + e.op + ": " + e.err.Error() }

func (e *opError) Unwrap() []error {
	if e.kind == nil {
		return []error{e.err}
	}
	return []error{e.kind, e.err}
}

// Timeout reports whether the error is a timeout, as net.Error does.
func (e *opError) Timeout() bool { return errors.Is(e, transport.ErrTimeout) }

// Temporary is false: it is part of net.Error only for compatibility.
func (e *opError) Temporary() bool { return false }

var _ net.Error = (*opError)(nil)
