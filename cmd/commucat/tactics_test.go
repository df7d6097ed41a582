package main

import (
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

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
			n := openNetPolicy(dir, newRegistry(), slog.New(slog.DiscardHandler))
			for _, v := range tt.verdicts {
				n.Verdict(v)
			}
			n.close()
			// A new run starts from the saved states.
			m := openNetPolicy(dir, newRegistry(), slog.New(slog.DiscardHandler))
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
	n := openNetPolicy("", newRegistry(), slog.New(slog.DiscardHandler))
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
