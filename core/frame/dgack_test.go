package frame

import (
	"errors"
	"testing"
)

func TestDatagramAck(t *testing.T) {
	for _, d := range []DatagramAckPayload{{}, {Received: 9, Highest: 10}, {Received: 1 << 40, Highest: ^uint64(0)}} {
		b := d.Append(nil)
		got, err := ParseDatagramAck(b)
		if err != nil || got != d {
			t.Fatalf("round trip of %+v: got %+v, %v", d, got, err)
		}
		if _, err := ParseSack(b); err == nil {
			t.Fatalf("ParseSack took a datagram ack")
		}
	}
	for name, b := range map[string][]byte{
		"empty":          nil,
		"other kind":     {byte(AckRecords), 0, 0},
		"truncated":      {byte(AckDatagrams), 1},
		"non-minimal":    {byte(AckDatagrams), 0x81, 0x00, 1},
		"trailing":       {byte(AckDatagrams), 1, 1, 0},
		"above highest":  {byte(AckDatagrams), 2, 1},
		"overlong value": {byte(AckDatagrams), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0},
	} {
		_, err := ParseDatagramAck(b)
		var pe *PayloadError
		if !errors.As(err, &pe) {
			t.Errorf("%s: got %v, want a *PayloadError", name, err)
		}
	}
}

func FuzzDatagramAck(f *testing.F) {
	f.Add(DatagramAckPayload{}.Append(nil))
	f.Add(DatagramAckPayload{Received: 90, Highest: 100}.Append(nil))
	f.Add(DatagramAckPayload{Received: ^uint64(0), Highest: ^uint64(0)}.Append(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzPayload(t, Ack, b, ParseDatagramAck, DatagramAckPayload.Validate)
	})
}
