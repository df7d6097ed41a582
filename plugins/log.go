package plugins

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Limits on what a plugin may put into the host's log.
const (
	maxLogLine  = 8 << 10 // longer lines are cut
	maxLogAttrs = 32      // further attributes are dropped
	maxLogValue = 1 << 10 // longer values are cut
	logRate     = 100     // lines per second, sustained
	logBurst    = 500     // lines at once
)

// logWriter receives a plugin's standard error, line by line, and re-logs
// each line with the host's logger: hclog JSON lines (go-plugin's format,
// which the SDK writes) keep their level, message and attributes; other
// lines are logged as they are. It bounds line length, attributes and
// rate, so a plugin cannot flood or bloat the host's log.
type logWriter struct {
	log *slog.Logger

	mu      sync.Mutex
	line    []byte
	cut     bool // the current line was too long
	tokens  float64
	last    time.Time
	dropped int
	inPanic bool
}

func newLogWriter(log *slog.Logger) *logWriter {
	return &logWriter{log: log, tokens: logBurst}
}

// Write buffers p and logs every complete line. It never fails.
func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		if room := maxLogLine - len(w.line); len(chunk) > room {
			w.line = append(w.line, chunk[:room]...)
			w.cut = true
		} else {
			w.line = append(w.line, chunk...)
		}
		if i < 0 {
			break
		}
		w.emit(w.line, w.cut)
		w.line, w.cut = w.line[:0], false
		p = p[i+1:]
	}
	return n, nil
}

// allow takes a token from the rate limiter.
func (w *logWriter) allow(now time.Time) bool {
	if !w.last.IsZero() {
		w.tokens = min(logBurst, w.tokens+now.Sub(w.last).Seconds()*logRate)
	}
	w.last = now
	if w.tokens < 1 {
		return false
	}
	w.tokens--
	return true
}

func (w *logWriter) emit(line []byte, cut bool) {
	line = bytes.TrimRight(line, "\r")
	if len(bytes.TrimSpace(line)) == 0 {
		return
	}
	if !w.allow(time.Now()) {
		if w.dropped == 0 {
			w.log.Warn("plugin logs too fast; dropping lines")
		}
		w.dropped++
		return
	}
	if w.dropped > 0 {
		w.log.Warn("plugin log lines dropped (rate limit)", "lines", w.dropped)
		w.dropped = 0
	}
	level, msg, attrs := parseLogLine(line)
	if level == levelUnknown {
		s := string(line)
		level = slog.LevelInfo
		if strings.HasPrefix(s, "panic: ") || strings.HasPrefix(s, "fatal error: ") {
			w.inPanic = true
		}
		if w.inPanic {
			level = slog.LevelError
		}
	}
	if cut {
		attrs = append(attrs, slog.Bool("truncated", true))
	}
	w.log.LogAttrs(context.Background(), level, msg, attrs...)
}

// levelUnknown marks a line that is not hclog JSON.
const levelUnknown = slog.Level(-100)

// parseLogLine parses an hclog JSON line. A line that is not one is
// returned as the message with levelUnknown.
func parseLogLine(line []byte) (slog.Level, string, []slog.Attr) {
	var m map[string]any
	if line[0] != '{' || json.Unmarshal(line, &m) != nil {
		return levelUnknown, clip(string(line)), nil
	}
	level := slog.LevelInfo
	if s, ok := m["@level"].(string); ok {
		switch strings.ToLower(s) {
		case "trace", "debug":
			level = slog.LevelDebug
		case "warn", "warning":
			level = slog.LevelWarn
		case "error":
			level = slog.LevelError
		}
	}
	msg := ""
	if v, ok := m["@message"]; ok {
		msg = clip(fmt.Sprint(v))
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		switch k {
		case "@level", "@message", "@timestamp", "@caller":
			continue
		}
		keys = append(keys, k)
	}
	if len(keys) > maxLogAttrs {
		keys = keys[:maxLogAttrs]
	}
	attrs := make([]slog.Attr, 0, len(keys))
	for _, k := range keys {
		name := clip(k)
		if hostKey(name) {
			name = "plugin." + name // never passes for the host's own
		}
		attrs = append(attrs, slog.Any(name, logValue(m[k])))
	}
	sortAttrs(attrs)
	return level, msg, attrs
}

// hostKey reports whether key is one the host's log lines carry
// themselves, which a plugin's line must not set: slog's own, and the
// attributes that say which plugin a line came from.
func hostKey(key string) bool {
	switch key {
	case slog.TimeKey, slog.LevelKey, slog.MessageKey, slog.SourceKey, "plugin", "component", "pid", "generation":
		return true
	}
	return false
}

// logValue bounds a decoded JSON value for the log.
func logValue(v any) any {
	switch v := v.(type) {
	case string:
		return clip(v)
	case float64, bool, nil:
		return v
	}
	b, _ := json.Marshal(v)
	return clip(string(b))
}

func clip(s string) string {
	if len(s) > maxLogValue {
		return s[:maxLogValue] + "…"
	}
	return s
}

func sortAttrs(a []slog.Attr) {
	for i := 1; i < len(a); i++ {
		for j := i; j > 0 && a[j].Key < a[j-1].Key; j-- {
			a[j], a[j-1] = a[j-1], a[j]
		}
	}
}
