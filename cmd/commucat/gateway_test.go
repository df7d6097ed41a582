package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/commucat/commucat/core/invite"
)

// TestGatewayOpsAddressTaken starts the gateway with its ops address
// taken: it must fail before it announces or publishes any endpoint, so
// that invites made afterwards do not point at a gateway that never ran.
func TestGatewayOpsAddressTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir := filepath.Join(t.TempDir(), "gw")
	config := filepath.Join(t.TempDir(), "gateway.yaml")
	yaml := "listen:\n  - transport: tcp\n    address: 127.0.0.1:0\nops:\n  listen: " + taken.Addr().String() + "\n"
	if err := os.WriteFile(config, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	root := newRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs([]string{"gateway", "--state", dir, "--config", config})
	err = root.ExecuteContext(context.Background())
	if err == nil || !strings.Contains(err.Error(), "ops: listen") {
		t.Fatalf("err %v, want the ops address refused", err)
	}
	if strings.Contains(out.String(), "listening:") {
		t.Errorf("the gateway announced endpoints it does not serve:\n%s", out.String())
	}
	if _, err := os.Stat(filepath.Join(dir, endpointsFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s: %v, want no such file", endpointsFile, err)
	}
}

// TestInviteUnreadable: commucat invite refuses to print an invite that
// no client would accept (here, more endpoints than an invite carries)
// instead of handing out a line that fails at the client; with the
// endpoints a gateway publishes it prints one that parses.
func TestInviteUnreadable(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "gw")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	writeEndpoints := func(n int) {
		t.Helper()
		eps := make([]invite.Endpoint, n)
		for i := range eps {
			eps[i] = invite.Endpoint{Transport: "tcp", Addr: fmt.Sprintf("127.0.0.1:%d", 20000+i)}
		}
		b, err := json.Marshal(eps)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, endpointsFile), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeEndpoints(17)
	out, err := runRoot("invite", "--state", dir)
	if err == nil || !strings.Contains(err.Error(), "not one a client can read") || !strings.Contains(err.Error(), "too many endpoints (17 > 16)") {
		t.Fatalf("invite with 17 endpoints: err %v, output %q; want it refused", err, out)
	}
	if strings.Contains(out, "://invite") {
		t.Errorf("an unreadable invite was printed: %q", out)
	}
	writeEndpoints(2)
	out, err = runRoot("invite", "--state", dir)
	if err != nil {
		t.Fatalf("invite with 2 endpoints: %v", err)
	}
	line, _, _ := strings.Cut(out, "\n") // then the note on stderr
	in, err := invite.Parse(line)
	if err != nil || len(in.Endpoints) != 2 {
		t.Fatalf("the printed invite: %+v, %v", in, err)
	}
}
