// Package ring carries a flow's bytes between the host and a plugin
// through memory both processes map, instead of through the flow's
// socket pair: a write is one copy into the shared memory, and the plugin
// hands that memory to its transport without copying it again, so a byte
// crosses the process boundary with one copy instead of two and with
// fewer system calls. The flow's socket pair stays: it wakes a side that
// waits for bytes (a "doorbell" byte), and its end tells either side that
// the other closed or died, as it does without a ring. A second socket
// pair, the room bell, wakes a side that waits for room.
//
// # Layout
//
// The host creates the memory as a memfd, sealed against shrinking and
// growing (F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_SEAL) so that the plugin
// cannot make the host's accesses fault, and passes it with the flow's
// FLOW message with the other end of the room bell (plugin protocol
// version 3; see docs/PLUGINS.md). It holds
// two rings of the same size: first the one from host to plugin, then the
// one from plugin to host. Each ring is a 4096-byte header page followed
// by its data area, whose size is a power of two from 4 KiB to 16 MiB, so
// the memfd's size is 2 × (4096 + size). Header fields are in the
// machine's byte order (both processes run on it) and are read and
// written with sequentially consistent atomics (as sync/atomic's): the
// waking below needs a store to one field ordered before a later load
// of another.
//
//	offset  size  written by  field
//	0       8     producer    tail: bytes written so far
//	8       4     both        producer waits: 1 while the producer waits for room
//	12      4     producer    flags: bit 0, end of stream (no byte after tail)
//	64      8     consumer    head: bytes read so far
//	72      4     both        consumer waits: 1 while the consumer waits for bytes
//
// The byte at position p (counted from the start of the stream) is at
// p mod size in the data area. The producer writes bytes at tail and
// then advances tail; the consumer reads bytes at head and then advances
// head; tail − head is never more than size. Each side keeps its own
// position privately and only publishes it: a position the other side
// reports that breaks that rule is a protocol violation (ErrCorrupt).
// The producer sets the end-of-stream flag only after it advanced tail
// past its last byte, and the consumer loads the flags (and notes
// whether a socket ended) before it loads tail, so that an end it sees
// comes with every byte written before it.
//
// A consumer that finds no bytes sets its "consumer waits" field to 1,
// checks again, and then sleeps until a byte arrives on the flow socket;
// a producer that finds no room does the same with "producer waits" and
// the room bell. A producer that advances tail (or sets the end-of-stream
// flag) then swaps the consumer's field from 1 to 0 and, if it was 1,
// writes one byte to the flow socket; a consumer that advances head does
// the same with the producer's field and the room bell. The bytes carry
// no meaning: the woken side checks the ring again. When either socket
// ends, the other side closed or died: the bytes it wrote are still read,
// then reading ends, and writing fails.
package ring

import "errors"

// Sizes of the shared memory.
const (
	// HeaderSize is the size of each ring's header page.
	HeaderSize = 4096
	// MinSize and MaxSize bound a ring's data area.
	MinSize = 4096
	MaxSize = 16 << 20
	// Size is the data area of each ring the host creates: large enough
	// that a bulk transfer wakes the other side rarely, small enough to
	// stay in the processor's caches.
	Size = 1 << 20
)

// Header field offsets.
const (
	offTail   = 0
	offPWait  = 8
	offPFlags = 12
	offHead   = 64
	offCWait  = 72
)

// flagEOF in the producer's flags marks the end of the stream.
const flagEOF = 1

// ErrCorrupt is returned once the other side wrote positions into the
// shared memory that no correct side writes.
var ErrCorrupt = errors.New("ring: the other side broke the shared ring")
