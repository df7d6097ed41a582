// Package sdk turns a CommuCat transport into a plugin binary that the
// CommuCat host (package plugins) discovers and runs out of process. It is
// all a transport author imports: the transport types are re-exported
// here, so a third-party plugin module needs no other CommuCat package.
//
// A plugin's main is about ten lines:
//
//	func main() {
//		sdk.Serve(sdk.Plugin{
//			Name:    "tcp",
//			Version: "1.0.0",
//			Client:  tcp.Factory,
//			Server:  tcp.ServerFactory,
//		})
//	}
//
// Build it as commucat-transport-<Name> and drop it into a plugins folder
// (see docs/PLUGINS.md). Serve speaks the plugin protocol of
// plugins/proto: the go-plugin handshake, the gRPC control service, and
// the control socket over which every connection arrives as its own
// kernel socket, and, from a host of protocol version 3 on, with rings in
// memory shared with the host. The transport's connections are spliced
// to those sockets with io.Copy, which the kernel does without copying
// for TCP, or to the rings, whose memory the connection's Write and Read
// get directly (so they must not keep the slice, as io.Writer and
// io.Reader already require). A
// transport whose connections carry datagrams (Plugin.Datagram) gets a
// second, SOCK_SEQPACKET socket per connection, one datagram per record.
//
// Serve sets the garbage collector for a small data-plane process (GOGC
// 400 under a 512 MiB limit) unless the environment sets GOGC or
// GOMEMLIMIT.
//
// Logs go to the process's standard error as JSON lines that the host
// re-logs under the plugin's name; NewLogger returns a logger that writes
// them. Standard output belongs to the handshake: do not write to it.
package sdk

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/plugins/proto"
)

// The transport contract, re-exported from core/transport.
type (
	// Transport dials and listens for connections of one kind.
	Transport = transport.Transport
	// Listener accepts connections of one transport.
	Listener = transport.Listener
	// Params are a transport's parameters as strings.
	Params = transport.Params
	// Factory builds the client side of a Transport from an invite's
	// parameters.
	Factory = transport.Factory
	// ServerFactory builds the gateway side of a Transport from the
	// gateway's parameters and a private state directory, and returns the
	// parameters clients need.
	ServerFactory = transport.ServerFactory
	// DatagramConn is implemented by connections that also carry
	// unreliable datagrams; see Plugin.Datagram.
	DatagramConn = transport.DatagramConn
)

// The sentinel errors the host maps across the process boundary: a
// transport's errors that wrap one of these reach the core as the same
// sentinel (errors.Is works as for a built-in transport).
var (
	ErrClosed      = transport.ErrClosed
	ErrTimeout     = transport.ErrTimeout
	ErrRefused     = transport.ErrRefused
	ErrUnsupported = transport.ErrUnsupported
	ErrBadParams   = transport.ErrBadParams
	ErrTooLarge    = transport.ErrTooLarge
)

// ProtocolVersion is the plugin protocol version a plugin built with this
// SDK speaks.
const ProtocolVersion = proto.ProtocolVersion

// Param documents one parameter a transport accepts; the host shows it in
// `commucat plugin list --params` and never interprets it (the transport validates
// its own parameters).
type Param struct {
	Name     string
	Doc      string
	Client   bool // accepted by Client (from invites)
	Server   bool // accepted by Server (from the gateway config)
	Required bool
}

// Plugin is what Serve serves.
type Plugin struct {
	// Name is the transport's name: lowercase letters, digits and '-',
	// and the binary's name must be "commucat-transport-" + Name.
	Name string
	// Version is the plugin's own version, shown to operators.
	Version string
	// Client builds the client side; nil if the plugin has none.
	Client Factory
	// Server builds the gateway side; nil if the plugin has none.
	Server ServerFactory
	// Params documents the accepted parameters.
	Params []Param
	// Datagram says that the transport's connections may carry
	// unreliable datagrams (they implement DatagramConn, as QUIC's and
	// KCP's do). The plugin then describes datagram capability, every
	// connection gets a datagram socket beside its stream, and the SDK
	// pumps datagrams between it and the connection's SendDatagram and
	// ReceiveDatagram: the host's connection implements DatagramConn
	// with the same MaxDatagramSize. A connection that does not implement
	// DatagramConn (or reports a MaxDatagramSize of 0) carries only its
	// stream. SendDatagram must not keep its argument after it returns.
	// Needs a host that speaks plugin protocol version 2; an older host
	// gets no datagrams.
	Datagram bool
	// HandOver says that the transport's connections carry the stream
	// unchanged on their own TCP socket, with no framing or encryption in
	// this process (plain TCP). The SDK then hands each connection's
	// socket itself to the host instead of splicing it, and this process
	// leaves the data path: the connection runs at the kernel's speed.
	// Connections that are not TCP sockets are spliced as usual. Never
	// set it for a transport that transforms the bytes it carries: the
	// host would read them untransformed.
	HandOver bool
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// Validate checks p.
func (p Plugin) Validate() error {
	if !nameRE.MatchString(p.Name) {
		return fmt.Errorf("sdk: plugin name %q is not lowercase letters, digits and '-'", p.Name)
	}
	if p.Client == nil && p.Server == nil {
		return errors.New("sdk: plugin " + p.Name + " has neither Client nor Server")
	}
	return nil
}

// stderr is the process's standard error as it was at start-up: go-plugin
// replaces os.Stderr once serving, but logs belong on the original.
var stderr = os.Stderr

// NewLogger returns a logger that writes JSON lines in the format the host
// re-logs (go-plugin's hclog JSON: "@level", "@message", "@timestamp") to
// the process's standard error.
func NewLogger() *slog.Logger {
	return slog.New(newLogHandler(stderr, slog.LevelInfo))
}

// Serve runs p as a plugin until the host stops it or goes away, then
// exits the process; it never returns. Run by hand (not by a CommuCat
// host), it prints a note and exits with status 1.
func Serve(p Plugin) {
	log := NewLogger()
	if err := p.Validate(); err != nil {
		log.Error("invalid plugin", "error", err)
		os.Exit(1)
	}
	if os.Getenv(proto.MagicCookieKey) != proto.MagicCookieValue {
		fmt.Fprintf(stderr, "%s%s is a CommuCat transport plugin: put it into a plugins folder and the commucat binary runs it.\n", proto.BinaryPrefix, p.Name)
		os.Exit(1)
	}
	tuneGC(os.Getenv)
	os.Exit(serve(p, log))
}
