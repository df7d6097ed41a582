// Package handshake is CommuCat's hybrid post-quantum handshake between a
// client device and a gateway, the device certificates the gateway issues,
// the key files both keep, and the per-source rate limiting and replay
// cache the gateway needs to refuse probes and replays.
//
// # Construction (handshake version 1)
//
// The handshake is the Noise protocol Noise_XKpsk3_25519_ChaChaPoly_SHA256
// (flynn/noise) with the prologue "CommuCat handshake v1", plus an
// ephemeral ML-KEM-768 (FIPS 203) exchange whose shared secret is the Noise
// PSK of message 3. The client knows the gateway's static key in advance
// (from an invite); the gateway learns the client's static key in message 3.
//
//	-> e, es           message 1: payload carries the client's ML-KEM encapsulation key
//	<- e, ee           message 2: payload carries the ML-KEM ciphertext
//	                   both sides: SetPresharedKey(ML-KEM shared secret)
//	-> s, se, psk      message 3: payload carries the application payload
//
// After message 3, Noise's Split yields two cipher states; their raw keys
// are Result.SendKey and Result.RecvKey (the client's SendKey is the first
// Split key, initiator to responder), and Result.Hash is the handshake hash.
//
// Each message on a stream is framed by a 2-byte big-endian length (1 to
// MaxMessageSize = 4096). Inside, all integers are big-endian, "enc(x)"
// is Noise EncryptAndHash (ChaCha20-Poly1305 ciphertext of x followed by a
// 16-byte tag), and padding bytes are random, encrypted and authenticated:
//
//	message 1 (1243 bytes + padding):
//	+-------+--------------------------------------------------------------------+
//	| e     | enc( version | timestamp | ML-KEM-768 ek | pad length | padding )  |
//	| 32 B  |      1 B = 1   8 B unix ns   1184 B          2 B          pad B    |
//	+-------+--------------------------------------------------------------------+
//
//	message 2 (1138 bytes + padding):
//	+-------+-------------------------------------------------+
//	| e     | enc( ML-KEM-768 ct | pad length | padding )     |
//	| 32 B  |      1088 B          2 B          pad B         |
//	+-------+-------------------------------------------------+
//
//	message 3 (68 bytes + payload + padding):
//	+---------------+----------------------------------------------------------+
//	| enc(s)        | enc( payload length | payload | pad length | padding )   |
//	| 32 B + 16 B   |      2 B              n B       2 B          pad B       |
//	+---------------+----------------------------------------------------------+
//
// The gateway refuses message 1 unless it decrypts (ErrAuth), the version
// is 1 and the layout exact (ErrMalformed), the timestamp is within
// ±MaxSkew of its clock (ErrStale), and the SHA-256 of the whole message
// was not accepted within the last 2*MaxSkew (ErrReplay; see ReplayCache).
// docs/PROTOCOL.md is the full specification, with test vectors
// in testdata/vectors.json.
//
// # Device certificates
//
// A Certificate is signed with the gateway's Ed25519 SigningKey:
//
//	+---------+--------+-----------+------------+-------------+------------+-----------+----------+------+-----------+
//	| version | serial | device id | device key | gateway key | not before | not after | user len | user | signature |
//	| 1 B = 1 | 16 B   | 16 B      | 32 B       | 32 B        | 8 B unix s | 8 B unix s| 1 B      | n B  | 64 B      |
//	+---------+--------+-----------+------------+-------------+------------+-----------+----------+------+-----------+
//
// The signature is Ed25519 over "CommuCat device certificate v1" || 0x00 ||
// body, where body is everything before the signature.
//
// # Key files
//
// LoadOrCreateStatic and LoadOrCreateSigning keep keys in text files of two
// lines, a header naming the key type and the secret in standard base64,
// with mode 0600; a file accessible by group or others is refused.
//
// # Concurrency
//
// Initiator, Responder and Result belong to one goroutine. StaticKey,
// SigningKey, ReplayCache and RateLimiter are safe for concurrent use.
//
// Changelog: version 1 is the first version.
package handshake
