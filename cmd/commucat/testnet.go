//go:build linux

package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/commucat/commucat/backends/messaging"
	"github.com/commucat/commucat/configs"
	"github.com/commucat/commucat/core/router"
	"github.com/commucat/commucat/testnet/netns"
	"github.com/commucat/commucat/testnet/scenario"
	"github.com/spf13/cobra"
)

// newTestnetCmd returns `commucat testnet`: the test network of network
// namespaces, a userspace router with impaired links and a censor, and the
// real commucat programs running in it.
func newTestnetCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "testnet",
		Short: "Run commucat in a test network with impaired links and a censor (needs root)",
		Long: `The test network puts hosts (clients, a gateway, a cover website, a DNS
resolver, the censor's prober) into network namespaces joined by a userspace
router that impairs every link and runs a censor profile (configs/censors).
Scenario files say which commucat programs run where and what must hold.

  up        bring a network up and keep it until Ctrl-C
  down      remove the namespaces a crashed run left behind
  run       run a scenario (a shipped name or a file) and write its report
  matrix    run every transport against every censor profile and draw it

Everything here needs root and /dev/net/tun.`,
	}
	return groupCmd(cmd, newTestnetUpCmd(), newTestnetDownCmd(), newTestnetRunCmd(), newTestnetMatrixCmd(), newTestnetChatCmd())
}

// requireRoot fails with a clear message when the testnet cannot run.
func requireRoot() error {
	if err := netns.Check(); err != nil {
		return fmt.Errorf("commucat testnet needs root and /dev/net/tun (run it with sudo, or in a privileged container): %w", err)
	}
	return nil
}

// selfBinary returns the path of this program, which the testnet runs in
// its namespaces.
func selfBinary() (string, error) {
	p, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find this program's path: %w", err)
	}
	return filepath.EvalSymlinks(p)
}

// loadScenario reads a scenario file, or a shipped scenario by name.
func loadScenario(arg string) (*scenario.Scenario, string, error) {
	if _, err := os.Stat(arg); err == nil {
		s, err := scenario.Load(arg)
		return s, filepath.Dir(arg), err
	}
	if strings.ContainsAny(arg, "/.") {
		return nil, "", fmt.Errorf("no scenario file %s", arg)
	}
	s, err := scenario.Shipped(arg)
	return s, "", err
}

// testnetFlags are the flags up, run and matrix share.
type testnetFlags struct {
	dir, censor, logLevel string
	seed                  uint64
}

func (f *testnetFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.dir, "dir", "", "directory for state, logs, the censor's action log and reports (default: a new temporary directory)")
	fl.StringVar(&f.censor, "censor", "", "censor profile to use instead of the scenario's (one of "+strings.Join(configs.CensorProfileNames(), ", ")+", or none)")
	fl.Uint64Var(&f.seed, "seed", 0, "seed of the links and the censor instead of the scenario's")
	fl.StringVar(&f.logLevel, "log-level", "warn", "debug, info, warn or error")
}

// apply overrides the scenario's censor and seed.
func (f *testnetFlags) apply(s *scenario.Scenario) error {
	switch f.censor {
	case "":
	case "none":
		s.Censor = nil
		s.Expect.Fired, s.Expect.NotFired = nil, nil
	default:
		if s.Censor == nil {
			s.Censor = &scenario.Censor{}
		}
		s.Censor.Profile, s.Censor.File, s.Censor.Inline = f.censor, "", ""
	}
	if f.seed != 0 {
		s.Seed = f.seed
	}
	return s.Validate()
}

func newTestnetUpCmd() *cobra.Command {
	var f testnetFlags
	cmd := &cobra.Command{
		Use:   "up [SCENARIO]",
		Short: "Bring a test network up and keep it running until Ctrl-C",
		Long: `Bring up the hosts, links, censor and services of SCENARIO (a file or a
shipped name; default: two clients alice and bob, a gateway serving every
transport, a cover website, a resolver and a prober) and run its set-up
programs (gateway, registrations), then wait for Ctrl-C. Enter a host with
ip netns exec NAMESPACE COMMAND.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s := scenario.Standard("up", "")
			base := ""
			if len(args) == 1 {
				var err error
				if s, base, err = loadScenario(args[0]); err != nil {
					return err
				}
			}
			if err := f.apply(s); err != nil {
				return err
			}
			if err := requireRoot(); err != nil {
				return err
			}
			bin, err := selfBinary()
			if err != nil {
				return err
			}
			log, err := newLogger(cmd.ErrOrStderr(), f.logLevel, "text")
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			n, err := scenario.Up(ctx, s, scenario.Options{Binary: bin, Dir: f.dir, Base: base, Logger: log})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "host\trole\tzone\taddress\tnamespace")
			for _, h := range n.Hosts() {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", h.Name, h.Role, h.Zone, h.Addr, h.Namespace)
			}
			w.Flush()
			fmt.Fprintf(out, "\nstate, logs and the censor's action log: %s\n", n.Dir())
			if gs := n.GatewayState(); gs != "" {
				fmt.Fprintf(out, "gateway state: %s\n", gs)
			}
			for _, u := range n.Users() {
				for _, h := range n.Hosts() {
					if h.Name == u.Host {
						fmt.Fprintf(out, "%s on %s: ip netns exec %s %s listen --state %s\n", u.Name, u.Host, h.Namespace, bin, u.State)
					}
				}
			}
			if len(n.Hosts()) > 0 {
				fmt.Fprintf(out, "a shell on a host: ip netns exec %s bash\n", n.Hosts()[0].Namespace)
			}
			fmt.Fprintln(out, "\nrunning; Ctrl-C tears it down")
			<-ctx.Done()
			n.Close()
			fmt.Fprintln(out, "torn down")
			return nil
		},
	}
	f.add(cmd)
	return cmd
}

func newTestnetDownCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Remove the namespaces that crashed test networks left behind",
		Long: `Remove exactly the namespaces recorded by this user's test networks whose
process no longer runs (records in ` + scenario.RunDirRoot + `/UID). Names
not in a record, or not starting with the record's prefix, are never
touched; networks whose process still runs are left alone.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireRoot(); err != nil {
				return err
			}
			res, err := scenario.Down()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if len(res) == 0 {
				fmt.Fprintln(out, "nothing to remove")
				return nil
			}
			var errs []error
			for _, r := range res {
				switch {
				case r.Running:
					fmt.Fprintf(out, "%s: still running (pid %d); stop it with Ctrl-C\n", r.Record.Prefix, r.Record.PID)
				default:
					fmt.Fprintf(out, "%s: removed %d namespaces %v", r.Record.Prefix, len(r.Removed), r.Removed)
					if len(r.Missing) > 0 {
						fmt.Fprintf(out, ", %d already gone", len(r.Missing))
					}
					fmt.Fprintln(out)
				}
				if r.Err != nil {
					errs = append(errs, r.Err)
				}
			}
			return errors.Join(errs...)
		},
	}
}

func newTestnetRunCmd() *cobra.Command {
	var f testnetFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "run SCENARIO",
		Short: "Run a scenario and print its report",
		Long: `Run SCENARIO, a scenario file or the name of a shipped one (` + strings.Join(scenario.Names(), ", ") + `),
and print its report. The report (report.json, report.md), every program's
log and the censor's action log (censor.jsonl) are kept in --dir. The exit
status is non-zero when a check of the scenario's expect section failed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, base, err := loadScenario(args[0])
			if err != nil {
				return err
			}
			if err := f.apply(s); err != nil {
				return err
			}
			if err := requireRoot(); err != nil {
				return err
			}
			bin, err := selfBinary()
			if err != nil {
				return err
			}
			log, err := newLogger(cmd.ErrOrStderr(), f.logLevel, "text")
			if err != nil {
				return err
			}
			rep, runErr := scenario.Run(cmd.Context(), s, scenario.Options{Binary: bin, Dir: f.dir, Base: base, Logger: log})
			if rep != nil {
				if asJSON {
					rep.WriteJSON(cmd.OutOrStdout())
				} else {
					rep.WriteMarkdown(cmd.OutOrStdout())
					fmt.Fprintf(cmd.OutOrStdout(), "\nreport, logs and censor log in %s\n", rep.Dir)
				}
			}
			return runErr
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

func newTestnetMatrixCmd() *cobra.Command {
	var o scenario.MatrixOptions
	var dir, logLevel string
	cmd := &cobra.Command{
		Use:   "matrix",
		Short: "Run every transport against every censor profile; write JSON, Markdown and pictures",
		Long: `For every shipped censor profile and every transport, bring up a fresh
network, register two users with the censor off, switch it on, and let alice
send messages to bob over that transport alone, both through the real gateway;
the goodput is the delivered messages' bytes over the time from the first
send to the last delivery. The censor's action log says which rule blocked
what. Then run the failover scenario to show the client router's path
choices over time. Writes matrix.json, matrix.md, goodput.svg, goodput.png,
paths.svg and paths.png into --dir.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, t := range o.Transports {
				if !slices.Contains(scenario.Transports, t) {
					return fmt.Errorf("--transports: unknown transport %q (have %s)", t, strings.Join(scenario.Transports, ", "))
				}
			}
			for _, p := range o.Profiles {
				if !slices.Contains(configs.CensorProfileNames(), p) {
					return fmt.Errorf("--profiles: %q is not shipped (have %s)", p, strings.Join(configs.CensorProfileNames(), ", "))
				}
			}
			if err := requireRoot(); err != nil {
				return err
			}
			bin, err := selfBinary()
			if err != nil {
				return err
			}
			log, err := newLogger(cmd.ErrOrStderr(), logLevel, "text")
			if err != nil {
				return err
			}
			if dir == "" {
				if dir, err = os.MkdirTemp("", "commucat-matrix-"); err != nil {
					return err
				}
			}
			o.Binary, o.Dir, o.Logger = bin, dir, log
			o.Progress = cmd.ErrOrStderr()
			m, err := scenario.RunMatrix(cmd.Context(), o)
			if m != nil {
				m.WriteMarkdown(cmd.OutOrStdout())
				fmt.Fprintf(cmd.OutOrStdout(), "\nreports and pictures in %s\n", dir)
			}
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&dir, "dir", "", "output directory (default: a new temporary directory)")
	fl.StringSliceVar(&o.Profiles, "profiles", nil, "only these censor profiles")
	fl.StringSliceVar(&o.Transports, "transports", nil, "only these transports")
	fl.IntVar(&o.Count, "count", 0, "messages per cell (default 48)")
	fl.IntVar(&o.Size, "size", 0, "bytes per message (default 16384)")
	fl.DurationVar(&o.For, "for", 0, "time limit of each cell's sender (default 20s)")
	fl.BoolVar(&o.NoPaths, "no-paths", false, "skip the failover scenario (path choices over time)")
	fl.Uint64Var(&o.Seed, "seed", 0, "seed of the links and censors (default 1)")
	fl.StringVar(&logLevel, "log-level", "warn", "debug, info, warn or error")
	return cmd
}

// newTestnetChatCmd is the hidden command behind scenario chat programs:
// one session to the gateway (re-opened when it dies) over which count
// messages are sent, parallel at a time, while the client router's path
// statistics are printed every --stats. Output: scenario.ChatEvent JSON
// lines on standard output.
func newTestnetChatCmd() *cobra.Command {
	var f clientFlags
	var to, tag string
	var count, size, parallel int
	var interval, dur, every time.Duration
	cmd := &cobra.Command{
		Use:    "chat --to USER --tag TAG",
		Short:  "Send tagged messages over one session, printing the router's path statistics (testnet)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if to == "" || tag == "" || count < 1 || parallel < 1 || size > messaging.MaxBody {
				return errors.New("chat needs --to, --tag, --count >= 1, --parallel >= 1 and --size <= 61440")
			}
			cs, err := loadClient(f.state)
			if err != nil {
				return err
			}
			defer cs.wipe()
			log, err := f.logger(cmd)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), dur)
			defer cancel()
			c := &chat{out: json.NewEncoder(cmd.OutOrStdout()), start: time.Now(), interval: interval, every: every, parallel: parallel}
			c.msgs = make([]chatMsg, count)
			for i := range c.msgs {
				m := &c.msgs[i]
				rand.Read(m.env.ID[:])
				m.env.Peer = to
				m.env.Body = scenario.MessageBody(tag, i, size)
			}
			backoff := 250 * time.Millisecond
			for ctx.Err() == nil && c.remaining() > 0 && c.refusal() == nil {
				s, ep, err := connect(ctx, cs.key, cs.gateway, cs.info.Padding, cs.info.Endpoints, &f, log)
				if err != nil {
					c.emit(scenario.ChatEvent{Ev: "error", Err: err.Error()})
					select {
					case <-ctx.Done():
					case <-time.After(backoff):
					}
					backoff = min(2*backoff, 4*time.Second)
					continue
				}
				backoff = 250 * time.Millisecond
				c.emit(scenario.ChatEvent{Ev: "session", Transport: ep.Transport})
				err = messagingSession(ctx, s, func(ctx context.Context, mc *messaging.Client) error {
					return c.session(ctx, s.Stats, mc, f.timeout)
				})
				if err != nil && ctx.Err() == nil {
					c.emit(scenario.ChatEvent{Ev: "error", Err: err.Error()})
				}
			}
			if err := c.refusal(); err != nil {
				return fmt.Errorf("the gateway refused a message: %w", gatewayError(err))
			}
			left := c.remaining()
			c.emit(scenario.ChatEvent{Ev: "done", Sent: c.handed(), Stored: count - left})
			if left > 0 {
				return fmt.Errorf("%d of %d messages not stored", left, count)
			}
			return nil
		},
	}
	f.add(cmd)
	fl := cmd.Flags()
	fl.StringVar(&to, "to", "", "the recipient")
	fl.StringVar(&tag, "tag", "", "the messages' tag (scenario step)")
	fl.IntVar(&count, "count", 1, "messages to send")
	fl.IntVar(&size, "size", 64, "bytes per message")
	fl.IntVar(&parallel, "parallel", 1, "messages in flight")
	fl.DurationVar(&interval, "interval", 0, "time between the starts of two messages")
	fl.DurationVar(&dur, "for", time.Minute, "give up after this long")
	fl.DurationVar(&every, "stats", 250*time.Millisecond, "print the router's path statistics this often")
	return cmd
}

// chatMsg is one message of a chat.
type chatMsg struct {
	env    messaging.Envelope
	start  time.Time // first handed to a session; zero before
	stored bool
	busy   bool
}

// chat is the state of `commucat testnet chat`, kept across sessions.
type chat struct {
	mu       sync.Mutex
	out      *json.Encoder
	msgs     []chatMsg
	start    time.Time
	interval time.Duration
	every    time.Duration
	parallel int
	refused  error
}

// refusal returns the gateway's refusal of a message, if any.
func (c *chat) refusal() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refused
}

// emit prints one event.
func (c *chat) emit(e scenario.ChatEvent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e.T.IsZero() {
		e.T = time.Now().UTC()
	}
	c.out.Encode(e)
}

// remaining counts the messages not stored yet.
func (c *chat) remaining() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, m := range c.msgs {
		if !m.stored {
			n++
		}
	}
	return n
}

// handed counts the messages handed to a session at least once.
func (c *chat) handed() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, m := range c.msgs {
		if !m.start.IsZero() {
			n++
		}
	}
	return n
}

// next returns the next message to send, in order, waiting for its start
// time (start + i*interval); false when none is left or ctx ended.
func (c *chat) next(ctx context.Context) (int, bool) {
	for {
		c.mu.Lock()
		i := -1
		for j := range c.msgs {
			if !c.msgs[j].stored && !c.msgs[j].busy {
				i = j
				break
			}
		}
		if i < 0 {
			c.mu.Unlock()
			return 0, false
		}
		due := c.start.Add(time.Duration(i) * c.interval)
		if d := time.Until(due); d > 0 {
			c.mu.Unlock()
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return 0, false
			case <-t.C:
			}
			continue
		}
		c.msgs[i].busy = true
		if c.msgs[i].start.IsZero() {
			c.msgs[i].start = time.Now()
		}
		c.mu.Unlock()
		return i, true
	}
}

// session sends messages over one messaging session until they are all
// stored, the session ends, or a send takes longer than timeout (the
// session is then given up so that a new one is opened).
func (c *chat) session(ctx context.Context, stats func() router.Stats, mc *messaging.Client, timeout time.Duration) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	defer wg.Wait()
	c.emit(statsEvent(stats()))
	defer func() { c.emit(statsEvent(stats())) }()
	wg.Go(func() {
		t := time.NewTicker(c.every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				c.emit(statsEvent(stats()))
			}
		}
	})
	var sends sync.WaitGroup
	for range c.parallel {
		sends.Go(func() {
			for {
				i, ok := c.next(ctx)
				if !ok {
					return
				}
				c.mu.Lock()
				env, start := c.msgs[i].env, c.msgs[i].start
				c.mu.Unlock()
				env.Sent = time.Now()
				sctx, scancel := context.WithTimeout(ctx, timeout)
				err := mc.SendEnvelope(sctx, env)
				scancel()
				c.mu.Lock()
				c.msgs[i].busy = false
				c.msgs[i].stored = err == nil
				c.mu.Unlock()
				if err == nil {
					st := start.UTC()
					c.emit(scenario.ChatEvent{Ev: "sent", N: i, Start: &st})
					continue
				}
				var pe *messaging.ProblemError
				if errors.As(err, &pe) {
					c.mu.Lock()
					c.refused = err // another session will not help
					c.mu.Unlock()
					cancel(err)
					return
				}
				if ctx.Err() == nil {
					cancel(fmt.Errorf("message %d: %w", i, err))
				}
				return
			}
		})
	}
	sends.Wait()
	cancel(nil)
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// statsEvent turns the router's statistics into a chat event.
func statsEvent(st router.Stats) scenario.ChatEvent {
	e := scenario.ChatEvent{Ev: "stats", Switches: st.Switches}
	for _, p := range st.Paths {
		e.Paths = append(e.Paths, scenario.PathInfo{
			ID: p.ID, Transport: p.Transport, State: p.State.String(), Best: p.Best,
			SRTTms: float64(p.SRTT.Microseconds()) / 1000, BytesSent: p.BytesSent, BytesRecv: p.BytesReceived,
		})
	}
	return e
}
