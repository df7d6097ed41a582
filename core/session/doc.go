// Package session is CommuCat's record layer and session loop: it seals
// CCP-1 frames into authenticated, encrypted records, opens the records a
// peer sends, and runs one session over one connection (keepalive, RTT,
// rekeying, close).
//
// The record crypto (Sealer, Opener) does no I/O, so the multipath router
// can seal a record once and send it on any path; Session adds the I/O for
// the single-connection case.
//
// # Record format
//
// A record carries one or more whole CCP-1 frames; a frame never straddles
// two records. All integers are big endian.
//
//	+----------+-------+--------------+-------------------------------+
//	| length   | epoch | seq          | ChaCha20-Poly1305 ciphertext  |
//	| 3 bytes  | 1 B   | 8 bytes      | plaintext length + 16 (tag)   |
//	+----------+-------+--------------+-------------------------------+
//	|<---- header: 12 bytes, AEAD AD ->|
//
// length counts the bytes that follow it (epoch, seq, ciphertext and tag),
// so a record is length+3 bytes long. The plaintext is at most MaxPlaintext
// (128 KiB), so a record is at most MaxRecordSize bytes; a reader checks the
// length against that limit before it allocates anything. The whole 12-byte
// header is the AEAD's additional data, so no header bit can be changed
// without the record failing to open.
//
// # Nonces
//
// The nonce is 4 zero bytes followed by seq as 8 bytes big endian. seq is
// explicit on the wire (unlike Noise's implicit counter) because multipath
// delivers records out of order. It starts at 0, grows by one per record,
// is never reused, and continues across key epochs. A sender refuses to
// seal once seq would reach 2^64-1 (ErrExhausted): that nonce is reserved
// for key derivation.
//
// # Replay window
//
// The receiver keeps a sliding bitmap of the last ReplayWindow (8128)
// sequence numbers behind the highest one it has authenticated, as
// WireGuard does. After a record authenticates, its seq is accepted if it
// is ahead of the highest seen, or within the window and not seen before;
// otherwise it is dropped with ErrReplay. The window is per direction of a
// session, not per epoch.
//
// # Rekeying
//
// Each direction has its own key. The sender moves to the next epoch after
// RekeyAfterRecords records or RekeyAfter time in the current one, or when
// asked (Rekey), but never twice without sealing a record in between: the
// receiver holds only the key one epoch ahead of the last record it saw.
// The next key is Noise's REKEY (Noise specification §4.2)
// of the current key:
//
//	k' = first 32 bytes of ChaCha20-Poly1305-Seal(k, nonce = 0x00000000 || 0xffffffffffffffff, ad = "", plaintext = 32 zero bytes)
//
// and the epoch byte grows by one, modulo 256. The receiver holds the
// current key, the next one (derived ahead of time) and, for a grace period
// after switching, the previous one. It switches to the next epoch on the
// first record of epoch+1 that authenticates, and drops the previous key
// when the grace period (RekeyGrace) ends or when the replay window has
// moved past every sequence number the previous epoch could have used,
// whichever comes first.
//
// # Keepalive, RTT and close
//
// A Session sends a Ping frame when it starts and every KeepAlive; the peer
// answers with a Pong echoing the payload. RTT samples update a smoothed
// RTT and RTT variance as RFC 6298 does. A session that receives no record
// for IdleTimeout ends with ErrIdle. Close sends a Close frame (code
// CloseNormal) and closes the connection; the peer's Run returns a
// *CloseError matching ErrClosedByPeer.
//
// docs/PROTOCOL.md describes the same protocol for implementers.
package session
