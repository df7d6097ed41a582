package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"maps"
	"strings"
	"testing"
	"time"
)

// TestFloodLimit: each message passes burst lines per window at info and
// warning level, then its drops are reported once the window has ended;
// debug and error lines, and other messages, are not held back.
func TestFloodLimit(t *testing.T) {
	var out bytes.Buffer
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	log := slog.New(newFloodLimit(slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}), time.Minute, 3, clock))
	derived := log.With("transport", "tcp") // shares the counts

	for range 5 {
		log.Info("handshake failed")
		derived.Info("handshake failed")
		log.Debug("handshake failed")
		log.Error("handshake failed")
	}
	log.Warn("accept failed")
	count := func() map[string]int {
		t.Helper()
		n := map[string]int{}
		for line := range strings.SplitSeq(strings.TrimSpace(out.String()), "\n") {
			var r struct {
				Level, Msg, Message string
				Dropped             int
			}
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			key := r.Level + " " + r.Msg
			if r.Message != "" {
				key += " " + r.Message
				n[key] += r.Dropped
				continue
			}
			n[key]++
		}
		out.Reset()
		return n
	}
	want := map[string]int{
		"INFO handshake failed":  3,
		"DEBUG handshake failed": 5,
		"ERROR handshake failed": 5,
		"WARN accept failed":     1,
	}
	if got := count(); !maps.Equal(got, want) {
		t.Errorf("in the first window: %v, want %v", got, want)
	}

	now = now.Add(time.Minute)
	log.Info("handshake failed")
	want = map[string]int{
		"WARN log lines dropped: too many alike handshake failed": 7,
		"INFO handshake failed":                                   1,
	}
	if got := count(); !maps.Equal(got, want) {
		t.Errorf("after the window: %v, want %v", got, want)
	}

	// A burst's drops are reported with any later line, even of
	// another message.
	for range 5 {
		log.Warn("accept failed")
	}
	count()
	now = now.Add(2 * time.Minute)
	derived.Info("session ended")
	want = map[string]int{
		"WARN log lines dropped: too many alike accept failed": 2,
		"INFO session ended": 1,
	}
	if strings.Contains(strings.SplitN(out.String(), "\n", 2)[0], "transport") {
		t.Errorf("the drop report carries the attributes of the logger that triggered it: %s", out.String())
	}
	if got := count(); !maps.Equal(got, want) {
		t.Errorf("after a burst of another message: %v, want %v", got, want)
	}
}
