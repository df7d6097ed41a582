package plugins

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/core/transport/transporttest"
)

// buildExample builds the third-party example plugin from a copy of its
// module, pointed at this checkout, and returns the binary's path.
func buildExample(t *testing.T) string {
	t.Helper()
	root := repoRoot(t)
	src := filepath.Join(root, "plugins", "examples", "tlsplain")
	work := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if e.Name() == "go.mod" {
			b = []byte(strings.ReplaceAll(string(b), "=> ../../..", "=> "+root))
		}
		if err := os.WriteFile(filepath.Join(work, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(t.TempDir(), "commucat-transport-tlsplain")
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = work
	// Offline, from the module cache; go.sum may lag behind the root's.
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod -buildvcs=false", "GOPROXY=off", "GOSUMDB=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

// TestExamplePlugin builds plugins/examples/tlsplain, runs it through the
// host, checks its description and runs the conformance suite on it.
func TestExamplePlugin(t *testing.T) {
	bin := buildExample(t)
	h, r := startHost(t, HostConfig{}, pluginDir(t, map[string]string{"tlsplain": bin}))
	infos, err := h.Discover()
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 1 || infos[0].Err != nil {
		t.Fatalf("Discover = %+v", infos)
	}
	in := infos[0]
	if in.Version != "0.1.0" || in.Capabilities != (Capabilities{Stream: true, Client: true, Server: true}) || len(in.Params) != 2 {
		t.Errorf("Info = %+v", in)
	}
	if _, err := r.New("tlsplain", transport.Params{"pin": "short"}); !isBadParams(err) {
		t.Errorf("New with a bad pin: %v; want transport.ErrBadParams", err)
	}
	client, server := serverAndClient(t, r, "tlsplain")
	transporttest.Run(t, func(t *testing.T) (transport.Transport, transport.Transport, string) {
		return client, server, "127.0.0.1:0"
	})
}
