package frame

import (
	"encoding/binary"
	"math"
)

// MaxSackRanges is the most ranges one SackPayload carries.
const MaxSackRanges = 64

// SackRange is an inclusive range of reliable sequence numbers,
// First <= Last.
type SackRange struct {
	First, Last uint64
}

// SackPayload is the payload of an Ack frame of kind AckRecords, which the
// multipath router (core/router) sends to acknowledge reliable frames by
// their sequence number (Frame.Seq, counted per session from 1): a
// cumulative acknowledgement, a flow-control window and selective
// acknowledgement ranges above it, as TCP SACK and QUIC ACK frames do.
//
//		+--------+------------------+---------------+---------------+-----------------------------------------+
//		| kind   | cumulative (var) | window (var)  | count (var)   | count × ( gap (var) | length (var) )    |
//		| 1 byte | 1..10 bytes      | 1..10 bytes   | 1 byte        | 2..20 bytes each                        |
//		+--------+------------------+---------------+---------------+-----------------------------------------+
//
//	  - kind is 3 (AckRecords).
//	  - cumulative: every sequence number from 1 to cumulative was received;
//	    0 if none was.
//	  - window: the receiver accepts sequence numbers up to cumulative +
//	    window; the sum does not overflow 64 bits.
//	  - count: 0 to MaxSackRanges (64) ranges follow, in ascending order.
//	  - Each range [first, last] is sent as gap = first - prev - 2 and
//	    length = last - first, where prev is cumulative for the first range
//	    and the previous range's last for the others. So ranges never touch
//	    each other or the cumulative part (a gap of 0 means exactly one
//	    missing sequence number before the range), and every set of ranges
//	    has exactly one encoding. No value may overflow 64 bits.
//
// Varints are minimal unsigned LEB128, as in frame headers. The largest
// payload, 1 + 10 + 10 + 1 + 64 × 20 = 1302 bytes, fits an Ack frame.
type SackPayload struct {
	Cumulative uint64
	Window     uint64
	Ranges     []SackRange
}

// Append encodes s and appends it to dst. It does not check s: see
// Validate.
func (s SackPayload) Append(dst []byte) []byte {
	dst = append(dst, byte(AckRecords))
	dst = binary.AppendUvarint(dst, s.Cumulative)
	dst = binary.AppendUvarint(dst, s.Window)
	dst = binary.AppendUvarint(dst, uint64(len(s.Ranges)))
	prev := s.Cumulative
	for _, r := range s.Ranges {
		dst = binary.AppendUvarint(dst, r.First-prev-2)
		dst = binary.AppendUvarint(dst, r.Last-r.First)
		prev = r.Last
	}
	return dst
}

// Validate reports whether s can be encoded and parsed back: at most
// MaxSackRanges ranges, each with First <= Last, ascending and separated
// from each other and from Cumulative by at least one missing sequence
// number, and Cumulative + Window within 64 bits.
func (s SackPayload) Validate() error {
	if s.Window > math.MaxUint64-s.Cumulative {
		return payloadErr(Ack, "sack window %d overflows after %d", s.Window, s.Cumulative)
	}
	if len(s.Ranges) > MaxSackRanges {
		return payloadErr(Ack, "%d sack ranges (max %d)", len(s.Ranges), MaxSackRanges)
	}
	prev := s.Cumulative
	for i, r := range s.Ranges {
		if prev > math.MaxUint64-2 || r.First < prev+2 {
			return payloadErr(Ack, "sack range %d starts at %d, not after %d+1", i, r.First, prev)
		}
		if r.Last < r.First {
			return payloadErr(Ack, "sack range %d ends at %d before it starts at %d", i, r.Last, r.First)
		}
		prev = r.Last
	}
	return nil
}

// ParseSack decodes the payload of an Ack frame of kind AckRecords. It
// rejects another kind, a count over MaxSackRanges (before allocating),
// values that overflow, truncation and trailing bytes.
func ParseSack(b []byte) (SackPayload, error) {
	var s SackPayload
	if len(b) < 1 {
		return s, payloadErr(Ack, "empty")
	}
	if AckKind(b[0]) != AckRecords {
		return s, payloadErr(Ack, "kind %d is not records", b[0])
	}
	var err error
	n := 1
	if s.Cumulative, n, err = uvarint(b, n); err != nil {
		return SackPayload{}, payloadErr(Ack, "cumulative: %s", varintReason(err))
	}
	if s.Window, n, err = uvarint(b, n); err != nil {
		return SackPayload{}, payloadErr(Ack, "window: %s", varintReason(err))
	}
	if s.Window > math.MaxUint64-s.Cumulative {
		return SackPayload{}, payloadErr(Ack, "sack window %d overflows after %d", s.Window, s.Cumulative)
	}
	count, n, err := uvarint(b, n)
	if err != nil {
		return SackPayload{}, payloadErr(Ack, "count: %s", varintReason(err))
	}
	if count > MaxSackRanges {
		return SackPayload{}, payloadErr(Ack, "%d sack ranges (max %d)", count, MaxSackRanges)
	}
	if count > 0 {
		s.Ranges = make([]SackRange, count)
	}
	prev := s.Cumulative
	for i := range s.Ranges {
		var gap, length uint64
		if gap, n, err = uvarint(b, n); err != nil {
			return SackPayload{}, payloadErr(Ack, "sack range %d gap: %s", i, varintReason(err))
		}
		if length, n, err = uvarint(b, n); err != nil {
			return SackPayload{}, payloadErr(Ack, "sack range %d length: %s", i, varintReason(err))
		}
		if prev > math.MaxUint64-2 || gap > math.MaxUint64-2-prev {
			return SackPayload{}, payloadErr(Ack, "sack range %d overflows", i)
		}
		first := prev + 2 + gap
		if length > math.MaxUint64-first {
			return SackPayload{}, payloadErr(Ack, "sack range %d overflows", i)
		}
		s.Ranges[i] = SackRange{First: first, Last: first + length}
		prev = first + length
	}
	if n != len(b) {
		return SackPayload{}, payloadErr(Ack, "%d trailing bytes", len(b)-n)
	}
	return s, nil
}
