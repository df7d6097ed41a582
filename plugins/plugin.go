package plugins

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/plugins/internal/ctl"
	"github.com/commucat/commucat/plugins/proto"
)

// maxRecvMsg is the largest gRPC message the host accepts from a plugin:
// every response is small, and a plugin sending more is cut off.
const maxRecvMsg = 1 << 20

// releaseQueue bounds the instances waiting to be closed in a plugin.
const releaseQueue = 64

// plugin is one plugin binary and its supervisor: the goroutine run keeps
// a process (a generation) running, restarting it with backoff.
type plugin struct {
	h   *Host
	log *slog.Logger

	mu       sync.Mutex
	info     Info
	gen      *generation   // the running process, or nil
	changed  chan struct{} // closed and replaced when gen or fatal change
	fatal    error         // set when the plugin will not run again
	restarts int

	first   chan struct{}           // closed after the first start attempt
	release chan *instance          // instances to close in the plugin
	stop    context.CancelCauseFunc // ends run, with the reason; set before run starts
}

func newPlugin(h *Host, info Info) *plugin {
	p := &plugin{
		h:       h,
		log:     h.log.With("plugin", info.Name),
		info:    info,
		changed: make(chan struct{}),
		first:   make(chan struct{}),
		release: make(chan *instance, releaseQueue),
	}
	if info.Err != nil {
		p.fatal = info.Err
		close(p.first)
	}
	return p
}

// describe returns the plugin's Info once its first start is over.
func (p *plugin) describe() Info {
	<-p.first
	p.mu.Lock()
	defer p.mu.Unlock()
	info := p.info
	if info.Err == nil && p.fatal != nil && p.gen == nil {
		info.Err = p.fatal
	}
	return info
}

// notifyLocked wakes the goroutines waiting for a change.
func (p *plugin) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *plugin) setGen(g *generation) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gen = g
	p.notifyLocked()
}

func (p *plugin) setFatal(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fatal = err
	p.gen = nil
	p.notifyLocked()
}

// fatalErr returns why the plugin will not run again, or nil.
func (p *plugin) fatalErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fatal
}

// running returns the running generation, or nil if there is none now.
func (p *plugin) running() *generation {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gen != nil && !p.gen.isDead() {
		return p.gen
	}
	return nil
}

// live returns the running generation, waiting for a (re)start until ctx
// ends.
func (p *plugin) live(ctx context.Context) (*generation, error) {
	for {
		p.mu.Lock()
		g, fatal, changed := p.gen, p.fatal, p.changed
		p.mu.Unlock()
		switch {
		case g != nil && !g.isDead():
			return g, nil
		case fatal != nil && errors.Is(fatal, transport.ErrClosed):
			return nil, fatal
		case fatal != nil:
			return nil, fmt.Errorf("plugins: %s is not running: %w: %w", p.info.Name, transport.ErrRefused, fatal)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctxErr(p.info.Name, "wait for the plugin to start", ctx)
		}
	}
}

// backoff is the wait before the restart that follows the given number of
// consecutive failures (at least 1): base doubled per failure, at most
// limit.
func backoff(base, limit time.Duration, failures int) time.Duration {
	d := base
	for i := 1; i < failures && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// permanentError marks a start failure that a restart cannot cure.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func permanent(err error) error { return &permanentError{err} }

func isPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// run keeps the plugin running until ctx ends.
func (p *plugin) run(ctx context.Context) {
	defer p.h.wg.Done()
	cfg := &p.h.cfg
	failures := 0
	for n := 1; ; n++ {
		g, err := p.start(ctx, n)
		if err == nil && ctx.Err() == nil {
			p.setGen(g) // before first closes: Discover's callers find it running
		}
		if n == 1 {
			if err != nil {
				p.setFatal(err)
			}
			close(p.first)
		}
		switch {
		case ctx.Err() != nil:
			if g != nil {
				g.stop(true)
			}
			p.setFatal(context.Cause(ctx))
			return
		case err != nil && (n == 1 || isPermanent(err)):
			p.log.Error("plugin refused", "error", err)
			p.setFatal(err)
			return
		case err != nil:
			failures++
			p.log.Warn("plugin failed to start", "error", err, "failures", failures)
		default:
			p.log.Info("plugin running", "pid", g.pid(), "generation", n)
			started := time.Now()
			p.watch(ctx, g)
			p.setGen(nil)
			closing := ctx.Err() != nil
			g.stop(closing)
			if closing {
				p.setFatal(context.Cause(ctx))
				return
			}
			if time.Since(started) >= cfg.BackoffMax {
				failures = 0
			}
			failures++
			p.mu.Lock()
			p.restarts++
			p.mu.Unlock()
			p.log.Warn("plugin stopped; restarting", "reason", g.deathReason(), "in", backoff(cfg.Backoff, cfg.BackoffMax, failures))
		}
		t := time.NewTimer(backoff(cfg.Backoff, cfg.BackoffMax, failures))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			p.setFatal(context.Cause(ctx))
			return
		}
	}
}

// watch checks g's health and closes released instances until g dies or
// ctx ends.
func (p *plugin) watch(ctx context.Context, g *generation) {
	t := time.NewTicker(p.h.cfg.HealthInterval)
	defer t.Stop()
	for {
		select {
		case <-g.dead:
			return
		case <-ctx.Done():
			return
		case <-t.C:
			if err := g.health(ctx); err != nil && !g.isDead() && ctx.Err() == nil {
				g.cut(fmt.Errorf("health check failed: %w", err))
			}
		case in := <-p.release:
			in.closeOn(ctx, g, p.h.cfg.CallTimeout)
		}
	}
}

var versionRE = regexp.MustCompile(`Plugin version: (\d+)`)

// start starts generation n of the plugin and checks its description.
func (p *plugin) start(ctx context.Context, n int) (*generation, error) {
	cfg := &p.h.cfg
	hostEnd, plugEnd, err := ctl.Pair()
	if err != nil {
		return nil, err
	}
	defer plugEnd.Close()
	g := &generation{p: p, n: n, dead: make(chan struct{}), ctlDone: make(chan struct{}), flows: make(map[uint64]*hostFlow)}
	g.ctl, err = ctl.New(hostEnd, g.handleCtl)
	hostEnd.Close()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(p.info.Path)
	cmd.Env = append([]string{
		proto.ControlFDEnv + "=3",
		goplugin.EnvUnixSocketDir + "=" + p.h.sockDir,
	}, cfg.Env...)
	cmd.Env = append(cmd.Env, cfg.PluginEnv[p.info.Name]...)
	cmd.ExtraFiles = []*os.File{plugEnd} // descriptor 3
	cmd.Dir = "/"
	setProcAttr(cmd)
	g.cmd = cmd
	sum, _ := hex.DecodeString(p.info.SHA256)
	versions := make(map[int]goplugin.PluginSet)
	for v := proto.MinProtocolVersion; v <= proto.ProtocolVersion; v++ {
		versions[v] = goplugin.PluginSet{proto.PluginName: grpcPlugin{}}
	}
	g.client = goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig: goplugin.HandshakeConfig{
			ProtocolVersion:  proto.ProtocolVersion,
			MagicCookieKey:   proto.MagicCookieKey,
			MagicCookieValue: proto.MagicCookieValue,
		},
		VersionedPlugins: versions,
		Cmd:              cmd,
		SecureConfig:     &goplugin.SecureConfig{Checksum: sum, Hash: sha256.New()},
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		AutoMTLS:         true,
		SkipHostEnv:      true,
		StartTimeout:     cfg.StartTimeout,
		// go-plugin's own parsing of the plugin's log lines is off (a
		// malformed line could crash it); Stderr re-logs them.
		Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.Off, Output: io.Discard}),
		Stderr: newLogWriter(p.log),
		GRPCDialOptions: []grpc.DialOption{
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsg)),
		},
	})
	rpc, err := g.client.Client()
	if err != nil {
		g.client.Kill()
		g.ctl.Close()
		return nil, p.startErr(err)
	}
	raw, err := rpc.Dispense(proto.PluginName)
	tc, ok := raw.(proto.TransportClient)
	if err != nil || !ok {
		g.client.Kill()
		g.ctl.Close()
		return nil, permanent(fmt.Errorf("plugins: %s: dispense: %v", p.info.Name, err))
	}
	g.rpc = tc
	g.version = g.client.NegotiatedVersion()
	g.wg.Add(1)
	go g.readCtl()
	if err := p.checkDescription(ctx, g); err != nil {
		g.cut(err)
		g.stop(false)
		return nil, err
	}
	return g, nil
}

// unrecognized starts go-plugin's error for a binary whose first line on
// its standard output is not the handshake; the line follows.
const unrecognized = "Unrecognized remote plugin message: "

// startErr explains why go-plugin could not start the plugin.
func (p *plugin) startErr(err error) error {
	name := p.info.Name
	switch {
	case errors.Is(err, goplugin.ErrChecksumsDoNotMatch) && p.info.Pinned:
		return permanent(fmt.Errorf("%w: %s changed since it was discovered; check it, pin it again (%s) and restart", ErrPinMismatch, name, p.h.pinHint(name)))
	case errors.Is(err, goplugin.ErrChecksumsDoNotMatch):
		// Not pinned: the host still runs only the binary it discovered.
		return permanent(fmt.Errorf("%w: %s changed since it was discovered; restart to use the new binary", ErrChanged, name))
	case versionRE.MatchString(err.Error()):
		v, _ := strconv.Atoi(versionRE.FindStringSubmatch(err.Error())[1])
		return permanent(&VersionError{Name: name, Plugin: v, Host: proto.ProtocolVersion, HostMin: proto.MinProtocolVersion})
	case strings.Contains(err.Error(), unrecognized):
		// go-plugin's message for this spans a dozen lines of guesses
		// around the first line the binary wrote, if any.
		_, first, _ := strings.Cut(err.Error(), unrecognized)
		first, _, _ = strings.Cut(first, "\n")
		said := "exited before writing anything"
		if first != "" {
			said = fmt.Sprintf("wrote %.200q", first)
		}
		return fmt.Errorf("plugins: start %s: it %s on its standard output instead of the go-plugin handshake: not a CommuCat plugin, or it failed at start (its standard error is in the log)", name, said)
	}
	return fmt.Errorf("plugins: start %s: %w", name, err)
}

// checkDescription asks g to describe itself, in the protocol version
// the handshake chose, and records the answer.
func (p *plugin) checkDescription(ctx context.Context, g *generation) error {
	ctx, cancel := withTimeout(ctx, p.h.cfg.CallTimeout)
	defer cancel()
	r, err := g.rpc.Describe(ctx, &proto.DescribeRequest{HostProtocolVersion: uint32(g.version)})
	if err == nil {
		err = r.GetError().Err()
	}
	if err != nil {
		return g.callErr(ctx, "describe", err)
	}
	if v := r.GetProtocolVersion(); v != uint32(g.version) {
		return permanent(fmt.Errorf("plugins: %s describes itself in plugin protocol version %d after the handshake chose %d", p.info.Name, v, g.version))
	}
	if r.GetName() != p.info.Name {
		return permanent(fmt.Errorf("plugins: %s describes itself as %.64q", p.info.Path, r.GetName()))
	}
	if len(r.GetVersion()) > 256 || len(r.GetParams()) > 256 {
		return permanent(fmt.Errorf("plugins: %s: oversized description", p.info.Name))
	}
	caps := r.GetCapabilities()
	// Datagrams cross the boundary from protocol version 2 on.
	g.datagram.Store(caps.GetDatagram() && g.version >= proto.DatagramVersion)
	info := Info{
		Version: r.GetVersion(),
		Capabilities: Capabilities{
			Stream:   caps.GetStream(),
			Datagram: g.datagram.Load(),
			Client:   caps.GetClient(),
			Server:   caps.GetServer(),
		},
	}
	for _, pp := range r.GetParams() {
		par := Param{Name: pp.GetName(), Doc: pp.GetDoc(), Required: pp.GetRequired()}
		for _, role := range pp.GetRoles() {
			par.Client = par.Client || role == proto.Role_ROLE_CLIENT
			par.Server = par.Server || role == proto.Role_ROLE_SERVER
		}
		info.Params = append(info.Params, par)
	}
	p.mu.Lock()
	p.info.Version, p.info.Capabilities, p.info.Params = info.Version, info.Capabilities, info.Params
	p.mu.Unlock()
	return nil
}

func (p *plugin) stats(ctx context.Context) (Stats, error) {
	ctx, cancel := withTimeout(ctx, p.h.cfg.CallTimeout)
	defer cancel()
	restarts := func() int {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.restarts
	}
	var r *proto.StatsResponse
	for try := 0; ; try++ {
		g, err := p.live(ctx)
		if err != nil {
			return Stats{Restarts: restarts()}, err
		}
		r, err = g.rpc.Stats(ctx, &proto.StatsRequest{})
		if err == nil {
			err = r.GetError().Err()
		}
		if err != nil {
			err = g.callErr(ctx, "stats", err)
			if try == 0 && diedUnder(ctx, g, err) {
				continue
			}
			return Stats{Restarts: restarts()}, err
		}
		break
	}
	return Stats{
		Restarts: restarts(), Instances: r.GetInstances(), Listeners: r.GetListeners(),
		FlowsOpen: r.GetFlowsOpen(), FlowsTotal: r.GetFlowsTotal(), Dials: r.GetDials(),
		DialErrors: r.GetDialErrors(), Accepts: r.GetAccepts(),
		BytesToHost: r.GetBytesToHost(), BytesFromHost: r.GetBytesFromHost(),
		DatagramsToHost: r.GetDatagramsToHost(), DatagramsFromHost: r.GetDatagramsFromHost(),
	}, nil
}

func (p *plugin) health(ctx context.Context) error {
	ctx, cancel := withTimeout(ctx, p.h.cfg.CallTimeout)
	defer cancel()
	for try := 0; ; try++ {
		g, err := p.live(ctx)
		if err != nil {
			return err
		}
		err = g.health(ctx)
		if err != nil {
			err = g.callErr(ctx, "health", err)
			if try == 0 && diedUnder(ctx, g, err) {
				continue
			}
		}
		return err
	}
}

// grpcPlugin is go-plugin's view of the Transport service, client side.
type grpcPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
}

func (grpcPlugin) GRPCServer(*goplugin.GRPCBroker, *grpc.Server) error {
	return errors.New("plugins: the host serves no plugin")
}

func (grpcPlugin) GRPCClient(_ context.Context, _ *goplugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return proto.NewTransportClient(c), nil
}

// generation is one run of a plugin's process.
type generation struct {
	p      *plugin
	n      int
	cmd    *exec.Cmd
	client *goplugin.Client
	rpc    proto.TransportClient
	ctl    *ctl.Conn
	wg     sync.WaitGroup // readCtl

	version  int         // the plugin protocol version negotiated; set by start
	datagram atomic.Bool // every flow has a datagram socket; set by checkDescription
	// handsOver is set once the plugin handed a socket over: its flows
	// then get no rings, which they would not use.
	handsOver atomic.Bool

	dead     chan struct{} // closed when the process is (being) stopped
	ctlDone  chan struct{} // closed when the control socket has ended: the process is gone or being killed
	deadOnce sync.Once
	reason   error // why, set before dead is closed

	mu       sync.Mutex
	lastFlow uint64
	flows    map[uint64]*hostFlow
	// ends counts the EOF, DGRAM_EOF and HANDOVER messages for flows the
	// host has forgotten, against forgot, the flows it forgot: a plugin
	// sends at most one of each per flow, so a plugin that sends more is
	// cut off instead of keeping the control reader busy.
	ends, forgot uint64
}

// hostFlow is what the host knows of an open flow.
type hostFlow struct {
	eof      bool     // the plugin announced the clean end of its stream
	dgramEOF bool     // the plugin announced the clean end of its datagrams
	sock     *os.File // a socket the plugin handed over, not yet taken
}

func (g *generation) pid() int {
	if g.cmd.Process == nil {
		return 0
	}
	return g.cmd.Process.Pid
}

func (g *generation) isDead() bool { return isClosed(g.dead) }

// gone reports whether g's control socket has ended: the process exited
// or is being killed, and reads none of its flows any more. A graceful
// stop lets the process drain its flows first.
func (g *generation) gone() bool { return isClosed(g.ctlDone) }

// isClosed reports whether ch is closed; it never waits.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func (g *generation) deathReason() error {
	<-g.dead
	return g.reason
}

// markDead records why g ends; only the first reason counts.
func (g *generation) markDead(reason error) bool {
	first := false
	g.deadOnce.Do(func() {
		g.reason = reason
		close(g.dead)
		first = true
	})
	return first
}

// cut kills the process at once (SIGKILL) for reason; the supervisor
// reaps it and restarts the plugin.
func (g *generation) cut(reason error) {
	if g.markDead(reason) {
		g.p.log.Error("plugin cut off", "reason", reason)
		if g.cmd.Process != nil {
			g.cmd.Process.Kill() //nolint:errcheck // it may have exited already
		}
	}
}

var errStopped = errors.New("stopped by the host")

// stopGrace is how long a graceful stop waits for the plugin to exit
// before killing it.
const stopGrace = 2 * time.Second

// stop ends the process, gracefully (go-plugin asks it to exit, then it
// is killed after stopGrace) or at once, and waits for it and g's
// goroutines. go-plugin's own grace period starts only once the plugin
// has answered its request to exit, which a hung plugin never does: the
// timer here kills it regardless.
func (g *generation) stop(graceful bool) {
	if graceful {
		g.markDead(errStopped)
		if p := g.cmd.Process; p != nil {
			t := time.AfterFunc(stopGrace, func() {
				g.p.log.Warn("plugin did not exit when asked; killed", "pid", p.Pid)
				p.Kill() //nolint:errcheck // it may have exited already
			})
			defer t.Stop()
		}
	} else {
		g.cut(errStopped)
	}
	g.client.Kill()
	g.ctl.Close()
	g.wg.Wait()
}

// readCtl reads the control socket until the plugin goes away or breaks
// the protocol, then cuts it off.
func (g *generation) readCtl() {
	defer g.wg.Done()
	err := g.ctl.Run()
	defer close(g.ctlDone)
	var v *ctl.ViolationError
	switch {
	case errors.As(err, &v):
		g.cut(err)
	case g.isDead():
	default:
		g.cut(fmt.Errorf("the plugin exited or closed its control socket: %w", err))
	}
}

// handleCtl handles a message from the plugin: EOF, DGRAM_EOF, or
// HANDOVER with a connected TCP socket.
func (g *generation) handleCtl(m ctl.Msg, fds []int) error {
	want := 0
	if m.Type == ctl.TypeHandOver {
		want = 1
	}
	switch {
	case m.Type != ctl.TypeEOF && m.Type != ctl.TypeHandOver && (m.Type != ctl.TypeDgramEOF || !g.datagram.Load()):
		closeFDs(fds)
		return &ctl.ViolationError{Reason: fmt.Sprintf("the plugin sent %s", m.Type)}
	case len(fds) != want:
		closeFDs(fds)
		return &ctl.ViolationError{Reason: fmt.Sprintf("%s with %d descriptors", m.Type, len(fds))}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if m.Flow > g.lastFlow {
		closeFDs(fds)
		return &ctl.ViolationError{Reason: fmt.Sprintf("%s for flow %d, which was never opened", m.Type, m.Flow)}
	}
	f := g.flows[m.Flow]
	switch {
	case f == nil:
		g.ends++
		if g.ends > 3*g.forgot {
			closeFDs(fds)
			return &ctl.ViolationError{Reason: fmt.Sprintf("more messages for closed flows than they could have sent (%s for flow %d)", m.Type, m.Flow)}
		}
	case m.Type == ctl.TypeHandOver:
	case m.Type == ctl.TypeEOF && f.eof, m.Type == ctl.TypeDgramEOF && f.dgramEOF:
		return &ctl.ViolationError{Reason: fmt.Sprintf("second %s for flow %d", m.Type, m.Flow)}
	case m.Type == ctl.TypeEOF:
		f.eof = true
	default:
		f.dgramEOF = true
	}
	if m.Type != ctl.TypeHandOver {
		return nil
	}
	switch {
	case f == nil: // abandoned meanwhile
		closeFDs(fds)
	case f.sock != nil:
		closeFDs(fds)
		return &ctl.ViolationError{Reason: fmt.Sprintf("second HANDOVER for flow %d", m.Flow)}
	default:
		if err := checkTCPSocket(fds[0]); err != nil {
			closeFDs(fds)
			return &ctl.ViolationError{Reason: err.Error()}
		}
		f.sock = os.NewFile(uintptr(fds[0]), "handover")
		g.handsOver.Store(true)
	}
	return nil
}

// takeSocket returns the socket the plugin handed over for flow id, once
// every control message already received is handled. A socket that came
// is good even if the control socket ended since (the plugin exited after
// handing it over).
func (g *generation) takeSocket(id uint64) (*os.File, error) {
	syncErr := g.ctl.Sync()
	g.mu.Lock()
	defer g.mu.Unlock()
	f := g.flows[id]
	switch {
	case f != nil && f.sock != nil:
		s := f.sock
		f.sock = nil
		return s, nil
	case syncErr != nil:
		return nil, syncErr
	}
	return nil, fmt.Errorf("flow %d: handed over, but no socket came", id)
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		os.NewFile(uintptr(fd), "").Close()
	}
}

// openFlow creates a flow (and its datagram socket pair, if the plugin
// has datagram capability; dc is nil otherwise) and sends the plugin's
// ends; the caller names the flow in a Dial or Accept call. The flow's
// stream is its socket, or rings over it if the plugin speaks
// proto.RingVersion, has not handed a socket over, and
// HostConfig.RingFlows allows another.
func (g *generation) openFlow(ctx context.Context) (id uint64, uc stream, dc *net.UnixConn, err error) {
	sock, peer, err := ctl.FlowPair()
	if err != nil {
		return 0, nil, nil, fmt.Errorf("plugins: %s: %w", g.p.info.Name, err)
	}
	defer peer.Close()
	uc = sock
	peers := []*os.File{peer}
	if g.datagram.Load() {
		var dpeer *os.File
		if dc, dpeer, err = ctl.DatagramPair(); err != nil {
			uc.Close()
			return 0, nil, nil, fmt.Errorf("plugins: %s: %w", g.p.info.Name, err)
		}
		defer dpeer.Close()
		peers = append(peers, dpeer)
	}
	if g.version >= proto.RingVersion && !g.handsOver.Load() {
		if rs, files := g.p.h.newRing(sock); rs != nil {
			defer closeFiles(files)
			uc = rs
			peers = append(peers, files...)
		}
	}
	g.mu.Lock()
	g.lastFlow++
	id = g.lastFlow
	g.flows[id] = &hostFlow{}
	g.mu.Unlock()
	deadline, own := time.Now().Add(g.p.h.cfg.CallTimeout), true
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline, own = d, false
	}
	if err := g.ctl.Send(ctl.Msg{Type: ctl.TypeFlow, Flow: id}, deadline, peers...); err != nil {
		uc.Close()
		closeConns(dc)
		g.forget(id)
		// Only the host's own limit condemns the plugin: the caller's
		// deadline may simply have been short.
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			if own {
				g.cut(errors.New("the plugin does not read its control socket"))
			}
		case errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNRESET):
			// The plugin's end is gone: it exited, and the control
			// reader may not have seen the EOF yet. Mark the generation
			// dead now, so that the caller tries again in the restarted
			// plugin instead of failing.
			g.cut(fmt.Errorf("the plugin exited or closed its control socket: %w", err))
		}
		if ctx.Err() != nil {
			return 0, nil, nil, ctxErr(g.p.info.Name, "open flow", ctx)
		}
		return 0, nil, nil, &opError{name: g.p.info.Name, op: "open flow", kind: transport.ErrRefused, err: err}
	}
	return id, uc, dc, nil
}

// closeFiles closes files.
func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// closeConns closes the sockets that are not nil.
func closeConns(cs ...*net.UnixConn) {
	for _, c := range cs {
		if c != nil {
			c.Close()
		}
	}
}

// forget drops a flow's state.
func (g *generation) forget(id uint64) {
	g.mu.Lock()
	f := g.flows[id]
	if f != nil {
		g.forgot++
	}
	delete(g.flows, id)
	g.mu.Unlock()
	if f != nil && f.sock != nil {
		f.sock.Close()
	}
}

// abandon drops a flow whose Dial or Accept failed and tells the plugin.
func (g *generation) abandon(id uint64) {
	g.forget(id)
	g.send(ctl.TypeClose, id) //nolint:errcheck // a dead plugin needs no CLOSE
}

// send sends a message without a descriptor; a plugin that does not take
// it within CallTimeout is cut off.
func (g *generation) send(t ctl.Type, id uint64) error {
	if g.isDead() {
		return errors.New("plugin stopped")
	}
	err := g.ctl.Send(ctl.Msg{Type: t, Flow: id}, time.Now().Add(g.p.h.cfg.CallTimeout))
	if errors.Is(err, os.ErrDeadlineExceeded) {
		g.cut(errors.New("the plugin does not read its control socket"))
	}
	return err
}

// cleanEOF reports whether the plugin announced the end of flow id's
// stream, after handling every control message already received, and
// why the control socket ended if it did.
func (g *generation) cleanEOF(id uint64) (bool, error) {
	return g.announced(id, func(f *hostFlow) bool { return f.eof })
}

// cleanDgramEOF is cleanEOF for the end of flow id's datagrams.
func (g *generation) cleanDgramEOF(id uint64) (bool, error) {
	return g.announced(id, func(f *hostFlow) bool { return f.dgramEOF })
}

// announced reports what end reads from flow id's state once every
// control message already received is handled, and why the control
// socket ended if it did.
func (g *generation) announced(id uint64, end func(*hostFlow) bool) (bool, error) {
	err := g.ctl.Sync()
	g.mu.Lock()
	defer g.mu.Unlock()
	f := g.flows[id]
	return f != nil && end(f), err
}

func (g *generation) health(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, g.p.h.cfg.CallTimeout)
	defer cancel()
	r, err := g.rpc.Health(ctx, &proto.HealthRequest{})
	if err == nil {
		err = r.GetError().Err()
	}
	return err
}

// Control message types, for brevity.
const (
	ctlEOF   = ctl.TypeEOF
	ctlClose = ctl.TypeClose
)
