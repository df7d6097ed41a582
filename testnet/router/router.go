package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commucat/commucat/testnet/link"
	"github.com/commucat/commucat/testnet/packet"
)

// Defaults of Config.
const (
	// DefaultMaxInFlight is the default bound on delayed bytes.
	DefaultMaxInFlight = 64 << 20
	// MaxPacket is the largest packet a device may return: the largest
	// IP packet.
	MaxPacket = 65535
)

// smallBuf is the size of the pooled buffers for packets that fit an
// Ethernet MTU with room to spare.
const smallBuf = 2048

// Device is a host's end of the router: a TUN device, or a fake in tests.
// Read returns one IP packet, Write takes one. The router calls Read from
// one goroutine and Write from several, and Close once, to stop Read.
type Device interface {
	Read(b []byte) (int, error)
	Write(b []byte) (int, error)
	Close() error
}

// Host is one host attached to the router.
type Host struct {
	// Name is unique among the router's hosts.
	Name string
	// Addrs are the host's addresses: packets to them go to this host.
	Addrs []netip.Addr
	// Zone is the host's side of the censor's border.
	Zone Zone
	// Device is the host's end; the router owns it from New on and closes
	// it when Run returns, or in Close.
	Device Device
	// Up is the link from the host to the router, Down the link back.
	Up, Down link.Params
}

// Config configures a Router. The zero value of each field is its
// documented default.
type Config struct {
	// Hosts are the hosts; at least one.
	Hosts []Host
	// Censor inspects packets at the border; if nil, none does.
	Censor Censor
	// CensorOff starts the router with the censor switched off.
	CensorOff bool
	// Seed seeds every link's generator: host i's up link draws from
	// PCG(Seed, 2i), its down link from PCG(Seed, 2i+1).
	Seed uint64
	// Timeline are events applied at their times after Run starts.
	Timeline []Event
	// MaxInFlight bounds the bytes of packets held by the scheduler
	// (counted by buffer size); packets beyond it are dropped as
	// overflow. If zero, DefaultMaxInFlight.
	MaxInFlight int64
	// Logger receives the timeline's events and device errors; if nil,
	// nothing is logged.
	Logger *slog.Logger
}

// host is the router's state for one Host.
type host struct {
	name  string
	idx   int
	addrs []netip.Addr
	zone  Zone
	dev   Device
	up    *link.Link
	down  *link.Link
	// pendingUp and pendingDown count this host's packets in the
	// scheduler after its up or down link: while any are pending, later
	// packets of that link are scheduled too, so none overtakes them.
	pendingUp, pendingDown atomic.Int64
}

// hole is an active blackhole, resolved to its host.
type hole struct {
	Blackhole
	h *host
}

// CensorCounters count what the censor did.
type CensorCounters struct {
	// Inspected counts packets passed to the censor.
	Inspected uint64
	// Dropped, Replaced and Delayed count verdicts.
	Dropped, Replaced, Delayed uint64
	// Injected counts injected packets the router accepted.
	Injected uint64
}

// Router forwards IP packets between its hosts' devices through each
// host's up link, the censor and the destination's down link. Its methods
// are safe for concurrent use.
type Router struct {
	hosts   []*host
	byName  map[string]*host
	byAddr  map[netip.Addr]*host
	seed    uint64
	log     *slog.Logger
	sched   *scheduler
	maxIn   int64
	inFl    atomic.Int64
	events  []Event
	started atomic.Bool

	censorMu sync.Mutex
	censor   Censor
	censorOn bool
	cc       CensorCounters

	holesMu sync.Mutex
	holes   atomic.Pointer[[]hole]

	smallPool, bigPool sync.Pool

	closeOnce sync.Once
	closeErr  error
}

// New validates cfg and returns a Router; Run starts it. The Router owns
// the hosts' devices from now on.
func New(cfg Config) (*Router, error) {
	if len(cfg.Hosts) == 0 {
		return nil, errors.New("router: no hosts")
	}
	r := &Router{
		byName:   make(map[string]*host),
		byAddr:   make(map[netip.Addr]*host),
		seed:     cfg.Seed,
		log:      cfg.Logger,
		sched:    newScheduler(),
		maxIn:    cfg.MaxInFlight,
		censor:   cfg.Censor,
		censorOn: !cfg.CensorOff,
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.log = r.log.With("component", "testnet/router")
	if r.maxIn <= 0 {
		r.maxIn = DefaultMaxInFlight
	}
	r.smallPool.New = func() any { b := make([]byte, smallBuf); return &b }
	r.bigPool.New = func() any { b := make([]byte, MaxPacket); return &b }
	for i, hc := range cfg.Hosts {
		if hc.Name == "" {
			return nil, fmt.Errorf("router: host %d has no name", i)
		}
		if _, dup := r.byName[hc.Name]; dup {
			return nil, fmt.Errorf("router: host %q twice", hc.Name)
		}
		if hc.Device == nil {
			return nil, fmt.Errorf("router: host %q has no device", hc.Name)
		}
		up, err := link.New(hc.Up, cfg.Seed, uint64(2*i))
		if err != nil {
			return nil, fmt.Errorf("router: host %q up link: %w", hc.Name, err)
		}
		down, err := link.New(hc.Down, cfg.Seed, uint64(2*i+1))
		if err != nil {
			return nil, fmt.Errorf("router: host %q down link: %w", hc.Name, err)
		}
		h := &host{name: hc.Name, idx: i, addrs: slices.Clone(hc.Addrs), zone: hc.Zone, dev: hc.Device, up: up, down: down}
		for _, a := range hc.Addrs {
			a = a.Unmap()
			if other, dup := r.byAddr[a]; dup {
				return nil, fmt.Errorf("router: address %s on %q and %q", a, other.name, hc.Name)
			}
			r.byAddr[a] = h
		}
		r.hosts = append(r.hosts, h)
		r.byName[hc.Name] = h
	}
	for _, e := range cfg.Timeline {
		if err := e.validate(r.byName); err != nil {
			return nil, err
		}
	}
	r.events = slices.Clone(cfg.Timeline)
	slices.SortStableFunc(r.events, func(a, b Event) int { return int(a.At - b.At) })
	return r, nil
}

// Seed returns the seed of the links' generators.
func (r *Router) Seed() uint64 { return r.seed }

// Run forwards packets until ctx is done, then closes the devices, waits
// for its goroutines and returns nil. It returns an error if called twice.
func (r *Router) Run(ctx context.Context) error {
	if !r.started.CompareAndSwap(false, true) {
		return errors.New("router: Run called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for _, h := range r.hosts {
		wg.Go(func() { r.readLoop(ctx, h) })
	}
	wg.Go(func() { r.sched.run(ctx, r.fire) })
	if len(r.events) > 0 {
		wg.Go(func() { r.timeline(ctx, start) })
	}
	<-ctx.Done()
	r.Close()
	wg.Wait()
	for _, it := range r.sched.drain() {
		r.release(it.buf)
	}
	return nil
}

// Close closes the devices, which stops Run's readers. It is idempotent
// and returns the first device error.
func (r *Router) Close() error {
	r.closeOnce.Do(func() {
		for _, h := range r.hosts {
			if err := h.dev.Close(); err != nil && r.closeErr == nil {
				r.closeErr = fmt.Errorf("router: close %s: %w", h.name, err)
			}
		}
	})
	return r.closeErr
}

// readLoop reads h's packets until the device fails or closes.
func (r *Router) readLoop(ctx context.Context, h *host) {
	buf := make([]byte, MaxPacket)
	for {
		n, err := h.dev.Read(buf)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("device read failed; host detached", "host", h.name, "err", err)
			}
			return
		}
		r.ingress(h, buf[:n], time.Now())
	}
}

// timeline applies r.events at their times.
func (r *Router) timeline(ctx context.Context, start time.Time) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for _, e := range r.events {
		if d := time.Until(start.Add(e.At)); d > 0 {
			t.Reset(d)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
		if err := r.Apply(e); err != nil {
			r.log.Error("timeline event failed", "event", e.String(), "err", err)
			continue
		}
		r.log.Info("timeline event", "event", e.String())
	}
}

// Apply applies an event now, whatever its At.
func (r *Router) Apply(e Event) error {
	if err := e.validate(r.byName); err != nil {
		return err
	}
	switch {
	case e.Link != nil:
		return r.SetLink(e.Link.Host, e.Link.Dir, e.Link.Params)
	case e.Blackhole != nil:
		return r.SetBlackhole(*e.Blackhole, true)
	case e.Unblackhole != nil:
		return r.SetBlackhole(*e.Unblackhole, false)
	default:
		r.SetCensorOn(*e.Censor)
		return nil
	}
}

// SetLink changes the parameters of host's link in direction dir.
func (r *Router) SetLink(hostName string, dir LinkDir, p link.Params) error {
	h, ok := r.byName[hostName]
	if !ok {
		return fmt.Errorf("router: set link: %q: %w", hostName, ErrHost)
	}
	if dir == Both || dir == Up {
		if err := h.up.Set(p); err != nil {
			return fmt.Errorf("router: set link %s up: %w", hostName, err)
		}
	}
	if dir == Both || dir == Down {
		if err := h.down.Set(p); err != nil {
			return fmt.Errorf("router: set link %s down: %w", hostName, err)
		}
	}
	return nil
}

// Link returns the current parameters of host's link in direction dir (Up
// or Down).
func (r *Router) Link(hostName string, dir LinkDir) (link.Params, error) {
	h, ok := r.byName[hostName]
	if !ok {
		return link.Params{}, fmt.Errorf("router: link: %q: %w", hostName, ErrHost)
	}
	if dir == Down {
		return h.down.Params(), nil
	}
	return h.up.Params(), nil
}

// SetBlackhole starts (on) or stops (off) dropping the packets b selects.
// Starting an active blackhole or stopping an inactive one does nothing.
func (r *Router) SetBlackhole(b Blackhole, on bool) error {
	h, ok := r.byName[b.Host]
	if !ok {
		return fmt.Errorf("router: blackhole: %q: %w", b.Host, ErrHost)
	}
	r.holesMu.Lock()
	defer r.holesMu.Unlock()
	var cur []hole
	if p := r.holes.Load(); p != nil {
		cur = *p
	}
	i := slices.IndexFunc(cur, func(x hole) bool { return x.Blackhole == b })
	switch {
	case on && i < 0:
		next := append(slices.Clip(cur), hole{Blackhole: b, h: h})
		r.holes.Store(&next)
	case !on && i >= 0:
		next := slices.Delete(slices.Clone(cur), i, i+1)
		if len(next) == 0 {
			r.holes.Store(nil)
		} else {
			r.holes.Store(&next)
		}
	}
	return nil
}

// Blackholes returns the active blackholes.
func (r *Router) Blackholes() []Blackhole {
	p := r.holes.Load()
	if p == nil {
		return nil
	}
	out := make([]Blackhole, len(*p))
	for i, x := range *p {
		out[i] = x.Blackhole
	}
	return out
}

// SetCensor replaces the censor (nil for none), for instance to switch
// profiles. Calls to the old censor have returned when SetCensor returns.
func (r *Router) SetCensor(c Censor) {
	r.censorMu.Lock()
	defer r.censorMu.Unlock()
	r.censor = c
}

// SetCensorOn switches the censor on or off.
func (r *Router) SetCensorOn(on bool) {
	r.censorMu.Lock()
	defer r.censorMu.Unlock()
	r.censorOn = on
}

// HostStats are the counters of one host's links.
type HostStats struct {
	Name     string
	Up, Down link.Counters
}

// Stats is a snapshot of the router's counters.
type Stats struct {
	// Seed is the links' seed.
	Seed uint64
	// Hosts are per host, in Config order.
	Hosts []HostStats
	// Censor counts the censor's verdicts.
	Censor CensorCounters
	// InFlight is the bytes held by the scheduler now.
	InFlight int64
}

// Host returns the stats of the host called name, or false.
func (s Stats) Host(name string) (HostStats, bool) {
	for _, h := range s.Hosts {
		if h.Name == name {
			return h, true
		}
	}
	return HostStats{}, false
}

// Stats returns a snapshot of the counters.
func (r *Router) Stats() Stats {
	s := Stats{Seed: r.seed, InFlight: r.inFl.Load()}
	for _, h := range r.hosts {
		s.Hosts = append(s.Hosts, HostStats{Name: h.name, Up: h.up.Counters(), Down: h.down.Counters()})
	}
	r.censorMu.Lock()
	s.Censor = r.cc
	r.censorMu.Unlock()
	return s
}

// dstAddr returns the destination address of an IP packet.
func dstAddr(p []byte) (netip.Addr, bool) {
	if len(p) == 0 {
		return netip.Addr{}, false
	}
	switch p[0] >> 4 {
	case 4:
		if len(p) >= packet.IPv4HeaderLen {
			return netip.AddrFrom4([4]byte(p[16:20])), true
		}
	case 6:
		if len(p) >= packet.IPv6HeaderLen {
			return netip.AddrFrom16([16]byte(p[24:40])), true
		}
	}
	return netip.Addr{}, false
}

// route returns the host a packet goes to.
func (r *Router) route(p []byte) (*host, link.Reason) {
	a, ok := dstAddr(p)
	if !ok {
		return nil, link.ReasonMalformed
	}
	h, ok := r.byAddr[a]
	if !ok {
		return nil, link.ReasonNoRoute
	}
	return h, link.ReasonNone
}

// blackholed reports whether an active blackhole on h selects p, a packet
// from h (fromH) or to h.
func (r *Router) blackholed(h *host, p []byte, fromH bool) bool {
	hp := r.holes.Load()
	if hp == nil {
		return false
	}
	var pk packet.Packet
	parsed, perr := false, error(nil)
	for _, x := range *hp {
		if x.h != h {
			continue
		}
		if x.Port == 0 && x.Proto == 0 {
			return true
		}
		if !parsed {
			perr = packet.ParseInto(&pk, p)
			parsed = true
		}
		if perr != nil || (x.Proto != 0 && pk.Protocol != x.Proto) {
			continue
		}
		if x.Port == 0 {
			return true
		}
		if !pk.IsTCP() && !pk.IsUDP() {
			continue
		}
		port := pk.DstPort
		if fromH {
			port = pk.SrcPort
		}
		if port == x.Port {
			return true
		}
	}
	return false
}

// get returns a pooled buffer holding a copy of p.
func (r *Router) get(p []byte) *[]byte {
	var b *[]byte
	if len(p) <= smallBuf {
		b = r.smallPool.Get().(*[]byte)
	} else {
		b = r.bigPool.Get().(*[]byte)
	}
	copy(*b, p)
	return b
}

// release returns a pooled buffer.
func (r *Router) release(b *[]byte) {
	if b == nil {
		return
	}
	if cap(*b) == smallBuf {
		r.smallPool.Put(b)
	} else {
		r.bigPool.Put(b)
	}
}

// bufSize is the pooled buffer size for a packet of n bytes.
func bufSize(n int) int64 {
	if n <= smallBuf {
		return smallBuf
	}
	return MaxPacket
}

// schedule holds p until at, in own if own is not nil and of the right
// size (then it takes own), else in a copy. It returns ok false, and takes
// nothing, when the in-flight bound is reached.
func (r *Router) schedule(st stage, src, dst *host, p []byte, own *[]byte, at time.Time) (ok, took bool) {
	size := bufSize(len(p))
	if r.inFl.Add(size) > r.maxIn {
		r.inFl.Add(-size)
		return false, false
	}
	buf := own
	if buf != nil && int64(cap(*buf)) == size {
		took = true
		if len(p) > 0 && &(*buf)[0] != &p[0] {
			copy(*buf, p)
		}
	} else {
		buf = r.get(p)
	}
	switch st {
	case stageMiddle:
		src.pendingUp.Add(1)
	case stageDeliver:
		dst.pendingDown.Add(1)
	}
	r.sched.push(item{at: at, stage: st, src: src, dst: dst, buf: buf, n: len(p)})
	return true, took
}

// fire handles a scheduled packet that is due.
func (r *Router) fire(it item) {
	r.inFl.Add(-bufSize(it.n))
	p := (*it.buf)[:it.n]
	switch it.stage {
	case stageMiddle:
		it.src.pendingUp.Add(-1)
		if !r.middle(it.src, it.dst, p, it.buf, it.at, time.Now()) {
			r.release(it.buf)
		}
	case stageDeliver:
		it.dst.pendingDown.Add(-1)
		r.write(it.dst, p)
		r.release(it.buf)
	case stageEgress:
		if !r.egress(it.dst, p, it.buf, it.at, time.Now()) {
			r.release(it.buf)
		}
	}
}

// ingress handles a packet read from src's device at now. p is valid
// only until ingress returns.
func (r *Router) ingress(src *host, p []byte, now time.Time) {
	dst, why := r.route(p)
	if why != link.ReasonNone {
		src.up.Count(why, len(p))
		return
	}
	if r.blackholed(src, p, true) {
		src.up.Count(link.ReasonBlackhole, len(p))
		return
	}
	o := src.up.Offer(now, len(p))
	for i := range o.N {
		at := o.At[i]
		if !at.After(now) && src.pendingUp.Load() == 0 {
			r.middle(src, dst, p, nil, at, now)
			continue
		}
		if ok, _ := r.schedule(stageMiddle, src, dst, p, nil, at); !ok {
			src.up.Uncount(link.ReasonOverflow, len(p))
		}
	}
}

// middle handles a packet reaching the border at the virtual time at (the
// wall clock says now). p is valid until middle returns unless own is
// not nil and middle returns true: then middle took own.
func (r *Router) middle(src, dst *host, p []byte, own *[]byte, at, now time.Time) (took bool) {
	if r.blackholed(dst, p, false) {
		dst.down.Count(link.ReasonBlackhole, len(p))
		return false
	}
	r.censorMu.Lock()
	c := r.censor
	if c == nil || !r.censorOn {
		r.censorMu.Unlock()
		return r.egress(dst, p, own, at, now)
	}
	r.cc.Inspected++
	v := c.Packet(direction(src.zone, dst.zone), p, at)
	// Copy what the verdict carries before the next call may reuse it.
	var repl *[]byte
	var replN int
	if v.Action == Replace {
		r.cc.Replaced++
		if len(v.Packet) == 0 || len(v.Packet) > MaxPacket {
			v.Action = Drop
		} else {
			repl, replN = r.get(v.Packet), len(v.Packet)
		}
	}
	if v.Action == Drop {
		r.cc.Dropped++
	}
	if v.Delay > 0 && v.Action != Drop {
		r.cc.Delayed++
	}
	type inj struct {
		b  *[]byte
		n  int
		at time.Time
	}
	var injs []inj
	for _, x := range v.Inject {
		if len(x.Packet) == 0 || len(x.Packet) > MaxPacket {
			continue
		}
		r.cc.Injected++
		injs = append(injs, inj{r.get(x.Packet), len(x.Packet), at.Add(max(x.Delay, 0))})
	}
	r.censorMu.Unlock()

	for _, x := range injs {
		r.inject((*x.b)[:x.n], x.at, now)
		r.release(x.b)
	}
	switch v.Action {
	case Drop:
		dst.down.Count(link.ReasonCensor, len(p))
		return false
	case Replace:
		defer r.release(repl)
		rp := (*repl)[:replN]
		d, why := r.route(rp)
		if why != link.ReasonNone {
			dst.down.Count(why, len(rp))
			return false
		}
		r.egressAt(d, rp, nil, at.Add(max(v.Delay, 0)), now)
		return false
	}
	return r.egressAt(dst, p, own, at.Add(max(v.Delay, 0)), now)
}

// inject sends a censor's packet to its destination's down link.
func (r *Router) inject(p []byte, at, now time.Time) {
	dst, why := r.route(p)
	if why != link.ReasonNone {
		return
	}
	if r.blackholed(dst, p, false) {
		dst.down.Count(link.ReasonBlackhole, len(p))
		return
	}
	r.egressAt(dst, p, nil, at, now)
}

// egressAt is egress at a virtual time that may be later than now: then
// the packet waits in the scheduler before it enters the down link, so it
// holds back no other packet of that link.
func (r *Router) egressAt(dst *host, p []byte, own *[]byte, at, now time.Time) (took bool) {
	if !at.After(now) {
		return r.egress(dst, p, own, at, now)
	}
	ok, took := r.schedule(stageEgress, nil, dst, p, own, at)
	if !ok {
		dst.down.Count(link.ReasonOverflow, len(p))
	}
	return took
}

// egress puts a packet through dst's down link at the virtual time at,
// and writes it or schedules it. Ownership of own is as for middle.
func (r *Router) egress(dst *host, p []byte, own *[]byte, at, now time.Time) (took bool) {
	o := dst.down.Offer(at, len(p))
	for i := range o.N {
		t := o.At[i]
		if !t.After(now) && dst.pendingDown.Load() == 0 {
			r.write(dst, p)
			continue
		}
		var give *[]byte
		if i == o.N-1 && !took {
			give = own
		}
		ok, tookOwn := r.schedule(stageDeliver, nil, dst, p, give, t)
		if !ok {
			dst.down.Uncount(link.ReasonOverflow, len(p))
			continue
		}
		took = took || tookOwn
	}
	return took
}

// write hands p to dst's device.
func (r *Router) write(dst *host, p []byte) {
	if _, err := dst.dev.Write(p); err != nil {
		dst.down.Uncount(link.ReasonWrite, len(p))
	}
}
