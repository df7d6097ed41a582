package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
)

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler
	switch format {
	case "json":
		h = slog.NewJSONHandler(w, opts)
	case "text", "":
		h = slog.NewTextHandler(w, opts)
	default:
		return nil, fmt.Errorf("log format %q: want text or json", format)
	}
	return slog.New(newFloodLimit(h, floodWindow, floodBurst, time.Now)), nil
}

// What a floodLimit lets through: per message, floodBurst info or warning
// lines per floodWindow.
const (
	floodWindow = time.Minute
	floodBurst  = 100
	// floodMessages bounds the messages tracked at once; lines of
	// further messages pass unlimited (the gateway's are constants, far
	// fewer than this).
	floodMessages = 1024
)

// floodLimit is a slog.Handler that passes at most burst lines of each
// message at info and warning level per window, and then, with the first
// line logged after that window, one warning saying how many it dropped,
// so that a scan or a flood of failed handshakes cannot fill an
// operator's disk with one line. Debug lines (asked for) and errors
// (rare, and each may matter) always pass.
type floodLimit struct {
	next slog.Handler
	st   *floodState // shared by the handlers WithAttrs and WithGroup derive
}

type floodState struct {
	root   slog.Handler // gets the drop reports, without a logger's attributes
	window time.Duration
	burst  int
	now    func() time.Time

	mu    sync.Mutex
	swept time.Time
	seen  map[string]*floodCount // by message
}

// floodCount counts one message's lines in its current window.
type floodCount struct {
	start   time.Time
	n       int
	dropped int
}

func newFloodLimit(next slog.Handler, window time.Duration, burst int, now func() time.Time) *floodLimit {
	return &floodLimit{next: next, st: &floodState{root: next, window: window, burst: burst, now: now, swept: now(), seen: map[string]*floodCount{}}}
}

func (h *floodLimit) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h *floodLimit) WithAttrs(as []slog.Attr) slog.Handler {
	return &floodLimit{next: h.next.WithAttrs(as), st: h.st}
}

func (h *floodLimit) WithGroup(name string) slog.Handler {
	return &floodLimit{next: h.next.WithGroup(name), st: h.st}
}

func (h *floodLimit) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelInfo || r.Level >= slog.LevelError {
		return h.next.Handle(ctx, r)
	}
	pass, reports := h.st.count(r.Message)
	for _, rep := range reports {
		rec := slog.NewRecord(rep.at, slog.LevelWarn, "log lines dropped: too many alike", 0)
		rec.AddAttrs(slog.String("message", rep.msg), slog.Int("dropped", rep.dropped), slog.Duration("window", h.st.window))
		if err := h.st.root.Handle(ctx, rec); err != nil {
			return err
		}
	}
	if !pass {
		return nil
	}
	return h.next.Handle(ctx, r)
}

// dropReport says how many lines of msg a window dropped.
type dropReport struct {
	msg     string
	dropped int
	at      time.Time
}

// count counts a line of msg and says whether it passes, and which ended
// windows dropped lines that were not reported yet.
func (s *floodState) count(msg string) (bool, []dropReport) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var reports []dropReport
	if now.Sub(s.swept) >= s.window {
		// Once a window: report and forget the messages whose window
		// has ended, so that a last burst's drops are reported too.
		s.swept = now
		for m, c := range s.seen {
			if now.Sub(c.start) >= s.window {
				if c.dropped > 0 {
					reports = append(reports, dropReport{m, c.dropped, now})
				}
				delete(s.seen, m)
			}
		}
	}
	c := s.seen[msg]
	if c == nil {
		if len(s.seen) >= floodMessages {
			return true, reports
		}
		c = &floodCount{start: now}
		s.seen[msg] = c
	}
	if now.Sub(c.start) >= s.window {
		if c.dropped > 0 {
			reports = append(reports, dropReport{msg, c.dropped, now})
		}
		*c = floodCount{start: now}
	}
	c.n++
	if c.n > s.burst {
		c.dropped++
		return false, reports
	}
	return true, reports
}
