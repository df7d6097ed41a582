package router

import "time"

// Zone is the side of the censor's border a host is on.
type Zone uint8

// Zones.
const (
	// Outside is the free side: gateways, cover sites, public resolvers.
	Outside Zone = iota
	// Inside is the censored side: clients, and the censor's own prober
	// if a scenario puts it there.
	Inside
)

// String returns "outside" or "inside".
func (z Zone) String() string {
	if z == Inside {
		return "inside"
	}
	return "outside"
}

// Direction is how a packet crosses the censor.
type Direction uint8

// Directions.
const (
	// Outbound is a packet from an Inside host to an Outside host.
	Outbound Direction = iota + 1
	// Inbound is a packet from an Outside host to an Inside host.
	Inbound
	// Local is a packet between two hosts of the same zone; censors
	// usually pass these.
	Local
)

// String returns "outbound", "inbound" or "local".
func (d Direction) String() string {
	switch d {
	case Outbound:
		return "outbound"
	case Inbound:
		return "inbound"
	case Local:
		return "local"
	}
	return "unknown"
}

// direction returns the direction of a packet from zone a to zone b.
func direction(a, b Zone) Direction {
	switch {
	case a == b:
		return Local
	case a == Inside:
		return Outbound
	default:
		return Inbound
	}
}

// Censor is the hook the router calls for every packet at the border, in
// the middle of its path: after the source's up link, before the
// destination's down link. See the package doc for the contract.
type Censor interface {
	// Packet inspects the IP packet pkt crossing the border in direction
	// dir at (virtual) time now and returns what to do with it.
	Packet(dir Direction, pkt []byte, now time.Time) Verdict
}

// Action is a censor's decision on the packet it inspected.
type Action uint8

// Actions.
const (
	// Pass forwards the packet (after Verdict.Delay).
	Pass Action = iota
	// Drop discards the packet.
	Drop
	// Replace forwards Verdict.Packet instead of the packet (after
	// Verdict.Delay). It is routed by its own destination address.
	Replace
)

// String returns "pass", "drop" or "replace".
func (a Action) String() string {
	switch a {
	case Pass:
		return "pass"
	case Drop:
		return "drop"
	case Replace:
		return "replace"
	}
	return "unknown"
}

// Verdict is a censor's answer for one packet. The zero Verdict passes the
// packet unchanged and at once.
type Verdict struct {
	// Action is what happens to the inspected packet.
	Action Action
	// Delay holds a passed or replaced packet this long before it enters
	// its destination's down link: throttling by delay. Other packets to
	// the same host are not held back; packets given the same Delay keep
	// their order.
	Delay time.Duration
	// Packet is the replacement for Replace: a whole IPv4 or IPv6
	// packet.
	Packet []byte
	// Inject are extra packets, toward either end, each routed by its
	// destination address.
	Inject []Injection
}

// Injection is a packet a censor sends: a forged RST, a forged DNS answer,
// an active probe.
type Injection struct {
	// Packet is a whole IPv4 or IPv6 packet. Its destination address
	// picks the host it goes to; a destination no host has is dropped and
	// counted as noroute.
	Packet []byte
	// Delay is how long after the inspected packet's time the injected
	// packet enters its destination's down link.
	Delay time.Duration
}

// NopCensor passes every packet unchanged. It is safe for concurrent use.
type NopCensor struct{}

// Packet returns the zero Verdict: pass.
func (NopCensor) Packet(Direction, []byte, time.Time) Verdict { return Verdict{} }

var _ Censor = NopCensor{}

// CensorFunc adapts a function to the Censor interface.
type CensorFunc func(dir Direction, pkt []byte, now time.Time) Verdict

// Packet calls f.
func (f CensorFunc) Packet(dir Direction, pkt []byte, now time.Time) Verdict {
	return f(dir, pkt, now)
}
