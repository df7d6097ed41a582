package router

import (
	"context"
	"errors"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/commucat/commucat/testnet/simnet"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// link is a symmetric simnet link with one-way delay d.
func link(d time.Duration) simnet.Link { return simnet.Link{Delay: d} }

// simEnv makes a network with n addresses at one-way delay d.
func simEnv(t *testing.T, seed uint64, n int, d time.Duration, ccfg, gcfg Config) (*env, *simnet.Network) {
	t.Helper()
	nw := simnet.New(seed)
	var addrs []string
	for i := range n {
		a := "gw" + string(rune('a'+i)) + ":443"
		nw.SetLinks(a, link(d), link(d))
		addrs = append(addrs, a)
	}
	return newEnv(t, nw.Transport("sim"), addrs, ccfg, gcfg), nw
}

func TestBasicTransfer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, _ := simEnv(t, 1, 3, 10*time.Millisecond, Config{}, Config{})
		defer e.stop()
		waitFor(t, "three paths", 5*time.Second, func() bool { return usable(e.client) == 3 })
		transfer(t, t.Context(), e.client, e.gateway, 200, 100, time.Millisecond, nil)
		transfer(t, t.Context(), e.gateway, e.client, 200, 100, time.Millisecond, nil)
		st := e.client.Stats()
		t.Logf("client: %+v", st)
	})
}

// scenario runs a client-to-gateway transfer of n messages while fault
// breaks something after delay, and returns the client's stats.
func scenario(t *testing.T, seed uint64, ccfg Config, n int, gap time.Duration, fault func(nw *simnet.Network, e *env)) Stats {
	t.Helper()
	var st Stats
	synctest.Test(t, func(t *testing.T) {
		e, nw := simEnv(t, seed, 3, 10*time.Millisecond, ccfg, Config{})
		defer e.stop()
		waitFor(t, "three paths", 5*time.Second, func() bool { return usable(e.client) == 3 })
		transfer(t, t.Context(), e.client, e.gateway, n, 200, gap, func(int) {
			time.Sleep(time.Duration(n/3) * gap)
			fault(nw, e)
		})
		st = e.client.Stats()
	})
	return st
}

func pathByAddr(st Stats, addr string) PathStats {
	for _, p := range st.Paths {
		if p.Addr == addr {
			return p
		}
	}
	return PathStats{}
}

func TestKillPath(t *testing.T) {
	for _, sched := range []Scheduler{Best, Redundant, Spread} {
		t.Run(sched.String(), func(t *testing.T) {
			var victim string
			st := scenario(t, 2, Config{Scheduler: sched}, 600, time.Millisecond, func(nw *simnet.Network, e *env) {
				victim = e.client.bestAddr()
				nw.Kill(victim)
			})
			dead, rejoined := 0, 0
			for _, p := range st.Paths {
				if p.Addr == victim && p.State == PathDead {
					dead++
				}
				if p.Addr == victim && p.State == PathActive {
					rejoined++
				}
			}
			if dead != 1 || rejoined != 1 {
				t.Errorf("killed path %s: %d dead, %d rejoined; want 1 and 1", victim, dead, rejoined)
			}
			if st.Joins != 3 {
				t.Errorf("Joins = %d, want 3 (two at start, one after the kill)", st.Joins)
			}
			checkScheduled(t, st, sched, 600)
		})
	}
}

// checkScheduled checks that every message went through sched.
func checkScheduled(t *testing.T, st Stats, sched Scheduler, n int) {
	t.Helper()
	got := map[Scheduler]uint64{Best: st.Best, Redundant: st.Redundant, Spread: st.Spread}
	if got[sched] < uint64(n)*9/10 {
		t.Errorf("%s records = %d for %d messages", sched, got[sched], n)
	}
	if sched == Spread {
		for _, p := range st.Paths {
			if p.State == PathActive && p.ScheduledSpread == 0 {
				t.Errorf("path %d (%s) got no spread records", p.ID, p.Addr)
			}
		}
	}
}

func TestBlackholePath(t *testing.T) {
	for _, sched := range []Scheduler{Best, Redundant, Spread} {
		t.Run(sched.String(), func(t *testing.T) {
			var victim string
			st := scenario(t, 3, Config{Scheduler: sched}, 600, time.Millisecond, func(nw *simnet.Network, e *env) {
				victim = e.client.bestAddr()
				nw.Blackhole(victim, true)
			})
			p := pathByAddr(st, victim)
			if p.State != PathStalled || p.Stalls != 1 || st.Stalls != 1 {
				t.Errorf("blackholed path %s: state %s, %d stalls (session %d); want stalled once", victim, p.State, p.Stalls, st.Stalls)
			}
			if p.Best {
				t.Errorf("the blackholed path is still the best one")
			}
			if sched == Best && st.Retransmits == 0 {
				t.Errorf("best: no frame was re-sent after the blackhole")
			}
			checkScheduled(t, st, sched, 600)
		})
	}
}

func TestSlowPath(t *testing.T) {
	var victim string
	st := scenario(t, 4, Config{Scheduler: Best}, 1500, time.Millisecond, func(nw *simnet.Network, e *env) {
		victim = e.client.bestAddr()
		nw.SetLinks(victim, link(100*time.Millisecond), link(100*time.Millisecond))
	})
	p := pathByAddr(st, victim)
	if p.Best || st.Switches == 0 {
		t.Errorf("the path made 10x slower is still best (switches %d)", st.Switches)
	}
	// About 1000 records go out after the slowdown; most must take
	// another path.
	if others := st.Best - p.ScheduledBest; others < 500 {
		t.Errorf("after the slowdown only %d records took other paths (slowed path: %d)", others, p.ScheduledBest)
	}
	if p.SRTT < 100*time.Millisecond {
		t.Errorf("slowed path SRTT %s, want it to have grown towards 200ms", p.SRTT)
	}
	checkScheduled(t, st, Best, 1500)
}

func TestLossyPath(t *testing.T) {
	// Stream paths turn loss into stalls: 10% of segments arrive 200ms
	// late and hold back what follows them.
	for _, sched := range []Scheduler{Best, Spread} {
		t.Run(sched.String(), func(t *testing.T) {
			var victim string
			st := scenario(t, 5, Config{Scheduler: sched}, 1500, time.Millisecond, func(nw *simnet.Network, e *env) {
				victim = e.client.bestAddr()
				l := simnet.Link{Delay: 10 * time.Millisecond, Loss: 0.1}
				nw.SetLinks(victim, l, l)
			})
			p := pathByAddr(st, victim)
			if p.Loss == 0 {
				t.Errorf("lossy path %s shows no loss", victim)
			}
			if p.Best {
				t.Errorf("the lossy path is still the best one")
			}
			checkScheduled(t, st, sched, 1500)
		})
	}
}

func TestSpreadFEC(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, nw := simEnv(t, 6, 3, 10*time.Millisecond, Config{Scheduler: Spread}, Config{})
		defer e.stop()
		waitFor(t, "three paths", 5*time.Second, func() bool { return usable(e.client) == 3 })
		for _, a := range e.addrs {
			l := simnet.Link{Delay: 10 * time.Millisecond, Loss: 0.05}
			nw.SetLinks(a, l, l)
		}
		transfer(t, t.Context(), e.client, e.gateway, 3000, 200, time.Millisecond, nil)
		cs, gs := e.client.Stats(), e.gateway.Stats()
		if cs.ParitySent == 0 || gs.Repaired == 0 {
			t.Errorf("parity sent %d, records repaired %d: want both", cs.ParitySent, gs.Repaired)
		}
		t.Logf("parity %d, repaired %d, retransmits %d, stalls %d", cs.ParitySent, gs.Repaired, cs.Retransmits, cs.Stalls)
	})
}

func TestResume(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, nw := simEnv(t, 7, 3, 10*time.Millisecond, Config{}, Config{})
		defer e.stop()
		waitFor(t, "three paths", 5*time.Second, func() bool { return usable(e.client) == 3 })
		transfer(t, t.Context(), e.client, e.gateway, 300, 100, time.Millisecond, func(int) {
			time.Sleep(100 * time.Millisecond)
			// A phone changes network: every flow dies, and for a
			// second nothing gets through.
			for _, a := range e.addrs {
				nw.Blackhole(a, true)
				nw.Kill(a)
			}
			time.Sleep(time.Second)
			for _, a := range e.addrs {
				nw.Blackhole(a, false)
			}
		})
		transfer(t, t.Context(), e.gateway, e.client, 100, 100, time.Millisecond, nil)
		cs, gs := e.client.Stats(), e.gateway.Stats()
		if cs.Resumes != 1 || gs.Resumes != 1 {
			t.Errorf("resumes: client %d, gateway %d; want 1 and 1", cs.Resumes, gs.Resumes)
		}
	})
}

func TestResumeExpired(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, nw := simEnv(t, 8, 2, 10*time.Millisecond, Config{}, Config{ResumeWindow: 2 * time.Second})
		waitFor(t, "two paths", 5*time.Second, func() bool { return usable(e.client) == 2 })
		for _, a := range e.addrs {
			nw.Blackhole(a, true)
			nw.Kill(a)
		}
		time.Sleep(3 * time.Second) // the gateway forgets the session
		for _, a := range e.addrs {
			nw.Blackhole(a, false)
		}
		<-e.client.Done()
		e.stop()
		if !errors.Is(e.gatewayErr, ErrResumeExpired) {
			t.Errorf("gateway Run = %v, want ErrResumeExpired", e.gatewayErr)
		}
		if !errors.Is(e.clientErr, ErrResumeRefused) {
			t.Errorf("client Run = %v, want ErrResumeRefused", e.clientErr)
		}
		if e.table.Len() != 0 {
			t.Errorf("table keeps %d tokens of an ended session", e.table.Len())
		}
	})
}

// TestFewPathsAtConnect gives the client six endpoints: it opens
// MaxPaths paths, no more (some censors cap connections per client, and
// the gateway closes paths beyond the limit), and none dies.
func TestFewPathsAtConnect(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, _ := simEnv(t, 15, 6, 10*time.Millisecond, Config{}, Config{})
		defer e.stop()
		waitFor(t, "three paths", 5*time.Second, func() bool { return usable(e.client) == 3 })
		transfer(t, t.Context(), e.client, e.gateway, 100, 100, time.Millisecond, nil)
		time.Sleep(2 * time.Second)
		st := e.client.Stats()
		if st.Joins != 2 || len(st.Paths) != 3 {
			var states []string
			for _, p := range st.Paths {
				states = append(states, p.Addr+" "+p.State.String())
			}
			t.Errorf("joins %d, paths %v; want 2 joins and 3 paths", st.Joins, states)
		}
	})
}

// TestStuckWriterClosed: a path whose writer is blocked inside a Write
// that never completes (a black hole: nobody reads the other end) is
// closed for silence, and Run still returns after Close: closing the path
// ends the pending Write.
func TestStuckWriterClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cres, _ := results(t)
		a, b := net.Pipe() // nobody reads b: writes on a block
		defer b.Close()
		s := New(Client, cres, a, Endpoint{Transport: "pipe"}, Config{PathTimeout: 2 * time.Second})
		ran := make(chan error, 1)
		go func() { ran <- s.Run(context.Background()) }()
		if err := s.Send(context.Background(), msg(0, 64)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Second)
		if st := s.Stats().Paths[0].State; st != PathDead {
			t.Fatalf("path %v after 10 s of silence, want dead", st)
		}
		s.Close()
		select {
		case <-ran:
		case <-time.After(time.Hour):
			a.Close()
			<-ran
			t.Fatal("Run had not returned an hour after Close")
		}
	})
}
