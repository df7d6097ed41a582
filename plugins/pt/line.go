package pt

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/commucat/commucat/core/transport"
)

// maxLine bounds one line of a PT's stdout or stderr, newline included.
// Longer lines are discarded.
const maxLine = 16 << 10

// kind is the kind of a line a PT writes to its stdout.
type kind uint8

const (
	kindUnknown      kind = iota // a keyword this host does not know: ignored
	kindVersion                  // VERSION <version>
	kindVersionError             // VERSION-ERROR <message>
	kindEnvError                 // ENV-ERROR <message>
	kindProxyDone                // PROXY DONE
	kindProxyError               // PROXY-ERROR <message>
	kindCmethod                  // CMETHOD <method> <socks4|socks5> <address:port> [options]
	kindCmethodError             // CMETHOD-ERROR <method> <message>
	kindCmethodsDone             // CMETHODS DONE
	kindSmethod                  // SMETHOD <method> <address:port> [ARGS:k=v,k=v] [options]
	kindSmethodError             // SMETHOD-ERROR <method> <message>
	kindSmethodsDone             // SMETHODS DONE
	kindLog                      // LOG SEVERITY=<severity> MESSAGE=<message>
	kindStatus                   // STATUS [TRANSPORT=<method>] <key>=<value>...
)

var keywords = map[string]kind{
	"VERSION":       kindVersion,
	"VERSION-ERROR": kindVersionError,
	"ENV-ERROR":     kindEnvError,
	"PROXY":         kindProxyDone,
	"PROXY-ERROR":   kindProxyError,
	"CMETHOD":       kindCmethod,
	"CMETHOD-ERROR": kindCmethodError,
	"CMETHODS":      kindCmethodsDone,
	"SMETHOD":       kindSmethod,
	"SMETHOD-ERROR": kindSmethodError,
	"SMETHODS":      kindSmethodsDone,
	"LOG":           kindLog,
	"STATUS":        kindStatus,
}

// message is one parsed line of a PT's stdout.
type message struct {
	kind    kind
	keyword string           // the line's keyword as written
	method  string           // C/SMETHOD(-ERROR); STATUS's TRANSPORT
	proto   string           // CMETHOD: "socks4" or "socks5"
	addr    string           // C/SMETHOD: "address:port"
	args    transport.Params // SMETHOD's ARGS; LOG's and STATUS's fields
	text    string           // VERSION's version; an *-ERROR's message; an unknown line's arguments
}

// errLine is wrapped by every error of parseLine.
var errLine = errors.New("pt: malformed line")

// lineError is a parse error of one line.
func lineError(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errLine}, a...)...)
}

// parseLine parses one line a PT wrote to its stdout (pt-spec.txt 3.3):
//
//	<Line>    ::= <Keyword> <OptArgs> <NL>
//	<Keyword> ::= 1*<US-ASCII alphanumeric, dash, and underscore>
//	<OptArgs> ::= *(<SP> 1*<any US-ASCII character but NUL or NL>)
//
// line may end in "\n"; carriage returns at its end are dropped. Bytes
// above 0x7f are accepted in arguments (they can only appear in free
// text). A known keyword with the
// wrong arguments is an error; an unknown keyword is not (the spec says to
// ignore such lines) and yields kindUnknown. parseLine never panics.
func parseLine(line []byte) (message, error) {
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimRight(line, "\r")
	if i := bytes.IndexAny(line, "\x00\n"); i >= 0 {
		return message{}, lineError("byte %#x at offset %d", line[i], i)
	}
	s := string(line)
	keyword, rest, _ := strings.Cut(s, " ")
	if keyword == "" {
		return message{}, lineError("no keyword")
	}
	for i := range len(keyword) {
		if !isKeywordChar(keyword[i]) {
			return message{}, lineError("keyword has byte %#x", keyword[i])
		}
	}
	m := message{kind: keywords[keyword], keyword: keyword}
	var err error
	switch m.kind {
	case kindUnknown:
		m.text = rest
	case kindVersion:
		if rest == "" || strings.Contains(rest, " ") {
			return message{}, lineError("VERSION wants one version, got %q", rest)
		}
		m.text = rest
	case kindVersionError, kindEnvError, kindProxyError:
		m.text = rest
	case kindProxyDone, kindCmethodsDone, kindSmethodsDone:
		if rest != "DONE" {
			return message{}, lineError("%s wants DONE, got %q", keyword, rest)
		}
	case kindCmethod:
		f := strings.Split(rest, " ")
		if len(f) < 3 {
			return message{}, lineError("CMETHOD wants a method, a protocol and an address, got %q", rest)
		}
		m.method, m.proto, m.addr = f[0], f[1], f[2]
		if err := checkMethodAddr(m.method, m.addr); err != nil {
			return message{}, err
		}
		if m.proto == "" {
			return message{}, lineError("CMETHOD with an empty protocol")
		}
	case kindSmethod:
		f := strings.Split(rest, " ")
		if len(f) < 2 {
			return message{}, lineError("SMETHOD wants a method and an address, got %q", rest)
		}
		m.method, m.addr = f[0], f[1]
		if err := checkMethodAddr(m.method, m.addr); err != nil {
			return message{}, err
		}
		for _, opt := range f[2:] {
			if a, ok := strings.CutPrefix(opt, "ARGS:"); ok {
				if m.args != nil {
					return message{}, lineError("SMETHOD with two ARGS options")
				}
				if m.args, err = parseSmethodArgs(a); err != nil {
					return message{}, err
				}
			}
		}
	case kindCmethodError, kindSmethodError:
		m.method, m.text, _ = strings.Cut(rest, " ")
		if m.method == "" {
			return message{}, lineError("%s without a method", keyword)
		}
	case kindLog, kindStatus:
		if m.args, err = parseKV(rest); err != nil {
			return message{}, err
		}
		if m.kind == kindStatus {
			m.method = m.args["TRANSPORT"]
		}
	}
	return m, nil
}

func isKeywordChar(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '-' || b == '_'
}

// checkMethodAddr checks a C/SMETHOD line's method name and address.
func checkMethodAddr(method, addr string) error {
	if method == "" {
		return lineError("empty method name")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return lineError("address %q: %v", addr, err)
	}
	if host == "" {
		return lineError("address %q has no host", addr)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return lineError("address %q has a bad port", addr)
	}
	return nil
}

// parseKV parses the space-separated <key>=<value> fields of a LOG or
// STATUS line. A value is a bare word or a CString in double quotes
// (control-spec.txt 2.1.1) that may hold spaces. Keys must be unique.
func parseKV(s string) (transport.Params, error) {
	p := transport.Params{}
	for {
		s = strings.TrimLeft(s, " ")
		if s == "" {
			return p, nil
		}
		eq := strings.IndexAny(s, "= ")
		if eq <= 0 || s[eq] != '=' {
			return nil, lineError("field %q is not key=value", cutField(s))
		}
		key := s[:eq]
		s = s[eq+1:]
		var val string
		if strings.HasPrefix(s, `"`) {
			var n int
			var err error
			val, n, err = parseCString(s)
			if err != nil {
				return nil, err
			}
			s = s[n:]
			if s != "" && s[0] != ' ' {
				return nil, lineError("junk after the quoted value of %q", key)
			}
		} else {
			val, s, _ = strings.Cut(s, " ")
		}
		if _, dup := p[key]; dup {
			return nil, lineError("field %q twice", key)
		}
		p[key] = val
	}
}

func cutField(s string) string {
	f, _, _ := strings.Cut(s, " ")
	if len(f) > 40 {
		f = f[:40] + "..."
	}
	return f
}

// parseCString decodes the CString at the start of s, which begins with a
// double quote, and returns it and the number of bytes it took. Escapes are
// \n, \t, \r, \", \\, \' and octal \0 to \377 of one to three digits.
func parseCString(s string) (string, int, error) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch c {
		case '"':
			return b.String(), i + 1, nil
		case '\\':
			i++
			if i >= len(s) {
				return "", 0, lineError("quoted value ends in a backslash")
			}
			switch e := s[i]; e {
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case 'r':
				b.WriteByte('\r')
			case '"', '\\', '\'':
				b.WriteByte(e)
			case '0', '1', '2', '3', '4', '5', '6', '7':
				v := 0
				j := i
				for ; j < len(s) && j < i+3 && '0' <= s[j] && s[j] <= '7'; j++ {
					v = v*8 + int(s[j]-'0')
				}
				if v > 0xff {
					return "", 0, lineError("octal escape \\%s out of range", s[i:j])
				}
				b.WriteByte(byte(v))
				i = j - 1
			default:
				return "", 0, lineError("unknown escape \\%c", e)
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", 0, lineError("quoted value without its closing quote")
}
