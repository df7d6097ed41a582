// Package router is the testnet's userspace IP router: it reads IP packets
// from every host's device (a TUN in the host's network namespace, see
// testnet/netns), passes each through a link model and a censor, and
// writes it to the device of the host that owns the destination address.
// It is the star in the middle of the testnet: a packet from host A to
// host B crosses
//
//	A ──up link of A──▶ [blackholes, censor] ──down link of B──▶ B
//
// where each link is a testnet/link.Link with its own parameters and its
// own seeded generator. A path's delay is the sum of its two links';
// give the delay to one side (the client's, say) to model one long path.
//
// # Forwarding
//
// One goroutine per host reads its device. A packet whose links hold it
// for no time is handled entirely on that goroutine: routed by its
// destination address, put through the up link, the censor and the down
// link, and written, with no copy and no allocation. A packet that a link
// delays is copied into a pooled buffer and held in a timer heap until
// due, where one scheduler goroutine takes it on. Packets of one link
// leave it in the order they entered unless its Params.Reorder is set:
// while any of a link's packets wait in the heap, later ones wait too.
// The router is invisible: it does not decrement TTLs or answer with ICMP.
//
// Bounds: devices are read into one 64 KiB buffer per host; the heap
// holds at most Config.MaxInFlight bytes (counting each packet as its
// pooled buffer: 2 KiB up to 2048 bytes, 64 KiB above) and drops the rest
// as overflow; each link's rate limiter has its own drop-tail queue.
//
// # Time
//
// Links and the censor work on virtual times: a packet enters its source's
// up link at the wall-clock time it was read, enters the border at the
// time the up link said it arrives, and enters the down link at that time
// plus any delay the censor added. The scheduler releases packets as soon
// as the wall clock passes their time; Go timers and the OS scheduler make
// that late by microseconds to milliseconds, never early. Measured delays
// are therefore at least the configured ones.
//
// # Censor contract
//
// A Censor sees every packet at the border while it is switched on
// (Config.CensorOff, SetCensorOn, timeline events), after blackholes and
// before the destination's down link, as Packet(dir, pkt, now):
//
//   - dir is Outbound (Inside host to Outside host), Inbound, or Local
//     (both hosts in the same Zone).
//   - pkt is the whole IPv4 or IPv6 packet as the source's kernel sent it.
//     It is valid only during the call: the censor must not keep it or
//     change it (copy what it needs).
//   - now is the packet's virtual time at the border (see Time); use it,
//     not the wall clock, for flow ages, idle expiry and residual blocks,
//     so the censor's timing matches the links'.
//   - Calls are serialized: the router never calls Packet concurrently,
//     so a censor needs no locks of its own for state only Packet
//     touches. Packet must not block, and must not call the Router (its
//     lock is held).
//   - The verdict passes, drops or replaces the packet, optionally delays
//     it (Verdict.Delay, before the down link), and may inject packets
//     toward either end (Verdict.Inject). Replacement and injected
//     packets are routed by their own destination address, then go
//     through blackholes and that host's down link like any packet, at
//     the inspected packet's time plus their Delay. The router copies
//     Verdict.Packet and every Injection.Packet before the next call, so
//     a censor may reuse its buffers.
//   - A Replace or Injection packet larger than MaxPacket, or empty, is
//     dropped; one whose destination no host has is dropped as noroute.
//
// CensorCounters count the verdicts; the action log, the reasons and the
// flow state belong to the censor.
//
// # Counters
//
// Every drop is counted once, against the link where it happened, by
// link.Reason: loss, queue and mtu by the link model; noroute, malformed
// and blackhole (of the source) on the source's up link; blackhole (of the
// destination) and censor on the destination's down link; overflow on the
// link whose packet did not fit in the heap; write on the down link of a
// device that refused a packet.
//
// # Timeline
//
// Config.Timeline events (link changes, blackholes of a host or a port,
// censor on/off) are applied at their At, counted from the start of Run,
// by one goroutine; Apply applies an event at once. Blackholes drop
// packets when they enter the router; packets already past that point are
// delivered.
//
// # Repeatability
//
// Each link draws from PCG(Config.Seed, 2i) (host i's up link) or
// PCG(Config.Seed, 2i+1) (its down link), so the k-th packet offered to a
// link meets the same fate in every run with the same seed. Runs with
// real kernels repeat exactly as far as the hosts send the same packets
// in the same order at the same times: TCP timers, the OS scheduler and
// interleaving between links are not under the router's control.
//
// Everything exported is safe for concurrent use.
package router
