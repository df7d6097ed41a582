package configs

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/commucat/commucat/core/router"
)

func TestDefaultsValid(t *testing.T) {
	c, err := LoadGateway("")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range c.Listen {
		if !strings.HasPrefix(l.Address, "127.0.0.1:") {
			t.Fatalf("default listen %+v is not on loopback", l)
		}
	}
	if len(c.Listen) < 6 {
		t.Fatalf("default listen = %+v, want tcp on loopback", c.Listen)
	}
	if c.Inbox.TTL.D() != 168*time.Hour || c.Inbox.Quota != 1000 {
		t.Fatalf("default inbox = %+v", c.Inbox)
	}
}

func TestOverride(t *testing.T) {
	c, err := ParseGateway([]byte("inbox:\n  quota: 5\nlisten:\n  - transport: tcp\n    address: 127.0.0.1:0\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Inbox.Quota != 5 || c.Inbox.TTL.D() != 168*time.Hour {
		t.Fatalf("inbox = %+v, want quota 5 and the default ttl", c.Inbox)
	}
	if len(c.Listen) != 1 || c.Listen[0].Address != "127.0.0.1:0" {
		t.Fatalf("listen = %+v", c.Listen)
	}
	c, err = ParseGateway([]byte("log:\n  format: json\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Listen) < 6 || c.Listen[0].Address != "127.0.0.1:7447" {
		t.Fatalf("listen without override = %+v, want the default", c.Listen)
	}
}

func TestRouterConfig(t *testing.T) {
	c, err := LoadGateway("")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.RouterConfig(); got.MaxPaths != 3 || got.ResumeWindow != 5*time.Minute || got.Scheduler != router.ByClass || got.FEC != router.FECAuto || got.NoDatagrams {
		t.Fatalf("default router config = %+v", got)
	}
	c, err = ParseGateway([]byte("router:\n  max_paths: 2\n  resume_window: 90s\n  scheduler: redundant\n  fec: always\n  datagrams: false\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.RouterConfig(); got.MaxPaths != 2 || got.ResumeWindow != 90*time.Second || got.Scheduler != router.Redundant || got.FEC != router.FECAlways || !got.NoDatagrams {
		t.Fatalf("router config = %+v", got)
	}
}

func TestFieldErrors(t *testing.T) {
	tests := []struct {
		name, yaml, field string
	}{
		{"unknown top", "inbx:\n  ttl: 1h\n", "inbx"},
		{"unknown nested", "inbox:\n  tll: 1h\n", "inbox.tll"},
		{"unknown in list", "listen:\n  - transport: tcp\n    adress: x\n", "listen[0].adress"},
		{"bad address", "listen:\n  - transport: tcp\n    address: nope\n", "listen[0].address"},
		{"empty transport", "listen:\n  - address: 127.0.0.1:1\n", "listen[0].transport"},
		{"negative quota", "inbox:\n  quota: -1\n", "inbox.quota"},
		{"zero ttl", "inbox:\n  ttl: 0s\n", "inbox.ttl"},
		{"level", "log:\n  level: loud\n", "log.level"},
		{"idle", "session:\n  keepalive: 1m\n  idle_timeout: 30s\n", "session.idle_timeout"},
		{"no listen", "listen: []\n", "listen"},
		{"scheduler", "router:\n  scheduler: fastest\n", "router.scheduler"},
		{"fec", "router:\n  fec: sometimes\n", "router.fec"},
		{"max paths", "router:\n  max_paths: 9\n", "router.max_paths"},
		{"no paths", "router:\n  max_paths: 0\n", "router.max_paths"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseGateway([]byte(tc.yaml))
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("error = %v, want a FieldError for %s", err, tc.field)
			}
		})
	}
	if _, err := ParseGateway([]byte("inbox:\n  ttl: soon\n")); err == nil || !strings.Contains(err.Error(), "duration") {
		t.Fatalf("bad duration error = %v", err)
	}
}

func FuzzParseGateway(f *testing.F) {
	f.Add(DefaultGatewayYAML())
	f.Add([]byte("listen:\n  - transport: tcp\n    address: 127.0.0.1:0\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseGateway(b)
		if err == nil && c.Validate() != nil {
			t.Fatal("ParseGateway returned an invalid config without error")
		}
	})
}

func TestValueErrorsNameTheField(t *testing.T) {
	tests := []struct{ yaml, field string }{
		{"inbox:\n  ttl: 5\n", "inbox.ttl"},
		{"inbox:\n  quota: many\n", "inbox.quota"},
		{"handshake:\n  rate: fast\n", "handshake.rate"},
		{"router:\n  datagrams: maybe\n", "router.datagrams"},
		{"inbox:\n  quota: 1.5\n", "inbox.quota"},
		{"listen:\n  - transport: [tcp]\n    address: 127.0.0.1:1\n", "listen[0].transport"},
	}
	for _, tc := range tests {
		_, err := ParseGateway([]byte(tc.yaml))
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || fe.Line == 0 {
			t.Errorf("%q: error = %v, want a FieldError for %s with a line", tc.yaml, err, tc.field)
		}
	}
}
