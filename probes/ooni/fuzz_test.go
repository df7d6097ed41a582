package ooni_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/commucat/commucat/probes/ooni"
)

// maybeBinarySeeds are bytes a server or a middlebox sends that reach a
// report through MaybeBinary (headers, bodies) or an error's text
// (Classify): block pages quoting the user's address, addresses with
// ports, percent-encoded IPv6 addresses, clock times, MAC addresses and
// hashes, binary bodies.
var maybeBinarySeeds = map[string]string{
	"blockpage":  "<html><title>Access denied</title><p>Your IP 203.0.113.7 is blocked by order of the court.</p></html>",
	"header":     "for=198.51.100.23:51234;proto=https, for=\"[2001:db8::17]:4711\"",
	"clock":      "Date: Thu, 26 Nov 2026 04:12:02 GMT; refresh at 12:30",
	"binary":     "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\xff\xfe 10.0.0.1 \xc0",
	"error":      "read tcp 192.0.2.1:50312->[fe80::1%eth0]:443: read: connection reset by peer",
	"malformed":  "net/http: HTTP/1.x transport connection broken: malformed HTTP response \"\\x00\\x01 fe80::a:b:c\"",
	"urlencoded": "Location: /block?u=http%3A%2F%2F%5B2001%3ADB8%3A%3A17%5D%3A8080%2F&host%3D2001%3adb8%3a%3a1%26src=%5bfe80%3a%3a1%25eth0%5d%3a443",
	"v6forms":    "XFF: 2001:0db8:85a3:0000:0000:8a2e:0370:7334, ::ffff:203.0.113.7, 64:ff9b::198.51.100.4; net 2001:db8:1234:5678::/64",
	"hexish":     "mac 00:1a:2b:3c:4d:5e at 12:34:56.789 sha256:e3b0c44298fc1c149afbf4c8996fb924 std::vector Foo::Bar %3A%3A",
}

// TestWriteFuzzSeeds rewrites testdata/fuzz/FuzzMaybeBinary from
// maybeBinarySeeds under -update.
func TestWriteFuzzSeeds(t *testing.T) {
	if !*update {
		t.Skip("run with -update to rewrite the seeds")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzMaybeBinary")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, s := range maybeBinarySeeds {
		content := fmt.Sprintf("go test fuzz v1\nstring(%q)\n", s)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzMaybeBinary checks that no bytes from the network panic the report
// encoder or the failure classifier, that an encoded MaybeBinary is valid
// JSON that decodes to the scrubbed value, that scrubbing leaves nothing
// more to scrub, and that an unknown failure carries the scrubbed text.
func FuzzMaybeBinary(f *testing.F) {
	for _, s := range maybeBinarySeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := json.Marshal(ooni.MaybeBinary(s))
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		if !json.Valid(b) {
			t.Fatalf("marshal wrote invalid JSON %q", b)
		}
		var back ooni.MaybeBinary
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("unmarshal %q: %v", b, err)
		}
		scrubbed := ooni.Scrub(s)
		if string(back) != scrubbed {
			t.Fatalf("round trip: got %q, want %q", back, scrubbed)
		}
		if again := ooni.Scrub(scrubbed); again != scrubbed {
			t.Fatalf("Scrub(%q) = %q leaves an address: Scrub again = %q", s, scrubbed, again)
		}
		if f := ooni.Classify(errors.New(s)); strings.HasPrefix(f, ooni.FailureUnknownPrefix) && f != ooni.FailureUnknownPrefix+scrubbed {
			t.Fatalf("Classify(%q) = %q, want the scrubbed text", s, f)
		}
	})
}
