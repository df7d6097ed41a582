package censor

import (
	"time"

	"github.com/commucat/commucat/testnet/link"
	"github.com/commucat/commucat/testnet/router"
)

// RouterCensor adapts an Engine to the testnet router's Censor hook: the
// router's Direction and Action have the engine's values, so the adapter
// converts them one to one and copies the injections into the router's
// type. A packet the engine passes without injections costs no
// allocation. It is as safe for concurrent use as the Engine.
type RouterCensor struct {
	// Engine decides; it must not be nil.
	Engine *Engine
}

var _ router.Censor = RouterCensor{}

// Packet asks the engine about pkt and returns its verdict in the
// router's terms.
func (a RouterCensor) Packet(dir router.Direction, pkt []byte, now time.Time) router.Verdict {
	v := a.Engine.Packet(Direction(dir), pkt, now)
	rv := router.Verdict{Action: router.Action(v.Action), Delay: v.Delay, Packet: v.Packet}
	if len(v.Inject) > 0 {
		rv.Inject = make([]router.Injection, len(v.Inject))
		for i, in := range v.Inject {
			rv.Inject[i] = router.Injection{Packet: in.Packet, Delay: in.Delay}
		}
	}
	return rv
}

// Params returns the testnet/link parameters of one direction of a
// profile's link section.
func (p LinkParams) Params() link.Params {
	out := link.Params{
		Delay:     p.Delay,
		Jitter:    p.Jitter,
		Reorder:   p.Reorder,
		Loss:      p.Loss,
		Duplicate: p.Duplicate,
		Rate:      int64(p.Rate),
		Queue:     p.Queue,
		MTU:       p.MTU,
	}
	if p.Burst != nil {
		out.Burst = &link.GilbertElliott{PGoodBad: p.Burst.PGoodBad, PBadGood: p.Burst.PBadGood, LossGood: p.Burst.LossGood, LossBad: p.Burst.LossBad}
	}
	return out
}
