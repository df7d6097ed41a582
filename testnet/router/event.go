package router

import (
	"errors"
	"fmt"
	"time"

	"github.com/commucat/commucat/testnet/link"
	"github.com/commucat/commucat/testnet/packet"
)

// ErrEvent is wrapped by the errors of invalid events.
var ErrEvent = errors.New("router: bad event")

// ErrHost is wrapped by errors naming a host the router does not have.
var ErrHost = errors.New("router: unknown host")

// LinkDir names one or both directions of a host's link to the router.
type LinkDir uint8

// Link directions.
const (
	// Both is the up and the down link.
	Both LinkDir = iota
	// Up carries the host's packets to the router.
	Up
	// Down carries packets from the router to the host.
	Down
)

// String returns "both", "up" or "down".
func (d LinkDir) String() string {
	switch d {
	case Up:
		return "up"
	case Down:
		return "down"
	}
	return "both"
}

// Blackhole selects packets to drop silently: every packet from or to
// Host, or, with Port set, only the packets of Host's port Port (packets
// from Host with that source port and packets to Host with that
// destination port), of protocol Proto if set.
type Blackhole struct {
	// Host is the host's name.
	Host string `json:"host" yaml:"host"`
	// Proto is packet.ProtoTCP or packet.ProtoUDP; if zero, both (with
	// Port) or every protocol (without).
	Proto uint8 `json:"proto,omitempty" yaml:"proto,omitempty"`
	// Port is the host's TCP or UDP port; if zero, every packet.
	Port uint16 `json:"port,omitempty" yaml:"port,omitempty"`
}

// String returns e.g. "gateway" or "gateway:443/tcp".
func (b Blackhole) String() string {
	if b.Port == 0 && b.Proto == 0 {
		return b.Host
	}
	proto := "any"
	switch b.Proto {
	case packet.ProtoTCP:
		proto = "tcp"
	case packet.ProtoUDP:
		proto = "udp"
	case 0:
	default:
		proto = fmt.Sprintf("proto%d", b.Proto)
	}
	return fmt.Sprintf("%s:%d/%s", b.Host, b.Port, proto)
}

// LinkChange sets the parameters of a host's link.
type LinkChange struct {
	// Host is the host's name.
	Host string `json:"host" yaml:"host"`
	// Dir is the direction changed; Both sets both to Params.
	Dir LinkDir `json:"dir,omitempty" yaml:"dir,omitempty"`
	// Params are the new parameters.
	Params link.Params `json:"params" yaml:"params"`
}

// Event is one change on a timeline. Exactly one of its pointer fields is
// set.
type Event struct {
	// At is when the event happens, counted from the start of Run.
	At time.Duration `json:"at" yaml:"at"`
	// Link changes a link's parameters.
	Link *LinkChange `json:"link,omitempty" yaml:"link,omitempty"`
	// Blackhole starts dropping the packets it selects.
	Blackhole *Blackhole `json:"blackhole,omitempty" yaml:"blackhole,omitempty"`
	// Unblackhole stops a blackhole started with an equal Blackhole.
	Unblackhole *Blackhole `json:"unblackhole,omitempty" yaml:"unblackhole,omitempty"`
	// Censor switches the censor on (true) or off (false): while off,
	// packets cross the border uninspected.
	Censor *bool `json:"censor,omitempty" yaml:"censor,omitempty"`
}

// String describes the event for logs, e.g. "2s blackhole gateway:443/tcp".
func (e Event) String() string {
	switch {
	case e.Link != nil:
		return fmt.Sprintf("%s link %s %s", e.At, e.Link.Host, e.Link.Dir)
	case e.Blackhole != nil:
		return fmt.Sprintf("%s blackhole %s", e.At, e.Blackhole)
	case e.Unblackhole != nil:
		return fmt.Sprintf("%s unblackhole %s", e.At, e.Unblackhole)
	case e.Censor != nil:
		return fmt.Sprintf("%s censor %t", e.At, *e.Censor)
	}
	return fmt.Sprintf("%s empty", e.At)
}

// validate checks the event's shape and, with hosts, its host names.
func (e Event) validate(hosts map[string]*host) error {
	n := 0
	for _, set := range []bool{e.Link != nil, e.Blackhole != nil, e.Unblackhole != nil, e.Censor != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("router: event at %s sets %d changes, want exactly 1: %w", e.At, n, ErrEvent)
	}
	if e.At < 0 {
		return fmt.Errorf("router: event at %s: negative time: %w", e.At, ErrEvent)
	}
	var name string
	switch {
	case e.Link != nil:
		if e.Link.Dir > Down {
			return fmt.Errorf("router: event %s: direction %d: %w", e, e.Link.Dir, ErrEvent)
		}
		if err := e.Link.Params.Validate(); err != nil {
			return fmt.Errorf("router: event %s: %w", e, err)
		}
		name = e.Link.Host
	case e.Blackhole != nil:
		name = e.Blackhole.Host
	case e.Unblackhole != nil:
		name = e.Unblackhole.Host
	default:
		return nil
	}
	if _, ok := hosts[name]; !ok {
		return fmt.Errorf("router: event %s: host %q: %w", e, name, ErrHost)
	}
	return nil
}
