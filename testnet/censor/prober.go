package censor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/commucat/commucat/testnet/packet"
)

// Defaults of ProberConfig.
const (
	// DefaultProbeTimeout is how long a probe waits for the server's
	// reaction.
	DefaultProbeTimeout = 5 * time.Second
	// DefaultProbeBlock is how long a server judged a proxy is blocked.
	DefaultProbeBlock = time.Hour
	// DefaultProbeCooldown is how long a probed server is not probed
	// again.
	DefaultProbeCooldown = 10 * time.Minute

	maxProbeLengths = 32
	maxProbeLen     = 4096
	maxResponse     = 512
	maxCooldowns    = 4096
)

// DefaultProbeLengths are the lengths of the random probes: the GFW's
// non-replay probes against Shadowsocks, NR1 (7-8, 11-12, 22-23, 33-34,
// 40-41 bytes) and NR2 (221 bytes) of Alice et al., "How China Detects and
// Blocks Shadowsocks" (IMC 2020).
var DefaultProbeLengths = []int{7, 8, 11, 12, 22, 23, 33, 34, 40, 41, 221}

// ProberConfig holds the active prober's parameters (the prober section
// of a profile). Zero fields take the defaults.
type ProberConfig struct {
	// Timeout is how long each probe waits for a reaction; if zero,
	// DefaultProbeTimeout.
	Timeout time.Duration `yaml:"timeout"`
	// Delay is how long after the suspicion the probes start (the GFW
	// probed within seconds to hours).
	Delay time.Duration `yaml:"delay"`
	// Lengths are the random probes' lengths; if empty,
	// DefaultProbeLengths.
	Lengths []int `yaml:"lengths"`
	// Block is how long a server judged a proxy stays blocked; if zero,
	// DefaultProbeBlock.
	Block time.Duration `yaml:"block"`
	// Cooldown is how long a probed server is not probed again; if zero,
	// DefaultProbeCooldown.
	Cooldown time.Duration `yaml:"cooldown"`
}

// DialFunc opens a TCP connection from the prober's host; the topology
// provides it (net.Dialer.DialContext on a socket of the prober's
// namespace). network is "tcp".
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// Reaction is how a server reacted to one probe.
type Reaction string

// Reactions (Frolov et al., "Detecting Probe-resistant Proxies", NDSS
// 2020, §3).
const (
	// ReactData: the server sent data.
	ReactData Reaction = "data"
	// ReactFIN: the server closed the connection (FIN) without data.
	ReactFIN Reaction = "fin"
	// ReactRST: the server reset the connection.
	ReactRST Reaction = "rst"
	// ReactTimeout: nothing happened before the probe's timeout.
	ReactTimeout Reaction = "timeout"
	// ReactRefused: the connection was refused.
	ReactRefused Reaction = "refused"
	// ReactError: the probe failed otherwise.
	ReactError Reaction = "error"
)

// ProbeResult is one probe and the server's reaction.
type ProbeResult struct {
	// Name is the probe: "replay", "replay-byte0", "replay-bytes0-7,62-63",
	// "replay-byte16" or "random-N".
	Name string
	// Sent is the probe's payload.
	Sent []byte
	// Reaction is what the server did.
	Reaction Reaction
	// Response is the start of the server's data (ReactData).
	Response []byte
	// Elapsed is how long after the probe was sent the reaction came.
	Elapsed time.Duration
}

// ProbeReport is the prober's judgement of one server.
type ProbeReport struct {
	Server  netip.AddrPort
	Results []ProbeResult
	// Proxy reports whether the server behaved like a proxy.
	Proxy bool
	// Reason says why, or why not.
	Reason string
}

// ProbeTarget is what the prober works for: the engine's suspect queue,
// its residual blocks and its action log. *Engine implements it.
type ProbeTarget interface {
	Suspects() <-chan Suspect
	Block(now time.Time, key ResidualKey, d time.Duration, rule string, detail map[string]string)
	Record(ev Event)
}

var _ ProbeTarget = (*Engine)(nil)

// Prober is the censor's active prober: for each suspected server it
// replays the client's first data packet, sends mutated replays and random
// probes of several lengths, classifies each reaction, and blocks the
// server (a ResidualServer block) when it behaves like a proxy:
//
//   - a probe answered with data that is not a reply in a known protocol
//     (a TLS server record, an HTTP response, an SSH banner), or that
//     echoes the probe: a proxy that relays a replayed connection, as
//     replay-vulnerable Shadowsocks servers did (Alice et al., IMC 2020);
//   - random probes shorter than some length all time out while the longer
//     ones are all closed at once (FIN or RST): the fixed read threshold of
//     a proxy that closes after failing to authenticate a header of that
//     size (Frolov et al., NDSS 2020, §4).
//
// A server that answers every probe like a real TLS or HTTP server (a
// cover site, as Reality relays to) or never answers (obfs4's silence) is
// left alone. Probes of one server run concurrently; servers are probed
// one at a time. Random bytes come from a PRNG seeded by NewProber's
// seed. A Prober is safe for concurrent use.
type Prober struct {
	cfg  ProberConfig
	dial DialFunc

	// Now is the clock blocks and log events are stamped with; if nil,
	// time.Now. Set it before Run, to the clock the router passes to
	// Engine.Packet.
	Now func() time.Time

	mu   sync.Mutex
	rnd  *rand.Rand
	seen map[netip.AddrPort]time.Time

	busy atomic.Bool // Run is handling a suspect
}

// Idle reports whether the prober has nothing to do: it is not handling
// a suspect and t holds none waiting. A suspect Run has just taken may
// not show for an instant; a caller that waits for the prober checks
// twice, some time apart.
func (p *Prober) Idle(t ProbeTarget) bool {
	return !p.busy.Load() && len(t.Suspects()) == 0
}

// NewProber returns a prober that dials with dial.
func NewProber(cfg ProberConfig, dial DialFunc, seed uint64) *Prober {
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultProbeTimeout
	}
	if len(cfg.Lengths) == 0 {
		cfg.Lengths = DefaultProbeLengths
	}
	if cfg.Block == 0 {
		cfg.Block = DefaultProbeBlock
	}
	if cfg.Cooldown == 0 {
		cfg.Cooldown = DefaultProbeCooldown
	}
	return &Prober{
		cfg: cfg, dial: dial,
		rnd:  rand.New(rand.NewPCG(seed, 0x70726f6265)), // "probe"
		seen: make(map[netip.AddrPort]time.Time),
	}
}

func (p *Prober) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

// Run probes the suspects t hands over until ctx ends, and blocks the
// servers judged proxies through t. It returns nil when ctx ends.
func (p *Prober) Run(ctx context.Context, t ProbeTarget) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-t.Suspects():
			p.busy.Store(true)
			p.handle(ctx, t, s)
			p.busy.Store(false)
			if ctx.Err() != nil {
				return nil
			}
		}
	}
}

// handle probes suspect s if it is due and records the verdict.
func (p *Prober) handle(ctx context.Context, t ProbeTarget, s Suspect) {
	if !p.due(s.Server) {
		return
	}
	if p.cfg.Delay > 0 {
		tm := time.NewTimer(p.cfg.Delay)
		select {
		case <-ctx.Done():
			tm.Stop()
			return
		case <-tm.C:
		}
	}
	rep := p.Probe(ctx, s)
	if ctx.Err() != nil {
		return
	}
	now := p.now()
	detail := map[string]string{"verdict": "clean", "reason": rep.Reason}
	if rep.Proxy {
		detail["verdict"] = "proxy"
	}
	for _, r := range rep.Results {
		detail[r.Name] = string(r.Reaction)
	}
	t.Record(Event{Time: now.UTC(), Rule: s.Rule, Action: EventProbeResult, Proto: "tcp",
		Client: s.Client.String(), Server: s.Server.String(), Detail: detail})
	if rep.Proxy {
		t.Block(now, ResidualKey{Kind: ResidualServer, Proto: packet.ProtoTCP, Server: s.Server},
			p.cfg.Block, s.Rule, map[string]string{"reason": rep.Reason})
	}
}

// due reports whether server may be probed now, and marks it probed.
func (p *Prober) due(server netip.AddrPort) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if at, ok := p.seen[server]; ok && now.Sub(at) < p.cfg.Cooldown {
		return false
	}
	if len(p.seen) >= maxCooldowns {
		for k, at := range p.seen {
			if now.Sub(at) >= p.cfg.Cooldown {
				delete(p.seen, k)
			}
		}
		if len(p.seen) >= maxCooldowns {
			clear(p.seen)
		}
	}
	p.seen[server] = now
	return true
}

// probe is one probe to send.
type probe struct {
	name    string
	payload []byte
	random  bool
}

// probes returns the probes for a suspect whose client sent first.
func (p *Prober) probes(first []byte) []probe {
	p.mu.Lock()
	defer p.mu.Unlock()
	var ps []probe
	if len(first) > 0 {
		first = first[:min(len(first), maxProbeLen)]
		ps = append(ps, probe{name: "replay", payload: bytes.Clone(first)})
		// The byte positions the GFW changed in its replays (Alice et
		// al. 2020, §4.1).
		mutations := []struct {
			name string
			at   []int
		}{
			{"replay-byte0", []int{0}},
			{"replay-bytes0-7,62-63", []int{0, 1, 2, 3, 4, 5, 6, 7, 62, 63}},
			{"replay-byte16", []int{16}},
		}
		for _, m := range mutations {
			b := bytes.Clone(first)
			changed := false
			for _, i := range m.at {
				if i < len(b) {
					b[i] ^= byte(1 + p.rnd.IntN(255))
					changed = true
				}
			}
			if changed {
				ps = append(ps, probe{name: m.name, payload: b})
			}
		}
	}
	for _, n := range p.cfg.Lengths {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(p.rnd.Uint32())
		}
		ps = append(ps, probe{name: fmt.Sprintf("random-%d", n), payload: b, random: true})
	}
	return ps
}

// Probe sends every probe to s.Server, concurrently, and judges the
// reactions. It returns when every probe has its reaction or ctx ends.
func (p *Prober) Probe(ctx context.Context, s Suspect) ProbeReport {
	ps := p.probes(s.First)
	rep := ProbeReport{Server: s.Server, Results: make([]ProbeResult, len(ps))}
	var wg sync.WaitGroup
	for i, pr := range ps {
		wg.Go(func() {
			rep.Results[i] = p.send(ctx, s.Server, pr)
		})
	}
	wg.Wait()
	rep.Proxy, rep.Reason = judge(ps, rep.Results)
	return rep
}

// send runs one probe.
func (p *Prober) send(ctx context.Context, server netip.AddrPort, pr probe) ProbeResult {
	res := ProbeResult{Name: pr.name, Sent: pr.payload}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	c, err := p.dial(ctx, "tcp", server.String())
	if err != nil {
		res.Reaction = ReactError
		if errors.Is(err, syscall.ECONNREFUSED) {
			res.Reaction = ReactRefused
		}
		return res
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	start := time.Now()
	c.SetDeadline(start.Add(p.cfg.Timeout))
	if _, err := c.Write(pr.payload); err != nil {
		res.Reaction, res.Elapsed = classifyErr(err), time.Since(start)
		return res
	}
	buf := make([]byte, maxResponse)
	n, err := c.Read(buf)
	res.Elapsed = time.Since(start)
	if n > 0 {
		res.Reaction, res.Response = ReactData, buf[:n]
		return res
	}
	res.Reaction = classifyErr(err)
	return res
}

func classifyErr(err error) Reaction {
	switch {
	case err == nil:
		return ReactError
	case errors.Is(err, io.EOF):
		return ReactFIN
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return ReactRST
	case errors.Is(err, os.ErrDeadlineExceeded):
		return ReactTimeout
	}
	return ReactError
}

// legitimate reports whether resp, the answer to probe sent, is a reply
// in a protocol a real server speaks: a TLS record a server sends (an
// alert, or a handshake record that is not a ClientHello), an HTTP
// response, an SSH banner; and not an echo of the probe.
func legitimate(sent, resp []byte) bool {
	if n := min(len(sent), len(resp)); n > 0 && bytes.Equal(sent[:n], resp[:n]) {
		return false // an echo
	}
	if len(resp) >= 6 && resp[1] == 3 && resp[2] <= 4 {
		switch resp[0] {
		case 0x15: // alert
			return true
		case 0x16: // handshake, but a server's: ServerHello and after
			return resp[5] != handshakeClientHello
		}
	}
	return bytes.HasPrefix(resp, []byte("HTTP/")) || bytes.HasPrefix(resp, []byte("SSH-"))
}

// judge decides from the reactions whether the server is a proxy.
func judge(ps []probe, rs []ProbeResult) (bool, string) {
	answered := false
	for i, r := range rs {
		switch r.Reaction {
		case ReactData:
			if !legitimate(ps[i].payload, r.Response) {
				return true, fmt.Sprintf("%s answered with %d bytes of no known protocol", r.Name, len(r.Response))
			}
			answered = true
		case ReactFIN, ReactRST, ReactTimeout:
			answered = true
		}
	}
	if !answered {
		return false, "unreachable"
	}
	// Random probes by length: all timeouts below a length, all closes
	// at and above it.
	type lr struct {
		n int
		r Reaction
	}
	var rnd []lr
	for i, r := range rs {
		if ps[i].random {
			rnd = append(rnd, lr{len(ps[i].payload), r.Reaction})
		}
	}
	slices.SortStableFunc(rnd, func(a, b lr) int { return a.n - b.n })
	firstClose := -1
	for i, x := range rnd {
		if x.r == ReactFIN || x.r == ReactRST {
			firstClose = i
			break
		}
	}
	if firstClose > 0 {
		below, above := true, true
		for _, x := range rnd[:firstClose] {
			below = below && x.r == ReactTimeout
		}
		for _, x := range rnd[firstClose:] {
			above = above && (x.r == ReactFIN || x.r == ReactRST)
		}
		if below && above {
			return true, fmt.Sprintf("random probes time out below %d bytes and are closed from %d bytes: a fixed read threshold", rnd[firstClose].n, rnd[firstClose].n)
		}
	}
	var kinds []string
	for _, r := range rs {
		if !slices.Contains(kinds, string(r.Reaction)) {
			kinds = append(kinds, string(r.Reaction))
		}
	}
	return false, "reactions consistent with a non-proxy server: " + strings.Join(kinds, ",")
}
