package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestGatewayPluginRefused checks that a plugin that cannot start takes
// only its own endpoint down: the gateway serves its other transports and
// logs why, and a gateway left with no endpoint says why instead of
// calling the transport unknown.
func TestGatewayPluginRefused(t *testing.T) {
	state := filepath.Join(t.TempDir(), "gw")
	plugins := filepath.Join(state, "plugins")
	if err := os.MkdirAll(plugins, 0o700); err != nil {
		t.Fatal(err)
	}
	crashy := filepath.Join(plugins, "commucat-transport-crashy")
	if err := os.WriteFile(crashy, []byte("#!/bin/sh\necho boom >&2\nexit 2\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	// Only the state directory's folder, not bin/plugins beside the test.
	if err := savePluginSettings(state, pluginSettings{Dirs: []string{plugins}}); err != nil {
		t.Fatal(err)
	}
	gateway := func(t *testing.T, yaml string) (out, logs *syncBuffer, stop func() error, exited chan struct{}) {
		t.Helper()
		config := filepath.Join(t.TempDir(), "gateway.yaml")
		if err := os.WriteFile(config, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		root := newRoot()
		out, logs = new(syncBuffer), new(syncBuffer)
		root.SetOut(out)
		root.SetErr(logs)
		root.SetArgs([]string{"gateway", "--state", state, "--config", config})
		// exited is closed when the gateway has returned result.
		var result error
		exited = make(chan struct{})
		go func() {
			result = root.ExecuteContext(ctx)
			close(exited)
		}()
		stop = sync.OnceValue(func() error {
			cancel()
			select {
			case <-exited:
				return result
			case <-time.After(time.Minute):
				return errors.New("the gateway did not stop within a minute")
			}
		})
		t.Cleanup(func() { stop() }) //nolint:errcheck // reported by the test itself
		return out, logs, stop, exited
	}

	const noOps = "ops:\n  listen: \"\"\n" // not the default port, which may be taken
	t.Run("with another endpoint", func(t *testing.T) {
		out, logs, stop, exited := gateway(t, "listen:\n  - transport: tcp\n    address: 127.0.0.1:0\n  - transport: crashy\n    address: 127.0.0.1:0\n"+noOps)
		for deadline := time.Now().Add(time.Minute); !strings.Contains(out.String(), "make an invite with"); time.Sleep(20 * time.Millisecond) {
			select {
			case <-exited:
				t.Fatalf("the gateway exited: %v\n%s\n%s", stop(), out.String(), logs.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("the gateway did not finish starting within a minute:\n%s\n%s", out.String(), logs.String())
			}
		}
		if err := stop(); err != nil {
			t.Errorf("gateway: %v", err)
		}
		if o := out.String(); !strings.Contains(o, "listening: tcp ") || strings.Contains(o, "listening: crashy") || !strings.Contains(o, "not serving: crashy (") {
			t.Errorf("tcp not served, or the refused plugin's endpoint announced or not said to be missing:\n%s", o)
		}
		if l := logs.String(); !strings.Contains(l, "endpoint not served") || !strings.Contains(l, "crashy") {
			t.Errorf("no log line says why crashy is not served:\n%s", l)
		}
	})
	t.Run("alone", func(t *testing.T) {
		_, logs, stop, _ := gateway(t, "listen:\n  - transport: crashy\n    address: 127.0.0.1:0\n"+noOps)
		err := stop()
		if err == nil || !strings.Contains(err.Error(), "commucat-transport-crashy refused") || strings.Contains(err.Error(), "unknown transport") {
			t.Errorf("gateway with only a refused plugin = %v; want its refusal\n%s", err, logs.String())
		}
	})
}
