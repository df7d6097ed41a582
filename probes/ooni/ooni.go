// Package ooni writes CommuCat's probe results in the data format of the Open
// Observatory of Network Interference (OONI), so that researchers can read
// them with the tools they already use.
//
// A report is JSON lines: one Measurement per line, each the base envelope
// of OONI's df-000-base at data_format_version "0.2.0", with times in UTC
// as OONI writes them ("2006-01-02 15:04:05"). The test_keys of every
// measurement embed TestKeys: the OONI arrays queries (df-002-dnst),
// tcp_connect (df-005-tcpconnect), tls_handshakes and quic_handshakes
// (df-006-tlshandshake), requests (df-001-httpt) and network_events
// (df-008-netevents), whose t and t0 are seconds since the measurement
// started; failure and failed_operation as OONI's urlgetter reports them;
// blocking as OONI's web_connectivity reports it (with the extensions
// documented on Blocking); and accessible. Keys that OONI does not define
// start with "x_".
//
// Failures are OONI's failure strings (df-007-errors): Classify and its
// siblings map Go errors to them.
//
// Probe location is withheld by default: probe_asn "AS0", probe_cc "ZZ" and
// probe_ip "127.0.0.1", as OONI writes them when it does not know or must
// not say.
//
// The package holds no global state. A Trace and a Writer are safe for
// concurrent use; the other types are plain values.
package ooni

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// DataFormatVersion is the version of OONI's base data format written.
const DataFormatVersion = "0.2.0"

// TimeFormat is how OONI writes times: UTC, to the second.
const TimeFormat = "2006-01-02 15:04:05"

// Defaults written when the user did not opt in to sharing where the probe
// is, matching OONI's own defaults for unknown values.
const (
	DefaultProbeASN    = "AS0"
	DefaultProbeCC     = "ZZ"
	DefaultProbeIP     = "127.0.0.1"
	DefaultResolverASN = "AS0"
	DefaultResolverIP  = "127.0.0.2"
)

// FormatTime formats t as OONI does: in UTC, "2006-01-02 15:04:05".
func FormatTime(t time.Time) string { return t.UTC().Format(TimeFormat) }

// Input is a measurement's input. The empty Input is written as null, as
// OONI writes inputless measurements.
type Input string

// MarshalJSON writes null for the empty input.
func (in Input) MarshalJSON() ([]byte, error) {
	if in == "" {
		return []byte("null"), nil
	}
	return json.Marshal(string(in))
}

// UnmarshalJSON reads a string or null.
func (in *Input) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		*in = ""
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("ooni: input: %w", err)
	}
	*in = Input(s)
	return nil
}

// Measurement is one line of a report: OONI's base envelope (df-000-base).
type Measurement struct {
	Annotations          map[string]string `json:"annotations,omitempty"`
	DataFormatVersion    string            `json:"data_format_version"`
	Extensions           map[string]int64  `json:"extensions,omitempty"`
	Input                Input             `json:"input"`
	MeasurementStartTime string            `json:"measurement_start_time"`
	ProbeASN             string            `json:"probe_asn"`
	ProbeCC              string            `json:"probe_cc"`
	ProbeIP              string            `json:"probe_ip,omitempty"`
	ProbeNetworkName     string            `json:"probe_network_name"`
	ReportID             string            `json:"report_id"`
	ResolverASN          string            `json:"resolver_asn"`
	ResolverIP           string            `json:"resolver_ip"`
	ResolverNetworkName  string            `json:"resolver_network_name"`
	SoftwareName         string            `json:"software_name"`
	SoftwareVersion      string            `json:"software_version"`
	TestKeys             any               `json:"test_keys"`
	TestName             string            `json:"test_name"`
	// TestRuntime is the measurement's duration in seconds; OONI calls it
	// test_runtime.
	TestRuntime   float64 `json:"test_runtime"`
	TestStartTime string  `json:"test_start_time"`
	TestVersion   string  `json:"test_version"`
}

// Extensions are the versions of the OONI sub-formats that TestKeys uses,
// as OONI lists them in a measurement's "extensions".
func Extensions() map[string]int64 {
	return map[string]int64{"dnst": 0, "httpt": 0, "netevents": 0, "tcpconnect": 0, "tlshandshake": 0}
}

// Writer writes measurements as JSON lines. It is safe for concurrent use;
// each measurement is written with one Write call on the underlying writer.
type Writer struct {
	mu sync.Mutex
	w  io.Writer
}

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write writes m as one line.
func (w *Writer) Write(m *Measurement) error {
	b, err := Marshal(m)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, err := w.w.Write(b); err != nil {
		return fmt.Errorf("ooni: write measurement: %w", err)
	}
	return nil
}

// Marshal encodes m as one JSON line, ending in a newline, without HTML
// escaping (OONI's tools read the bytes as they are).
func Marshal(m *Measurement) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, fmt.Errorf("ooni: encode measurement: %w", err)
	}
	return buf.Bytes(), nil
}

// Blocking is the "blocking" key of the test keys: where interference was
// seen. OONI's web_connectivity writes "dns", "tcp_ip", "http-failure",
// "http-diff", false (no interference) or null (inconclusive); CommuCat's
// tests add "udp" (UDP to the address is dropped), "tls" (a TLS or QUIC
// handshake is interfered with, as in SNI filtering, while a control
// handshake to the same address works) and "throttling" (the transfer is
// slowed down or cut off).
type Blocking string

// Blocking values.
const (
	// BlockingUnknown is written as null: the measurement cannot tell.
	BlockingUnknown Blocking = ""
	// BlockingNone is written as false: no interference seen.
	BlockingNone        Blocking = "false"
	BlockingDNS         Blocking = "dns"
	BlockingTCPIP       Blocking = "tcp_ip"
	BlockingUDP         Blocking = "udp"
	BlockingTLS         Blocking = "tls"
	BlockingHTTPFailure Blocking = "http-failure"
	BlockingHTTPDiff    Blocking = "http-diff"
	BlockingThrottling  Blocking = "throttling"
)

// MarshalJSON writes null, false or the string.
func (b Blocking) MarshalJSON() ([]byte, error) {
	switch b {
	case BlockingUnknown:
		return []byte("null"), nil
	case BlockingNone:
		return []byte("false"), nil
	}
	return json.Marshal(string(b))
}

// UnmarshalJSON reads null, false or a string.
func (b *Blocking) UnmarshalJSON(data []byte) error {
	switch string(data) {
	case "null":
		*b = BlockingUnknown
		return nil
	case "false":
		*b = BlockingNone
		return nil
	}
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("ooni: blocking: %w", err)
	}
	if s == "" || s == "false" {
		return errors.New("ooni: blocking: empty or quoted false")
	}
	*b = Blocking(s)
	return nil
}

// String is the value as the table shows it: "null", "false" or the name.
func (b Blocking) String() string {
	if b == BlockingUnknown {
		return "null"
	}
	return string(b)
}

// Keyed is implemented by a probe's test keys: they embed TestKeys, whose
// Base method is promoted.
type Keyed interface {
	Base() *TestKeys
}

// TestKeys are the test keys every CommuCat measurement has. A probe's own
// keys embed TestKeys and add x_ keys.
type TestKeys struct {
	Queries         []Query        `json:"queries"`
	TCPConnect      []TCPConnect   `json:"tcp_connect"`
	TLSHandshakes   []TLSHandshake `json:"tls_handshakes"`
	QUICHandshakes  []TLSHandshake `json:"quic_handshakes"`
	Requests        []Request      `json:"requests"`
	NetworkEvents   []NetworkEvent `json:"network_events"`
	Failure         *string        `json:"failure"`
	FailedOperation *string        `json:"failed_operation"`
	Blocking        Blocking       `json:"blocking"`
	Accessible      *bool          `json:"accessible"`
}

// Base returns tk itself.
func (tk *TestKeys) Base() *TestKeys { return tk }

// Fail records the measurement's failure and the operation that failed. An
// empty failure clears both.
func (tk *TestKeys) Fail(failure, operation string) {
	if failure == "" {
		tk.Failure, tk.FailedOperation = nil, nil
		return
	}
	tk.Failure, tk.FailedOperation = &failure, &operation
}

// FailureString returns the failure, or "" if none.
func (tk *TestKeys) FailureString() string { return Deref(tk.Failure) }

// Deref returns *s, or "" for nil.
func Deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// Str returns a pointer to s, or nil for "".
func Str(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// Bool returns a pointer to v.
func Bool(v bool) *bool { return &v }

// Query is one DNS lookup (df-002-dnst).
type Query struct {
	Answers          []Answer `json:"answers"`
	Engine           string   `json:"engine"`
	Failure          *string  `json:"failure"`
	Hostname         string   `json:"hostname"`
	QueryType        string   `json:"query_type"`
	RawResponse      []byte   `json:"raw_response,omitempty"`
	Rcode            int64    `json:"rcode,omitempty"`
	ResolverHostname *string  `json:"resolver_hostname"`
	ResolverPort     *string  `json:"resolver_port"`
	ResolverAddress  string   `json:"resolver_address"`
	T0               float64  `json:"t0,omitempty"`
	T                float64  `json:"t"`
	Tags             []string `json:"tags"`
	TransactionID    int64    `json:"transaction_id,omitempty"`
}

// Answer is one DNS answer record.
type Answer struct {
	AnswerType string  `json:"answer_type"`
	Hostname   string  `json:"hostname,omitempty"`
	IPv4       string  `json:"ipv4,omitempty"`
	IPv6       string  `json:"ipv6,omitempty"`
	TTL        *uint32 `json:"ttl"`
}

// TCPConnect is one TCP connect (df-005-tcpconnect).
type TCPConnect struct {
	IP            string           `json:"ip"`
	Port          int              `json:"port"`
	Status        TCPConnectStatus `json:"status"`
	T0            float64          `json:"t0,omitempty"`
	T             float64          `json:"t"`
	Tags          []string         `json:"tags"`
	TransactionID int64            `json:"transaction_id,omitempty"`
}

// TCPConnectStatus is a TCPConnect's outcome.
type TCPConnectStatus struct {
	Blocked *bool   `json:"blocked,omitempty"`
	Failure *string `json:"failure"`
	Success bool    `json:"success"`
}

// TLSHandshake is one TLS or QUIC handshake (df-006-tlshandshake).
type TLSHandshake struct {
	Network            string       `json:"network"`
	Address            string       `json:"address"`
	CipherSuite        string       `json:"cipher_suite"`
	Failure            *string      `json:"failure"`
	NegotiatedProtocol string       `json:"negotiated_protocol"`
	NoTLSVerify        bool         `json:"no_tls_verify"`
	PeerCertificates   []BinaryData `json:"peer_certificates"`
	ServerName         string       `json:"server_name"`
	T0                 float64      `json:"t0,omitempty"`
	T                  float64      `json:"t"`
	Tags               []string     `json:"tags"`
	TLSVersion         string       `json:"tls_version"`
	TransactionID      int64        `json:"transaction_id,omitempty"`
}

// Request is one HTTP round trip (df-001-httpt).
type Request struct {
	Network       string       `json:"network,omitempty"`
	Address       string       `json:"address,omitempty"`
	ALPN          string       `json:"alpn,omitempty"`
	Failure       *string      `json:"failure"`
	Request       HTTPRequest  `json:"request"`
	Response      HTTPResponse `json:"response"`
	T0            float64      `json:"t0,omitempty"`
	T             float64      `json:"t"`
	Tags          []string     `json:"tags"`
	TransactionID int64        `json:"transaction_id,omitempty"`
}

// HTTPRequest is the request half of a Request.
type HTTPRequest struct {
	Body            MaybeBinary            `json:"body"`
	BodyIsTruncated bool                   `json:"body_is_truncated"`
	HeadersList     []Header               `json:"headers_list"`
	Headers         map[string]MaybeBinary `json:"headers"`
	Method          string                 `json:"method"`
	Tor             Tor                    `json:"tor"`
	Transport       string                 `json:"x_transport"`
	URL             string                 `json:"url"`
}

// HTTPResponse is the response half of a Request.
type HTTPResponse struct {
	Body            MaybeBinary            `json:"body"`
	BodyIsTruncated bool                   `json:"body_is_truncated"`
	BodyLength      int64                  `json:"x_body_length,omitempty"`
	Code            int64                  `json:"code"`
	HeadersList     []Header               `json:"headers_list"`
	Headers         map[string]MaybeBinary `json:"headers"`
}

// Header is one HTTP header as [name, value].
type Header [2]MaybeBinary

// Tor is OONI's Tor information for a request; CommuCat never uses Tor for
// a probe request.
type Tor struct {
	ExitIP   *string `json:"exit_ip"`
	ExitName *string `json:"exit_name"`
	IsTor    bool    `json:"is_tor"`
}

// NetworkEvent is one I/O event (df-008-netevents).
type NetworkEvent struct {
	Address       string   `json:"address,omitempty"`
	Failure       *string  `json:"failure"`
	NumBytes      int64    `json:"num_bytes,omitempty"`
	Operation     string   `json:"operation"`
	Proto         string   `json:"proto,omitempty"`
	T0            float64  `json:"t0,omitempty"`
	T             float64  `json:"t"`
	TransactionID int64    `json:"transaction_id,omitempty"`
	Tags          []string `json:"tags,omitempty"`
}

// BinaryData is bytes written as OONI writes binary data:
// {"format": "base64", "data": "..."}, or null when empty.
type BinaryData []byte

type binaryRepr struct {
	Data   []byte `json:"data"`
	Format string `json:"format"`
}

// MarshalJSON writes the OONI binary representation.
func (d BinaryData) MarshalJSON() ([]byte, error) {
	if len(d) == 0 {
		return []byte("null"), nil
	}
	return json.Marshal(binaryRepr{Data: d, Format: "base64"})
}

// UnmarshalJSON reads the OONI binary representation or null.
func (d *BinaryData) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		*d = nil
		return nil
	}
	var r binaryRepr
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("ooni: binary data: %w", err)
	}
	if r.Format != "base64" {
		return fmt.Errorf("ooni: binary data: format %q, want base64", r.Format)
	}
	*d = r.Data
	return nil
}

// MaybeBinary is a string written as itself when it is valid UTF-8 and as
// BinaryData otherwise. IP addresses in it are scrubbed when it is written,
// as OONI scrubs headers and bodies, so that a block page quoting the
// user's address does not leak it.
type MaybeBinary string

// MarshalJSON scrubs addresses and writes a string or BinaryData.
func (s MaybeBinary) MarshalJSON() ([]byte, error) {
	v := Scrub(string(s))
	if utf8.ValidString(v) {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err != nil {
			return nil, err
		}
		return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
	}
	return BinaryData(v).MarshalJSON()
}

// UnmarshalJSON reads a string or BinaryData.
func (s *MaybeBinary) UnmarshalJSON(b []byte) error {
	var str string
	if err := json.Unmarshal(b, &str); err == nil {
		*s = MaybeBinary(str)
		return nil
	}
	var d BinaryData
	if err := d.UnmarshalJSON(b); err != nil {
		return err
	}
	*s = MaybeBinary(d)
	return nil
}

// Scrubbed replaces addresses removed by Scrub.
const Scrubbed = "[scrubbed]"

// scrubIPv4 matches four dotted octets wherever they are, without word
// boundaries: an address right after a letter, a digit or an underscore is
// still an address, as in a URL-encoded parameter ("ip%3D203.0.113.7") or
// an identifier ("host_203.0.113.7"). Dotted version numbers with four
// parts are scrubbed too.
var scrubIPv4 = regexp.MustCompile(`(?:25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])){3}(?::[0-9]{1,5})?`)

// scrubMAC matches a MAC address: six hex pairs joined by colons or
// hyphens. A captive portal or block page may print the device's.
// scrubMACs looks for it with the colons' escapes decoded, and skips
// matches that are part of a longer chain, such as a certificate
// fingerprint.
var scrubMAC = regexp.MustCompile(`(?i)[0-9a-f]{2}(?:[:-][0-9a-f]{2}){5}`)

// scrubMACs replaces the MAC addresses in s that stand alone: not inside
// a longer run of hex pairs. It finds them in s with the escapes of ':'
// decoded (decodeAddrEscapes), as IPv6 addresses are found.
func scrubMACs(s string) string {
	v, off := decodeAddrEscapes(s)
	idx := scrubMAC.FindAllStringIndex(v, -1)
	if idx == nil {
		return s
	}
	var b strings.Builder
	last := 0
	for _, m := range idx {
		// Two hex digits after a '%' that stands for "%25" end a doubly
		// encoded escape ("%253D00%253A1a…"), and are not glued to it.
		i := m[0]
		escaped := i >= 3 && v[i-3] == '%' && isHex(v[i-2]) && isHex(v[i-1]) &&
			strings.EqualFold(s[off(i-3):off(i-2)], "%25")
		if chained(v, i, m[1], escaped) {
			continue
		}
		b.WriteString(s[last:off(m[0])])
		b.WriteString(Scrubbed)
		last = off(m[1])
	}
	b.WriteString(s[last:])
	return b.String()
}

// chained reports whether v[i:j], in decodeAddrEscapes's view, continues
// a run of hex joined by ':' or '-' on either side, or is glued to more
// hex, but for the two hex digits before i if escaped says they end an
// escape. (In that view "%3D00:1a:…" is already "%00:1a:…".)
func chained(v string, i, j int, escaped bool) bool {
	sep := func(c byte) bool { return c == ':' || c == '-' }
	switch {
	case i > 0 && isHex(v[i-1]) && !escaped, j < len(v) && isHex(v[j]):
		return true
	case j+1 < len(v) && sep(v[j]) && isHex(v[j+1]):
		return true
	case i >= 2 && sep(v[i-1]) && isHex(v[i-2]):
		return true
	}
	return false
}

// Scrub replaces IPv4 and IPv6 addresses (with their ports) and MAC
// addresses in s with "[scrubbed]".
//
// IPv6 addresses are found in every textual form net/netip parses (full,
// compressed, with an embedded IPv4 address), also where their colons and
// brackets are escaped as in a URL ("host%3D2001%3Adb8%3A%3A1", also
// twice: "%253A"), in JSON ("\u003a") or in HTML ("&#58;", "&colon;"),
// and with the brackets and port around them ("[fe80::1%eth0]:443"). An unbracketed
// zone ("fe80::1%eth0") is left behind, as it names an interface, not the
// user. Times ("12:30:45") and other colon-joined hex that is not an
// address stay (but MAC addresses go, see scrubMACs), and so do "::" and
// one group before "::" (the "d::" of "std::vector"). Like IPv4 addresses, an IPv6 address is found
// without word boundaries, so the hex letters of a word right before it
// ("Added:fe80::1") may go with it.
func Scrub(s string) string {
	if s == "" {
		return s
	}
	return scrubIPv4.ReplaceAllString(scrubMACs(scrubIPv6(s)), Scrubbed)
}

// maxIPv6Len is the length of the longest IPv6 address without a zone,
// "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".
const maxIPv6Len = 45

// scrubIPv6 replaces the IPv6 addresses in s. It works on a view of s with
// the percent-encoded ':', '[' and ']' decoded, and at each position of a
// run of hex digits, colons and dots replaces the longest substring that
// netip parses as an IPv6 address (see longestIPv6). Whether a substring
// is taken depends on it alone, and every substring of what is left has
// been tried, so scrubbing again finds nothing more.
func scrubIPv6(s string) string {
	v, off := decodeAddrEscapes(s)
	if !strings.Contains(v, ":") {
		return s
	}
	var b strings.Builder
	copied, done := 0, 0 // s[:copied] is written, v[:done] is scrubbed or kept
	for i := 0; i < len(v); {
		if !isAddrByte(v[i]) {
			i++
			continue
		}
		j := i
		for j < len(v) && isAddrByte(v[j]) {
			j++
		}
		// An IPv6 address has "::" or at least six colons.
		if run := v[i:j]; !strings.Contains(run, "::") && strings.Count(run, ":") < 6 {
			i = j
			continue
		}
		for k := i; k < j; k++ {
			n := longestIPv6(v[k:j])
			if n == 0 {
				continue
			}
			start, end := widenIPv6(v, done, k, k+n)
			b.WriteString(s[copied:off(start)])
			b.WriteString(Scrubbed)
			copied, done = off(end), end
			k = end - 1
		}
		i = max(j, done)
	}
	if b.Len() == 0 {
		return s
	}
	b.WriteString(s[copied:])
	return b.String()
}

// longestIPv6 returns the length of the longest prefix of run that is an
// IPv6 address ending in a hex digit or in "::" after two groups or more
// (a prefix such as "2001:db8::", but not the "d::" of "std::vector"), or
// 0 if there is none.
func longestIPv6(run string) int {
	for n := ipv6Span(run); n >= len("::1"); n-- {
		p := run[:n]
		if !isHex(p[n-1]) && (!strings.HasSuffix(p, "::") || strings.Count(p, ":") < 3) {
			continue
		}
		if strings.IndexByte(p, ':') < 0 {
			break
		}
		if a, err := netip.ParseAddr(p); err == nil && a.Is6() {
			return n
		}
	}
	return 0
}

// ipv6Span returns how far from the start of run an IPv6 address can
// reach: not to a fifth hex digit in a row or a second "::", and not past
// maxIPv6Len bytes. It saves longestIPv6 from parsing what cannot be one.
func ipv6Span(run string) int {
	digits, gaps := 0, 0
	for n := 0; n < len(run); n++ {
		switch c := run[n]; {
		case n == maxIPv6Len:
			return n
		case isHex(c):
			if digits++; digits > 4 {
				return n
			}
		case c == ':' && n+1 < len(run) && run[n+1] == ':':
			if gaps++; gaps > 1 {
				return n + 1 // "0:0::" of "0:0:::" is one
			}
			digits = 0
		default:
			digits = 0
		}
	}
	return len(run)
}

// widenIPv6 widens the address v[start:end] to the brackets around it, with
// a zone inside them and a port after them, as in "[fe80::1%eth0]:443". It
// does not reach back before done.
func widenIPv6(v string, done, start, end int) (int, int) {
	if start <= done || v[start-1] != '[' {
		return start, end
	}
	i := end
	if i < len(v) && v[i] == '%' {
		i++
		for i < len(v) && isZoneByte(v[i]) {
			i++
		}
	}
	if i >= len(v) || v[i] != ']' || i == end+1 {
		return start, end
	}
	i++
	if i < len(v) && v[i] == ':' {
		p := i + 1
		for p < len(v) && p < i+6 && v[p] >= '0' && v[p] <= '9' {
			p++
		}
		if p > i+1 {
			i = p
		}
	}
	return start - 1, i
}

// decodeAddrEscapes returns s with the escapes of ':', '[' and ']' that
// a page or a URL may hold decoded: percent-escapes ("%3A"), doubly
// percent-encoded ones ("%253A"), JSON's ("\u003a") and HTML's ("&#58;",
// "&#x3a;", "&colon;", "&lsqb;"; numeric references with any leading
// zeros). Any other percent-escape becomes a lone
// '%', so that the hex digits of "%3D" in "host%3D%3A%3A1" are not taken
// for part of an address. It also returns a function mapping an offset in
// the result to the offset in s.
func decodeAddrEscapes(s string) (string, func(int) int) {
	first := -1
	for i := 0; i < len(s) && first < 0; i++ {
		if _, n := addrEscape(s[i:]); n != 0 {
			first = i
		}
	}
	if first < 0 {
		return s, func(i int) int { return i }
	}
	v := []byte(s[:first])
	offs := make([]int, first, len(s)+1)
	for i := range offs {
		offs[i] = i
	}
	for i := first; i < len(s); i++ {
		offs = append(offs, i)
		c := s[i]
		if d, n := addrEscape(s[i:]); n != 0 {
			c = d
			i += n - 1
		}
		v = append(v, c)
	}
	offs = append(offs, len(s))
	return string(v), func(i int) int { return offs[i] }
}

// addrEscapes are the escapes of ':', '[' and ']' that decodeAddrEscapes
// decodes, but for single percent-escapes; letters in them match in
// either case.
var addrEscapes = []struct {
	esc string
	c   byte
}{
	{"%253a", ':'}, {"%255b", '['}, {"%255d", ']'},
	{"\\u003a", ':'}, {"\\u005b", '['}, {"\\u005d", ']'},
	{"&colon;", ':'}, {"&lsqb;", '['}, {"&rsqb;", ']'}, {"&lbrack;", '['}, {"&rbrack;", ']'},
}

// addrEscape returns what the escape at the start of s becomes in
// decodeAddrEscapes and its length, or 0, 0 if s does not start with one.
func addrEscape(s string) (byte, int) {
	if len(s) < 3 || s[0] != '%' && s[0] != '\\' && s[0] != '&' {
		return 0, 0
	}
	for _, e := range addrEscapes {
		if len(s) >= len(e.esc) && strings.EqualFold(s[:len(e.esc)], e.esc) {
			return e.c, len(e.esc)
		}
	}
	if c, n := numericEntity(s); c == ':' || c == '[' || c == ']' {
		return byte(c), n
	}
	if s[0] != '%' || !isHex(s[1]) || !isHex(s[2]) {
		return 0, 0
	}
	switch s[1:3] {
	case "3A", "3a":
		return ':', 3
	case "5B", "5b":
		return '[', 3
	case "5D", "5d":
		return ']', 3
	}
	return '%', 3
}

// numericEntity decodes the HTML numeric character reference at the start
// of s ("&#58;", "&#x3A;", "&#0058;"), and returns its code point and
// length, or -1, 0 if s does not start with one of at most 8 digits.
func numericEntity(s string) (rune, int) {
	if !strings.HasPrefix(s, "&#") {
		return -1, 0
	}
	i, base := 2, 10
	if i < len(s) && (s[i] == 'x' || s[i] == 'X') {
		i, base = i+1, 16
	}
	var r rune
	for j := i; j < len(s) && j < i+9; j++ {
		var d rune
		switch c := s[j]; {
		case c == ';' && j > i:
			return r, j + 1
		case '0' <= c && c <= '9':
			d = rune(c - '0')
		case base == 16 && 'a' <= c && c <= 'f':
			d = rune(c-'a') + 10
		case base == 16 && 'A' <= c && c <= 'F':
			d = rune(c-'A') + 10
		default:
			return -1, 0
		}
		r = r*rune(base) + d
	}
	return -1, 0
}

// isAddrByte reports whether c can be part of an IPv6 address.
func isAddrByte(c byte) bool { return isHex(c) || c == ':' || c == '.' }

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// isZoneByte reports whether c can be part of a zone (an interface name or
// index) in a bracketed address; "%25eth0" is a percent-encoded "%eth0".
func isZoneByte(c byte) bool {
	return isHex(c) || 'g' <= c && c <= 'z' || 'G' <= c && c <= 'Z' || c == '.' || c == '_' || c == '-' || c == '~'
}
