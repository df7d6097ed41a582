package transport_test

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/commucat/commucat/core/transport"
)

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestDeadline(t *testing.T) {
	tests := []struct {
		name string
		// run drives d and returns whether Done should be closed after
		// the bubble's timers up to an hour later have fired.
		run  func(d *transport.Deadline) <-chan struct{}
		want bool
	}{
		{"zero value", func(d *transport.Deadline) <-chan struct{} { return d.Done() }, false},
		{"future", func(d *transport.Deadline) <-chan struct{} {
			d.Set(time.Now().Add(time.Second))
			return d.Done()
		}, true},
		{"past", func(d *transport.Deadline) <-chan struct{} {
			d.Set(time.Now().Add(-time.Second))
			return d.Done()
		}, true},
		{"removed", func(d *transport.Deadline) <-chan struct{} {
			d.Set(time.Now().Add(time.Second))
			d.Set(time.Time{})
			return d.Done()
		}, false},
		{"stopped", func(d *transport.Deadline) <-chan struct{} {
			d.Set(time.Now().Add(time.Second))
			d.Stop()
			return d.Done()
		}, false},
		{"passed then removed", func(d *transport.Deadline) <-chan struct{} {
			d.Set(time.Now().Add(-time.Second))
			d.Set(time.Time{})
			return d.Done()
		}, false},
		{"moved later, beyond the wait", func(d *transport.Deadline) <-chan struct{} {
			d.Set(time.Now().Add(time.Second))
			d.Set(time.Now().Add(2 * time.Hour))
			return d.Done()
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var d transport.Deadline
				ch := tt.run(&d)
				time.Sleep(time.Hour)
				synctest.Wait()
				if got := isClosed(ch); got != tt.want {
					t.Errorf("Done closed = %v, want %v", got, tt.want)
				}
				d.Stop()
			})
		})
	}
}

// TestDeadlineWakesWaiter checks that a wait in progress sees a deadline
// set after it began, and that its timer fires exactly at the deadline.
func TestDeadlineWakesWaiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var d transport.Deadline
		start := time.Now()
		woke := make(chan time.Duration, 1)
		go func() {
			<-d.Done()
			woke <- time.Since(start)
		}()
		synctest.Wait()
		d.Set(start.Add(3 * time.Second))
		if got := <-woke; got != 3*time.Second {
			t.Errorf("woke after %v, want 3s", got)
		}
		// A passed deadline moved into the future gives waits a fresh,
		// open channel.
		d.Set(time.Now().Add(time.Minute))
		if isClosed(d.Done()) {
			t.Errorf("Done closed after moving a passed deadline into the future")
		}
		d.Stop()
	})
}

// TestDeadlineExtended checks that extending a deadline keeps a waiter's
// channel and wakes it at the new time, not the old.
func TestDeadlineExtended(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var d transport.Deadline
		passed := func() bool {
			select {
			case <-d.Done():
				return true
			default:
				return false
			}
		}
		d.Set(time.Now().Add(time.Second))
		ch := d.Done()
		time.Sleep(500 * time.Millisecond)
		if passed() {
			t.Fatal("deadline passed early")
		}
		d.Set(time.Now().Add(time.Second)) // extended: a waiter keeps its channel
		time.Sleep(700 * time.Millisecond)
		synctest.Wait()
		if passed() {
			t.Fatal("extended deadline passed at the old time")
		}
		time.Sleep(400 * time.Millisecond)
		synctest.Wait()
		select {
		case <-ch:
		default:
			t.Fatal("a waiter from before the extension was not woken")
		}
		d.Set(time.Time{})
		if passed() {
			t.Fatal("cleared deadline has passed")
		}
		d.Set(time.Now().Add(-time.Second))
		if !passed() {
			t.Fatal("deadline in the past has not passed")
		}
		d.Stop()
	})
}
