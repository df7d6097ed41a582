package plugins

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/plugins/proto"
)

// TestNotUTF8 checks that text gRPC cannot carry is refused or mended
// instead of ending in a plugin cut off for a protocol violation: a
// parameter or an address that is not valid UTF-8 (an invite can carry
// one), and a plugin's error message longer than proto.MaxMessage, which
// used to be cut inside a character.
func TestNotUTF8(t *testing.T) {
	dir := pluginDir(t, map[string]string{"good": faultyBin(t)})
	h, r := startHost(t, HostConfig{}, dir)
	old := currentGen(t, h, "good")
	alive := func(what string) {
		t.Helper()
		select {
		case <-old.dead:
			t.Fatalf("%s: plugin cut off: %v", what, old.reason)
		default:
		}
	}

	_, err := r.New("good", transport.Params{"pin": "\xff"})
	if !errors.Is(err, transport.ErrBadParams) || strings.Contains(err.Error(), "\xff") {
		t.Errorf("New with a parameter that is not UTF-8 = %q; want transport.ErrBadParams, without the value", err)
	}
	alive("parameter")
	if _, _, err := r.NewServer("good", transport.Params{"\xfe": "x"}, t.TempDir()); !errors.Is(err, transport.ErrBadParams) {
		t.Errorf("NewServer with a key that is not UTF-8 = %v; want transport.ErrBadParams", err)
	}
	alive("key")

	client, server := serverAndClient(t, r, "good")
	ctx := testCtx(t)
	if _, err := client.Dial(ctx, "\xff:1"); !errors.Is(err, transport.ErrBadParams) {
		t.Errorf("Dial to an address that is not UTF-8 = %v; want transport.ErrBadParams", err)
	}
	if _, err := server.Listen(ctx, "127.0.0.1:\xff"); !errors.Is(err, transport.ErrBadParams) {
		t.Errorf("Listen on an address that is not UTF-8 = %v; want transport.ErrBadParams", err)
	}
	alive("address")

	// The plugin's dial error quotes the address: 6,000 bytes of
	// two-byte characters, at both parities of the cut.
	for pad := range 2 {
		addr := strings.Repeat("x", pad) + strings.Repeat("é", 3000) + ":1"
		_, err := client.Dial(ctx, addr)
		if err == nil || errors.Is(err, transport.ErrBadParams) {
			t.Fatalf("Dial to a long address = %v; want the plugin's own error", err)
		}
		alive("long error message")
	}
	if err := h.Health(ctx, "good"); err != nil {
		t.Errorf("Health after it all: %v", err)
	}
}

func TestClip(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"", ""},
		{"plain", "plain"},
		{"a\xffb", "a\uFFFDb"},
		{strings.Repeat("é", 3000), strings.Repeat("é", proto.MaxMessage/2)},
		{"x" + strings.Repeat("é", 3000), "x" + strings.Repeat("é", proto.MaxMessage/2-1)},
		{strings.Repeat("a", proto.MaxMessage+1), strings.Repeat("a", proto.MaxMessage)},
	} {
		got := proto.Clip(tt.in)
		if got != tt.want || !utf8.ValidString(got) || len(got) > proto.MaxMessage {
			t.Errorf("Clip(%.20q…) = %.20q… (%d bytes); want %.20q… (%d bytes)", tt.in, got, len(got), tt.want, len(tt.want))
		}
	}
}
