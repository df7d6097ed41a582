package invite

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func sample() Invite {
	var gw [32]byte
	for i := range gw {
		gw[i] = byte(i)
	}
	sig := make(ed25519.PublicKey, 32)
	for i := range sig {
		sig[i] = byte(100 + i)
	}
	return Invite{
		Gateway: gw,
		Signing: sig,
		Padding: "AQAAAAAAAAAAAAAAAAAAAA",
		Endpoints: []Endpoint{
			{Transport: "tcp", Addr: "127.0.0.1:7443"},
			{Transport: "quic", Addr: "[::1]:7444", Params: map[string]string{"pin": "ab+/=;&c", "alpn": "h3"}},
		},
		Code:    "s3cret-code_XYZ",
		Expires: time.Unix(1_800_000_000, 0),
	}
}

func TestRoundTrip(t *testing.T) {
	in := sample()
	line := in.String()
	if !strings.HasPrefix(line, "commucat://invite?v=1&") || strings.ContainsAny(line, " \n") {
		t.Fatalf("line not one URL: %q", line)
	}
	got, err := Parse(line)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(in, got); diff != "" {
		t.Fatalf("round trip (-want +got):\n%s", diff)
	}
	noCode := in
	noCode.Code, noCode.Expires = "", time.Time{}
	got, err = Parse(noCode.String())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(noCode, got); diff != "" {
		t.Fatalf("round trip without code (-want +got):\n%s", diff)
	}
}

func TestParseErrors(t *testing.T) {
	good := sample().String()
	tests := []struct {
		name, line, want string
	}{
		{"empty", "", "does not start"},
		{"scheme", "https://x", "does not start"},
		{"version", strings.Replace(good, "v=1", "v=9", 1), "version"},
		{"gw short", strings.Replace(good, "gw=AAECAwQF", "gw=AAEC", 1), "gw:"},
		{"unknown field", good + "&zz=1", "unknown field"},
		{"repeated field", good + "&v=1", "given 2 times"},
		{"no endpoint", "commucat://invite?v=1&gw=" + b64(make([]byte, 32)) + "&sig=" + b64(make([]byte, 32)), "no endpoint"},
		{"bad endpoint", strings.Replace(good, "tcp%40127.0.0.1%3A7443", "tcp127", 1), "transport@host:port"},
		{"bad exp", strings.Replace(good, "exp=1800000000", "exp=x", 1), "exp"},
		{"short pad", strings.Replace(good, "pad=AQAAAAAAAAAAAAAAAAAAAA", "pad=AQAA", 1), "pad: not a padding-profile seed"},
		{"pad not base64url", strings.Replace(good, "pad=AQAAAAAAAAAAAAAAAAAAAA", "pad=AQAAAAAAAAAAAAAAAAAA%2B%2B", 1), "pad:"},
		{"empty pad", strings.Replace(good, "pad=AQAAAAAAAAAAAAAAAAAAAA", "pad=", 1), "pad:"},
		{"too long", "commucat://invite?" + strings.Repeat("a", MaxLen), "longer"},
		{"cut off in an escape", good[:strings.Index(good, "%40")+2], "cut off"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.line)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse error = %v, want ErrInvalid containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("error reveals the code: %v", err)
			}
		})
	}
}

func TestLogValueRedactsCode(t *testing.T) {
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("invite", "invite", sample())
	if strings.Contains(buf.String(), "s3cret") {
		t.Fatalf("log reveals the code: %s", buf.String())
	}
}

func FuzzParse(f *testing.F) {
	f.Add(sample().String())
	f.Add("commucat://invite?v=1")
	f.Fuzz(func(t *testing.T, line string) {
		in, err := Parse(line)
		if err != nil {
			return
		}
		again, err := Parse(in.String())
		if err != nil {
			t.Fatalf("re-parse of %q: %v", in.String(), err)
		}
		if diff := cmp.Diff(in, again); diff != "" {
			t.Fatalf("re-parse differs:\n%s", diff)
		}
	})
}
