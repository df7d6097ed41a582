package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/commucat/commucat/backends/tactics"
	"github.com/commucat/commucat/core/invite"
	"github.com/commucat/commucat/core/router"
	"github.com/commucat/commucat/probes"
)

func TestNetPolicyVerdicts(t *testing.T) {
	eps := []invite.Endpoint{
		{Transport: "quic", Addr: "gw:443"},
		{Transport: "tcp", Addr: "gw:80"},
		{Transport: "websocket", Addr: "gw:443"},
	}
	tests := []struct {
		name     string
		verdicts []probes.Verdict
		want     []string
	}{
		{name: "none", want: []string{"quic", "tcp", "websocket"}},
		{name: "blocked last", verdicts: []probes.Verdict{{Transport: "quic", Addr: "gw:443", State: probes.StateBlocked}},
			want: []string{"tcp", "websocket", "quic"}},
		{name: "ok first, throttled after unknown", verdicts: []probes.Verdict{
			{Transport: "quic", Addr: "gw:443", State: probes.StateThrottled},
			{Transport: "websocket", Addr: "gw:443", State: probes.StateOK},
		}, want: []string{"websocket", "tcp", "quic"}},
		{name: "network-wide and SNI verdicts ignored", verdicts: []probes.Verdict{
			{Network: "udp", Addr: "gw:443", State: probes.StateBlocked},
			{Transport: "tcp", Addr: "gw:80", ServerName: "x.example", State: probes.StateBlocked},
			{Transport: "tcp", Addr: "gw:80", State: probes.StateUnknown},
		}, want: []string{"quic", "tcp", "websocket"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			n := openNetPolicy(dir, newRegistry(nil), slog.New(slog.DiscardHandler))
			for _, v := range tt.verdicts {
				n.Verdict(v)
			}
			n.close()
			// A new run starts from the saved states.
			m := openNetPolicy(dir, newRegistry(nil), slog.New(slog.DiscardHandler))
			defer m.close()
			var got []string
			for _, e := range m.order(eps) {
				got = append(got, e.Transport)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("order after reload (-want +got):\n%s", diff)
			}
		})
	}
}

// TestNetPolicyProbe probes a live and a dead loopback endpoint and
// checks the verdicts land in the policy.
func TestNetPolicyProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	n := openNetPolicy("", newRegistry(nil), slog.New(slog.DiscardHandler))
	live := invite.Endpoint{Transport: "tcp", Addr: ln.Addr().String()}
	n.probe([]invite.Endpoint{live, {Transport: "tcp", Addr: deadAddr}})
	n.wait()
	n.close()
	if st, _ := n.pol.State("tcp", live.Addr, time.Now()); st != router.StateOK {
		t.Errorf("live endpoint: %s, want ok", st)
	}
	if st, _ := n.pol.State("tcp", deadAddr, time.Now()); st == router.StateOK {
		t.Errorf("dead endpoint: %s, want not ok", st)
	}
}

func TestNetPolicyReportAndTactics(t *testing.T) {
	dir := t.TempDir()
	n := openNetPolicy(dir, newRegistry(nil), slog.New(slog.DiscardHandler))
	at := time.Now()
	n.Verdict(probes.Verdict{Transport: "quic", Addr: "a:443", State: probes.StateBlocked, At: at})
	n.Verdict(probes.Verdict{Transport: "quic", Addr: "b:443", State: probes.StateOK, At: at.Add(time.Second)})
	n.Verdict(probes.Verdict{Transport: "tcp", Addr: "a:80", State: probes.StateThrottled, At: at})
	want := tactics.Payload{Verdicts: []tactics.Verdict{
		{Transport: "quic", State: tactics.StateOK}, {Transport: "tcp", State: tactics.StateThrottled},
	}}
	if diff := cmp.Diff(want, n.report()); diff != "" {
		t.Errorf("report (-want +got):\n%s", diff)
	}
	n.onTactics([]string{"tcp", "quic"})
	n.close()
	m := openNetPolicy(dir, newRegistry(nil), slog.New(slog.DiscardHandler))
	defer m.close()
	if diff := cmp.Diff([]string{"tcp", "quic"}, m.pol.Preference()); diff != "" {
		t.Errorf("preference after reload (-want +got):\n%s", diff)
	}
}

// TestTacticsEndToEnd runs the real binary: a gateway collecting probe
// reports and a client sharing its probes; the client's state directory
// ends up with the policy from its probes and the gateway's tactics.
func TestTacticsEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary; skipped with -short")
	}
	bin := buildBinary(t)
	tmp := t.TempDir()
	gwDir, cDir := filepath.Join(tmp, "gw"), filepath.Join(tmp, "client")
	config := filepath.Join(tmp, "gateway.yaml")
	yaml := fmt.Sprintf("listen:\n  - transport: tcp\n    address: 127.0.0.1:%d\n  - transport: websocket\n    address: 127.0.0.1:%d\nops:\n  listen: 127.0.0.1:%d\nlog:\n  level: debug\n  format: json\n",
		freePort(t), freePort(t), freePort(t))
	if err := os.WriteFile(config, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	o := new(outputs)
	gw := start(t, o, bin, "gateway", "gateway", "--state", gwDir, "--config", config, "--collect-probes")
	gw.waitFor(t, "make an invite", 30*time.Second)
	defer stopGateway(t, gw)
	inv := strings.TrimSpace(mustRun(t, o, bin, "invite", "invite", "--state", gwDir))
	mustRun(t, o, bin, "register", "register", "--invite", inv, "--name", "alice", "--state", cDir)
	l := start(t, o, bin, "listen", "listen", "--state", cDir, "--for", "20s", "--share-probes", "--log-level", "debug")
	l.waitFor(t, "tactics received", 20*time.Second)
	l.cmd.Process.Signal(os.Interrupt)
	l.wait(t, 10*time.Second)

	var saved savedTactics
	b, err := os.ReadFile(filepath.Join(cDir, tacticsFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &saved); err != nil {
		t.Fatal(err)
	}
	slices.Sort(saved.Order)
	if diff := cmp.Diff([]string{"tcp", "websocket"}, saved.Order); diff != "" {
		t.Errorf("tactics (-want +got):\n%s", diff)
	}
	var es []router.PolicyEntry
	if b, err = os.ReadFile(filepath.Join(cDir, policyFile)); err == nil {
		err = json.Unmarshal(b, &es)
	}
	if err != nil || len(es) != 2 || es[0].State != router.StateOK || es[1].State != router.StateOK {
		t.Errorf("policy.json: %+v (%v), want tcp and websocket ok", es, err)
	}
}
