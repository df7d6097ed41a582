package plugins

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/transports/reality"
	"github.com/commucat/commucat/transports/tcp"
)

// The Link benchmarks put the two ends of a link in two processes, as
// they are on a real link: the benchmark's process dials, and a peer
// process (this test binary, started with peerEnv) listens and answers.
// Against the transport in-process at both ends, they measure one plugin
// on the client (plugin-client) and one plugin at each end (plugin).
//
// The Transport benchmarks run both ends in one process, where a round
// trip needs no wake-up of another process at all; no real link is like
// that, so they overstate what a plugin adds.

const (
	// peerEnv makes the test binary a benchmark peer for the transport
	// it names.
	peerEnv = "COMMUCAT_PLUGINS_BENCH_PEER"
	// peerPluginsEnv, if set, makes the peer run the transport as a
	// plugin from the folder it names.
	peerPluginsEnv = "COMMUCAT_PLUGINS_BENCH_PEER_PLUGINS"
	// pluginEnvEnv, if set, is a space-separated list of KEY=value
	// added to the environment of every plugin the Link benchmarks
	// start, at both ends (HostConfig.Env): for example GOMAXPROCS=1.
	pluginEnvEnv = "COMMUCAT_PLUGINS_BENCH_ENV"
)

// benchHostConfig is the HostConfig of the Link benchmarks' hosts.
func benchHostConfig() HostConfig {
	return HostConfig{Env: strings.Fields(os.Getenv(pluginEnvEnv))}
}

// What a peer does with a connection, by its first byte.
const (
	peerEcho    = 'e' // echo every byte
	peerDiscard = 'd' // read the 8-byte count that follows, then that many bytes, then answer one byte
)

// peerHello is the line a peer prints once it listens.
type peerHello struct {
	Addr   string           `json:"addr,omitempty"`
	Params transport.Params `json:"params,omitempty"`
	Err    string           `json:"err,omitempty"`
}

// runPeer is the peer process's main: it serves the named transport on
// loopback until its standard input ends.
func runPeer(name, plugins string) {
	enc := json.NewEncoder(os.Stdout)
	if err := servePeer(name, plugins, func(addr string, pub transport.Params) {
		enc.Encode(peerHello{Addr: addr, Params: pub}) //nolint:errcheck // the parent sees no line
	}); err != nil {
		enc.Encode(peerHello{Err: err.Error()}) //nolint:errcheck // as above
		os.Exit(1)
	}
	os.Exit(0)
}

func servePeer(name, plugins string, ready func(addr string, pub transport.Params)) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := inprocessRegistry()
	if plugins != "" {
		cfg := benchHostConfig()
		cfg.Dirs = []string{plugins}
		h, err := NewHost(cfg, nil)
		if err != nil {
			return err
		}
		defer h.Close()
		if _, err := h.Discover(); err != nil {
			return err
		}
		reg = new(transport.Registry)
		if err := h.Register(reg); err != nil {
			return err
		}
	}
	var params transport.Params
	if name == reality.Name {
		cover := newCover()
		defer cover.Close()
		params = realityParams(cover.Listener.Addr().String())
	}
	dir, err := os.MkdirTemp("", "commucat-bench-peer-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	server, pub, err := reg.NewServer(name, params, dir)
	if err != nil {
		return fmt.Errorf("NewServer(%s): %w", name, err)
	}
	defer transport.Close(server) //nolint:errcheck // the peer is done
	ln, err := server.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	ready(ln.Addr().String(), pub)
	go func() {
		io.Copy(io.Discard, os.Stdin) //nolint:errcheck // any end of stdin ends the peer
		cancel()
		ln.Close()
	}()
	for {
		c, err := ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept: %w", err)
		}
		go answerPeer(ctx, c)
	}
}

// answerPeer serves one connection of a peer.
func answerPeer(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	var mode [1]byte
	if _, err := io.ReadFull(c, mode[:]); err != nil {
		return
	}
	switch mode[0] {
	case peerEcho:
		io.Copy(c, c) //nolint:errcheck // ends with the connection
	case peerDiscard:
		var n [8]byte
		if _, err := io.ReadFull(c, n[:]); err != nil {
			return
		}
		if _, err := io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint64(n[:]))); err != nil {
			return
		}
		c.Write(mode[:])       //nolint:errcheck // the client sees it missing
		io.Copy(io.Discard, c) //nolint:errcheck // until the client closes
	}
}

// startPeer starts a peer process for the named transport, in-process in
// the peer or, if plugins is not empty, as a plugin from that folder, and
// returns its address and the parameters a client needs. The peer ends
// with b.
func startPeer(b *testing.B, name, plugins string) (string, transport.Params) {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), peerEnv+"="+name, peerPluginsEnv+"="+plugins)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	// One goroutine reads the peer's first line, then the rest until
	// the peer exits, and waits for it.
	hello := make(chan peerHello, 1)
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		br := bufio.NewReader(out)
		var h peerHello
		line, err := br.ReadBytes('\n')
		if err == nil {
			err = json.Unmarshal(line, &h)
		}
		if err != nil {
			h.Err = fmt.Sprintf("no hello from the peer: %v", err)
		}
		hello <- h
		io.Copy(io.Discard, br) //nolint:errcheck // until the peer exits
		cmd.Wait()              //nolint:errcheck // its end is all that matters
	}()
	b.Cleanup(func() {
		in.Close()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill() //nolint:errcheck // it may have just exited
			<-exited
		}
	})
	var h peerHello
	select {
	case h = <-hello:
	case <-time.After(time.Minute):
		b.Fatal("the peer did not listen within a minute")
	}
	if h.Err != "" {
		b.Fatalf("peer for %s: %s", name, h.Err)
	}
	return h.Addr, h.Params
}

// dialPeer dials a peer at addr over client and asks for mode.
func dialPeer(b *testing.B, client transport.Transport, addr string, mode byte) net.Conn {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte{mode}); err != nil {
		b.Fatal(err)
	}
	return c
}

// linkGoodput moves b.N writes of 64 KiB to the peer and waits until the
// peer has read them all.
func linkGoodput(b *testing.B, client transport.Transport, addr string) {
	c := dialPeer(b, client, addr, peerDiscard)
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(buf)))
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(b.N)*uint64(len(buf)))
	if _, err := c.Write(n[:]); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := io.ReadFull(c, n[:1]); err != nil {
		b.Fatalf("the peer's answer: %v", err)
	}
	b.StopTimer()
}

// linkRoundTrip measures 64-byte requests echoed by the peer.
func linkRoundTrip(b *testing.B, client transport.Transport, addr string) {
	roundTrips(b, dialPeer(b, client, addr, peerEcho))
}

// BenchmarkLinkGoodput is BenchmarkTransportGoodput with the two ends in
// two processes.
func BenchmarkLinkGoodput(b *testing.B) { benchLink(b, linkGoodput) }

// BenchmarkLinkRoundTrip is BenchmarkTransportRoundTrip with the two ends
// in two processes.
func BenchmarkLinkRoundTrip(b *testing.B) { benchLink(b, linkRoundTrip) }

// benchLink runs bench for tcp spliced through a plugin (the floor of
// what a plugin adds: plugintest's good mode, which moves every byte
// through the plugin process) and every camouflage transport: in-process
// at both ends, a plugin on the client, and a plugin at both ends.
func benchLink(b *testing.B, bench func(b *testing.B, client transport.Transport, addr string)) {
	inproc := inprocessRegistry()
	bins := map[string]string{"good": buildPlugin(b, "faulty", "./plugins/plugintest/cmd/faulty")}
	rows := []struct{ name, inproc, plugin string }{{"tcp-spliced", tcp.Name, "good"}}
	for _, c := range camouflage {
		bins[c.name] = buildPlugin(b, c.name, "./cmd/commucat-transport-"+c.name)
		rows = append(rows, struct{ name, inproc, plugin string }{c.name, c.name, c.name})
	}
	dir := pluginDir(b, bins)
	_, plug := startHost(b, benchHostConfig(), dir)
	for _, row := range rows {
		b.Run(row.name, func(b *testing.B) {
			for _, side := range []struct {
				name       string
				client     *transport.Registry
				clientName string
				peerName   string
				plugins    string // the peer's plugin folder; empty: in-process
			}{
				{"inprocess", inproc, row.inproc, row.inproc, ""},
				{"plugin-client", plug, row.plugin, row.inproc, ""},
				{"plugin", plug, row.plugin, row.plugin, dir},
			} {
				addr, pub := startPeer(b, side.peerName, side.plugins)
				client, err := side.client.New(side.clientName, pub)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { transport.Close(client) })
				b.Run(side.name, func(b *testing.B) { bench(b, client, addr) })
			}
		})
	}
}
