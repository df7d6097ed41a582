package messaging

import "sync"

// hub tells online sessions that their user's inbox changed. It carries no
// messages: the durable inbox is the source of truth, and a notification
// only means "read the inbox again". Each subscriber's channel holds one
// pending notification, so a burst of messages costs one re-read and a slow
// session never blocks a sender.
//
// hub is safe for concurrent use.
type hub struct {
	mu   sync.Mutex
	subs map[int64]map[*subscriber]struct{}
}

// subscriber is one session waiting for news about its user's inbox.
type subscriber struct {
	user int64
	ch   chan struct{} // capacity 1
}

func newHub() *hub { return &hub{subs: make(map[int64]map[*subscriber]struct{})} }

// subscribe registers a session of user. Several sessions (devices) of one
// user may subscribe at once.
func (h *hub) subscribe(user int64) *subscriber {
	s := &subscriber{user: user, ch: make(chan struct{}, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	set := h.subs[user]
	if set == nil {
		set = make(map[*subscriber]struct{})
		h.subs[user] = set
	}
	set[s] = struct{}{}
	return s
}

// unsubscribe removes s; it is idempotent.
func (h *hub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	set := h.subs[s.user]
	delete(set, s)
	if len(set) == 0 {
		delete(h.subs, s.user)
	}
}

// notify wakes every session of user without blocking: a subscriber that
// already has a notification pending keeps just that one.
func (h *hub) notify(user int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs[user] {
		select {
		case s.ch <- struct{}{}:
		default:
		}
	}
}
