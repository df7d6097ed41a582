package router

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Role says which end of a session this is: the client dials and joins
// paths; the gateway accepts them.
type Role uint8

const (
	// Client is the dialling end.
	Client Role = iota + 1
	// Gateway is the accepting end.
	Gateway
)

func (r Role) String() string {
	switch r {
	case Client:
		return "client"
	case Gateway:
		return "gateway"
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

// Scheduler is how records are placed on paths.
type Scheduler uint8

const (
	// ByClass, the zero value, lets each frame's class choose (see
	// ClassOf).
	ByClass Scheduler = iota
	// Best sends each record on the one best path.
	Best
	// Redundant sends each record on the two best paths.
	Redundant
	// Spread stripes records, and FEC parity, over the paths in
	// proportion to their capacity.
	Spread
)

func (s Scheduler) String() string {
	switch s {
	case ByClass:
		return "by-class"
	case Best:
		return "best"
	case Redundant:
		return "redundant"
	case Spread:
		return "spread"
	}
	return fmt.Sprintf("scheduler(%d)", uint8(s))
}

// ParseScheduler returns the scheduler named s: "auto" (or "by-class"),
// "best", "redundant" or "spread".
func ParseScheduler(s string) (Scheduler, error) {
	switch s {
	case "auto", "by-class":
		return ByClass, nil
	case "best":
		return Best, nil
	case "redundant":
		return Redundant, nil
	case "spread":
		return Spread, nil
	}
	return 0, fmt.Errorf("router: unknown scheduler %q (want auto, best, redundant or spread)", s)
}

// FECMode says when the router adds Reed-Solomon parity.
type FECMode uint8

const (
	// FECAuto, the zero value, protects records of the Spread scheduler.
	FECAuto FECMode = iota
	// FECOff never sends parity.
	FECOff
	// FECAlways protects records of the Spread scheduler with at least
	// one parity shard per block, even before any loss is measured.
	FECAlways
)

func (m FECMode) String() string {
	switch m {
	case FECAuto:
		return "auto"
	case FECOff:
		return "off"
	case FECAlways:
		return "always"
	}
	return fmt.Sprintf("fec(%d)", uint8(m))
}

// ParseFEC returns the FEC mode named s: "auto", "off" or "always".
func ParseFEC(s string) (FECMode, error) {
	for m := FECAuto; m <= FECAlways; m++ {
		if m.String() == s {
			return m, nil
		}
	}
	return 0, fmt.Errorf("router: unknown FEC mode %q (want auto, off or always)", s)
}

// Endpoint is where a path goes: the transport's name and address, for
// stats and logs, and on the client how to open another connection there.
type Endpoint struct {
	// Transport is the registered transport name, such as "tcp".
	Transport string
	// Addr is the address dialled or accepted from. Logs scrub it unless
	// Config.UnsafeLogging is set.
	Addr string
	// Dial opens a new connection to the endpoint (client only). It must
	// honour ctx.
	Dial func(ctx context.Context) (net.Conn, error)
}

// Config tunes a Session. The zero value is the documented default for
// every field; both ends need not agree on any of them.
type Config struct {
	// Endpoints are the places a client may open paths to, in order of
	// preference. The client keeps up to MaxPaths of them connected,
	// re-dialling failed ones with backoff. Unused on the gateway.
	Endpoints []Endpoint
	// MaxPaths is how many paths a session keeps open at most. If zero,
	// 3. Some censors cap simultaneous connections per client, so few
	// paths carry everything.
	MaxPaths int
	// ResumeWindow is how long a session outlives the death of its last
	// path, waiting for the client to rejoin. If zero, 5 minutes.
	ResumeWindow time.Duration
	// Scheduler, if not ByClass, is used for every frame.
	Scheduler Scheduler
	// FEC says when to send Reed-Solomon parity. The zero value is
	// FECAuto.
	FEC FECMode
	// NoDatagrams keeps unreliable frames (Media) on the paths' streams
	// even where a transport also carries datagrams (QUIC, KCP). By
	// default they go as datagrams where a path carries them.
	NoDatagrams bool
	// KeepAlive is how often an idle path is pinged. If zero, 15s. Paths
	// with traffic are pinged every 2 RTT (100 ms to 1 s).
	KeepAlive time.Duration
	// StallFloor is the least time without progress after which a path
	// with data or a ping outstanding counts as stalled: the threshold is
	// max(3 x RTT, StallFloor). If zero, 250ms.
	StallFloor time.Duration
	// PathTimeout closes a path that stayed stalled this long. If zero,
	// 15s.
	PathTimeout time.Duration
	// JoinTimeout bounds dialling and joining one path. If zero, 10s.
	JoinTimeout time.Duration
	// JoinRefusals is how many joins the gateway must refuse in a row,
	// while no path is alive, before the client gives the session up
	// (ErrResumeRefused). If zero, 2.
	JoinRefusals int
	// RedialMin and RedialMax bound the backoff between attempts at one
	// endpoint. If zero, 500ms and 30s.
	RedialMin, RedialMax time.Duration
	// Window is how many reliable frames this side buffers for the
	// application and for reordering; it is advertised to the peer as
	// its send window. If zero, 1024.
	Window int
	// MaxUnacked bounds the bytes of reliable frames sent and not yet
	// acknowledged; Send waits beyond it. If zero, 4 MiB.
	MaxUnacked int
	// PathQueue bounds the bytes waiting to be written on one path. If
	// zero, 256 KiB.
	PathQueue int
	// AckDelay is how long a receiver may wait before acknowledging. If
	// zero, 5ms.
	AckDelay time.Duration
	// RTOMin is the least retransmission timeout. If zero, 200ms.
	RTOMin time.Duration
	// Hysteresis is how much better (as a fraction of its score) another
	// path must be before it replaces the best one. If zero, 0.2.
	Hysteresis float64
	// CloseLinger bounds how long Close waits for the peer to acknowledge
	// what was sent. If zero, 1s.
	CloseLinger time.Duration
	// RekeyAfterRecords, RekeyAfter and RekeyGrace are the record layer's
	// rekey schedule (see core/session). If zero, its defaults.
	RekeyAfterRecords uint64
	RekeyAfter        time.Duration
	RekeyGrace        time.Duration
	// Pad returns how many padding bytes to add to the record-th record
	// (from 0) sent on a path, whose frames take n bytes; core/padding's
	// Profile.Record fits. If nil, records are not padded.
	Pad func(record uint64, n int) int
	// PadHandshake returns padding for handshake message msg of n bytes;
	// core/padding's Profile.Handshake fits. Join messages are padded as
	// message 1 and the gateway's confirmation record as message 2. If
	// nil, they are not padded.
	PadHandshake func(msg, n int) int
	// Policy, if set, is consulted on the client when it dials and
	// redials endpoints: blocked endpoints wait for their retry time
	// (unless every endpoint is blocked), the others are dialled in the
	// policy's order, and paths over throttled endpoints score worse.
	Policy *Policy
	// OnPathFailure, if set, is called on the client when a path's
	// connection fails or a dial or join of an endpoint fails, without
	// the session's lock held, from the session's goroutines: it must not
	// block (start a probe in a goroutine of your own).
	OnPathFailure func(Endpoint)
	// OnStop, if set, is called once when the session has stopped: at
	// the end of Run, after every path's connection is closed and the
	// session's goroutines have ended, or from Close if Run was never
	// called. It must not call the session. core/client closes the
	// transports it built for the session's endpoints here. A gateway
	// gives one Config to all its sessions: there it runs once per
	// session, concurrently.
	OnStop func()
	// Logger receives debug events. If nil, nothing is logged.
	Logger *slog.Logger
	// UnsafeLogging puts endpoint addresses into logs.
	UnsafeLogging bool
}

// Validate reports a field that cannot be used.
func (c Config) Validate() error {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"ResumeWindow", c.ResumeWindow}, {"KeepAlive", c.KeepAlive}, {"StallFloor", c.StallFloor},
		{"PathTimeout", c.PathTimeout}, {"JoinTimeout", c.JoinTimeout}, {"RedialMin", c.RedialMin},
		{"RedialMax", c.RedialMax}, {"AckDelay", c.AckDelay}, {"RTOMin", c.RTOMin},
		{"CloseLinger", c.CloseLinger}, {"RekeyAfter", c.RekeyAfter}, {"RekeyGrace", c.RekeyGrace},
	} {
		if d.v < 0 {
			return fmt.Errorf("router: config: %s is negative (%s)", d.name, d.v)
		}
	}
	for _, n := range []struct {
		name string
		v    int
	}{
		{"MaxPaths", c.MaxPaths}, {"JoinRefusals", c.JoinRefusals}, {"Window", c.Window},
		{"MaxUnacked", c.MaxUnacked}, {"PathQueue", c.PathQueue},
	} {
		if n.v < 0 {
			return fmt.Errorf("router: config: %s is negative (%d)", n.name, n.v)
		}
	}
	if c.Window > maxWindow {
		return fmt.Errorf("router: config: Window %d is over %d", c.Window, maxWindow)
	}
	if c.Scheduler > Spread {
		return fmt.Errorf("router: config: unknown Scheduler %d", c.Scheduler)
	}
	if c.FEC > FECAlways {
		return fmt.Errorf("router: config: unknown FEC mode %d", c.FEC)
	}
	if !(c.Hysteresis >= 0 && c.Hysteresis < 1) {
		return fmt.Errorf("router: config: Hysteresis %v is not in [0, 1)", c.Hysteresis)
	}
	if c.RedialMin > 0 && c.RedialMax > 0 && c.RedialMin > c.RedialMax {
		return fmt.Errorf("router: config: RedialMin %s is over RedialMax %s", c.RedialMin, c.RedialMax)
	}
	for i, ep := range c.Endpoints {
		if ep.Dial == nil {
			return fmt.Errorf("router: config: Endpoints[%d] (%s) has no Dial", i, ep.Transport)
		}
	}
	return nil
}

// maxWindow bounds Window: a receiver holds at most this many frames.
const maxWindow = 1 << 16

func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func (c Config) withDefaults() Config {
	c.MaxPaths = or(c.MaxPaths, 3)
	c.ResumeWindow = or(c.ResumeWindow, 5*time.Minute)
	c.KeepAlive = or(c.KeepAlive, 15*time.Second)
	c.StallFloor = or(c.StallFloor, 250*time.Millisecond)
	c.PathTimeout = or(c.PathTimeout, 15*time.Second)
	c.JoinTimeout = or(c.JoinTimeout, 10*time.Second)
	c.JoinRefusals = or(c.JoinRefusals, 2)
	c.RedialMin = or(c.RedialMin, 500*time.Millisecond)
	c.RedialMax = or(c.RedialMax, 30*time.Second)
	c.RedialMax = max(c.RedialMax, c.RedialMin)
	c.Window = or(c.Window, 1024)
	c.MaxUnacked = or(c.MaxUnacked, 4<<20)
	c.PathQueue = or(c.PathQueue, 256<<10)
	c.AckDelay = or(c.AckDelay, 5*time.Millisecond)
	c.RTOMin = or(c.RTOMin, 200*time.Millisecond)
	c.Hysteresis = or(c.Hysteresis, 0.2)
	c.CloseLinger = or(c.CloseLinger, time.Second)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}
