package scenario

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commucat/commucat/testnet/censor"
	"github.com/commucat/commucat/testnet/netns"
	"github.com/commucat/commucat/testnet/router"
	"github.com/commucat/commucat/testnet/topology"
)

// Defaults of a run.
const (
	DefaultDuration = 5 * time.Minute
	DefaultDrain    = 10 * time.Second
	// readyTimeout bounds the wait for a gateway or a set-up listener.
	readyTimeout = 60 * time.Second
	// stopGrace is how long a program gets between SIGTERM and SIGKILL.
	stopGrace = 3 * time.Second
)

// Options configure Run.
type Options struct {
	// Binary is the commucat binary the programs run; required.
	Binary string
	// Dir receives the state directories, logs, the censor's action log
	// and the report files. If empty, a new directory under os.TempDir.
	Dir string
	// Base resolves a relative censor file; if empty, the working
	// directory.
	Base string
	// Logger receives progress and the router's log; nil discards.
	Logger *slog.Logger
	// OnRun, if set, is called once the set-up programs are ready, just
	// before the run programs start, with the network: a test's own
	// probes from inside a namespace (a TLS connection with a chosen SNI,
	// say). An error it returns is a failed check.
	OnRun func(ctx context.Context, n *topology.Net) error
}

// runCount numbers the runs of this process, for namespace prefixes.
var runCount atomic.Uint64

// user is a registered user of a run.
type user struct {
	host, state string
}

// runner is one run in progress.
type runner struct {
	prober *censor.Prober // the active prober, if the profile has one
	s      *Scenario
	opt    Options
	dir    string
	log    *slog.Logger
	net    *topology.Net
	eng    *censor.Engine
	prof   *censor.Profile
	elog   string
	svc    services
	gw     *Gateway
	gwDir  string
	users  map[string]user
	t0     time.Time
	setup  time.Time

	censorSeed uint64
	cleanups   []func()

	mu        sync.Mutex
	procs     []*proc
	listeners []*proc
	msgs      map[string]*Message
	msgOrder  []string
	probes    []ProbeAttempt
	chats     []*proc
	timeline  []AppliedEvent
	notes     []string
	fails     []Check // program failures that count as failed checks
	bg        sync.WaitGroup
}

// Run brings the scenario's testnet up, runs its programs, applies its
// timeline, tears everything down and returns the report. It returns an
// error wrapping ErrNotRoot without root; one wrapping ErrFailed, with
// the report, when an expectation failed; and another error, with the
// report so far, when the run could not finish (a set-up program
// failed). The report files are written to the report's Dir in every
// case where a report is returned.
func Run(ctx context.Context, s *Scenario, opt Options) (*Report, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if err := netns.Check(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotRoot, err)
	}
	r, err := newRunner(s, opt)
	if err != nil {
		return nil, err
	}
	d := s.Duration
	if d == 0 {
		d = DefaultDuration
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()

	rep, runErr := r.run(ctx)
	if rep == nil {
		return nil, runErr
	}
	if err := rep.WriteFiles(); err != nil && runErr == nil {
		runErr = err
	}
	if runErr == nil && !rep.OK {
		runErr = fmt.Errorf("%w: %d of %d checks", ErrFailed, len(rep.Failed()), len(rep.Checks))
	}
	return rep, runErr
}

// up brings the network and its services up and returns the report's
// skeleton. r.close undoes it, also after an error.
func (r *runner) up(ctx context.Context) (rep *Report, err error) {
	s := r.s
	seed := s.Seed
	if seed == 0 {
		var b [8]byte
		rand.Read(b[:])
		seed = binary.LittleEndian.Uint64(b[:]) | 1
	}
	if r.prof, err = s.CensorProfile(r.opt.Base); err != nil {
		return nil, err
	}
	r.censorSeed = seed
	if s.Censor != nil && s.Censor.Seed != 0 {
		r.censorSeed = s.Censor.Seed
	}
	spec := topology.Spec{
		Prefix: fmt.Sprintf("cc-%d-s%d-", os.Getpid(), runCount.Add(1)),
		Seed:   seed,
		Logger: r.log,
	}
	var exempt []netip.Prefix
	for i, h := range s.Hosts {
		th := topology.Host{Name: h.Name, Zone: router.Outside}
		if h.inside() {
			th.Zone = router.Inside
		}
		if h.Up != nil {
			th.Up = h.Up.Params()
		} else if h.inside() && r.prof != nil && r.prof.Link != nil {
			th.Up = r.prof.Link.Up.Params()
		}
		if h.Down != nil {
			th.Down = h.Down.Params()
		} else if h.inside() && r.prof != nil && r.prof.Link != nil {
			th.Down = r.prof.Link.Down.Params()
		}
		spec.Hosts = append(spec.Hosts, th)
		for _, m := range []int{th.Up.MTU, th.Down.MTU} {
			if m >= 1280 && (spec.MTU == 0 || m < spec.MTU) {
				spec.MTU = m
			}
		}
		if h.role() == RoleProber {
			a := topology.Prefix4.Addr().As4()
			a[3] += byte(i + 1)
			exempt = append(exempt, netip.PrefixFrom(netip.AddrFrom4(a), 32))
		}
	}
	if s.MTU != 0 {
		spec.MTU = s.MTU
	}
	if r.prof != nil {
		r.elog = filepath.Join(r.dir, "censor.jsonl")
		f, err := os.OpenFile(r.elog, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
		if err != nil {
			return nil, fmt.Errorf("scenario: censor log: %w", err)
		}
		r.cleanups = append(r.cleanups, func() { f.Close() })
		if r.eng, err = censor.New(censor.Config{Profile: r.prof, Seed: r.censorSeed, Log: f, Exempt: exempt}); err != nil {
			return nil, fmt.Errorf("scenario: censor: %w", err)
		}
		spec.Censor = censor.RouterCensor{Engine: r.eng}
		spec.CensorOff = s.Censor.Off
	}
	unrecord, err := writeRecord(spec.Prefix, s.Name, topology.NamespaceNames(spec.Prefix, spec))
	if err != nil {
		return nil, err
	}
	r.cleanups = append(r.cleanups, unrecord)
	start := time.Now()
	r.setup = start
	r.net, err = topology.Up(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	r.cleanups = append(r.cleanups, func() { r.net.Close() })
	rep = &Report{Scenario: s.Name, Description: s.Description, Seed: seed, Prefix: spec.Prefix, Started: start.UTC(), Dir: r.dir}
	if r.prof != nil {
		rep.Profile, rep.CensorSeed = r.prof.Name, r.censorSeed
	}
	for _, h := range s.Hosts {
		zone := "outside"
		if h.inside() {
			zone = "inside"
		}
		rep.Hosts = append(rep.Hosts, HostInfo{Name: h.Name, Role: h.role(), Zone: zone, Addr: r.net.Addr(h.Name).String(), Namespace: spec.Prefix + h.Name})
	}
	r.log.Info("testnet up", "prefix", spec.Prefix, "seed", seed, "dir", r.dir)
	svcCtx, svcCancel := context.WithCancel(context.Background())
	r.cleanups = append(r.cleanups, func() {
		svcCancel()
		r.svc.close()
	})
	if err := r.startServices(svcCtx); err != nil {
		return rep, err
	}
	r.t0 = time.Now() // provisional, for times during set-up
	return rep, nil
}

// close stops the services, tears the network down and removes the run
// record, in the reverse order of up. It is idempotent.
func (r *runner) close() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
	r.cleanups = nil
}

// runSetup runs the set-up programs in order.
func (r *runner) runSetup(ctx context.Context) error {
	for i, p := range r.s.Setup {
		if err := r.program(ctx, fmt.Sprintf("setup[%d]", i), fmt.Sprintf("setup%d", i), p, true); err != nil {
			return err
		}
	}
	return nil
}

// run does the work of Run.
func (r *runner) run(ctx context.Context) (*Report, error) {
	rep, err := r.up(ctx)
	defer r.close()
	if err != nil {
		if rep == nil {
			return nil, err
		}
		return r.finish(rep, err)
	}
	if err := r.runSetup(ctx); err != nil {
		return r.finish(rep, err)
	}
	r.t0 = time.Now()
	rep.SetupSeconds = r.t0.Sub(r.setup).Seconds()
	tlCtx, tlCancel := context.WithCancel(ctx)
	var tlWG sync.WaitGroup
	var later []Event
	for _, e := range r.s.Timeline {
		if e.At == 0 {
			r.apply(e)
		} else {
			later = append(later, e)
		}
	}
	slices.SortStableFunc(later, func(a, b Event) int { return int(a.At - b.At) })
	if r.opt.OnRun != nil {
		if err := r.opt.OnRun(ctx, r.net); err != nil {
			r.failed("run", "OnRun", err)
		}
	}
	tlWG.Go(func() { r.runTimeline(tlCtx, later) })
	var runErr error
	for i, p := range r.s.Run {
		if err := r.program(ctx, fmt.Sprintf("run[%d]", i), fmt.Sprintf("run%d", i), p, false); err != nil {
			runErr = err
			break
		}
	}
	r.bg.Wait()
	if runErr == nil {
		r.drain(ctx)
	}
	tlCancel()
	tlWG.Wait()
	rep.RunSeconds = time.Since(r.t0).Seconds()
	return r.finish(rep, runErr)
}

// Network is a test network brought up by Up: hosts, services and the
// scenario's set-up programs (gateway, registrations, listeners), running
// until Close.
type Network struct {
	r   *runner
	rep *Report
}

// Up brings the scenario's network up and runs its set-up programs, but
// not its run programs or timeline, and leaves it running for a person
// to use (`ip netns exec`). Close tears it down.
func Up(ctx context.Context, s *Scenario, opt Options) (*Network, error) {
	r, err := newRunner(s, opt)
	if err != nil {
		return nil, err
	}
	rep, err := r.up(ctx)
	if err == nil {
		err = r.runSetup(ctx)
	}
	if err != nil {
		if rep != nil {
			r.finish(rep, err)
		}
		r.close()
		return nil, err
	}
	return &Network{r: r, rep: rep}, nil
}

// Hosts returns the hosts with their addresses and namespaces.
func (n *Network) Hosts() []HostInfo { return n.rep.Hosts }

// Dir returns the network's directory (state, logs, censor log).
func (n *Network) Dir() string { return n.r.dir }

// UserInfo is a registered user of a Network.
type UserInfo struct {
	Name string
	// Host is the host the user registered from; State its client state
	// directory (the --state of commucat's client commands).
	Host, State string
}

// Users returns the registered users, sorted by name.
func (n *Network) Users() []UserInfo {
	var out []UserInfo
	for name, u := range n.r.users {
		out = append(out, UserInfo{Name: name, Host: u.host, State: u.state})
	}
	slices.SortFunc(out, func(a, b UserInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// GatewayState returns the gateway's state directory, or "".
func (n *Network) GatewayState() string { return n.r.gwDir }

// Close stops the programs and tears the network down; it returns the
// report of what ran (no checks besides program failures).
func (n *Network) Close() *Report {
	rep, _ := n.r.finish(n.rep, nil)
	n.r.close()
	return rep
}

// newRunner checks opt and makes the run's directories.
func newRunner(s *Scenario, opt Options) (*runner, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if err := netns.Check(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotRoot, err)
	}
	if opt.Binary == "" {
		return nil, errors.New("scenario: Options.Binary is required")
	}
	bin, err := filepath.Abs(opt.Binary)
	if err != nil {
		return nil, fmt.Errorf("scenario: binary: %w", err)
	}
	opt.Binary = bin
	r := &runner{s: s, opt: opt, log: opt.Logger, users: map[string]user{}, msgs: map[string]*Message{}}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.log = r.log.With("component", "testnet/scenario", "scenario", s.Name)
	r.dir = opt.Dir
	if r.dir == "" {
		if r.dir, err = os.MkdirTemp("", "commucat-testnet-"+s.Name+"-"); err != nil {
			return nil, fmt.Errorf("scenario: %w", err)
		}
	} else if err := os.MkdirAll(r.dir, 0o700); err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	for _, d := range []string{"logs", "state"} {
		if err := os.MkdirAll(filepath.Join(r.dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("scenario: %w", err)
		}
	}
	return r, nil
}

// startServices starts the cover sites, the resolvers and the prober.
func (r *runner) startServices(ctx context.Context) error {
	for _, h := range r.s.Hosts {
		switch h.role() {
		case RoleCover:
			names := h.Names
			if len(names) == 0 {
				names = []string{DefaultCoverName}
			}
			if err := r.svc.startCover(ctx, r.net, h.Name, filepath.Join(r.dir, "state", "cover-"+h.Name), names, r.log); err != nil {
				return err
			}
		case RoleResolver:
			rec := map[string]netip.Addr{}
			for name, target := range h.Records {
				if a := r.net.Addr(target); a.IsValid() {
					rec[name] = a
				} else {
					rec[name] = netip.MustParseAddr(target) // checked by Validate
				}
			}
			if err := r.svc.startResolver(ctx, r.net, h.Name, rec, r.log); err != nil {
				return err
			}
		}
	}
	if r.eng == nil || !slices.ContainsFunc(r.prof.Rules, func(rl censor.Rule) bool { return rl.Action.Kind == censor.ActionProbe }) {
		return nil
	}
	ph, ok := r.s.HostByRole(RoleProber)
	if !ok {
		r.notes = append(r.notes, "the profile hands servers to an active prober, but the scenario has no prober host: nothing is probed")
		return nil
	}
	cfg := censor.ProberConfig{}
	if r.prof.Prober != nil {
		cfg = *r.prof.Prober
	}
	pr := censor.NewProber(cfg, func(ctx context.Context, network, addr string) (net.Conn, error) {
		return r.net.Dial(ctx, ph.Name, network, addr)
	}, r.censorSeed^0x70726f6265) // "probe"
	r.svc.wg.Go(func() { pr.Run(ctx, r.eng) })
	r.prober = pr
	return nil
}
