package messagingtest_test

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/commucat/commucat/backends/messaging/messagingtest"
	"github.com/commucat/commucat/core/frame"
	"github.com/google/go-cmp/cmp"
)

func TestPipe(t *testing.T) {
	ctx := context.Background()
	a, b := messagingtest.Pipe(2)
	payload := []byte("one")
	if err := a.Send(ctx, frame.Frame{Type: frame.Message, Payload: payload}, frame.Frame{Type: frame.Close}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	payload[0] = 'X' // the pipe copied it
	full, cancel := context.WithCancel(ctx)
	cancel()
	if err := a.Send(full, frame.Frame{Type: frame.Padding}); !errors.Is(err, context.Canceled) {
		t.Errorf("Send on a full pipe with a canceled context = %v", err)
	}
	if err := a.Send(ctx, frame.Frame{Type: frame.Ping, Payload: make([]byte, 65)}); err == nil {
		t.Errorf("Send of an oversized frame succeeded")
	}
	var got []frame.Frame
	for range 2 {
		f, err := b.Recv(ctx)
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		got = append(got, f)
	}
	want := []frame.Frame{{Type: frame.Message, Payload: []byte("one")}, {Type: frame.Close, Payload: []byte{}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("received (-want +got):\n%s", diff)
	}
	if err := b.Send(ctx, frame.Frame{Type: frame.Ack, Payload: []byte{1, 0}}); err != nil {
		t.Fatalf("Send back: %v", err)
	}
	b.Close()
	if f, err := a.Recv(ctx); err != nil || f.Type != frame.Ack {
		t.Errorf("Recv of a frame sent before Close = %v, %v", f, err)
	}
	if _, err := a.Recv(ctx); !errors.Is(err, io.EOF) {
		t.Errorf("Recv after Close = %v, want io.EOF", err)
	}
	if err := a.Send(ctx, frame.Frame{Type: frame.Padding}); !errors.Is(err, io.EOF) {
		t.Errorf("Send after Close = %v, want io.EOF", err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
