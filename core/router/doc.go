// Package router runs one CommuCat session over several paths at once:
// transport connections that each carry the session's sealed records. It
// joins new paths to a session without a new handshake, measures each
// path live, places records on paths by scheduler (best, redundant,
// spread with Reed-Solomon parity), acknowledges and re-sends reliable
// frames so that a path that dies, stalls or is blackholed loses nothing,
// delivers them exactly once and in order, and resumes a session whose
// paths all died.
//
// The crypto stays per session: one session.Sealer numbers every record
// of a direction whatever path carries it, so nonces never repeat, and
// one session.Opener's replay window drops the copies that arrive on a
// second path. Reliability and order live above the records, in the
// frames: reliable frames carry a per-session sequence number in
// frame.Frame.Seq and are acknowledged with frame.SackPayload; a re-sent
// frame goes out in a new record, under a new nonce.
//
// # Path join
//
// Both ends derive a join key from the handshake:
//
//	join key = HKDF-SHA256(secret = K_c2g || K_g2c, salt = handshake hash, info = "CommuCat path join v1")
//	token(i) = HMAC-SHA256(join key, "token" || uint64_be(i)), top bit of byte 31 cleared,  i = 1, 2, ...
//
// where K_c2g and K_g2c are the client-to-gateway and gateway-to-client
// traffic keys of the handshake (before any rekeying). To add a path, the
// client opens a connection and sends, instead of handshake message 1, a
// join message framed like one:
//
//	+------------------+-------------------+------------------------------+
//	| length           | token(i)          | padding                      |
//	| 2 bytes, BE      | 32 bytes          | length - 32 random bytes     |
//	+------------------+-------------------+------------------------------+
//
// length is 32 to 4096. The padding length follows the gateway's padding
// profile for message 1, so joins and handshakes have the same length
// distribution; a token's top bit is clear like an X25519 public key's,
// so its first 32 bytes look like message 1's ephemeral key. The client
// uses each index once, counting up.
//
// The gateway reads the first message of every connection. If its first
// 32 bytes are a token some live session expects (Table), the token is
// used up and the connection becomes a new path of that session: the
// gateway's first record on it carries a PathJoin frame (payload: the
// index i as a minimal varint), padded to the length of a message 2. Any
// other message is handshake message 1 (its ephemeral key is random, so it
// cannot collide with a token); a join with an unknown or used token
// therefore fails as a handshake and the gateway closes the connection
// without a word. A session expects the unused indexes within TokenWindow
// (8) below and above the highest index used so far; tokens are single
// use, so a replayed join message gets nothing. The tokens of a session
// that ended less than a minute ago are refused the same way but without
// being taken for a handshake, so that joins racing a client's Close do
// not count against its rate limit.
//
// A joined path is unverified until the client's first record on it
// arrives (the client sends a Ping as soon as the confirmation opens):
// until then the gateway sends nothing but control frames on it, so a
// replayer who raced the client to the token gains a path that carries no
// data and soon times out.
//
// # Reliability
//
// Every frame the application sends is reliable except Media: the router
// numbers it (frame.Seq = 1, 2, ... per session and direction), keeps it
// until it is acknowledged, and the receiver delivers reliable frames
// exactly once in Seq order (a frame with Seq 0 is unreliable and
// delivered as it comes). Control frames are never numbered: Ack of kinds
// AckRecords and AckDatagrams, Ping, Pong, PathJoin, Padding, FECParity. The receiver
// holds at most Window frames (reordering plus what the application has
// not read) and acknowledges with an Ack frame of kind AckRecords whose
// payload, frame.SackPayload, carries the cumulative acknowledgement, the
// window (the sender may send Seq up to cumulative + window) and up to 64
// ranges received above it. Acknowledgements wait at most AckDelay, are
// sent at once for a gap, go on the path the data came in on and on the
// best path, and ride along in data records when there are any.
//
// The sender re-sends a frame, in a new record and on another path where
// there is one:
//
//   - when the path that carried it dies (reset, close, write error) or
//     stalls;
//   - when it was overtaken (as RACK, RFC 8985, within a connection): an
//     acknowledgement arrives for a frame written after it, and its own is
//     overdue, i.e. more than the path's loss RTT (the larger of the ping
//     SRTT and the write-to-acknowledgement RTT), a reordering allowance
//     (a quarter of the path's least RTT, at least 5ms) and AckDelay have
//     passed since it was written;
//   - otherwise after a retransmission timeout, max(RTOMin, 2 loss RTT +
//     4 RTTVAR + AckDelay) from when it was written, doubling.
//
// Send waits while the peer's window or MaxUnacked bytes are used up.
//
// # Paths, metrics and schedulers
//
// Each path is pinged (every 2 RTT, 100 ms to 1 s, while it carries
// traffic; every KeepAlive when idle) and answers pings on the path they
// came in on: smoothed RTT and variance as in RFC 6298, the least RTT of
// the last 30 s, a loss average of late (over 2 SRTT + 4 RTTVAR + 10ms)
// or missing pongs, a delivery rate from acknowledged bytes. A path with a
// ping or data outstanding and no progress (a pong, or an acknowledgement
// of a frame only it carried) for max(3 SRTT, SRTT + 4 RTTVAR,
// StallFloor) is stalled: its frames are re-sent elsewhere and it carries
// only pings until a pong comes back, or is closed after PathTimeout. The
// best path is the usable one with the lowest score, (SRTT + 2 RTTVAR) x
// (1 + 4 loss); it changes only to a path better by Hysteresis after
// holding for a second, unless it stops being usable.
//
// Schedulers: Best puts a record on the best path only (Send waits when
// its queue is full); Redundant on the two best (small urgent frames:
// messages, call signalling, FlagUrgent); Spread stripes records over the
// paths whose least RTT is within twice the fastest's (plus 10ms), in
// proportion to their delivery rate, and adds Reed-Solomon parity
// (core/fec) over the sealed records once the paths show loss. ClassOf
// gives each frame type's default; Config.Scheduler overrides it.
//
// # FEC on stream paths
//
// A lost segment on a stream transport stalls everything behind it on
// that connection, so parity helps only on other paths. The spread
// scheduler therefore places the records and parity shards of a block on
// the paths holding the fewest shards of that block, and chooses m so
// that the block survives losing every shard of one path: with n >= 2
// usable paths and blocks of about k' records (blocks close after 10ms),
// m = max(ceil(k'/(n-1)), the fec.Controller's m for the measured loss
// scaled to k'), k <= 8. Below 0.5% measured loss, or on one path, blocks
// get no parity (FECAlways: one shard). Receivers keep records for
// repair while parity arrived in the last 5 s; a repaired record is opened
// like any other, and the original, if it comes later, is a replay.
//
// # Datagram paths
//
// A path whose connection implements transport.DatagramConn (QUIC, KCP)
// carries unreliable frames (Media) as datagrams, one numbered record
// each, unless Config.NoDatagrams is set; the peer reports what it
// received in Ack frames of kind AckDatagrams, from which the sender
// measures each path's datagram loss, steers media to the datagram path
// that loses least and sizes Reed-Solomon parity for datagram blocks.
// datagram.go documents the format.
//
// # Sessions outlive paths
//
// The client keeps up to MaxPaths paths, one per endpoint, re-dialling
// failed endpoints with backoff. When every path died the gateway keeps
// the session for ResumeWindow; the client joins again on any endpoint
// and unacknowledged frames are re-sent. If the gateway forgot the
// session, its joins are refused (the connection closes before any
// record); after JoinRefusals refusals in a row the client session ends
// with ErrResumeRefused and the application falls back to a full
// handshake. A gateway session whose first path closes before the client
// sent any record (a handshake that lost the client's race) ends at once.
//
// docs/PROTOCOL.md describes the same protocol for implementers.
package router
