// Package link is the model of one direction of a testnet link: what
// happens to an IP packet between the moment a host's TUN device hands it
// to the router and the moment the router hands it on. It decides; it does
// not hold packets or timers. The router (testnet/router) asks a Link what
// to do with each packet and keeps the delayed ones in its own scheduler.
//
// A Link applies, in this order, to a packet of n bytes offered at time
// now:
//
//  1. MTU: if Params.MTU is set and n > MTU, the packet is dropped
//     (ReasonMTU). No ICMP "fragmentation needed" is sent back: a sender
//     that relies on path-MTU discovery sees a black hole, as behind a
//     firewall that filters ICMP. Keep the TUN MTU at or below the link MTU
//     unless that is what the test wants.
//  2. Loss: Bernoulli with probability Params.Loss, or, when Params.Burst
//     is set, a Gilbert-Elliott chain that first moves between its good
//     and bad state and then loses the packet with that state's
//     probability (ReasonLoss).
//  3. Duplication: with probability Params.Duplicate a second copy
//     follows the packet. Each copy then goes through steps 4 and 5 on
//     its own.
//  4. Rate: when Params.Rate is set (bytes per second), copies queue
//     behind each other in a drop-tail queue of Params.Queue bytes and
//     leave it at Rate. A copy that does not fit in what is left of the
//     queue is dropped (ReasonQueue). The queue is virtual: its backlog at
//     time now is what the rate has not yet sent, (busyUntil - now) × Rate.
//  5. Delay and jitter: the copy arrives Params.Delay plus a uniform draw
//     in [0, Params.Jitter) after it leaves the rate limiter. Unless
//     Params.Reorder is set, a copy never arrives before the one offered
//     before it (its arrival is raised to the previous arrival), so jitter
//     bunches packets instead of reordering them; with Reorder, copies
//     arrive in the order of their drawn times.
//
// # Randomness and repeatability
//
// Every random choice comes from the Link's own PCG generator
// (math/rand/v2), seeded with New's seed and stream. Draws are made only
// for the features in use and always in the order above: for Burst, one
// draw for the state change and one for the loss (the loss draw is skipped
// when the state's loss probability is 0); for Loss > 0, one draw;
// for Duplicate > 0, one draw; for Jitter > 0, one draw per copy that
// passed the queue. So the k-th packet offered to a Link meets the same
// fate in every run with the same seed, the same parameters and the same
// sequence of (time, size) offers. Changing the parameters with Set keeps
// the generator and the Gilbert-Elliott state, so a scripted change at a
// given packet repeats too. What a Link cannot make repeatable is the
// sequence of offers itself: on a real testnet that depends on the
// hosts' kernels and on scheduling.
//
// A Link is safe for concurrent use; Offer is serialised by a mutex.
package link
