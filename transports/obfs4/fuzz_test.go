package obfs4

import (
	"bytes"
	"context"
	cryptorand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"gitlab.com/yawning/obfs4.git/common/drbg"
	"gitlab.com/yawning/obfs4.git/common/ntor"

	"github.com/commucat/commucat/core/transport"
)

// FuzzParams checks that Factory never panics, rejects with ErrBadParams,
// and gives back the parameters it accepted.
func FuzzParams(f *testing.F) {
	_, pub, err := ServerFactory(nil, f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(pub["cert"], pub["iat-mode"])
	f.Add(pub["cert"]+"==", "1")
	f.Add(validCert, "2")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, cert, mode string) {
		p := transport.Params{"cert": cert, "iat-mode": mode}
		tr, err := Factory(p)
		if err != nil {
			if !errors.Is(err, transport.ErrBadParams) {
				t.Fatalf("Factory(%q, %q): %v, want ErrBadParams", cert, mode, err)
			}
			return
		}
		if got := tr.(*Transport).Params(); got["cert"] != cert || got["iat-mode"] != mode {
			t.Fatalf("Factory(%q, %q).Params() = %v", cert, mode, got)
		}
	})
}

// libParseState reads a state file the way the library's
// serverStateFromArgs does when it loads one, with its own parsers, but
// without touching files.
func libParseState(b []byte) (stateJSON, error) {
	var st stateJSON
	if err := json.Unmarshal(b, &st); err != nil {
		return st, err
	}
	if _, err := ntor.NodeIDFromHex(st.NodeID); err != nil {
		return st, err
	}
	if _, err := ntor.KeypairFromHex(st.PrivateKey); err != nil {
		return st, err
	}
	if _, err := drbg.SeedFromHex(st.DrbgSeed); err != nil {
		return st, err
	}
	if st.IATMode < 0 || st.IATMode > 2 {
		return st, fmt.Errorf("invalid iat-mode '%d'", st.IATMode)
	}
	return st, nil
}

// FuzzState checks that checkState never panics, accepts exactly the state
// files the library's parsers accept, and accepts a state it re-encoded.
// (TestBadState and TestObfs4proxyState run the library on files.)
func FuzzState(f *testing.F) {
	golden, err := os.ReadFile(filepath.Join("testdata", StateFile))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(golden)
	f.Add(golden[:len(golden)-10])
	f.Add([]byte(`{"node-id":"","private-key":"","drbg-seed":"","iat-mode":0}`))
	f.Add([]byte("null"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ours := checkState(b)
		if ours != nil && !errors.Is(ours, ErrBadState) {
			t.Fatalf("checkState: %v, want ErrBadState", ours)
		}
		st, theirs := libParseState(b)
		if (ours == nil) != (theirs == nil) {
			t.Fatalf("checkState: %v; the library's parsers: %v", ours, theirs)
		}
		if ours != nil {
			return
		}
		again, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkState(again); err != nil {
			t.Fatalf("checkState rejects the state re-encoded: %v", err)
		}
		st2, err := libParseState(again)
		if err != nil || st2 != st {
			t.Fatalf("re-encoded state reads back as %v, %v", st2.NodeID, err)
		}
	})
}

// fuzzServer is one server for a whole fuzz run: its replay filter and
// keys stay, as on a gateway.
func fuzzServer(f *testing.F) (client, server *Transport) {
	f.Helper()
	return newServerIn(f, f.TempDir(), nil)
}

// recordFlight returns the first flight of a real client to server.
func recordFlight(f *testing.F, client, server *Transport) []byte {
	f.Helper()
	cEnd, sEnd := net.Pipe()
	defer cEnd.Close()
	defer sEnd.Close()
	rec := &recorder{Conn: cEnd}
	done := make(chan error, 1)
	go func() {
		c, err := server.serverHandshake(sEnd)
		if err == nil {
			_, err = io.Copy(io.Discard, c) // until the client closes
		}
		done <- err
	}()
	c, err := client.pipeHandshake(context.Background(), rec)
	if err != nil {
		f.Fatal(err)
	}
	c.Close()
	if err := <-done; err != nil {
		f.Fatal(err)
	}
	return rec.written()
}

// FuzzServerHandshake feeds a client's first flight to the server
// handshake: it must never panic, and a flight it rejects gets no byte in
// answer.
func FuzzServerHandshake(f *testing.F) {
	client, server := fuzzServer(f)
	flight := recordFlight(f, client, server)
	f.Add(flight) // replayed by every run after the first
	f.Add(flight[:len(flight)/2])
	junk := make([]byte, 9000)
	cryptorand.Read(junk)
	f.Add(junk)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		cEnd, sEnd := net.Pipe()
		defer cEnd.Close()
		type result struct {
			c   *conn
			err error
		}
		done := make(chan result, 1)
		go func() {
			c, err := server.serverHandshake(sEnd)
			done <- result{c, err}
		}()
		answered := make(chan int, 1)
		go func() {
			n, _ := io.Copy(io.Discard, cEnd)
			answered <- int(n)
		}()
		cEnd.SetWriteDeadline(time.Now().Add(10 * time.Second))
		cEnd.Write(in) // the server may stop reading
		cEnd.Close()
		r := <-done
		n := <-answered
		if r.err == nil {
			r.c.Close()
			return
		}
		if n > 0 {
			t.Fatalf("a failed handshake (%v) answered %d bytes", r.err, n)
		}
	})
}

// FuzzClientHandshake feeds a server's answer to the client handshake: it
// must never panic, and must fail on anything but a real answer.
func FuzzClientHandshake(f *testing.F) {
	client, _ := fuzzServer(f)
	junk := make([]byte, 9000)
	cryptorand.Read(junk)
	f.Add(junk)
	f.Add(junk[:100])
	f.Add(bytes.Repeat([]byte{0}, 200))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		cEnd, sEnd := net.Pipe()
		defer sEnd.Close()
		go func() {
			defer sEnd.Close()
			sEnd.SetDeadline(time.Now().Add(10 * time.Second))
			buf := make([]byte, 8192)
			sEnd.Read(buf) // the client's first flight
			sEnd.Write(in)
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := client.pipeHandshake(ctx, cEnd)
		if err == nil {
			c.Close()
			t.Fatalf("the client accepted %d bytes that are no server's answer", len(in))
		}
	})
}
