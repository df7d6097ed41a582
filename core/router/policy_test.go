package router

import (
	"encoding/json"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestPolicyBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := NewPolicy(PolicyConfig{BlockMin: time.Second, BlockMax: 5 * time.Second})
		var waits []time.Duration
		for range 5 {
			p.Observe(Observation{Transport: "quic", State: StateBlocked})
			st, until := p.State("quic", "gw:443", time.Now())
			if st != StateBlocked {
				t.Fatalf("state = %s, want blocked", st)
			}
			waits = append(waits, time.Until(until))
			time.Sleep(time.Until(until))
			if st, _ := p.State("quic", "gw:443", time.Now()); st != StateUnknown {
				t.Fatalf("after the block: state = %s, want unknown (due for a try)", st)
			}
		}
		want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
		if diff := cmp.Diff(want, waits); diff != "" {
			t.Errorf("block durations (-want +got):\n%s", diff)
		}
		p.Observe(Observation{Transport: "quic", State: StateBlocked, RetryAfter: time.Minute})
		if _, until := p.State("quic", "", time.Now()); time.Until(until) != time.Minute {
			t.Errorf("RetryAfter: blocked for %s, want 1m", time.Until(until))
		}
		p.Observe(Observation{Transport: "quic", State: StateOK})
		p.Observe(Observation{Transport: "quic", State: StateBlocked})
		if _, until := p.State("quic", "", time.Now()); time.Until(until) != time.Second {
			t.Errorf("after OK the backoff restarts: blocked for %s, want 1s", time.Until(until))
		}
	})
}

func TestPolicyOrder(t *testing.T) {
	eps := []Endpoint{
		{Transport: "quic", Addr: "a:443"},
		{Transport: "tcp", Addr: "a:80"},
		{Transport: "websocket", Addr: "a:443"},
		{Transport: "reality", Addr: "b:443"},
	}
	tests := []struct {
		name   string
		obs    []Observation
		prefer []string
		want   []int
	}{
		{name: "nothing known", want: []int{0, 1, 2, 3}},
		{name: "blocked skipped", obs: []Observation{{Transport: "quic", State: StateBlocked}}, want: []int{1, 2, 3}},
		{name: "blocked by address", obs: []Observation{{Transport: "tcp", Addr: "a:80", State: StateBlocked}}, want: []int{0, 2, 3}},
		{name: "other address not blocked", obs: []Observation{{Transport: "tcp", Addr: "b:80", State: StateBlocked}}, want: []int{0, 1, 2, 3}},
		{name: "by state", obs: []Observation{
			{Transport: "quic", State: StateThrottled},
			{Transport: "reality", State: StateOK},
		}, want: []int{3, 1, 2, 0}},
		{name: "all blocked: all in order", obs: []Observation{
			{Transport: "quic", State: StateBlocked}, {Transport: "tcp", State: StateBlocked},
			{Transport: "websocket", State: StateBlocked}, {Transport: "reality", State: StateBlocked},
		}, want: []int{0, 1, 2, 3}},
		{name: "preference", prefer: []string{"reality", "tcp"}, want: []int{3, 1, 0, 2}},
		{name: "state before preference", prefer: []string{"reality"}, obs: []Observation{
			{Transport: "reality", State: StateThrottled},
		}, want: []int{0, 1, 2, 3}},
		{name: "newer observation wins", obs: []Observation{
			{Transport: "quic", Addr: "a:443", State: StateBlocked, At: time.Now().Add(-time.Second)},
			{Transport: "quic", State: StateOK},
		}, want: []int{0, 1, 2, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPolicy(PolicyConfig{})
			for _, o := range tt.obs {
				p.Observe(o)
			}
			p.SetPreference(tt.prefer)
			if diff := cmp.Diff(tt.want, p.Order(eps, time.Now())); diff != "" {
				t.Errorf("Order (-want +got):\n%s", diff)
			}
		})
	}
	var nilPolicy *Policy
	if diff := cmp.Diff([]int{0, 1, 2, 3}, nilPolicy.Order(eps, time.Now())); diff != "" {
		t.Errorf("nil policy Order (-want +got):\n%s", diff)
	}
}

func TestPolicyPenalty(t *testing.T) {
	p := NewPolicy(PolicyConfig{ThrottlePenalty: 3})
	p.Observe(Observation{Transport: "kcp", State: StateThrottled})
	if got := p.Penalty("kcp", "x:1"); got != 4 {
		t.Errorf("throttled penalty = %v, want 4", got)
	}
	if got := p.Penalty("tcp", "x:1"); got != 1 {
		t.Errorf("unknown penalty = %v, want 1", got)
	}
}

func TestPolicyEntriesRoundTrip(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	p := NewPolicy(PolicyConfig{MaxEntries: 3})
	p.Observe(Observation{Transport: "quic", State: StateBlocked, At: at, RetryAfter: time.Hour})
	p.Observe(Observation{Transport: "tcp", Addr: "a:1", State: StateThrottled, At: at.Add(time.Second)})
	p.Observe(Observation{Transport: "kcp", State: StateOK, At: at.Add(2 * time.Second)})
	p.Observe(Observation{Transport: "obfs4", State: StateOK, At: at.Add(3 * time.Second)}) // evicts quic
	b, err := json.Marshal(p.Entries())
	if err != nil {
		t.Fatal(err)
	}
	var es []PolicyEntry
	if err := json.Unmarshal(b, &es); err != nil {
		t.Fatal(err)
	}
	q := NewPolicy(PolicyConfig{})
	q.Load(es)
	if diff := cmp.Diff(p.Entries(), q.Entries()); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Transport)
	}
	if diff := cmp.Diff([]string{"kcp", "obfs4", "tcp"}, names); diff != "" {
		t.Errorf("entries kept, the oldest (quic) evicted (-want +got):\n%s", diff)
	}
	q.Load([]PolicyEntry{{Transport: "", State: StateOK}, {Transport: "x", State: 9}})
	if len(q.Entries()) != 3 {
		t.Errorf("Load took invalid entries: %+v", q.Entries())
	}
}

// TestPolicyRedial runs a session whose policy blocks one of three
// endpoints: the client joins the two others, tries the blocked one once
// its block is over, and reports path failures.
func TestPolicyRedial(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pol := NewPolicy(PolicyConfig{BlockMin: time.Minute})
		pol.Observe(Observation{Transport: "sim", Addr: "gwb:443", State: StateBlocked})
		var mu sync.Mutex
		var failed []string
		ccfg := Config{Policy: pol, OnPathFailure: func(ep Endpoint) {
			mu.Lock()
			failed = append(failed, ep.Addr)
			mu.Unlock()
		}}
		e, nw := simEnv(t, 7, 3, 10*time.Millisecond, ccfg, Config{})
		defer e.stop()
		waitFor(t, "two paths", 5*time.Second, func() bool { return usable(e.client) == 2 })
		time.Sleep(10 * time.Second)
		if st := e.client.Stats(); pathByAddr(st, "gwb:443").ID != 0 {
			t.Fatalf("blocked endpoint was dialled: %+v", st.Paths)
		}
		nw.Kill("gwc:443")
		waitFor(t, "a failure report", 5*time.Second, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(failed) > 0
		})
		mu.Lock()
		if failed[0] != "gwc:443" {
			t.Errorf("OnPathFailure got %q, want gwc:443", failed[0])
		}
		mu.Unlock()
		waitFor(t, "three paths after the block", 2*time.Minute, func() bool { return usable(e.client) == 3 })
	})
}
