package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/commucat/commucat/plugins/internal/ctl"
	"github.com/commucat/commucat/plugins/internal/ring"
	"github.com/commucat/commucat/plugins/proto"
)

// maxRecvMsg raises gRPC's receive limit on the plugin side above its
// 4 MiB default, so that large parameter sets are never cut off.
const maxRecvMsg = 64 << 20

// maxPending bounds the flows received but not yet claimed by a Dial or
// Accept call; beyond it a FLOW's descriptor is closed at once.
const maxPending = 1024

// serve runs the plugin protocol and returns the process's exit status.
func serve(p Plugin, log *slog.Logger) int {
	fd, err := strconv.Atoi(os.Getenv(proto.ControlFDEnv))
	if err != nil || fd < 3 {
		log.Error("no control socket", "env", proto.ControlFDEnv, "value", os.Getenv(proto.ControlFDEnv))
		return 1
	}
	f := os.NewFile(uintptr(fd), "control")
	s, err := newServer(p, f, log)
	f.Close()
	if err != nil {
		log.Error("control socket", "error", err)
		return 1
	}
	// The control socket ends only when the host is gone or broke the
	// protocol: either way this process has nothing left to serve. This
	// goroutine ends the process, and with it every other goroutine.
	go func() {
		err := s.ctl.Run()
		if errors.Is(err, io.EOF) {
			os.Exit(0)
		}
		log.Error("control socket", "error", err)
		os.Exit(1)
	}()
	// Every version this SDK speaks serves the same service: what differs
	// (datagrams) follows the version the host names in Describe.
	set := plugin.PluginSet{proto.PluginName: &grpcPlugin{srv: s}}
	versions := make(map[int]plugin.PluginSet)
	for v := proto.MinProtocolVersion; v <= proto.ProtocolVersion; v++ {
		versions[v] = set
	}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: plugin.HandshakeConfig{
			ProtocolVersion:  proto.ProtocolVersion,
			MagicCookieKey:   proto.MagicCookieKey,
			MagicCookieValue: proto.MagicCookieValue,
		},
		VersionedPlugins: versions,
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(append(opts, grpc.MaxRecvMsgSize(maxRecvMsg))...)
		},
		Logger: hclog.New(&hclog.LoggerOptions{
			Name:       "go-plugin",
			Output:     stderr,
			Level:      hclog.Info,
			JSONFormat: true,
		}),
	})
	return 0
}

// grpcPlugin registers the Transport service with go-plugin.
type grpcPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	srv *server
}

func (g *grpcPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	proto.RegisterTransportServer(s, g.srv)
	return nil
}

func (g *grpcPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, errors.New("sdk: the plugin side has no client")
}

// server is the plugin side of the protocol: the Transport service and
// the control socket's flows.
type server struct {
	proto.UnimplementedTransportServer
	p   Plugin
	log *slog.Logger
	ctl *ctl.Conn

	mu        sync.Mutex
	nextID    uint64
	instances map[uint64]Transport
	listeners map[uint64]Listener
	flows     map[uint64]*flow
	pending   int // flows received, not claimed

	// datagram is set by Describe when the plugin announced datagram
	// capability: every FLOW then carries a datagram socket.
	datagram atomic.Bool
	// rings is set by Describe when the host speaks RingVersion: a FLOW
	// may then carry a ring memfd and a room bell last.
	rings atomic.Bool

	st struct {
		flowsTotal, dials, dialErrors, accepts atomic.Uint64
		toHost, fromHost                       atomic.Uint64
		dgramsToHost, dgramsFromHost           atomic.Uint64
	}
}

// flow is one connection between the host and the transport. Its fields
// but tc and uc are guarded by server.mu.
type flow struct {
	id        uint64
	fd        int           // received descriptor, until claimed; -1 after
	dfd       int           // received datagram descriptor, or -1
	rfd       int           // received ring memfd, or -1
	bfd       int           // received room bell, or -1
	ready     chan struct{} // closed when fd arrives or the host cancels
	got       bool          // FLOW received
	claimed   bool          // a Dial or Accept call took it
	cancelled bool          // CLOSE before the flow started
	active    bool          // spliced
	hostEOF   bool          // EOF received from the host
	closeReq  bool          // CLOSE received while active

	tc    net.Conn     // the transport's connection
	uc    stream       // the flow socket, or the rings over it
	left  atomic.Int32 // copy directions still running
	close sync.Once

	dc     *net.UnixConn      // the datagram socket, if the flow carries datagrams
	dstop  context.CancelFunc // ends the datagram pumps
	dend   func()             // announces the end of the datagrams (DGRAM_EOF)
	dclose sync.Once
}

func (f *flow) shutdown() {
	f.close.Do(func() {
		f.tc.Close()
		f.uc.Close()
	})
	f.endDatagrams()
}

// endDatagrams stops the flow's datagrams: it announces their clean end
// with DGRAM_EOF, then closes the datagram socket, so that the host reads
// its end and its writes fail.
func (f *flow) endDatagrams() {
	if f.dc == nil {
		return
	}
	f.dclose.Do(func() {
		f.dstop()
		f.dend()
		f.dc.Close()
	})
}

// closeFDs closes the descriptors f received and nobody claimed.
func (f *flow) closeFDs() {
	for _, fd := range []*int{&f.fd, &f.dfd, &f.rfd, &f.bfd} {
		if *fd >= 0 {
			closeFD(*fd)
			*fd = -1
		}
	}
}

func newServer(p Plugin, ctlFile *os.File, log *slog.Logger) (*server, error) {
	s := &server{
		p:         p,
		log:       log,
		instances: make(map[uint64]Transport),
		listeners: make(map[uint64]Listener),
		flows:     make(map[uint64]*flow),
	}
	c, err := ctl.New(ctlFile, s.handleCtl)
	if err != nil {
		return nil, err
	}
	s.ctl = c
	return s, nil
}

// handleCtl handles a control message from the host.
func (s *server) handleCtl(m ctl.Msg, fds []int) error {
	if m.Type != ctl.TypeFlow && len(fds) > 0 {
		closeFDs(fds)
		return &ctl.ViolationError{Reason: fmt.Sprintf("%s message with descriptors", m.Type)}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.flows[m.Flow]
	switch m.Type {
	case ctl.TypeFlow:
		want := 1
		if s.datagram.Load() {
			want = 2 // the stream socket, then the datagram socket
		}
		dfd, rfd, bfd := -1, -1, -1
		switch {
		case len(fds) == want+2 && s.rings.Load(): // then the ring memfd and room bell
			rfd, bfd = fds[want], fds[want+1]
		case len(fds) != want:
			closeFDs(fds)
			return &ctl.ViolationError{Reason: fmt.Sprintf("FLOW with %d descriptors, want %d", len(fds), want)}
		}
		if want == 2 {
			dfd = fds[1]
		}
		switch {
		case f == nil:
			if s.pending >= maxPending {
				closeFDs(fds)
				s.log.Warn("too many unclaimed flows; dropped one", "flow", m.Flow)
				return nil
			}
			f = &flow{id: m.Flow, fd: fds[0], dfd: dfd, rfd: rfd, bfd: bfd, ready: make(chan struct{}), got: true}
			close(f.ready)
			s.flows[m.Flow] = f
			s.pending++
		case f.got:
			closeFDs(fds)
			return &ctl.ViolationError{Reason: fmt.Sprintf("second FLOW for flow %d", m.Flow)}
		case f.cancelled: // CLOSE came first: its claimer has given up
			closeFDs(fds)
			return &ctl.ViolationError{Reason: fmt.Sprintf("FLOW for flow %d after its CLOSE", m.Flow)}
		default: // a claimer waits for it
			f.fd, f.dfd, f.rfd, f.bfd, f.got = fds[0], dfd, rfd, bfd, true
			close(f.ready)
		}
	case ctl.TypeEOF:
		if f != nil {
			f.hostEOF = true
		}
	case ctl.TypeClose:
		switch {
		case f == nil:
		case f.active:
			f.closeReq = true
			go f.shutdown() // Close may block briefly; never under the lock
		case !f.claimed:
			f.closeFDs()
			s.pending--
			delete(s.flows, m.Flow)
		case !f.got:
			f.cancelled = true
			close(f.ready)
		default: // claimed, being dialled: start sees closeReq
			f.closeReq = true
		}
	default:
		return &ctl.ViolationError{Reason: fmt.Sprintf("the host sent %s", m.Type)}
	}
	return nil
}

// closeFDs closes the descriptors that are not -1.
func closeFDs(fds []int) {
	for _, fd := range fds {
		if fd >= 0 {
			closeFD(fd)
		}
	}
}

// claim takes the flow socket (and datagram socket, if any: dc is nil
// otherwise) the host sent for id, waiting for them until ctx ends.
func (s *server) claim(ctx context.Context, id uint64) (f *flow, uc stream, dc *net.UnixConn, err error) {
	s.ctl.Sync() //nolint:errcheck // a dead control socket ends the process
	s.mu.Lock()
	f = s.flows[id]
	switch {
	case f == nil:
		f = &flow{id: id, fd: -1, dfd: -1, rfd: -1, bfd: -1, ready: make(chan struct{})}
		s.flows[id] = f
	case f.claimed:
		s.mu.Unlock()
		return nil, nil, nil, fmt.Errorf("sdk: flow %d used twice: %w", id, errNotFound)
	case f.got:
		s.pending--
	}
	f.claimed = true
	s.mu.Unlock()
	select {
	case <-f.ready:
	case <-ctx.Done():
	}
	s.mu.Lock()
	if !f.got || f.cancelled {
		delete(s.flows, id)
		f.cancelled = true
		s.mu.Unlock()
		if err := ctx.Err(); err != nil {
			return nil, nil, nil, err
		}
		return nil, nil, nil, fmt.Errorf("sdk: flow %d cancelled by the host: %w", id, ErrClosed)
	}
	fd, dfd, rfd, bfd := f.fd, f.dfd, f.rfd, f.bfd
	f.fd, f.dfd, f.rfd, f.bfd = -1, -1, -1, -1
	s.mu.Unlock()
	uc, err = flowStream(fd, rfd, bfd)
	if err != nil {
		if dfd >= 0 {
			closeFD(dfd)
		}
		s.drop(f)
		return nil, nil, nil, err
	}
	if dfd >= 0 {
		if dc, err = ctl.DatagramConn(dfd); err != nil {
			uc.Close()
			s.drop(f)
			return nil, nil, nil, err
		}
	}
	return f, uc, dc, nil
}

// discard closes the flow socket id if it arrived unclaimed; a call that
// fails before claiming its flow leaves nothing behind.
func (s *server) discard(id uint64) {
	s.ctl.Sync() //nolint:errcheck // a dead control socket ends the process
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.flows[id]; f != nil && f.got && !f.claimed {
		f.closeFDs()
		s.pending--
		delete(s.flows, id)
	}
}

// drop forgets a flow that never started.
func (s *server) drop(f *flow) {
	s.mu.Lock()
	delete(s.flows, f.id)
	s.mu.Unlock()
}

// start splices the transport connection tc to the flow socket uc and,
// if the flow has a datagram socket dc and tc carries datagrams, pumps
// datagrams between them. It returns the largest datagram the host may
// send (tc's limit, at most ctl.MaxDatagram), or 0 if the flow has no
// datagrams (dc is closed then).
func (s *server) start(f *flow, tc net.Conn, uc stream, dc *net.UnixConn) int {
	f.tc, f.uc = tc, uc
	f.left.Store(2)
	limit := 0
	if d, ok := tc.(DatagramConn); ok && dc != nil {
		limit = max(0, min(d.MaxDatagramSize(), ctl.MaxDatagram))
	}
	switch {
	case limit > 0:
		var ctx context.Context
		ctx, f.dstop = context.WithCancel(context.Background())
		f.dend = func() {
			s.ctl.Send(ctl.Msg{Type: ctl.TypeDgramEOF, Flow: f.id}, time.Time{}) //nolint:errcheck // a dead control socket ends the process
		}
		f.dc = dc
		d := tc.(DatagramConn)
		go s.datagramsUp(f, d, limit)
		go s.datagramsDown(ctx, f, d, limit)
	case dc != nil:
		dc.Close()
	}
	s.mu.Lock()
	f.active = true
	closeNow := f.closeReq
	s.mu.Unlock()
	s.st.flowsTotal.Add(1)
	go s.up(f)
	go s.down(f)
	if closeNow {
		f.shutdown()
	}
	return limit
}

// datagramsUp sends the host's datagrams with the transport until the
// host closes the datagram socket, breaks the protocol on it, or the
// transport's connection fails.
func (s *server) datagramsUp(f *flow, d DatagramConn, limit int) {
	defer f.endDatagrams()
	buf := make([]byte, 1+limit+1) // room to see a record that is too long
	for {
		n, err := f.dc.Read(buf)
		if err != nil {
			return
		}
		p, err := ctl.ParseDatagram(buf[:n])
		if err == nil && len(p) > limit {
			err = fmt.Errorf("datagram of %d bytes or more, above the %d announced", len(p), limit)
		}
		if err != nil {
			s.log.Warn("the host broke the protocol on a datagram socket; the flow's datagrams end", "flow", f.id, "error", err)
			return
		}
		switch err := d.SendDatagram(p); {
		case err == nil:
			s.st.dgramsFromHost.Add(1)
		case errors.Is(err, ErrTooLarge): // the transport's limit shrank: lost, as datagrams may be
		default:
			return
		}
	}
}

// datagramsDown passes the transport's datagrams to the host until ctx
// ends, the transport's connection does, or the host closes the datagram
// socket. When the host does not keep up, the write waits and the
// transport's own queue fills and drops, as it does in process.
func (s *server) datagramsDown(ctx context.Context, f *flow, d DatagramConn, limit int) {
	defer f.endDatagrams()
	rec := make([]byte, 0, 1+limit)
	for {
		p, err := d.ReceiveDatagram(ctx)
		if err != nil {
			return
		}
		if len(p) > ctl.MaxDatagram {
			continue // cannot cross; lost
		}
		rec = ctl.AppendDatagram(rec[:0], p)
		if _, err := f.dc.Write(rec); err != nil {
			return
		}
		s.st.dgramsToHost.Add(1)
	}
}

type closeWriter interface{ CloseWrite() error }

// stream is a flow's byte stream: its socket, or the rings over it.
type stream interface {
	io.ReadWriteCloser
	closeWriter
}

// flowStream turns the received flow descriptor fd, and the ring memfd
// rfd and room bell bfd if the host sent them (else -1), into the flow's
// stream. It takes ownership of all three.
func flowStream(fd, rfd, bfd int) (stream, error) {
	uc, err := ctl.FlowConn(fd)
	if err != nil {
		closeFDs([]int{rfd, bfd})
		return nil, err
	}
	if rfd < 0 {
		return uc, nil
	}
	rc, err := ring.Accept(uc, rfd, bfd)
	if err != nil {
		return nil, err
	}
	return rc, nil
}

// join joins the transport connection c to flow f: it hands c's socket
// over if it may, else splices it. It returns what the answer says:
// whether c was handed over, and the flow's datagram limit (0: none).
func (s *server) join(f *flow, c net.Conn, uc stream, dc *net.UnixConn) (bool, uint32) {
	if s.handOver(f, c, uc) {
		closeConns(dc)
		return true, 0
	}
	return false, uint32(s.start(f, c, uc, dc))
}

// closeConns closes the sockets that are not nil.
func closeConns(cs ...*net.UnixConn) {
	for _, c := range cs {
		if c != nil {
			c.Close()
		}
	}
}

// handOver sends c's own TCP socket to the host in place of flow f's
// socket pair, if the plugin allows it and c is a TCP socket. On success
// c and uc are closed (the host holds its own descriptor of the socket)
// and f is forgotten.
func (s *server) handOver(f *flow, c net.Conn, uc stream) bool {
	if !s.p.HandOver {
		return false
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	dup := -1
	raw.Control(func(fd uintptr) { dup = dupTCP(int(fd)) }) //nolint:errcheck // dup stays -1
	if dup < 0 {
		return false
	}
	file := os.NewFile(uintptr(dup), "handover")
	defer file.Close()
	if err := s.ctl.Send(ctl.Msg{Type: ctl.TypeHandOver, Flow: f.id}, time.Time{}, file); err != nil {
		return false
	}
	s.st.flowsTotal.Add(1)
	c.Close()
	uc.Close()
	s.drop(f)
	return true
}

// up copies the host's bytes to the transport. A clean end of the host's
// stream is a half close if the host sent EOF first, else a close.
func (s *server) up(f *flow) {
	defer s.done(f)
	n, err := io.Copy(f.tc, f.uc)
	s.st.fromHost.Add(uint64(n))
	if err == nil {
		s.ctl.Sync() //nolint:errcheck // a dead control socket ends the process
		s.mu.Lock()
		half := f.hostEOF && !f.closeReq
		s.mu.Unlock()
		if cw, ok := f.tc.(closeWriter); half && ok && cw.CloseWrite() == nil {
			return
		}
	}
	f.shutdown()
}

// down copies the transport's bytes to the host. A clean end of the
// transport's stream is announced with EOF before the half close; any
// failure closes the flow, which the host sees as an abnormal end.
func (s *server) down(f *flow) {
	defer s.done(f)
	n, err := io.Copy(f.uc, f.tc)
	s.st.toHost.Add(uint64(n))
	if err == nil {
		if s.ctl.Send(ctl.Msg{Type: ctl.TypeEOF, Flow: f.id}, time.Time{}) == nil && f.uc.CloseWrite() == nil {
			return
		}
	}
	f.shutdown()
}

// done ends one direction of f; the last one closes and forgets it.
func (s *server) done(f *flow) {
	if f.left.Add(-1) > 0 {
		return
	}
	f.shutdown()
	s.drop(f)
}

var errNotFound = errors.New("not found")

func notFound(what string, id uint64) *proto.Error {
	return &proto.Error{Code: proto.ErrorCode_ERROR_CODE_NOT_FOUND, Message: fmt.Sprintf("sdk: no %s %d", what, id)}
}

func addrOf(a net.Addr) *proto.Addr {
	if a == nil {
		return nil
	}
	return &proto.Addr{Network: a.Network(), Address: a.String()}
}

func (s *server) add(m map[uint64]Transport, t Transport) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	m[s.nextID] = t
	return s.nextID
}

// Describe names the plugin, in the protocol version the host
// negotiated: datagram capability needs version 2, rings version 3.
func (s *server) Describe(_ context.Context, req *proto.DescribeRequest) (*proto.DescribeResponse, error) {
	v := uint32(proto.ProtocolVersion)
	if hv := req.GetHostProtocolVersion(); hv >= proto.MinProtocolVersion && hv < v {
		v = hv
	}
	dgram := s.p.Datagram && v >= proto.DatagramVersion
	s.datagram.Store(dgram)
	s.rings.Store(v >= proto.RingVersion)
	r := &proto.DescribeResponse{
		ProtocolVersion: v,
		Name:            s.p.Name,
		Version:         s.p.Version,
		Capabilities: &proto.Capabilities{
			Stream:   true,
			Datagram: dgram,
			Client:   s.p.Client != nil,
			Server:   s.p.Server != nil,
		},
	}
	for _, p := range s.p.Params {
		pp := &proto.Param{Name: p.Name, Doc: p.Doc, Required: p.Required}
		if p.Client {
			pp.Roles = append(pp.Roles, proto.Role_ROLE_CLIENT)
		}
		if p.Server {
			pp.Roles = append(pp.Roles, proto.Role_ROLE_SERVER)
		}
		r.Params = append(r.Params, pp)
	}
	return r, nil
}

// Configure builds a transport instance.
func (s *server) Configure(_ context.Context, req *proto.ConfigureRequest) (*proto.ConfigureResponse, error) {
	var (
		t   Transport
		pub Params
		err error
	)
	switch req.GetRole() {
	case proto.Role_ROLE_CLIENT:
		if s.p.Client == nil {
			err = fmt.Errorf("sdk: %s has no client side: %w", s.p.Name, ErrUnsupported)
			break
		}
		t, err = s.p.Client(Params(req.GetParams()))
	case proto.Role_ROLE_SERVER:
		if s.p.Server == nil {
			err = fmt.Errorf("sdk: %s has no server side: %w", s.p.Name, ErrUnsupported)
			break
		}
		t, pub, err = s.p.Server(Params(req.GetParams()), req.GetStateDir())
	default:
		err = fmt.Errorf("sdk: unknown role %v: %w", req.GetRole(), ErrBadParams)
	}
	if err == nil && t == nil {
		err = fmt.Errorf("sdk: %s factory returned no transport", s.p.Name)
	}
	if err != nil {
		return &proto.ConfigureResponse{Error: proto.NewError(err)}, nil
	}
	return &proto.ConfigureResponse{Instance: s.add(s.instances, t), PublicParams: pub}, nil
}

func (s *server) instance(id uint64) Transport {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.instances[id]
}

// Dial dials with an instance and splices the connection to the flow.
func (s *server) Dial(ctx context.Context, req *proto.DialRequest) (*proto.DialResponse, error) {
	t := s.instance(req.GetInstance())
	if t == nil {
		s.discard(req.GetFlow())
		return &proto.DialResponse{Error: notFound("instance", req.GetInstance())}, nil
	}
	s.st.dials.Add(1)
	f, uc, dc, err := s.claim(ctx, req.GetFlow())
	if err != nil {
		s.st.dialErrors.Add(1)
		return &proto.DialResponse{Error: proto.NewError(err)}, nil
	}
	c, err := t.Dial(ctx, req.GetAddr())
	if err != nil {
		uc.Close()
		closeConns(dc)
		s.drop(f)
		s.st.dialErrors.Add(1)
		return &proto.DialResponse{Error: proto.NewError(err)}, nil
	}
	_, half := c.(closeWriter)
	r := &proto.DialResponse{Local: addrOf(c.LocalAddr()), Remote: addrOf(c.RemoteAddr()), HalfClose: half}
	r.HandedOver, r.MaxDatagramSize = s.join(f, c, uc, dc)
	return r, nil
}

// Listen opens a listener for an instance.
func (s *server) Listen(ctx context.Context, req *proto.ListenRequest) (*proto.ListenResponse, error) {
	t := s.instance(req.GetInstance())
	if t == nil {
		return &proto.ListenResponse{Error: notFound("instance", req.GetInstance())}, nil
	}
	ln, err := t.Listen(ctx, req.GetAddr())
	if err != nil {
		return &proto.ListenResponse{Error: proto.NewError(err)}, nil
	}
	s.mu.Lock()
	s.nextID++
	id := s.nextID
	s.listeners[id] = ln
	s.mu.Unlock()
	return &proto.ListenResponse{Listener: id, Addr: addrOf(ln.Addr())}, nil
}

// Accept accepts the next connection and splices it to the flow.
func (s *server) Accept(ctx context.Context, req *proto.AcceptRequest) (*proto.AcceptResponse, error) {
	s.mu.Lock()
	ln := s.listeners[req.GetListener()]
	s.mu.Unlock()
	if ln == nil {
		s.discard(req.GetFlow())
		return &proto.AcceptResponse{Error: notFound("listener", req.GetListener())}, nil
	}
	f, uc, dc, err := s.claim(ctx, req.GetFlow())
	if err != nil {
		return &proto.AcceptResponse{Error: proto.NewError(err)}, nil
	}
	c, err := ln.Accept(ctx)
	if err != nil {
		uc.Close()
		closeConns(dc)
		s.drop(f)
		return &proto.AcceptResponse{Error: proto.NewError(err)}, nil
	}
	s.st.accepts.Add(1)
	_, half := c.(closeWriter)
	r := &proto.AcceptResponse{Local: addrOf(c.LocalAddr()), Remote: addrOf(c.RemoteAddr()), HalfClose: half}
	r.HandedOver, r.MaxDatagramSize = s.join(f, c, uc, dc)
	return r, nil
}

// Close closes a listener or an instance.
func (s *server) Close(_ context.Context, req *proto.CloseRequest) (*proto.CloseResponse, error) {
	var c io.Closer
	s.mu.Lock()
	switch tg := req.GetTarget().(type) {
	case *proto.CloseRequest_Listener:
		if ln := s.listeners[tg.Listener]; ln != nil {
			c = ln
			delete(s.listeners, tg.Listener)
		}
	case *proto.CloseRequest_Instance:
		if t := s.instances[tg.Instance]; t != nil {
			c, _ = t.(io.Closer)
			if c == nil {
				c = nopCloser{}
			}
			delete(s.instances, tg.Instance)
		}
	}
	s.mu.Unlock()
	if c == nil {
		return &proto.CloseResponse{Error: &proto.Error{Code: proto.ErrorCode_ERROR_CODE_NOT_FOUND, Message: "sdk: close: no such listener or instance"}}, nil
	}
	return &proto.CloseResponse{Error: proto.NewError(c.Close())}, nil
}

type nopCloser struct{}

func (nopCloser) Close() error { return nil }

// Health reports that the plugin serves.
func (s *server) Health(context.Context, *proto.HealthRequest) (*proto.HealthResponse, error) {
	return &proto.HealthResponse{}, nil
}

// Stats reports the plugin's counters.
func (s *server) Stats(context.Context, *proto.StatsRequest) (*proto.StatsResponse, error) {
	s.mu.Lock()
	r := &proto.StatsResponse{Instances: uint64(len(s.instances)), Listeners: uint64(len(s.listeners))}
	for _, f := range s.flows {
		if f.active {
			r.FlowsOpen++
		}
	}
	s.mu.Unlock()
	r.FlowsTotal = s.st.flowsTotal.Load()
	r.Dials = s.st.dials.Load()
	r.DialErrors = s.st.dialErrors.Load()
	r.Accepts = s.st.accepts.Load()
	r.BytesToHost = s.st.toHost.Load()
	r.BytesFromHost = s.st.fromHost.Load()
	r.DatagramsToHost = s.st.dgramsToHost.Load()
	r.DatagramsFromHost = s.st.dgramsFromHost.Load()
	return r, nil
}

// closeFD closes a descriptor received from the host.
func closeFD(fd int) { os.NewFile(uintptr(fd), "").Close() }
