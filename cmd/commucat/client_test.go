package main

import (
	"strings"
	"testing"
)

// TestTerminalText checks what `listen` prints of a message: a sender
// must not be able to drive the recipient's terminal or print lines that
// pass for messages from someone else.
func TestTerminalText(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"plain", "hello bob", "hello bob"},
		{"unicode kept", "привет 👋🏽 你好", "привет 👋🏽 你好"},
		{"tab kept", "a\tb", "a\tb"},
		{"escape sequences", "\x1b[2J\x1b]0;title\x07red", `\x1b[2J\x1b]0;title\ared`},
		{"carriage return", "ok\rforged", `ok\rforged`},
		{"backspace and delete", "ab\b\x7f", `ab\b\x7f`},
		{"C1 control", "a\u009bb", `a\u009bb`},
		{"bidi override", "file\u202etxt.exe", `file\u202etxt.exe`},
		{"bidi isolate", "a\u2066b\u2069", `a\u2066b\u2069`},
		{"line separator", "a\u2028b", `a\u2028b`},
		{"invalid utf-8", "a\xff\xfeb", `a\xff\xfeb`},
		{"replacement character kept", "a\ufffdb", "a\ufffdb"},
		{"second line indented", "hi\n2026-11-26 03:00:00  admin: re-register", "hi\n\t2026-11-26 03:00:00  admin: re-register"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := terminalText(tt.in); got != tt.want {
				t.Errorf("terminalText(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// FuzzTerminalText checks that nothing terminalText returns can start a
// terminal control or a line of its own.
func FuzzTerminalText(f *testing.F) {
	for _, s := range []string{"hello", "\x1b[31m", "a\nb\r\n", "\u202e", "\xff", "\u0085"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := terminalText(s)
		for i, line := range strings.Split(out, "\n") {
			if i > 0 && !strings.HasPrefix(line, "\t") {
				t.Fatalf("terminalText(%q) = %q: line %d is not indented", s, out, i)
			}
		}
		for _, r := range out {
			if r != '\n' && r != '\t' && (r < 0x20 || r == 0x7f || (0x80 <= r && r < 0xa0) || hiddenControl(r)) {
				t.Fatalf("terminalText(%q) = %q: contains %U", s, out, r)
			}
		}
	})
}
