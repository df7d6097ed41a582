package messaging_test

import (
	"context"
	"testing"
	"time"

	"github.com/commucat/commucat/backends/messaging"
)

// BenchmarkEnqueueDeliver measures messages per second from one client to
// another through a Service and its SQLite store: submit, store, AckStored,
// deliver, AckDelivered, delete. Sends are sequential (each waits for its
// AckStored); delivery runs concurrently.
func BenchmarkEnqueueDeliver(b *testing.B) {
	g := newGateway(b, messaging.Config{})
	alice := g.connect(g.user("alice"))
	bob := g.connect(g.user("bob"))
	got := make(chan struct{}, 1024)
	bob.wg.Go(func() {
		bob.Listen(bob.ctx, func(messaging.Envelope) error { got <- struct{}{}; return nil }, &memSeen{})
	})
	body := make([]byte, 256)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	received := 0
	for i := 0; i < b.N; i++ {
		if _, err := alice.Send(ctx, "bob", body); err != nil {
			b.Fatal(err)
		}
		for drained := false; !drained; {
			select {
			case <-got:
				received++
			default:
				drained = true
			}
		}
	}
	for ; received < b.N; received++ {
		<-got
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}
