// Package simnet is an in-process network of simulated links for tests
// that need delay, jitter, loss, rate limits, blackholes and resets without
// root, sockets or netem: the seeded, deterministic counterpart of the
// testnet's namespace-and-TUN router.
//
// A Pipe is a pair of connected Conns, one per end, each direction with its
// own Link: one-way delay, jitter, rate, loss (Bernoulli or bursty
// Gilbert-Elliott) and a send buffer. A Conn is a net.Conn carrying an
// ordered, reliable byte stream, as TCP does, so loss on a stream is what
// TCP turns it into: a lost segment arrives late (after Link.Stall, a
// retransmission timeout) and everything behind it waits (head-of-line
// blocking). A Conn also carries unreliable datagrams
// (transport.DatagramConn), on which loss drops the datagram and jitter
// reorders. Any direction can be blackholed (bytes are held, writers
// eventually block on the full buffer, nothing errors) and any pipe killed
// (both ends reset).
//
// A Network names listeners by address and hands out transport.Transport
// values (Network.Transport), so code that dials "paths" through
// core/transport runs over simulated links. Links are set per listening
// address and can be changed, blackholed or killed while connections are
// open.
//
// # Determinism
//
// All randomness comes from PCG generators seeded from the Pipe or Network
// seed and the pipe's index, drawn in write order: a run that writes the
// same bytes in the same order at the same times sees the same delays and
// losses. Everything that waits uses channels, sync primitives and
// time.Timer, so the package works inside a testing/synctest bubble, where
// time is simulated and a test of minutes of traffic runs in milliseconds.
// It also works in real time, outside a bubble.
//
// Everything in the package is safe for concurrent use.
package simnet
