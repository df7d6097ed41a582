package pt

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	ptlib "gitlab.torproject.org/tpo/anti-censorship/pluggable-transports/goptlib"

	"github.com/commucat/commucat/core/transport"
)

var cmpMessage = cmp.AllowUnexported(message{})

func TestParseLine(t *testing.T) {
	tests := []struct {
		name string
		line string
		want message
	}{
		{"version", "VERSION 1\n", message{kind: kindVersion, keyword: "VERSION", text: "1"}},
		{"version crlf", "VERSION 1\r\n", message{kind: kindVersion, keyword: "VERSION", text: "1"}},
		{"version no newline", "VERSION 1", message{kind: kindVersion, keyword: "VERSION", text: "1"}},
		{"version-error", "VERSION-ERROR no-version\n", message{kind: kindVersionError, keyword: "VERSION-ERROR", text: "no-version"}},
		{"env-error", "ENV-ERROR No TOR_PT_AUTH_COOKIE_FILE when TOR_PT_EXTENDED_SERVER_PORT set\n",
			message{kind: kindEnvError, keyword: "ENV-ERROR", text: "No TOR_PT_AUTH_COOKIE_FILE when TOR_PT_EXTENDED_SERVER_PORT set"}},
		{"env-error empty", "ENV-ERROR\n", message{kind: kindEnvError, keyword: "ENV-ERROR"}},
		{"proxy done", "PROXY DONE\n", message{kind: kindProxyDone, keyword: "PROXY"}},
		{"proxy-error", "PROXY-ERROR SOCKS 4 upstream proxies unsupported.\n",
			message{kind: kindProxyError, keyword: "PROXY-ERROR", text: "SOCKS 4 upstream proxies unsupported."}},
		{"cmethod", "CMETHOD trebuchet socks5 127.0.0.1:19999\n",
			message{kind: kindCmethod, keyword: "CMETHOD", method: "trebuchet", proto: "socks5", addr: "127.0.0.1:19999"}},
		{"cmethod ipv6 and old options", "CMETHOD obfs4 socks5 [::1]:5 ARGS:a=b OPT-ARGS:c=d\n",
			message{kind: kindCmethod, keyword: "CMETHOD", method: "obfs4", proto: "socks5", addr: "[::1]:5"}},
		{"cmethod-error", "CMETHOD-ERROR trebuchet no rocks available\n",
			message{kind: kindCmethodError, keyword: "CMETHOD-ERROR", method: "trebuchet", text: "no rocks available"}},
		{"cmethods done", "CMETHODS DONE\n", message{kind: kindCmethodsDone, keyword: "CMETHODS"}},
		{"smethod", "SMETHOD trebuchet 198.51.100.1:19999\n",
			message{kind: kindSmethod, keyword: "SMETHOD", method: "trebuchet", addr: "198.51.100.1:19999"}},
		{"smethod args", "SMETHOD obfs4 198.51.100.1:43734 ARGS:cert=HszPy3vWfjsESCEOo9ZBkRv6zQ/1mGHzc8arF0y2SpwFr3WhsMu8rK0zyaoyERfbz3ddFw,iat-mode=0\n",
			message{kind: kindSmethod, keyword: "SMETHOD", method: "obfs4", addr: "198.51.100.1:43734",
				args: transport.Params{"cert": "HszPy3vWfjsESCEOo9ZBkRv6zQ/1mGHzc8arF0y2SpwFr3WhsMu8rK0zyaoyERfbz3ddFw", "iat-mode": "0"}}},
		{"smethod escaped args", `SMETHOD x 1.2.3.4:5 ARGS:a\=b=c\,d,e=f\\` + "\n",
			message{kind: kindSmethod, keyword: "SMETHOD", method: "x", addr: "1.2.3.4:5", args: transport.Params{"a=b": "c,d", "e": `f\`}}},
		{"smethod empty args and other option", "SMETHOD x 1.2.3.4:5 FOO:bar ARGS:\n",
			message{kind: kindSmethod, keyword: "SMETHOD", method: "x", addr: "1.2.3.4:5", args: transport.Params{}}},
		{"smethod-error", "SMETHOD-ERROR trebuchet no cows available\n",
			message{kind: kindSmethodError, keyword: "SMETHOD-ERROR", method: "trebuchet", text: "no cows available"}},
		{"smethods done", "SMETHODS DONE\n", message{kind: kindSmethodsDone, keyword: "SMETHODS"}},
		{"log", `LOG SEVERITY=debug MESSAGE="Connected to bridge A"` + "\n",
			message{kind: kindLog, keyword: "LOG", args: transport.Params{"SEVERITY": "debug", "MESSAGE": "Connected to bridge A"}}},
		{"log escapes", `LOG SEVERITY=notice MESSAGE="a\"b\\c\n\t\r\001\377\'"` + "\n",
			message{kind: kindLog, keyword: "LOG", args: transport.Params{"SEVERITY": "notice", "MESSAGE": "a\"b\\c\n\t\r\x01\xff'"}}},
		{"log bare message", "LOG SEVERITY=info MESSAGE=hello\n",
			message{kind: kindLog, keyword: "LOG", args: transport.Params{"SEVERITY": "info", "MESSAGE": "hello"}}},
		{"status", "STATUS TRANSPORT=obfs4 ADDRESS=198.51.100.123:1234 CONNECT=Success\n",
			message{kind: kindStatus, keyword: "STATUS", method: "obfs4",
				args: transport.Params{"TRANSPORT": "obfs4", "ADDRESS": "198.51.100.123:1234", "CONNECT": "Success"}}},
		{"status version", `STATUS TYPE=version IMPLEMENTATION="lyrebird" VERSION="0.1.0"` + "\n",
			message{kind: kindStatus, keyword: "STATUS", args: transport.Params{"TYPE": "version", "IMPLEMENTATION": "lyrebird", "VERSION": "0.1.0"}}},
		{"unknown keyword", "FUTURE-THING a b  c\n", message{kind: kindUnknown, keyword: "FUTURE-THING", text: "a b  c"}},
		{"unknown bare", "X\n", message{kind: kindUnknown, keyword: "X"}},
		{"high bytes in text", "ENV-ERROR caf\xc3\xa9\n", message{kind: kindEnvError, keyword: "ENV-ERROR", text: "caf\xc3\xa9"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseLine([]byte(tt.line))
			if err != nil {
				t.Fatalf("parseLine(%q): %v", tt.line, err)
			}
			if diff := cmp.Diff(tt.want, got, cmpMessage); diff != "" {
				t.Errorf("parseLine(%q) mismatch (-want +got):\n%s", tt.line, diff)
			}
		})
	}
}

func TestParseLineMalformed(t *testing.T) {
	tests := []struct {
		name, line string
	}{
		{"empty", "\n"},
		{"leading space", " VERSION 1\n"},
		{"bad keyword byte", "VER$ION 1\n"},
		{"nul", "VERSION 1\x00\n"},
		{"inner newline", "ENV-ERROR a\nb\n"},
		{"version missing", "VERSION\n"},
		{"version two words", "VERSION 1 2\n"},
		{"proxy not done", "PROXY READY\n"},
		{"cmethods not done", "CMETHODS\n"},
		{"smethods lowercase done", "SMETHODS done\n"},
		{"cmethod short", "CMETHOD obfs4 socks5\n"},
		{"cmethod no port", "CMETHOD obfs4 socks5 127.0.0.1\n"},
		{"cmethod bad port", "CMETHOD obfs4 socks5 127.0.0.1:99999\n"},
		{"cmethod empty host", "CMETHOD obfs4 socks5 :80\n"},
		{"cmethod empty method", "CMETHOD  socks5 1.2.3.4:5\n"},
		{"cmethod empty proto", "CMETHOD obfs4  1.2.3.4:5\n"},
		{"smethod short", "SMETHOD obfs4\n"},
		{"smethod args no equal", "SMETHOD x 1.2.3.4:5 ARGS:abc\n"},
		{"smethod args empty key", "SMETHOD x 1.2.3.4:5 ARGS:=v\n"},
		{"smethod args trailing backslash", `SMETHOD x 1.2.3.4:5 ARGS:a=b\` + "\n"},
		{"smethod args duplicate", "SMETHOD x 1.2.3.4:5 ARGS:a=1,a=2\n"},
		{"smethod two args", "SMETHOD x 1.2.3.4:5 ARGS:a=1 ARGS:b=2\n"},
		{"cmethod-error no method", "CMETHOD-ERROR\n"},
		{"smethod-error no method", "SMETHOD-ERROR  text\n"},
		{"log not kv", "LOG hello\n"},
		{"log empty key", "LOG =x\n"},
		{"log unterminated", `LOG MESSAGE="abc` + "\n"},
		{"log junk after quote", `LOG MESSAGE="abc"def` + "\n"},
		{"log bad escape", `LOG MESSAGE="\q"` + "\n"},
		{"log octal out of range", `LOG MESSAGE="\777"` + "\n"},
		{"log trailing backslash", `LOG MESSAGE="abc\` + "\n"},
		{"log duplicate", "LOG A=1 A=2\n"},
		{"status not kv", "STATUS TRANSPORT\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := parseLine([]byte(tt.line))
			if !errors.Is(err, errLine) {
				t.Fatalf("parseLine(%q) = %+v, %v; want an error wrapping errLine", tt.line, m, err)
			}
			if !strings.HasPrefix(err.Error(), "pt: ") {
				t.Errorf("error %q does not start with the package name", err)
			}
		})
	}
}

// goptlibLines returns what goptlib, the library most Go PTs use, writes
// for each kind of line.
func goptlibLines(t testing.TB) []string {
	t.Helper()
	var buf bytes.Buffer
	old := ptlib.Stdout
	ptlib.Stdout = &buf
	defer func() { ptlib.Stdout = old }()
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4242}
	args := ptlib.Args{}
	args.Add("cert", "HszPy3vWfjsESCEOo9ZBkRv6zQ/1mGHzc8arF0y2SpwFr3WhsMu8rK0zyaoyERfbz3ddFw")
	args.Add("iat-mode", "0")
	args.Add(`we=ird,`, `va\lue`)
	ptlib.CmethodError("obfs4", "no such transport is supported")
	ptlib.SmethodError("obfs4", "address already in use")
	ptlib.ProxyError("proxy is not supported")
	ptlib.Cmethod("obfs4", "socks5", addr)
	ptlib.CmethodsDone()
	ptlib.Smethod("obfs4", addr)
	ptlib.SmethodArgs("obfs4", addr, args)
	ptlib.SmethodsDone()
	ptlib.ProxyDone()
	ptlib.ReportVersion("lyre\"bird", "0.1\n")
	ptlib.Log(ptlib.LogSeverityWarning, "quote \" backslash \\ newline \n tab \t high \xff")
	return strings.SplitAfter(strings.TrimSuffix(buf.String(), "\n"), "\n")
}

// TestParseGoptlib parses what goptlib writes.
func TestParseGoptlib(t *testing.T) {
	lines := goptlibLines(t)
	want := []message{
		{kind: kindCmethodError, keyword: "CMETHOD-ERROR", method: "obfs4", text: "no such transport is supported"},
		{kind: kindSmethodError, keyword: "SMETHOD-ERROR", method: "obfs4", text: "address already in use"},
		{kind: kindProxyError, keyword: "PROXY-ERROR", text: "proxy is not supported"},
		{kind: kindCmethod, keyword: "CMETHOD", method: "obfs4", proto: "socks5", addr: "127.0.0.1:4242"},
		{kind: kindCmethodsDone, keyword: "CMETHODS"},
		{kind: kindSmethod, keyword: "SMETHOD", method: "obfs4", addr: "127.0.0.1:4242"},
		{kind: kindSmethod, keyword: "SMETHOD", method: "obfs4", addr: "127.0.0.1:4242", args: transport.Params{
			"cert": "HszPy3vWfjsESCEOo9ZBkRv6zQ/1mGHzc8arF0y2SpwFr3WhsMu8rK0zyaoyERfbz3ddFw", "iat-mode": "0", `we=ird,`: `va\lue`}},
		{kind: kindSmethodsDone, keyword: "SMETHODS"},
		{kind: kindProxyDone, keyword: "PROXY"},
		{kind: kindStatus, keyword: "STATUS", args: transport.Params{"TYPE": "version", "IMPLEMENTATION": "lyre\"bird", "VERSION": "0.1\n"}},
		{kind: kindLog, keyword: "LOG", args: transport.Params{"SEVERITY": "warning", "MESSAGE": "quote \" backslash \\ newline \n tab \t high \xff"}},
	}
	if len(lines) != len(want) {
		t.Fatalf("goptlib wrote %d lines, want %d: %q", len(lines), len(want), lines)
	}
	for i, line := range lines {
		got, err := parseLine([]byte(line))
		if err != nil {
			t.Errorf("parseLine(%q): %v", line, err)
			continue
		}
		if diff := cmp.Diff(want[i], got, cmpMessage); diff != "" {
			t.Errorf("parseLine(%q) mismatch (-want +got):\n%s", line, diff)
		}
	}
}

// formatLine is parseLine's inverse for the messages it returns, for the
// round trip of the fuzz target: parseLine(formatLine(m)) == m.
func formatLine(m message) string {
	var b strings.Builder
	b.WriteString(m.keyword)
	switch m.kind {
	case kindUnknown, kindVersion, kindVersionError, kindEnvError, kindProxyError:
		if m.text != "" {
			b.WriteString(" " + m.text)
		}
	case kindProxyDone, kindCmethodsDone, kindSmethodsDone:
		b.WriteString(" DONE")
	case kindCmethod:
		fmt.Fprintf(&b, " %s %s %s", m.method, m.proto, m.addr)
	case kindSmethod:
		fmt.Fprintf(&b, " %s %s", m.method, m.addr)
		if m.args != nil {
			b.WriteString(" ARGS:")
			for i, k := range sortedKeys(m.args) {
				if i > 0 {
					b.WriteByte(',')
				}
				b.WriteString(escape(k, "=,") + "=" + escape(m.args[k], "=,"))
			}
		}
	case kindCmethodError, kindSmethodError:
		fmt.Fprintf(&b, " %s %s", m.method, m.text)
	case kindLog, kindStatus:
		for _, k := range sortedKeys(m.args) {
			fmt.Fprintf(&b, " %s=%s", k, quoteCString(m.args[k]))
		}
	}
	b.WriteByte('\n')
	return b.String()
}

// quoteCString encodes s as a control-spec CString.
func quoteCString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := range len(s) {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c >= 0x7f:
			fmt.Fprintf(&b, "\\%03o", c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func TestFormatLineRoundTrip(t *testing.T) {
	for _, line := range goptlibLines(t) {
		m, err := parseLine([]byte(line))
		if err != nil {
			t.Fatal(err)
		}
		got, err := parseLine([]byte(formatLine(m)))
		if err != nil {
			t.Fatalf("parseLine(formatLine(%q)): %v", line, err)
		}
		if diff := cmp.Diff(m, got, cmpMessage); diff != "" {
			t.Errorf("round trip of %q (-want +got):\n%s", line, diff)
		}
	}
}

func BenchmarkParseLine(b *testing.B) {
	line := []byte("SMETHOD obfs4 198.51.100.1:43734 ARGS:cert=HszPy3vWfjsESCEOo9ZBkRv6zQ/1mGHzc8arF0y2SpwFr3WhsMu8rK0zyaoyERfbz3ddFw,iat-mode=0\n")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseLine(line); err != nil {
			b.Fatal(err)
		}
	}
}
