package plugins

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestCloseDrains checks that Close lets open connections finish before
// it stops the plugins: a connection open when Close begins still
// carries bytes, and Close returns once it is closed; with connections
// left open, it stops the plugins after DrainTimeout and says so.
func TestCloseDrains(t *testing.T) {
	t.Run("closed in time", func(t *testing.T) {
		h, r := startHost(t, HostConfig{DrainTimeout: time.Hour}, pluginDir(t, map[string]string{"good": faultyBin(t)}))
		c, _, _ := echoConn(t, r, "good")
		roundTrip(t, c, "before")
		closed := make(chan error, 1)
		go func() { closed <- h.Close() }()
		for deadline := time.Now().Add(hangBound); !h.isClosed(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("Close did not begin")
			}
		}
		roundTrip(t, c, "while Close waits") // the plugin still runs
		select {
		case err := <-closed:
			t.Fatalf("Close returned with a connection open: %v", err)
		default:
		}
		c.Close()
		within(t, "Close after the last connection closed", func() {
			if err := <-closed; err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	})
	t.Run("left open", func(t *testing.T) {
		var logs bytes.Buffer // slogTo locks it; read once Close has stopped everything
		h, r := startHostLog(t, HostConfig{DrainTimeout: 100 * time.Millisecond}, pluginDir(t, map[string]string{"good": faultyBin(t)}), slogTo(&logs))
		c, _, _ := echoConn(t, r, "good")
		defer c.Close()
		within(t, "Close with a connection left open", func() {
			if err := h.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		if !strings.Contains(logs.String(), "connections still open; stopping the plugins anyway") {
			t.Errorf("Close did not say it stopped the plugins with connections open:\n%s", logs.String())
		}
	})
}
