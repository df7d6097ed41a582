package pt

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	ptlib "gitlab.torproject.org/tpo/anti-censorship/pluggable-transports/goptlib"
)

// fakePT makes the test binary a PT, behaving as mode says, and returns
// its exit code. The method it serves is TOR_PT_CLIENT_TRANSPORTS or
// TOR_PT_SERVER_TRANSPORTS.
func fakePT(mode string) int {
	method := os.Getenv("TOR_PT_CLIENT_TRANSPORTS") + os.Getenv("TOR_PT_SERVER_TRANSPORTS")
	say := func(format string, a ...any) { fmt.Printf(format+"\n", a...) }
	waitStdin := func() int {
		io.Copy(io.Discard, os.Stdin) //nolint:errcheck // EOF or an error both mean stop
		return 0
	}
	switch mode {
	case "client":
		// A working client PT over goptlib: its SOCKS server grants
		// every target but "refused.invalid" and then writes back the
		// target and the arguments it received, then echoes.
		if _, err := ptlib.ClientSetup(nil); err != nil {
			return 1
		}
		if os.Getenv("TOR_PT_PROXY") != "" {
			ptlib.ProxyDone()
		}
		ln, err := ptlib.ListenSocks("tcp", "127.0.0.1:0")
		if err != nil {
			ptlib.CmethodError(method, err.Error())
			return 1
		}
		go func() {
			for {
				c, err := ln.AcceptSocks()
				if err != nil {
					return
				}
				go serveFakeSocks(c)
			}
		}()
		ptlib.Log(ptlib.LogSeverityNotice, "env "+strings.Join(ptEnv(), " "))
		ptlib.ReportVersion("fake-pt", "1.0")
		ptlib.Cmethod(method, ln.Version(), ln.Addr())
		ptlib.CmethodsDone()
		fmt.Fprintln(os.Stderr, "fake pt: serving")
		ptlib.Log(ptlib.LogSeverityWarning, "after set-up")
		return waitStdin()
	case "server":
		// A server PT that publishes ARGS and forwards each connection,
		// unchanged, to the host's ORPort or Extended ORPort. Files in
		// its state directory change it: "refuse" makes it fail its
		// set-up, "hang" makes it hang in its set-up (ignoring SIGTERM),
		// and "secret" holds another value for the "secret" it publishes.
		state := os.Getenv("TOR_PT_STATE_LOCATION")
		if _, err := os.Stat(filepath.Join(state, "hang")); err == nil {
			signal.Ignore(syscall.SIGTERM)
			say("VERSION 1")
			blockForever()
		}
		info, err := ptlib.ServerSetup(nil)
		if err != nil {
			return 1
		}
		if _, err := os.Stat(filepath.Join(state, "refuse")); err == nil {
			ptlib.SmethodError(method, "refused by the test")
			return 1
		}
		secret := "a=b,c\\d"
		if b, err := os.ReadFile(filepath.Join(state, "secret")); err == nil {
			secret = string(b)
		}
		ptlib.Log(ptlib.LogSeverityNotice, "env "+strings.Join(ptEnv(), " "))
		for _, b := range info.Bindaddrs {
			ln, err := net.ListenTCP("tcp", b.Addr)
			if err != nil {
				ptlib.SmethodError(b.MethodName, err.Error())
				continue
			}
			defer ln.Close()
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go forwardFakeOR(&info, c, b.MethodName)
				}
			}()
			args := ptlib.Args{}
			args.Add("secret", secret)
			if v, ok := b.Options.Get("echo"); ok {
				args.Add("echo", v)
			}
			ptlib.SmethodArgs(b.MethodName, ln.Addr(), args)
		}
		ptlib.SmethodsDone()
		return waitStdin()
	case "env-error":
		say("VERSION 1")
		say("ENV-ERROR no cows available")
		return 1
	case "version-error":
		say("VERSION-ERROR no-version")
		return 1
	case "version-2":
		say("VERSION 2")
		return waitStdin()
	case "method-error":
		say("VERSION 1")
		say("CMETHOD-ERROR other not this one")
		say("CMETHOD-ERROR %s no rocks available", method)
		say("CMETHODS DONE")
		return waitStdin()
	case "no-method":
		say("VERSION 1")
		say("CMETHOD other socks5 127.0.0.1:1")
		say("CMETHODS DONE")
		return waitStdin()
	case "no-version":
		say("CMETHOD %s socks5 127.0.0.1:1", method)
		say("CMETHODS DONE")
		return waitStdin()
	case "malformed-smethod":
		say("VERSION 1")
		say("SMETHOD other 127.0.0.1:1 ARGS:cert=other-method-secret")
		say("SMETHOD %s ARGS:cert=malformed-line-secret", method) // no address
		return waitStdin()
	case "malformed":
		say("VERSION 1")
		say("CMETHOD %s socks5", method)
		return waitStdin()
	case "socks4":
		say("VERSION 1")
		say("CMETHOD %s socks4 127.0.0.1:1", method)
		say("CMETHODS DONE")
		return waitStdin()
	case "no-proxy-done":
		say("VERSION 1")
		say("CMETHOD %s socks5 127.0.0.1:1", method)
		say("CMETHODS DONE")
		return waitStdin()
	case "proxy-error":
		say("VERSION 1")
		say("PROXY-ERROR SOCKS 4 upstream proxies unsupported")
		return 1
	case "garbage":
		// Garbage of every kind, then a valid set-up.
		os.Stdout.Write([]byte("\x00\xff\xfe garbage\n"))
		os.Stdout.Write([]byte(strings.Repeat("A", 3*maxLine) + "\n"))
		say("not a keyword!")
		say("SOMETHING-NEW with args")
		say("LOG SEVERITY=notice MESSAGE=\"unterminated")
		say("STATUS =")
		say("VERSION 1")
		say("CMETHOD %s socks5 127.0.0.1:1 ARGS:x=y OPT-ARGS:z=w", method)
		say("CMETHODS DONE")
		return waitStdin()
	case "exit":
		fmt.Fprintln(os.Stderr, "fake pt: first words")
		fmt.Fprintln(os.Stderr, "fatal: boom")
		return 3
	case "hang":
		// Never finishes its set-up, and ignores stdin and SIGTERM: only
		// SIGKILL ends it.
		signal.Ignore(syscall.SIGTERM)
		say("VERSION 1")
		blockForever()
	case "orphan":
		// Leaves a child that holds its stdout and stderr and ignores
		// SIGTERM, and exits when its stdin closes.
		self, err := os.Executable()
		if err != nil {
			return 1
		}
		child := exec.Command(self)
		child.Env = []string{fakeEnv + "=sleep"}
		child.Stdout, child.Stderr = os.Stdout, os.Stderr
		if err := child.Start(); err != nil {
			return 1
		}
		say("VERSION 1")
		say("CMETHOD %s socks5 127.0.0.1:1", method)
		say("CMETHODS DONE")
		return waitStdin()
	case "sleep":
		signal.Ignore(syscall.SIGTERM)
		blockForever()
	}
	fmt.Fprintf(os.Stderr, "fake pt: unknown mode %q\n", mode)
	return 2
}

// blockForever blocks the fake PT until it is killed.
func blockForever() {
	for {
		time.Sleep(time.Hour)
	}
}

// ptEnv lists the PT's environment, sorted.
func ptEnv() []string {
	env := os.Environ()
	slices.Sort(env)
	return env
}

// forwardFakeOR carries one connection of the fake server PT to the
// host's ORPort (or Extended ORPort, with c's address) and back.
func forwardFakeOR(info *ptlib.ServerInfo, c net.Conn, method string) {
	defer c.Close()
	or, err := ptlib.DialOr(info, c.RemoteAddr().String(), method)
	if err != nil {
		return
	}
	defer or.Close()
	done := make(chan struct{}, 2)
	go func() { io.Copy(or, c); done <- struct{}{} }() //nolint:errcheck // either end closing ends both
	go func() { io.Copy(c, or); done <- struct{}{} }() //nolint:errcheck // as above
	<-done
}

// serveFakeSocks answers one SOCKS connection of the fake client PT.
func serveFakeSocks(c *ptlib.SocksConn) {
	defer c.Close()
	if strings.HasPrefix(c.Req.Target, "refused.invalid:") {
		c.RejectReason(ptlib.SocksRepConnectionRefused) //nolint:errcheck // closing anyway
		return
	}
	if err := c.Grant(nil); err != nil {
		return
	}
	keys := make([]string, 0, len(c.Req.Args))
	for k := range c.Req.Args {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "target=%s", c.Req.Target)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%s", k, strings.Join(c.Req.Args[k], "|"))
	}
	b.WriteByte('\n')
	if _, err := io.WriteString(c, b.String()); err != nil {
		return
	}
	io.Copy(c, c) //nolint:errcheck // echo until the client leaves
}
