package sdk

import (
	"io"
	"log/slog"
	"strings"
)

// hclogTime is the timestamp format of hclog's JSON lines.
const hclogTime = "2006-01-02T15:04:05.000000Z07:00"

// newLogHandler returns a slog handler writing hclog-style JSON lines to w.
func newLogHandler(w io.Writer, level slog.Leveler) slog.Handler {
	return slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) > 0 {
				return a
			}
			switch a.Key {
			case slog.TimeKey:
				return slog.String("@timestamp", a.Value.Time().Format(hclogTime))
			case slog.LevelKey:
				lv, _ := a.Value.Any().(slog.Level)
				return slog.String("@level", hclogLevel(lv))
			case slog.MessageKey:
				return slog.Attr{Key: "@message", Value: a.Value}
			}
			return a
		},
	})
}

// hclogLevel names a slog level as hclog does.
func hclogLevel(l slog.Level) string {
	switch {
	case l < slog.LevelDebug:
		return "trace"
	case l < slog.LevelInfo:
		return "debug"
	case l < slog.LevelWarn:
		return "info"
	case l < slog.LevelError:
		return "warn"
	}
	return strings.ToLower(slog.LevelError.String())
}
