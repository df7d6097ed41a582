package transport

import (
	"sync"
	"time"
)

// Deadline is a settable deadline that blocking operations wait on, for
// connections that implement SetReadDeadline themselves. Moving it affects
// waits already in progress, as net.Conn requires. The zero value has no
// deadline and is ready to use; a Deadline is safe for concurrent use and
// must not be copied after first use.
type Deadline struct {
	mu    sync.Mutex
	ch    chan struct{} // closed once the deadline has passed; nil until first use
	timer *time.Timer
	gen   uint64 // invalidates the callbacks of replaced timers
}

// Set moves the deadline to t; the zero t removes it. A t in the past
// closes the Done channel at once.
func (d *Deadline) Set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopLocked()
	if d.ch == nil {
		d.ch = make(chan struct{})
	}
	select {
	case <-d.ch: // passed: waits from now on need a fresh channel
		d.ch = make(chan struct{})
	default:
	}
	if t.IsZero() {
		return
	}
	dur := time.Until(t)
	if dur <= 0 {
		close(d.ch)
		return
	}
	gen, ch := d.gen, d.ch
	d.timer = time.AfterFunc(dur, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.gen == gen {
			close(ch)
		}
	})
}

// Done returns a channel that is closed when the deadline passes. A wait
// must call Done again after each Set, which may replace the channel.
func (d *Deadline) Done() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ch == nil {
		d.ch = make(chan struct{})
	}
	return d.ch
}

// Stop cancels a pending timer, so that the Done channel is not closed by
// it; a deadline that has already passed stays passed. Owners call it when
// the connection closes.
func (d *Deadline) Stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopLocked()
}

func (d *Deadline) stopLocked() {
	d.gen++
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}
