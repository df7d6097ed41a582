package handshake

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// knownErr reports whether err is one of the documented handshake errors.
func knownErr(err error) bool {
	for _, e := range []error{ErrAuth, ErrMalformed, ErrStale, ErrReplay, ErrTooLarge, ErrRateLimited} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// fuzzConfigs are fixed configs for the fuzz targets.
func fuzzConfigs(t testing.TB) (ClientConfig, ServerConfig) {
	t.Helper()
	return newConfigs(t, "fuzz")
}

// fuzzPlain caps a fuzz input used as a plaintext: with wrap set, the
// targets encrypt the input correctly for the step, so the parsers behind
// the AEAD are reached.
func fuzzPlain(data []byte) []byte {
	if len(data) > MaxMessageSize {
		return data[:MaxMessageSize]
	}
	return data
}

// FuzzServerMessage1 feeds arbitrary message 1 bytes to a Responder: it
// must not panic, must fail only with documented errors, and whatever it
// accepts must lead to a message 2.
func FuzzServerMessage1(f *testing.F) {
	c, s := fuzzConfigs(f)
	good, err := runHandshake(f, c, s)
	if err != nil {
		f.Fatal(err)
	}
	r := newRawClient(f, c.Static, c.ServerPublic)
	f.Add(good.m1, false)
	f.Add(plain1(Version, fixedNow, r.ek, 0, nil), true)
	f.Add(plain1(Version, fixedNow, r.ek, 2, []byte{9, 9}), true)
	f.Add([]byte{}, false)
	f.Add([]byte{}, true)
	f.Fuzz(func(t *testing.T, data []byte, wrap bool) {
		s := s
		s.Replay = NewReplayCache(0)
		resp, err := NewResponder(s)
		if err != nil {
			t.Fatal(err)
		}
		msg := data
		if wrap {
			msg = newRawClient(t, c.Static, c.ServerPublic).write(t, fuzzPlain(data))
		}
		err = resp.ReadMessage1(msg)
		if err != nil {
			if !knownErr(err) {
				t.Fatalf("undocumented error: %v", err)
			}
			return
		}
		if m2, err := resp.WriteMessage2(); err != nil || len(m2) < msg2Min {
			t.Fatalf("accepted message 1 but message 2 failed: %v", err)
		}
	})
}

// FuzzClientMessage2 feeds arbitrary message 2 bytes to an Initiator.
func FuzzClientMessage2(f *testing.F) {
	c, s := fuzzConfigs(f)
	good, err := runHandshake(f, c, s)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good.m2)
	f.Add(good.m2[:msg2Min-1])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, _ := fuzzConfigs(t)
		ini, err := NewInitiator(c)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ini.WriteMessage1(); err != nil {
			t.Fatal(err)
		}
		if err := ini.ReadMessage2(data); err != nil {
			if !knownErr(err) {
				t.Fatalf("undocumented error: %v", err)
			}
			return
		}
		if !bytes.Equal(data, good.m2) {
			t.Fatalf("accepted a message 2 that is not the gateway's")
		}
	})
}

// FuzzServerMessage3 feeds arbitrary message 3 bytes (or, with wrap, an
// arbitrary correctly encrypted plaintext) to a Responder after message 2.
func FuzzServerMessage3(f *testing.F) {
	c, s := fuzzConfigs(f)
	c.Payload = []byte("payload")
	good, err := runHandshake(f, c, s)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good.m3, false)
	f.Add([]byte{0, 2, 'h', 'i', 0, 1, 7}, true)
	f.Add([]byte{0, 0, 0, 0}, true)
	f.Add([]byte{0xff, 0xff}, true)
	f.Fuzz(func(t *testing.T, data []byte, wrap bool) {
		s := s
		s.Replay = NewReplayCache(0)
		resp, err := NewResponder(s)
		if err != nil {
			t.Fatal(err)
		}
		var r *rawClient
		m1 := good.m1
		if wrap {
			r = newRawClient(t, c.Static, c.ServerPublic)
			m1 = r.write(t, plain1(Version, fixedNow, r.ek, 0, nil))
		}
		if err := resp.ReadMessage1(m1); err != nil {
			t.Fatal(err)
		}
		m2, err := resp.WriteMessage2()
		if err != nil {
			t.Fatal(err)
		}
		msg := data
		if wrap {
			r.read2(t, m2)
			msg = r.write(t, fuzzPlain(data))
		}
		res, err := resp.ReadMessage3(msg)
		if err != nil {
			if !knownErr(err) {
				t.Fatalf("undocumented error: %v", err)
			}
			return
		}
		if res.PeerStatic != c.Static.Public() {
			t.Fatal("accepted message 3 with the wrong peer key")
		}
		if wrap && !bytes.Equal(res.Payload, data[2:2+len(res.Payload)]) {
			t.Fatal("payload is not the bytes after the length")
		}
	})
}

// FuzzReadMessage reads frames from arbitrary bytes: no panic, every frame
// is 1..MaxMessageSize bytes, and re-encoding the frames reproduces the
// bytes consumed.
func FuzzReadMessage(f *testing.F) {
	var two bytes.Buffer
	WriteMessage(&two, []byte("hello"))
	WriteMessage(&two, bytes.Repeat([]byte{1}, 300))
	f.Add(two.Bytes())
	f.Add([]byte{0x10, 0x00})
	f.Add([]byte{0x10, 0x01, 0})
	f.Add([]byte{0, 0})
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		var again bytes.Buffer
		for {
			consumed := len(data) - r.Len()
			msg, err := ReadMessage(r)
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrMalformed) {
					t.Fatalf("undocumented error: %v", err)
				}
				if !bytes.Equal(again.Bytes(), data[:consumed]) {
					t.Fatal("re-encoded frames differ from the input")
				}
				return
			}
			if len(msg) < 1 || len(msg) > MaxMessageSize {
				t.Fatalf("frame of %d bytes", len(msg))
			}
			if err := WriteMessage(&again, msg); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// FuzzParseCertificate parses arbitrary bytes as a certificate: no panic,
// refusals are *CertificateError, a structurally valid certificate
// re-encodes to the same body, and an accepted one re-signs to the same
// bytes (Ed25519 is deterministic, so the encoding is canonical).
func FuzzParseCertificate(f *testing.F) {
	k := mustSigning(f, "fuzz signer")
	good, err := testCert(f).Sign(k)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add([]byte{1})
	f.Add([]byte{})
	pub := k.Public()
	f.Fuzz(func(t *testing.T, data []byte) {
		if c, body, _, err := decodeCertificate(data); err == nil {
			again, err := c.appendBody(nil)
			if err != nil {
				t.Fatalf("decoded certificate does not encode: %v", err)
			}
			if !bytes.Equal(again, body) {
				t.Fatal("decode(encode) is not the identity")
			}
		} else if !errors.Is(err, ErrCertificate) {
			t.Fatalf("undocumented error: %v", err)
		}
		c, err := ParseCertificate(data, pub, fixedNow)
		if err != nil {
			var ce *CertificateError
			if !errors.As(err, &ce) {
				t.Fatalf("not a *CertificateError: %v", err)
			}
			return
		}
		again, err := c.Sign(k)
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("accepted certificate does not re-sign to the same bytes: %v", err)
		}
	})
}

// FuzzParseKeyFile parses arbitrary key file contents.
func FuzzParseKeyFile(f *testing.F) {
	f.Add(formatKeyFile(staticFileHeader, bytes.Repeat([]byte{7}, 32)))
	f.Add([]byte(staticFileHeader + "\r\n" + "AAAA\r\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		secret, err := parseKeyFile(data, staticFileHeader, 32)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("undocumented error: %v", err)
			}
			return
		}
		again, err := parseKeyFile(formatKeyFile(staticFileHeader, secret), staticFileHeader, 32)
		if err != nil || !bytes.Equal(again, secret) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// FuzzParsePublic parses arbitrary invite key strings: what is accepted is
// exactly the canonical encoding.
func FuzzParsePublic(f *testing.F) {
	f.Add(FormatPublic(mustStatic(f, "fuzz public").Public()))
	f.Add("")
	f.Add("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParsePublic(s)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("undocumented error: %v", err)
			}
			return
		}
		if FormatPublic(k) != s {
			t.Fatalf("accepted a non-canonical encoding %q", s)
		}
	})
}

// TestWriteFuzzSeeds writes the seed corpora in testdata/fuzz from the
// real encoders when run with -update.
func TestWriteFuzzSeeds(t *testing.T) {
	if !*update {
		t.Skip("run with -update to rewrite testdata/fuzz")
	}
	c, s := fuzzConfigs(t)
	c.Payload = []byte("payload")
	tr, err := runHandshake(t, c, s)
	if err != nil {
		t.Fatal(err)
	}
	r := newRawClient(t, c.Static, c.ServerPublic)
	k := mustSigning(t, "fuzz signer")
	cert, err := testCert(t).Sign(k)
	if err != nil {
		t.Fatal(err)
	}
	var frames bytes.Buffer
	WriteMessage(&frames, tr.m1)
	WriteMessage(&frames, tr.m2)
	WriteMessage(&frames, tr.m3)
	seeds := map[string]map[string][]any{
		"FuzzServerMessage1": {
			"message1":         {tr.m1, false},
			"plaintext":        {plain1(Version, fixedNow, r.ek, 0, nil), true},
			"plaintext-padded": {plain1(Version, fixedNow, r.ek, 3, []byte{1, 2, 3}), true},
			"bad-version":      {plain1(2, fixedNow, r.ek, 0, nil), true},
		},
		"FuzzClientMessage2": {"message2": {tr.m2}, "short": {tr.m2[:100]}},
		"FuzzServerMessage3": {
			"message3":  {tr.m3, false},
			"plaintext": {[]byte{0, 2, 'h', 'i', 0, 1, 7}, true},
			"overrun":   {[]byte{0, 9, 'h', 'i', 0, 0}, true},
		},
		"FuzzReadMessage": {"handshake": {frames.Bytes()}, "too-large": {[]byte{0x10, 0x01}}, "zero": {[]byte{0, 0}}},
		"FuzzParseCertificate": {
			"certificate": {cert},
			"truncated":   {cert[:len(cert)-10]},
			"version-2":   {append([]byte{2}, cert[1:]...)},
		},
		"FuzzParseKeyFile": {
			"static": {formatKeyFile(staticFileHeader, bytes.Repeat([]byte{7}, 32))},
			"crlf":   {[]byte(staticFileHeader + "\r\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\r\n")},
		},
		"FuzzParsePublic": {"key": {FormatPublic(c.ServerPublic)}, "padded": {FormatPublic(c.ServerPublic) + "="}},
	}
	for target, files := range seeds {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, args := range files {
			var b bytes.Buffer
			b.WriteString("go test fuzz v1\n")
			for _, a := range args {
				switch a := a.(type) {
				case []byte:
					fmt.Fprintf(&b, "[]byte(%s)\n", strconv.Quote(string(a)))
				case string:
					fmt.Fprintf(&b, "string(%s)\n", strconv.Quote(a))
				case bool:
					fmt.Fprintf(&b, "bool(%t)\n", a)
				default:
					t.Fatalf("seed type %T", a)
				}
			}
			if err := os.WriteFile(filepath.Join(dir, name), b.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
