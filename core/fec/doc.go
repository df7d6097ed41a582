// Package fec is CommuCat's forward error correction: Reed-Solomon block
// codes (github.com/klauspost/reedsolomon) over sealed session records.
//
// The router uses it on paths that may lose records (media, the spread
// scheduler, lossy datagram paths). On the send path an Encoder groups the
// sealed records it is given into blocks of k data records and makes m
// parity shards per block; the data records go out unchanged, so a
// receiver that lost nothing does no decoding. On the receive path a
// Decoder collects sealed data records and parity shards in any order,
// with duplicates, and as soon as any k of a block's k+m shards are present
// it rebuilds the missing data records. The caller then opens them with
// session.Opener like any other record: FEC repairs bytes, the record's
// AEAD still decides whether they are authentic, so a forged or damaged
// parity shard can make a repair fail but never makes a forged record
// pass.
//
// # Shards
//
// A block holds k' data records, 1 <= k' <= k (a block closed early by
// Flush, the delay or the size limit holds fewer than k). Each data shard
// is one whole sealed record padded with zero bytes to the block's shard
// length, the length of its longest record. The record's own 3-byte length
// field (session record format: length | epoch | seq | ciphertext) is the
// shard's length prefix, so padding costs no extra bytes: a repaired shard
// is cut back to length+3 bytes, and a repair whose length field does not
// fit the shard, whose seq is not the one the block lists for that shard
// or whose padding is not zero is dropped before it reaches Open. Records
// longer than MaxShard are sent without FEC.
//
// # Parity payload
//
// Each parity shard travels as the payload of one CCP-1 frame of type
// frame.FECParity (at most 66 KiB), sealed into a record of its own like
// any other frame. Varints are minimal unsigned LEB128 as in core/frame;
// the decoder rejects a non-minimal varint, so every payload has exactly
// one encoding.
//
//	+--------+-----------+------+------+-------+-----------+-----------+-----------+-----------+
//	| format | block     | k'   | m    | index | shard len | first seq | seq set   | shard     |
//	| 1 B    | varint    | 1 B  | 1 B  | 1 B   | varint    | varint    | see below | shard len |
//	+--------+-----------+------+------+-------+-----------+-----------+-----------+-----------+
//
// The fields:
//
//   - format: 0 means the seq set is a gap list, 1 a bitmap; other values
//     are rejected.
//   - block: the encoder's block counter, from 0. Informational: the decoder
//     identifies a block by its first seq, so several encoders may feed one
//     session.
//   - k': data shards in this block, 1..MaxK (64). m: parity shards, 1..MaxM
//     (32). index: this parity shard's index, k' <= index < k'+m (data
//     shards have indices 0..k'-1, in seq order).
//   - shard len: 28 (the smallest record) .. MaxShard (66560); it must equal
//     the number of shard bytes that follow.
//   - first seq: the sequence number of data shard 0.
//   - seq set: the other k'-1 sequence numbers, strictly increasing. Records
//     of one block need not be consecutive: other paths' records and the
//     parity records themselves take sequence numbers in between.
//
// Gap list (format 0): k'-1 varints; gap i = seq[i] - seq[i-1] - 1, so a run
// of consecutive records costs one zero byte per record.
//
//	+-------------+-------------+-----+---------------+
//	| gap 1 (var) | gap 2 (var) | ... | gap k'-1 (var)|
//	+-------------+-------------+-----+---------------+
//
// Bitmap (format 1): span = last seq - first seq as a varint, then
// ceil(span/8) bytes; bit j (byte j/8, least significant bit first) is set
// when first seq + 1 + j is in the block. The last bit (j = span-1) is set,
// exactly k'-1 bits are set and unused bits of the last byte are zero.
//
//	+--------------+------------------------------+
//	| span (var)   | bitmap, ceil(span/8) bytes   |
//	+--------------+------------------------------+
//
// The encoder writes the bitmap only when it is strictly shorter than the
// gap list (10 consecutive records: 2 bytes instead of 9), and the decoder
// rejects the longer of the two, which keeps the encoding unique.
//
// The code is klauspost/reedsolomon's default systematic code over
// GF(2^8) for (k', m): data shards are the records themselves, parity
// shard index k'+i is row i of its parity matrix, and any k' of the k'+m
// shards rebuild the rest.
//
// # Adaptation
//
// Choose and Controller pick m (and, under heavy loss, a smaller k) so
// that the residual loss, the probability that a data record is lost and
// cannot be rebuilt, stays under a target (DefaultTarget, 1e-4) when shards
// are lost independently with probability p:
//
//	residual(p, k, m) = p * P[Binomial(k+m-1, p) >= m]
//
// (the record is lost, and at least m of the other k+m-1 shards of its
// block are lost too). See Choose.
//
// # Memory and time
//
// An Encoder holds at most one open block: at most k records and at most
// EncoderConfig.MaxBlockBytes bytes. A Decoder holds at most
// DecoderConfig.MaxBlocks blocks, MaxRecords unclaimed data records and
// MaxBytes bytes of shards; blocks and records leave after Timeout, or
// when the window (by default the session's replay window) has moved past
// them, or to make room for newer ones. A block that leaves before it could
// be completed is counted as unrecoverable. A Decoder also keeps up to 1 MiB
// of spent buffers for reuse. Records it returns belong to the caller.
//
// Encoders, Decoders and Controllers are not safe for concurrent use,
// except their Stats methods; they start no goroutines.
package fec
