package router

import (
	"container/heap"
	"context"
	"sync"
	"time"
)

// stage is what happens to a scheduled packet when it is due.
type stage uint8

const (
	// stageMiddle: the packet left the source's up link; it reaches the
	// censor and then the destination's down link.
	stageMiddle stage = iota
	// stageDeliver: the packet left the destination's down link; it is
	// written to the destination's device.
	stageDeliver
	// stageEgress: the censor delayed or injected the packet; it enters
	// the destination's down link.
	stageEgress
)

// item is a packet waiting in the scheduler.
type item struct {
	at       time.Time
	seq      uint64
	stage    stage
	src, dst *host
	buf      *[]byte
	n        int
}

// itemHeap orders items by time, then by the order they were scheduled.
type itemHeap []item

func (h itemHeap) Len() int { return len(h) }
func (h itemHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].seq < h[j].seq
}
func (h itemHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *itemHeap) Push(x any)   { *h = append(*h, x.(item)) }
func (h *itemHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = item{}
	*h = old[:len(old)-1]
	return it
}

// scheduler is a timer heap releasing delayed packets when they are due.
// Its size is bounded by the router's in-flight byte limit, which callers
// check before push.
type scheduler struct {
	mu   sync.Mutex
	h    itemHeap
	seq  uint64
	wake chan struct{} // capacity 1: "the earliest item changed"
}

func newScheduler() *scheduler {
	return &scheduler{wake: make(chan struct{}, 1)}
}

// push adds it and wakes the loop if it is now the earliest.
func (s *scheduler) push(it item) {
	s.mu.Lock()
	s.seq++
	it.seq = s.seq
	heap.Push(&s.h, it)
	first := s.h[0].seq == it.seq
	s.mu.Unlock()
	if first {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// due moves the items due at now into batch and returns it with the time
// of the next item (zero if none).
func (s *scheduler) due(now time.Time, batch []item) ([]item, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.h) > 0 && !s.h[0].at.After(now) {
		batch = append(batch, heap.Pop(&s.h).(item))
	}
	if len(s.h) == 0 {
		return batch, time.Time{}
	}
	return batch, s.h[0].at
}

// drain removes every item, for shutdown.
func (s *scheduler) drain() []item {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.h
	s.h = nil
	return h
}

// run releases due items to fire until ctx is done.
func (s *scheduler) run(ctx context.Context, fire func(item)) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	var batch []item
	for {
		var next time.Time
		batch, next = s.due(time.Now(), batch[:0])
		for i := range batch {
			fire(batch[i])
			batch[i] = item{}
		}
		if len(batch) > 0 {
			continue // firing took time, or scheduled more
		}
		var tc <-chan time.Time
		if !next.IsZero() {
			t.Reset(time.Until(next))
			tc = t.C
		}
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-tc:
		}
		t.Stop()
	}
}
