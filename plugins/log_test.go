package plugins

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/go-hclog"
)

// hclogLine returns a line as go-plugin's hclog JSON logger writes it.
func hclogLine(t testing.TB, level hclog.Level, msg string, args ...any) []byte {
	t.Helper()
	var b bytes.Buffer
	l := hclog.New(&hclog.LoggerOptions{Output: &b, JSONFormat: true, Level: hclog.Trace})
	l.Log(level, msg, args...)
	return bytes.TrimRight(b.Bytes(), "\n")
}

func TestParseLogLine(t *testing.T) {
	tests := []struct {
		name      string
		line      []byte
		wantLevel slog.Level
		wantMsg   string
		wantAttrs string // slog.Attr values joined
	}{
		{"hclog info", hclogLine(t, hclog.Info, "listening", "addr", "127.0.0.1:1"), slog.LevelInfo, "listening", "addr=127.0.0.1:1"},
		{"hclog trace", hclogLine(t, hclog.Trace, "t"), slog.LevelDebug, "t", ""},
		{"hclog error", hclogLine(t, hclog.Error, "bad", "n", 3), slog.LevelError, "bad", "n=3"},
		{"slog-style warn", []byte(`{"@level":"WARN","@message":"w","k":true}`), slog.LevelWarn, "w", "k=true"},
		{"typed message", []byte(`{"@message":5,"@level":{"x":1}}`), slog.LevelInfo, "5", ""},
		{"nested value", []byte(`{"@message":"m","v":{"a":[1,2]}}`), slog.LevelInfo, "m", `v={"a":[1,2]}`},
		{"host's keys", []byte(`{"@message":"m","plugin":"other","component":"core","level":"ERROR","a":1}`), slog.LevelInfo, "m",
			"a=1 plugin.component=core plugin.level=ERROR plugin.plugin=other"},
		{"plain text", []byte("hello there"), levelUnknown, "hello there", ""},
		{"broken json", []byte(`{"@message":`), levelUnknown, `{"@message":`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			level, msg, attrs := parseLogLine(tt.line)
			var parts []string
			for _, a := range attrs {
				if a.Key == "@module" {
					continue
				}
				parts = append(parts, a.String())
			}
			got := []any{level, msg, strings.Join(parts, " ")}
			if diff := cmp.Diff([]any{tt.wantLevel, tt.wantMsg, tt.wantAttrs}, got); diff != "" {
				t.Errorf("parseLogLine(%s) (-want +got):\n%s", tt.line, diff)
			}
		})
	}
}

func TestLogWriter(t *testing.T) {
	var out bytes.Buffer
	w := newLogWriter(slogTo(&out))
	// A line split over writes, a long line, an empty line.
	for _, p := range []string{"first ", "half\n", strings.Repeat("x", maxLogLine+10) + "\n", "\n", "last\n"} {
		if n, err := w.Write([]byte(p)); n != len(p) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	got := out.String()
	if !strings.Contains(got, `msg="first half"`) || !strings.Contains(got, "truncated=true") || !strings.Contains(got, "msg=last") {
		t.Errorf("log:\n%s", got)
	}
	if strings.Count(got, "\n") != 3 {
		t.Errorf("logged %d lines, want 3:\n%s", strings.Count(got, "\n"), got)
	}
	if strings.Contains(got, strings.Repeat("x", maxLogValue+1)) {
		t.Error("a value longer than maxLogValue was logged")
	}
}

func TestLogWriterRate(t *testing.T) {
	var out bytes.Buffer
	w := newLogWriter(slogTo(&out))
	for range logBurst + 100 {
		w.Write([]byte("flood\n")) //nolint:errcheck // never fails
	}
	got := out.String()
	if n := strings.Count(got, "msg=flood"); n > logBurst+1 {
		t.Errorf("logged %d of %d lines, want at most about %d", n, logBurst+100, logBurst)
	}
	if !strings.Contains(got, "dropping lines") {
		t.Error("no notice of dropped lines")
	}
}

func FuzzParseLogLine(f *testing.F) {
	f.Add(hclogLine(f, hclog.Info, "listening", "addr", "127.0.0.1:1", "n", 3))
	f.Add(hclogLine(f, hclog.Error, "bad", "err", "x", "nested", map[string]int{"a": 1}))
	f.Add([]byte("panic: boom"))
	f.Fuzz(func(t *testing.T, line []byte) {
		if len(line) == 0 {
			return
		}
		_, msg, attrs := parseLogLine(line)
		if len(attrs) > maxLogAttrs {
			t.Fatalf("%d attributes", len(attrs))
		}
		if len(msg) > maxLogValue+len("…") {
			t.Fatalf("message of %d bytes", len(msg))
		}
	})
}
