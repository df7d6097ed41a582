// Package fingerprint makes TLS ClientHellos that look like a browser's,
// for the transports that hide inside TLS (websocket, reality). A Hello is
// a ClientHello shape: one of utls's browser presets, or a ClientHello
// captured from a real browser (Capture, CaptureServer) and replayed from a
// file. Hello.Client returns a utls connection that sends that shape.
//
// Summarize parses a raw ClientHello into a Summary of the fields passive
// classifiers look at, with GREASE values normalised, and Summary.SameShape
// compares two of them.
//
// # Extension order
//
// Chrome (since version 106) permutes its extensions on every connection,
// and so do utls's Chrome presets (utls.ShuffleChromeTLSExtensions): only
// GREASE, padding and pre_shared_key keep their places. This package does
// not pin a non-shuffling variant, since a Chrome that never shuffles is
// itself a fingerprint. So Summary.SameShape compares extension sets plus
// those fixed positions, and Summary.SameOrder the exact order. A capture
// of a Chromium browser (recognised by its ALPS extension, which only
// Chromium sends) is replayed with its extensions shuffled the same way on
// every connection; any other capture is replayed in its captured order.
//
// # Capture files
//
// A capture file holds the raw bytes of the TLS record(s) that carried one
// ClientHello, exactly as read from the wire, at most MaxHelloSize bytes.
// It is not secret. Point a browser at CaptureServer's listener to make
// one; use a host name (https://localhost:PORT/), not an IP address, since
// browsers send no server_name for IP addresses. (When a replayed capture
// lacks server_name and the connection's ServerName is a host name,
// Hello.Client adds the extension after the first GREASE extension.)
//
// Hello values are immutable and safe for concurrent use.
package fingerprint

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sort"
	"strings"

	utls "github.com/refraction-networking/utls"
)

// DefaultPreset is the preset the zero Hello, Parse("") and Preset("")
// stand for.
const DefaultPreset = "chrome"

// ErrUnknownPreset is returned by Preset and Parse for a name that is not
// a preset.
var ErrUnknownPreset = errors.New("fingerprint: unknown preset")

// presets maps preset names to utls ClientHello ids.
var presets = map[string]utls.ClientHelloID{
	"chrome":  utls.HelloChrome_Auto, // Chrome 133 in utls v1.8.2
	"firefox": utls.HelloFirefox_Auto,
	"safari":  utls.HelloSafari_Auto,
	"edge":    utls.HelloEdge_Auto,
	"ios":     utls.HelloIOS_Auto,
}

// PresetNames returns the names Preset accepts, sorted.
func PresetNames() []string {
	names := make([]string, 0, len(presets))
	for n := range presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Hello is a ClientHello shape: a utls preset or a ClientHello captured
// from a real browser. The zero Hello is the "chrome" preset.
type Hello struct {
	name    string // preset name; "" means DefaultPreset
	path    string // capture file, for String
	record  []byte // captured hello as one handshake record; nil for presets
	shuffle bool   // permute extensions per connection, as Chrome does
}

// Preset returns the Hello of a utls browser preset: "chrome" (current
// Chrome, utls.HelloChrome_Auto), "firefox", "safari", "edge" or "ios".
// The empty name means "chrome". An unknown name fails with an error
// wrapping ErrUnknownPreset that lists the valid names.
func Preset(name string) (Hello, error) {
	if name == "" {
		name = DefaultPreset
	}
	if _, ok := presets[name]; !ok {
		return Hello{}, fmt.Errorf("fingerprint: %q (valid: %s): %w", name, strings.Join(PresetNames(), ", "), ErrUnknownPreset)
	}
	return Hello{name: name}, nil
}

// Parse returns the Hello that s names: a preset name (see Preset), or
// "file:" followed by the path of a capture file (see FromFile).
func Parse(s string) (Hello, error) {
	if path, ok := strings.CutPrefix(s, "file:"); ok {
		return FromFile(path)
	}
	return Preset(s)
}

// FromFile loads a ClientHello captured from a real client (the raw TLS
// record(s) as Capture returns them; a bare handshake message is accepted
// too). The file is read up to MaxHelloSize bytes; a larger file, a
// malformed ClientHello or one utls cannot reproduce fails with an error.
func FromFile(path string) (Hello, error) {
	f, err := os.Open(path)
	if err != nil {
		return Hello{}, fmt.Errorf("fingerprint: %w", err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, MaxHelloSize+1))
	if err != nil {
		return Hello{}, fmt.Errorf("fingerprint: read %s: %w", path, err)
	}
	h, err := fromBytes(raw)
	if err != nil {
		return Hello{}, fmt.Errorf("fingerprint: load %s: %w", path, err)
	}
	h.path = path
	return h, nil
}

// fromBytes builds a Hello from a captured ClientHello.
func fromBytes(raw []byte) (Hello, error) {
	msg, err := handshakeMessage(raw)
	if err != nil {
		return Hello{}, err
	}
	if _, err := parseClientHello(msg); err != nil {
		return Hello{}, err
	}
	h := Hello{record: wrapRecord(msg)}
	spec, err := h.capturedSpec()
	if err != nil {
		return Hello{}, err
	}
	for _, e := range spec.Extensions {
		switch e.(type) {
		case *utls.ApplicationSettingsExtension, *utls.ApplicationSettingsExtensionNew:
			h.shuffle = true
		}
	}
	if err := h.tryBuild(); err != nil {
		return Hello{}, err
	}
	return h, nil
}

// tryBuild builds a ClientHello of h once, without I/O, so that a capture
// utls cannot reproduce fails at load time rather than at every dial. A
// panic in utls is turned into an error.
func (h Hello) tryBuild() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("fingerprint: utls cannot build the clienthello: %v: %w", r, ErrNotClientHello)
		}
	}()
	uc, err := h.Client(nil, &utls.Config{ServerName: "example.com"}, nil)
	if err != nil {
		return fmt.Errorf("%w: %w", err, ErrNotClientHello)
	}
	if err := uc.BuildHandshakeState(); err != nil {
		return fmt.Errorf("fingerprint: utls cannot build the clienthello: %w: %w", err, ErrNotClientHello)
	}
	return nil
}

// wrapRecord puts a handshake message (at most 0xffff bytes, which
// handshakeMessage guarantees) into one record, the form utls parses.
func wrapRecord(msg []byte) []byte {
	rec := make([]byte, 0, recordHeaderLen+len(msg))
	rec = append(rec, recordTypeHandshake, 3, 1, byte(len(msg)>>8), byte(len(msg)))
	return append(rec, msg...)
}

// String returns the preset name, or "file:" and the capture's path.
func (h Hello) String() string {
	switch {
	case h.record != nil && h.path != "":
		return "file:" + h.path
	case h.record != nil:
		return "capture"
	case h.name == "":
		return DefaultPreset
	}
	return h.name
}

// capturedSpec parses the captured hello into a fresh spec. utls's parser
// is third-party code fed with file bytes, so a panic in it is turned into
// an error.
func (h Hello) capturedSpec() (spec *utls.ClientHelloSpec, err error) {
	defer func() {
		if r := recover(); r != nil {
			spec, err = nil, fmt.Errorf("fingerprint: utls cannot parse the clienthello: %v: %w", r, ErrNotClientHello)
		}
	}()
	f := utls.Fingerprinter{AllowBluntMimicry: true}
	spec, err = f.RawClientHello(h.record)
	if err != nil {
		return nil, fmt.Errorf("fingerprint: utls: %w: %w", err, ErrNotClientHello)
	}
	return spec, nil
}

// spec returns a fresh ClientHelloSpec of h: utls shares the spec's slices
// with the connection, so every connection needs its own.
func (h Hello) spec() (*utls.ClientHelloSpec, error) {
	if h.record != nil {
		spec, err := h.capturedSpec()
		if err != nil {
			return nil, err
		}
		if h.shuffle {
			spec.Extensions = utls.ShuffleChromeTLSExtensions(spec.Extensions)
		}
		return spec, nil
	}
	name := h.name
	if name == "" {
		name = DefaultPreset
	}
	id, ok := presets[name]
	if !ok {
		return nil, fmt.Errorf("fingerprint: %q: %w", name, ErrUnknownPreset)
	}
	spec, err := utls.UTLSIdToSpec(id)
	if err != nil {
		return nil, fmt.Errorf("fingerprint: preset %s: %w", name, err)
	}
	return &spec, nil
}

// Client returns a utls client connection over conn that will send this
// ClientHello shape. cfg is used as utls uses it (ServerName, RootCAs,
// InsecureSkipVerify, VerifyPeerCertificate, ...); its NextProtos are
// replaced by the shape's ALPN protocols. If alpn is not nil, the ALPN
// extension's protocols become alpn (websocket forces "http/1.1"), and
// the ALPS extension keeps only protocols still in alpn, or is dropped; a
// shape without an ALPN extension gets none, and an empty non-nil alpn
// removes it. The caller runs HandshakeContext and owns the connection.
func (h Hello) Client(conn net.Conn, cfg *utls.Config, alpn []string) (*utls.UConn, error) {
	spec, err := h.spec()
	if err != nil {
		return nil, err
	}
	if alpn != nil {
		spec.Extensions = overrideALPN(spec.Extensions, alpn)
	}
	if cfg == nil {
		cfg = &utls.Config{}
	}
	if h.record != nil && cfg.ServerName != "" && net.ParseIP(cfg.ServerName) == nil {
		spec.Extensions = ensureSNI(spec.Extensions)
	}
	uc := utls.UClient(conn, cfg, utls.HelloCustom)
	if err := uc.ApplyPreset(spec); err != nil {
		return nil, fmt.Errorf("fingerprint: apply %s: %w", h, err)
	}
	return uc, nil
}

// overrideALPN sets the ALPN protocols of exts to alpn and keeps ALPS
// consistent with them.
func overrideALPN(exts []utls.TLSExtension, alpn []string) []utls.TLSExtension {
	keep := func(ps []string) []string {
		return slices.DeleteFunc(slices.Clone(ps), func(p string) bool { return !slices.Contains(alpn, p) })
	}
	out := exts[:0:0]
	for _, e := range exts {
		switch x := e.(type) {
		case *utls.ALPNExtension:
			if len(alpn) == 0 {
				continue
			}
			x.AlpnProtocols = slices.Clone(alpn)
		case *utls.ApplicationSettingsExtension:
			if x.SupportedProtocols = keep(x.SupportedProtocols); len(x.SupportedProtocols) == 0 {
				continue
			}
		case *utls.ApplicationSettingsExtensionNew:
			if x.SupportedProtocols = keep(x.SupportedProtocols); len(x.SupportedProtocols) == 0 {
				continue
			}
		}
		out = append(out, e)
	}
	return out
}

// ensureSNI adds an empty server_name extension (utls fills in the
// config's ServerName) after the first GREASE extension, if exts has none.
func ensureSNI(exts []utls.TLSExtension) []utls.TLSExtension {
	at := 0
	for i, e := range exts {
		switch e.(type) {
		case *utls.SNIExtension:
			return exts
		case *utls.UtlsGREASEExtension:
			if at == 0 {
				at = i + 1
			}
		}
	}
	return slices.Insert(exts, at, utls.TLSExtension(&utls.SNIExtension{}))
}
