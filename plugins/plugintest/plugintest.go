// Package plugintest holds a misbehaving transport plugin for the plugin
// host's fault tests: plain TCP (transports/tcp) with one fault injected,
// chosen by the plugin's name. The binary is built from
// plugins/plugintest/cmd/faulty and installed as
// commucat-transport-<mode>; see Modes.
package plugintest

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/commucat/commucat/plugins/proto"
	"github.com/commucat/commucat/plugins/sdk"
	"github.com/commucat/commucat/transports/tcp"
)

// Modes lists the fault modes and what each does.
var Modes = map[string]string{
	"good":         "no fault: plain TCP",
	"hangdial":     "Dial never returns, whatever its context",
	"hanglisten":   "Listen never returns, whatever its context",
	"garbagectl":   "Dial writes garbage on the control socket first",
	"garbagegrpc":  "Dial answers with a 2 MiB address, past the host's gRPC limit",
	"badaddr":      "Dial answers with a 4 KiB address",
	"stderrjunk":   "writes malformed and oversized log lines, then serves plain TCP",
	"oldproto":     "speaks plugin protocol version 99",
	"proto1":       "speaks only plugin protocol version 1 (from before datagrams), and would offer datagrams",
	"garbagedgram": "offers datagrams, and Dial writes a malformed record on the flow's datagram socket",
	"emptydgram":   "offers datagrams, and Dial writes an empty record, then a good one, on the flow's datagram socket",
	"garbagering":  "Dial writes an impossible position into every flow ring it has mapped",
	"hangconfig":   "the server side hangs in Configure while the file named by $" + HangEnv + " exists",
	"wrongname":    "describes itself under another name",
	"badpublic":    "the server side publishes a parameter whose value holds a line break",
}

// HangEnv names the environment variable of mode hangconfig.
const HangEnv = "PLUGINTEST_HANG_WHILE"

// Main runs the plugin in the mode its binary's name selects.
func Main() {
	mode := strings.TrimPrefix(baseName(os.Args[0]), proto.BinaryPrefix)
	if _, ok := Modes[mode]; !ok {
		fmt.Fprintf(os.Stderr, "plugintest: unknown mode %q\n", mode)
		os.Exit(2)
	}
	switch mode {
	case "oldproto":
		serveOldProtocol()
		return
	case "stderrjunk":
		junk()
	case "proto1":
		// The handshake then picks version 1, the newest both sides speak,
		// as with a plugin built with a version 1 SDK.
		os.Setenv("PLUGIN_PROTOCOL_VERSIONS", "1")
	case "garbagedgram", "emptydgram":
		var st syscall.Stat_t
		if err := syscall.Fstat(3, &st); err == nil {
			controlIno = st.Ino
		}
	}
	name := mode
	if mode == "wrongname" {
		name = "somebody-else"
	}
	f := faulty{mode: mode}
	sdk.Serve(sdk.Plugin{
		Name:     name,
		Version:  "test",
		Datagram: mode == "proto1" || mode == "garbagedgram" || mode == "emptydgram",
		Client:   func(p sdk.Params) (sdk.Transport, error) { return f.wrap(tcp.Factory(p)) },
		Server: func(p sdk.Params, dir string) (sdk.Transport, sdk.Params, error) {
			if mode == "hangconfig" {
				if _, err := os.Stat(os.Getenv(HangEnv)); err == nil {
					select {} // the fault
				}
			}
			t, pub, err := tcp.ServerFactory(p, dir)
			if mode == "badpublic" {
				pub = sdk.Params{"note": "two\nlines"}
			}
			w, werr := f.wrap(t, err)
			return w, pub, werr
		},
	})
}

func baseName(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}

// faulty is a TCP transport with a fault.
type faulty struct {
	mode string
	tcp  sdk.Transport
}

func (f faulty) wrap(t sdk.Transport, err error) (sdk.Transport, error) {
	if err != nil {
		return nil, err
	}
	f.tcp = t
	return &f, nil
}

func (f *faulty) Name() string { return f.mode }

func (f *faulty) Dial(ctx context.Context, addr string) (net.Conn, error) {
	switch f.mode {
	case "hangdial":
		select {}
	case "garbagectl":
		if fd := controlFD(); fd >= 0 {
			syscall.Write(fd, []byte("this is not a control message")) //nolint:errcheck // the fault
		}
	}
	c, err := f.tcp.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	switch f.mode {
	case "garbagegrpc":
		return addrConn{c, strings.Repeat("x", 2<<20)}, nil
	case "badaddr":
		return addrConn{c, strings.Repeat("x", 4<<10)}, nil
	case "garbagedgram":
		if fd := datagramFD(); fd >= 0 {
			syscall.Write(fd, []byte{0xff, 'x'}) //nolint:errcheck // the fault: a record of an unknown kind
		}
		return dgramConn{c}, nil
	case "garbagering":
		breakRings()
	case "emptydgram":
		if fd := datagramFD(); fd >= 0 {
			syscall.Write(fd, nil)                    //nolint:errcheck // the fault: an empty record
			syscall.Write(fd, []byte{0x00, 'o', 'k'}) //nolint:errcheck // a good one after it
		}
		return dgramConn{c}, nil
	}
	return c, nil
}

// controlIno is the control socket's inode, to tell it from the datagram
// sockets, which are SOCK_SEQPACKET too.
var controlIno uint64

// datagramFD finds the datagram socket of the flow being dialled: the one
// SOCK_SEQPACKET socket of the process but the control socket (the test
// opens one flow at a time).
func datagramFD() int {
	for fd := 3; fd < 1024; fd++ {
		var st syscall.Stat_t
		if t, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TYPE); err != nil || t != syscall.SOCK_SEQPACKET {
			continue
		}
		if syscall.Fstat(fd, &st) == nil && st.Ino != controlIno {
			return fd
		}
	}
	return -1
}

// breakRings writes, in every flow ring the process has mapped, a
// position beyond the ring's size as the tail of the ring towards the
// host: a plugin that scribbles on shared memory.
func breakRings() {
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return
	}
	mem, err := os.OpenFile("/proc/self/mem", os.O_RDWR, 0)
	if err != nil {
		return
	}
	defer mem.Close()
	tail := binary.NativeEndian.AppendUint64(nil, 1<<40)
	for _, line := range strings.Split(string(maps), "\n") {
		if !strings.Contains(line, "/memfd:commucat-flow") {
			continue
		}
		span, _, _ := strings.Cut(line, " ")
		lo, hi, _ := strings.Cut(span, "-")
		start, err1 := strconv.ParseInt(lo, 16, 64)
		end, err2 := strconv.ParseInt(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		mem.WriteAt(tail, start+(end-start)/2) //nolint:errcheck // the fault: the tail of the ring towards the host
	}
}

// dgramConn offers datagrams it never carries.
type dgramConn struct{ net.Conn }

func (dgramConn) SendDatagram([]byte) error { return nil }

func (dgramConn) ReceiveDatagram(ctx context.Context) ([]byte, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (dgramConn) MaxDatagramSize() int { return 1000 }

func (f *faulty) Listen(ctx context.Context, addr string) (sdk.Listener, error) {
	if f.mode == "hanglisten" {
		select {}
	}
	return f.tcp.Listen(ctx, addr)
}

// controlFD finds the control socket (the SDK keeps a duplicate of the
// inherited descriptor): the one SOCK_SEQPACKET socket of the process.
func controlFD() int {
	for fd := 3; fd < 1024; fd++ {
		if t, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TYPE); err == nil && t == syscall.SOCK_SEQPACKET {
			return fd
		}
	}
	return -1
}

// addrConn reports an oversized remote address.
type addrConn struct {
	net.Conn
	addr string
}

func (c addrConn) RemoteAddr() net.Addr { return fakeAddr(c.addr) }

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }

// junk writes lines to standard error that a careless log parser would
// choke on.
func junk() {
	lines := []string{
		`{"@message": 5, "@level": {"x": 1}}`,
		`{"@message": "typed", "@level": "error", "@timestamp": 7, "n": [1, 2, 3]}`,
		`{"@message":`,
		"\x00\xff\xfe not even text",
		"panic: not really",
		strings.Repeat("long ", 20000),
	}
	for _, l := range lines {
		fmt.Fprintln(os.Stderr, l)
	}
	for i := range 2000 {
		fmt.Fprintf(os.Stderr, "flood line %d\n", i)
	}
}

// serveOldProtocol serves go-plugin's handshake for protocol version 99.
func serveOldProtocol() {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: plugin.HandshakeConfig{
			ProtocolVersion:  99,
			MagicCookieKey:   proto.MagicCookieKey,
			MagicCookieValue: proto.MagicCookieValue,
		},
		Plugins:    plugin.PluginSet{proto.PluginName: nothing{}},
		GRPCServer: plugin.DefaultGRPCServer,
	})
}

// nothing is a gRPC plugin that serves nothing.
type nothing struct{ plugin.NetRPCUnsupportedPlugin }

func (nothing) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error { return nil }

func (nothing) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, nil
}
