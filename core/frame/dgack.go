package frame

import "encoding/binary"

// DatagramAckPayload is the payload of an Ack frame of kind AckDatagrams,
// which the multipath router (core/router) sends on a path to report the
// datagrams it received there, so that the sender can measure the path's
// datagram loss from the gaps.
//
//		+--------+----------------+-----------------+
//		| kind   | received (var) | highest (var)   |
//		| 1 byte | 1..10 bytes    | 1..10 bytes     |
//		+--------+----------------+-----------------+
//
//	  - kind is 4 (AckDatagrams).
//	  - received: how many distinct datagrams arrived on the path so far.
//	  - highest: the highest datagram number seen on the path (numbers
//	    count from 1 per path and direction); received <= highest.
//
// Both counts only grow; the sender takes the loss of an interval as
// 1 - Δreceived/Δhighest between two reports. Varints are minimal
// unsigned LEB128, as in frame headers.
type DatagramAckPayload struct {
	Received, Highest uint64
}

// Append encodes d and appends it to dst. It does not check d: see
// Validate.
func (d DatagramAckPayload) Append(dst []byte) []byte {
	dst = append(dst, byte(AckDatagrams))
	dst = binary.AppendUvarint(dst, d.Received)
	return binary.AppendUvarint(dst, d.Highest)
}

// Validate reports whether d can be encoded and parsed back: Received is
// at most Highest.
func (d DatagramAckPayload) Validate() error {
	if d.Received > d.Highest {
		return payloadErr(Ack, "%d datagrams received, above the highest number %d", d.Received, d.Highest)
	}
	return nil
}

// ParseDatagramAck decodes the payload of an Ack frame of kind
// AckDatagrams. It rejects another kind, non-minimal or truncated varints,
// received above highest and trailing bytes.
func ParseDatagramAck(b []byte) (DatagramAckPayload, error) {
	var d DatagramAckPayload
	if len(b) < 1 {
		return d, payloadErr(Ack, "empty")
	}
	if AckKind(b[0]) != AckDatagrams {
		return d, payloadErr(Ack, "kind %d is not datagrams", b[0])
	}
	var err error
	n := 1
	if d.Received, n, err = uvarint(b, n); err != nil {
		return DatagramAckPayload{}, payloadErr(Ack, "received: %s", varintReason(err))
	}
	if d.Highest, n, err = uvarint(b, n); err != nil {
		return DatagramAckPayload{}, payloadErr(Ack, "highest: %s", varintReason(err))
	}
	if n != len(b) {
		return DatagramAckPayload{}, payloadErr(Ack, "%d trailing bytes", len(b)-n)
	}
	if err := d.Validate(); err != nil {
		return DatagramAckPayload{}, err
	}
	return d, nil
}
