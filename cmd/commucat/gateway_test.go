package main

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
