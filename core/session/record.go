package session

import (
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// Sizes of the record format (see the package documentation).
const (
	// lengthSize is the size of the record length field.
	lengthSize = 3
	// HeaderSize is the size of a record header: length, epoch and seq.
	HeaderSize = lengthSize + 1 + 8
	// tagSize is the size of the Poly1305 tag.
	tagSize = chacha20poly1305.Overhead
	// Overhead is what a record adds to its plaintext: header and tag.
	Overhead = HeaderSize + tagSize
	// MaxPlaintext is the largest plaintext a record carries, 128 KiB, so
	// that the largest CCP-1 frame fits in one record.
	MaxPlaintext = 128 << 10
	// MaxRecordSize is the largest record on the wire.
	MaxRecordSize = Overhead + MaxPlaintext
)

// Defaults of the rekey schedule; Config and SetRekeyPolicy use them for a
// zero value.
const (
	// DefaultRekeyAfterRecords is how many records a sender seals under
	// one key before it moves to the next epoch.
	DefaultRekeyAfterRecords = 1 << 20
	// DefaultRekeyAfter is how long a sender uses one key before it moves
	// to the next epoch.
	DefaultRekeyAfter = 10 * time.Minute
	// DefaultRekeyGrace is how long a receiver keeps the previous epoch's
	// key after the peer moved on, for records still in flight.
	DefaultRekeyGrace = 30 * time.Second
)

// Sentinel errors that callers branch on with errors.Is.
var (
	// ErrReplay means a record authenticated but its sequence number was
	// already seen or is older than the replay window.
	ErrReplay = errors.New("session: replayed record")
	// ErrAuth means a record failed authentication: wrong key, a changed
	// bit, an epoch the receiver does not hold, or a header that does not
	// match the record.
	ErrAuth = errors.New("session: record authentication failed")
	// ErrTooLarge means a record or plaintext is over its limit.
	ErrTooLarge = errors.New("session: record too large")
	// ErrExhausted means a sender used every sequence number it may use.
	ErrExhausted = errors.New("session: sequence numbers exhausted")
	// ErrMalformed means the peer sent bytes that are not a valid record
	// stream or frames that do not decode.
	ErrMalformed = errors.New("session: malformed record")
)

// Keys are a session's two traffic keys, from the handshake: Send seals
// what this side sends, Recv opens what it receives. Keys never print or
// log their bytes; call Wipe when done with them.
type Keys struct {
	Send, Recv [32]byte
}

// LogValue implements slog.LogValuer so that keys never reach a log.
func (k Keys) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// Format implements fmt.Formatter so that keys never print, whatever the
// verb.
func (k Keys) Format(f fmt.State, _ rune) { io.WriteString(f, "[redacted]") }

// Wipe zeroes both keys.
func (k *Keys) Wipe() {
	clear(k.Send[:])
	clear(k.Recv[:])
}

// newAEAD makes a ChaCha20-Poly1305 AEAD from key and wipes key.
func newAEAD(key *[32]byte) (cipher.AEAD, error) {
	defer clear(key[:])
	a, err := chacha20poly1305.New(key[:])
	if err != nil {
		return nil, fmt.Errorf("session: new cipher: %w", err)
	}
	return a, nil
}

// rekeyNonce is Noise's maxnonce, 2^64-1, as a ChaCha20-Poly1305 nonce.
// Little and big endian encodings of 2^64-1 are the same bytes.
var rekeyNonce = [chacha20poly1305.NonceSize]byte{4: 0xff, 5: 0xff, 6: 0xff, 7: 0xff, 8: 0xff, 9: 0xff, 10: 0xff, 11: 0xff}

// nextAEAD derives the next epoch's cipher from a's key with Noise's REKEY:
// the first 32 bytes of ENCRYPT(k, maxnonce, "", 32 zero bytes).
func nextAEAD(a cipher.AEAD) (cipher.AEAD, error) {
	var zeros [32]byte
	var out [32 + tagSize]byte
	a.Seal(out[:0], rekeyNonce[:], zeros[:], nil)
	k := [32]byte(out[:32])
	clear(out[:])
	return newAEAD(&k)
}

// errWiped is returned by a Sealer or Opener after Wipe.
var errWiped = errors.New("session: keys wiped")

// Sealer seals the records of one direction of a session: it numbers
// them, encrypts them and moves to the next key epoch on schedule. It is
// not safe for concurrent use; callers serialize Seal calls (records may
// still be sent in any order).
//
// The Sealer holds its key only inside the AEAD; Wipe drops it. Go gives
// no way to zero the copy inside golang.org/x/crypto's AEAD value, so Wipe
// leaves that to the garbage collector.
type Sealer struct {
	aead  cipher.AEAD
	err   error // why aead is nil
	seq   uint64
	epoch uint8
	// nonce lives here, not on the stack, where it would escape to the
	// heap through the cipher.AEAD call on every record.
	nonce [chacha20poly1305.NonceSize]byte

	rekeys       uint64
	epochRecords uint64
	epochStart   time.Time
	rekeyRecords uint64
	rekeyAfter   time.Duration
}

// NewSealer returns a Sealer that starts at epoch 0, sequence number 0,
// with key and the default rekey schedule. The caller wipes key.
func NewSealer(key [32]byte) *Sealer {
	s := &Sealer{
		rekeyRecords: DefaultRekeyAfterRecords,
		rekeyAfter:   DefaultRekeyAfter,
		epochStart:   time.Now(),
	}
	s.aead, s.err = newAEAD(&key)
	return s
}

// SetRekeyPolicy sets how many records and how much time one epoch lasts.
// A zero value means the default (DefaultRekeyAfterRecords,
// DefaultRekeyAfter).
func (s *Sealer) SetRekeyPolicy(records uint64, after time.Duration) {
	s.rekeyRecords = cmpOr(records, DefaultRekeyAfterRecords)
	s.rekeyAfter = cmpOr(after, DefaultRekeyAfter)
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Seal appends one record carrying plaintext to dst and returns it with
// the record's sequence number. It fails with ErrTooLarge for a plaintext
// over MaxPlaintext and ErrExhausted when no sequence number is left; it
// never reuses a nonce. plaintext must not overlap dst's spare capacity,
// except exactly at dst[len(dst)+HeaderSize:] (sealing in place).
func (s *Sealer) Seal(dst, plaintext []byte) ([]byte, uint64, error) {
	if s.aead == nil {
		return dst, 0, s.err
	}
	if len(plaintext) > MaxPlaintext {
		return dst, 0, fmt.Errorf("%w: plaintext of %d bytes (max %d)", ErrTooLarge, len(plaintext), MaxPlaintext)
	}
	if s.seq == math.MaxUint64 {
		return dst, 0, ErrExhausted
	}
	if s.epochRecords >= s.rekeyRecords || time.Since(s.epochStart) >= s.rekeyAfter {
		if err := s.rekey(); err != nil {
			return dst, 0, err
		}
	}
	seq := s.seq
	n := HeaderSize + len(plaintext) + tagSize
	dst = slices.Grow(dst, n)
	start := len(dst)
	dst = dst[:start+HeaderSize]
	hdr := dst[start:]
	putHeader(hdr, n-lengthSize, s.epoch, seq)
	binary.BigEndian.PutUint64(s.nonce[4:], seq)
	dst = s.aead.Seal(dst, s.nonce[:], plaintext, hdr)
	s.seq++
	s.epochRecords++
	return dst, seq, nil
}

func putHeader(hdr []byte, length int, epoch uint8, seq uint64) {
	hdr[0], hdr[1], hdr[2] = byte(length>>16), byte(length>>8), byte(length)
	hdr[3] = epoch
	binary.BigEndian.PutUint64(hdr[4:], seq)
}

// Rekey moves to the next epoch now: the next record is sealed with a key
// that has sealed nothing yet. If the Sealer has moved to this epoch and
// sealed nothing in it since, Rekey does nothing: the current key is
// already unused, and a receiver holds only the key one epoch ahead of
// the last one it saw.
func (s *Sealer) Rekey() error {
	if s.aead == nil {
		return s.err
	}
	return s.rekey()
}

// rekey moves to the next epoch, unless the current one, reached by a
// rekey, has sealed no record yet: moving again would put the next record
// two epochs ahead of the last one the receiver could have seen, which it
// cannot open.
func (s *Sealer) rekey() error {
	if s.rekeys > 0 && s.epochRecords == 0 {
		return nil
	}
	next, err := nextAEAD(s.aead)
	if err != nil {
		s.aead, s.err = nil, err
		return err
	}
	s.aead = next
	s.epoch++
	s.rekeys++
	s.epochRecords = 0
	s.epochStart = time.Now()
	return nil
}

// Epoch is the epoch of the next record.
func (s *Sealer) Epoch() uint8 { return s.epoch }

// Rekeys is how many times the Sealer moved to a new epoch.
func (s *Sealer) Rekeys() uint64 { return s.rekeys }

// Wipe drops the key; Seal and Rekey fail afterwards. It is idempotent.
func (s *Sealer) Wipe() {
	s.aead, s.err = nil, errWiped
}

// Opener opens the records of one direction of a session: it
// authenticates them, follows the sender's key epochs and drops replays.
// It is not safe for concurrent use. It never panics on any record.
//
// Like Sealer, it holds keys only inside AEAD values; Wipe drops them.
type Opener struct {
	cur, next, prev cipher.AEAD
	err             error // why cur is nil
	epoch           uint8 // epoch of cur
	grace           time.Duration
	prevUntil       time.Time
	// boundary is the lowest sequence number seen in epoch cur while prev
	// is held: every record of epoch prev has a smaller one.
	boundary uint64
	rekeys   uint64
	nonce    [chacha20poly1305.NonceSize]byte // see Sealer.nonce
	window   window
}

// NewOpener returns an Opener that expects epoch 0 with key. The caller
// wipes key.
func NewOpener(key [32]byte) *Opener {
	o := &Opener{grace: DefaultRekeyGrace}
	if o.cur, o.err = newAEAD(&key); o.err == nil {
		o.next, o.err = nextAEAD(o.cur)
	}
	if o.err != nil {
		o.cur, o.next = nil, nil
	}
	return o
}

// SetGrace sets how long the previous epoch's key is kept after the peer
// moved to the next one. Zero means DefaultRekeyGrace.
func (o *Opener) SetGrace(d time.Duration) { o.grace = cmpOr(d, DefaultRekeyGrace) }

// Open authenticates and decrypts one whole record (length field
// included), appends its plaintext to dst and returns it with the record's
// sequence number. Then it checks the replay window. Errors: ErrTooLarge
// for a record over MaxRecordSize, ErrAuth for any record that does not
// authenticate (including a length field that does not match len(record)),
// ErrReplay for a duplicate or too old sequence number. dst must not
// overlap record, except exactly at record[HeaderSize:] (opening in place).
func (o *Opener) Open(dst, record []byte) ([]byte, uint64, error) {
	if o.cur == nil {
		return dst, 0, o.err
	}
	if len(record) > MaxRecordSize {
		return dst, 0, fmt.Errorf("%w: %d bytes (max %d)", ErrTooLarge, len(record), MaxRecordSize)
	}
	if len(record) < Overhead {
		return dst, 0, fmt.Errorf("%w: %d-byte record is shorter than %d", ErrAuth, len(record), Overhead)
	}
	if n := int(record[0])<<16 | int(record[1])<<8 | int(record[2]); n != len(record)-lengthSize {
		return dst, 0, fmt.Errorf("%w: length field %d for %d bytes", ErrAuth, n, len(record)-lengthSize)
	}
	epoch := record[3]
	seq := binary.BigEndian.Uint64(record[4:HeaderSize])
	if seq == math.MaxUint64 {
		return dst, 0, fmt.Errorf("%w: reserved sequence number", ErrAuth)
	}
	if o.prev != nil && time.Now().After(o.prevUntil) {
		o.prev = nil
	}
	var a cipher.AEAD
	switch epoch {
	case o.epoch:
		a = o.cur
	case o.epoch + 1:
		a = o.next
	case o.epoch - 1:
		a = o.prev
	}
	if a == nil {
		return dst, 0, fmt.Errorf("%w: epoch %d not held (current %d)", ErrAuth, epoch, o.epoch)
	}
	binary.BigEndian.PutUint64(o.nonce[4:], seq)
	out, err := a.Open(dst, o.nonce[:], record[HeaderSize:], record[:HeaderSize])
	if err != nil {
		return dst, 0, ErrAuth
	}
	if !o.window.check(seq) {
		return dst, seq, fmt.Errorf("%w: seq %d", ErrReplay, seq)
	}
	switch {
	case epoch == o.epoch+1:
		if err := o.advance(seq); err != nil {
			return dst, 0, err
		}
	case epoch == o.epoch && o.prev != nil && seq < o.boundary:
		o.boundary = seq
	}
	// Once no sequence number below boundary can pass the window, no
	// record of the previous epoch can be accepted: drop its key.
	if o.prev != nil && (o.boundary == 0 || o.window.tooOld(o.boundary-1)) {
		o.prev = nil
	}
	return out, seq, nil
}

// advance makes the next epoch current after its first record, seq,
// authenticated.
func (o *Opener) advance(seq uint64) error {
	next, err := nextAEAD(o.next)
	if err != nil {
		o.Wipe()
		o.err = err
		return err
	}
	o.prev, o.cur, o.next = o.cur, o.next, next
	o.epoch++
	o.rekeys++
	o.boundary = seq
	o.prevUntil = time.Now().Add(o.grace)
	return nil
}

// Epoch is the epoch of the newest key the Opener has switched to.
func (o *Opener) Epoch() uint8 { return o.epoch }

// Rekeys is how many times the Opener switched to the peer's next epoch.
func (o *Opener) Rekeys() uint64 { return o.rekeys }

// Wipe drops every key; Open fails afterwards. It is idempotent.
func (o *Opener) Wipe() {
	o.cur, o.next, o.prev, o.err = nil, nil, nil, errWiped
}

// ReadRecord reads one whole record from r into buf's storage (growing it
// if needed) and returns it, length field included. It checks the length
// field against MaxRecordSize before it allocates or reads further.
// Errors: io.EOF if r ends before the record starts, io.ErrUnexpectedEOF
// (wrapped) if it ends inside it, ErrTooLarge, ErrMalformed for a length
// too short to be a record, or r's error.
func ReadRecord(r io.Reader, buf []byte) ([]byte, error) {
	// The length field is read into buf itself: a local array would escape
	// to the heap through the io.Reader call.
	if cap(buf) < lengthSize {
		buf = make([]byte, 0, 256)
	}
	buf = buf[:lengthSize]
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("session: read record length: %w", err)
		}
		return nil, err
	}
	n := int(buf[0])<<16 | int(buf[1])<<8 | int(buf[2])
	size := lengthSize + n
	switch {
	case size > MaxRecordSize:
		return nil, fmt.Errorf("%w: length field %d (max %d)", ErrTooLarge, n, MaxRecordSize-lengthSize)
	case size < Overhead:
		return nil, fmt.Errorf("%w: length field %d (min %d)", ErrMalformed, n, Overhead-lengthSize)
	}
	if cap(buf) < size {
		buf = append(make([]byte, 0, min(max(size, 2*cap(buf)), MaxRecordSize)), buf...)
	}
	buf = buf[:size]
	if _, err := io.ReadFull(r, buf[lengthSize:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("session: read record: %w", err)
	}
	return buf, nil
}
