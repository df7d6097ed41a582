package router

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/commucat/commucat/core/frame"
	"github.com/commucat/commucat/core/handshake"
	"github.com/commucat/commucat/core/session"
	"github.com/commucat/commucat/testnet/simnet"
)

func TestExtendSerial(t *testing.T) {
	for _, tt := range []struct {
		high uint64
		n    uint32
		want uint64
	}{
		{0, 1, 1},
		{5, 3, 3},
		{5, 9, 9},
		{0xffff_fff0, 0xffff_fff5, 0xffff_fff5},
		{0xffff_fff0, 2, 1<<32 + 2},
		{1<<32 + 2, 0xffff_fff0, 0xffff_fff0},
		{3<<32 + 5, 7, 3<<32 + 7},
		{0, 0xffff_ffff, 0xffff_ffff}, // no number below 0
		{^uint64(0) - 3, 0xffff_fffe, ^uint64(0) - 1},
	} {
		if got := extendSerial(tt.high, tt.n); got != tt.want {
			t.Errorf("extendSerial(%#x, %#x) = %#x, want %#x", tt.high, tt.n, got, tt.want)
		}
	}
}

// media is the i-th media frame of a call on stream 7.
func media(i int) frame.Frame {
	p := make([]byte, 160) // 20 ms of Opus at 64 kbit/s
	binary.BigEndian.PutUint64(p, uint64(i))
	return frame.Frame{Type: frame.Media, Stream: 7, Payload: p}
}

// callResult is what the receiving side of a call saw.
type callResult struct {
	media    map[uint64]int // media frame index -> copies
	messages int
}

// call sends n media frames every gap from one session, with a reliable
// message every tenth, and receives on the other: messages must arrive
// exactly once and in order, media as they come.
func call(t *testing.T, ctx context.Context, from, to *Session, n int, gap time.Duration) callResult {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		for i := range n {
			fs := []frame.Frame{media(i)}
			if i%10 == 0 {
				fs = append(fs, msg(i/10, 64))
			}
			if err := from.Send(ctx, fs...); err != nil {
				errc <- fmt.Errorf("send %d: %w", i, err)
				return
			}
			time.Sleep(gap)
		}
		errc <- nil
	}()
	res := callResult{media: map[uint64]int{}}
	want := (n + 9) / 10
	// Media still in flight when the last message arrives comes within
	// a second; wait that long after it.
	var stop <-chan time.Time
	for {
		rctx, cancel := context.WithCancel(ctx)
		if stop != nil {
			go func() {
				select {
				case <-stop:
					cancel()
				case <-rctx.Done():
				}
			}()
		}
		f, err := to.Recv(rctx)
		cancel()
		if err != nil {
			if stop != nil && ctx.Err() == nil {
				break
			}
			t.Fatalf("recv: %v", err)
		}
		switch f.Type {
		case frame.Media:
			if f.Stream != 7 || f.Seq != 0 || len(f.Payload) != 160 {
				t.Fatalf("media frame: stream %d, seq %d, %d bytes", f.Stream, f.Seq, len(f.Payload))
			}
			res.media[binary.BigEndian.Uint64(f.Payload)]++
		case frame.Message:
			if got := binary.BigEndian.Uint64(f.Payload); got != uint64(res.messages) {
				t.Fatalf("message %d: got %d (out of order or duplicated)", res.messages, got)
			}
			res.messages++
			if res.messages == want {
				stop = time.After(time.Second)
			}
		default:
			t.Fatalf("unexpected %s frame", f.Type)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	for i, c := range res.media {
		if c != 1 {
			t.Errorf("media frame %d delivered %d times", i, c)
		}
	}
	return res
}

func TestDatagramMedia(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, _ := simEnv(t, 11, 2, 10*time.Millisecond, Config{}, Config{})
		defer e.stop()
		waitFor(t, "two paths", 5*time.Second, func() bool { return usable(e.client) == 2 })
		res := call(t, t.Context(), e.client, e.gateway, 500, 10*time.Millisecond)
		if len(res.media) != 500 {
			t.Errorf("%d of 500 media frames arrived over a lossless network", len(res.media))
		}
		cs, gs := e.client.Stats(), e.gateway.Stats()
		// Every media frame goes as a datagram (a few share one).
		if cs.DatagramsSent < 450 || gs.DatagramsReceived != cs.DatagramsSent {
			t.Errorf("datagrams: client sent %d, gateway received %d; want about 500, all received", cs.DatagramsSent, gs.DatagramsReceived)
		}
		if cs.Retransmits != 0 {
			t.Errorf("%d retransmits on a lossless network", cs.Retransmits)
		}
		for _, p := range cs.Paths {
			if !p.Datagrams {
				t.Errorf("path %d (%s) does not carry datagrams", p.ID, p.Addr)
			}
		}
	})
}

func TestDatagramsOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, _ := simEnv(t, 12, 1, 10*time.Millisecond, Config{NoDatagrams: true}, Config{})
		defer e.stop()
		res := call(t, t.Context(), e.client, e.gateway, 100, 10*time.Millisecond)
		if len(res.media) != 100 {
			t.Errorf("%d of 100 media frames arrived", len(res.media))
		}
		if st := e.client.Stats(); st.DatagramsSent != 0 || st.Paths[0].Datagrams {
			t.Errorf("NoDatagrams: %d datagrams sent, path datagrams %v", st.DatagramsSent, st.Paths[0].Datagrams)
		}
	})
}

// TestDatagramLoss drops 10% of the datagrams on every path (streams are
// clean): the loss is measured from the numbering, FEC parity repairs
// the lost media, and messages arrive exactly once, in order.
func TestDatagramLoss(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, nw := simEnv(t, 13, 2, 10*time.Millisecond, Config{}, Config{})
		defer e.stop()
		waitFor(t, "two paths", 5*time.Second, func() bool { return usable(e.client) == 2 })
		l := simnet.Link{Delay: 10 * time.Millisecond, DatagramLoss: 0.1}
		for _, a := range e.addrs {
			nw.SetLinks(a, l, l)
		}
		const n = 1500
		res := call(t, t.Context(), e.client, e.gateway, n, 10*time.Millisecond)
		cs, gs := e.client.Stats(), e.gateway.Stats()
		var missing uint64
		for _, p := range gs.Paths {
			missing += p.DatagramsMissing
		}
		t.Logf("media %d/%d, datagrams sent %d, missing %d, parity %d, repaired %d", len(res.media), n, cs.DatagramsSent, missing, cs.ParitySent, gs.Repaired)
		// The path that carried most datagrams measured about 10% (one
		// that stopped carrying them lets its estimate decay).
		var most PathStats
		for _, p := range cs.Paths {
			if p.DatagramsSent > most.DatagramsSent {
				most = p
			}
		}
		if most.DatagramLoss < 0.05 || most.DatagramLoss > 0.2 {
			t.Errorf("path %d (%s): measured datagram loss %.3f after %d datagrams at 10%%", most.ID, most.Addr, most.DatagramLoss, most.DatagramsSent)
		}
		// About a tenth of the datagrams were dropped...
		if lost := float64(missing) / float64(cs.DatagramsSent); lost < 0.05 || lost > 0.15 {
			t.Errorf("gateway counted %d of %d datagrams missing", missing, cs.DatagramsSent)
		}
		// ...and parity rebuilt nearly all of the media they carried.
		if cs.ParitySent == 0 || gs.Repaired == 0 {
			t.Errorf("parity sent %d, repaired %d: want both", cs.ParitySent, gs.Repaired)
		}
		if got := len(res.media); got < n*97/100 {
			t.Errorf("%d of %d media frames arrived (%.1f%%); want at least 97%% with FEC (10%% without)", got, n, 100*float64(got)/n)
		}
		if cs.Retransmits != 0 {
			t.Errorf("%d retransmits: the streams are clean", cs.Retransmits)
		}
	})
}

// TestDatagramLossyPathAvoided drops 10% of the datagrams on the path
// that carries them: the media moves to the clean path.
func TestDatagramLossyPathAvoided(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, nw := simEnv(t, 14, 2, 10*time.Millisecond, Config{FEC: FECOff}, Config{})
		defer e.stop()
		waitFor(t, "two paths", 5*time.Second, func() bool { return usable(e.client) == 2 })
		victim := e.client.bestAddr()
		l := simnet.Link{Delay: 10 * time.Millisecond, DatagramLoss: 0.1}
		nw.SetLinks(victim, l, l)
		before := pathByAddr(e.client.Stats(), victim).DatagramsSent
		const n = 1500
		res := call(t, t.Context(), e.client, e.gateway, n, 10*time.Millisecond)
		cs := e.client.Stats()
		p := pathByAddr(cs, victim)
		onVictim := p.DatagramsSent - before
		t.Logf("media %d/%d; lossy path: %d datagrams, loss %.3f; all paths %d", len(res.media), n, onVictim, p.DatagramLoss, cs.DatagramsSent)
		if p.DatagramLoss < 0.03 {
			t.Errorf("lossy path shows datagram loss %.3f", p.DatagramLoss)
		}
		if onVictim > cs.DatagramsSent/3 {
			t.Errorf("the lossy path carried %d of %d datagrams", onVictim, cs.DatagramsSent)
		}
		if got := len(res.media); got < n*97/100 {
			t.Errorf("%d of %d media frames arrived", got, n)
		}
	})
}

// mediaSweep sends n stamped 160-byte media frames, one every 20 ms (an
// audio call), from e's client and returns the latency of each one that
// arrived. It stops reading a second after the last one was sent.
func mediaSweep(t testing.TB, e *env, n int) []time.Duration {
	t.Helper()
	ctx := context.Background()
	errc := make(chan error, 1)
	go func() {
		for i := range n {
			f := stamped(i, 160)
			f.Type, f.Stream = frame.Media, 7
			if err := e.client.Send(ctx, f); err != nil {
				errc <- err
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		errc <- nil
	}()
	rctx, cancel := context.WithTimeout(ctx, time.Duration(n)*20*time.Millisecond+time.Second)
	defer cancel()
	var out []time.Duration
	for {
		f, err := e.gateway.Recv(rctx)
		if err != nil {
			break
		}
		out = append(out, time.Since(time.Unix(0, int64(binary.BigEndian.Uint64(f.Payload[8:])))))
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return out
}

// TestMediaSweep measures, in simulated time, an audio call's media over
// three 50ms-RTT paths that lose the given share of every packet: as
// datagrams with and without FEC, and on the streams. It runs only with
// -sweep; docs/BENCHMARKS.md records its table.
func TestMediaSweep(t *testing.T) {
	if !*sweep {
		t.Skip("run with -sweep")
	}
	modes := []struct {
		name string
		cfg  Config
	}{
		{"datagrams, no FEC", Config{FEC: FECOff}},
		{"datagrams + FEC", Config{}},
		{"streams + FEC", Config{NoDatagrams: true}},
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n| loss | media | delivered | p50 | p99 | parity per media frame |\n| ---: | --- | ---: | ---: | ---: | ---: |\n")
	const n = 1500 // 30 s of audio
	for _, loss := range []float64{0, 0.01, 0.05, 0.10, 0.20} {
		for _, m := range modes {
			var lat []time.Duration
			var cs Stats
			synctest.Test(t, func(t *testing.T) {
				e, _ := sweepEnv(t, 21, loss, 0, m.cfg)
				defer e.stop()
				lat = mediaSweep(t, e, n)
				cs = e.client.Stats()
			})
			p50, p99 := "-", "-"
			if len(lat) > 0 {
				p50, p99 = pct(lat, 50).Round(time.Millisecond).String(), pct(lat, 99).Round(time.Millisecond).String()
			}
			fmt.Fprintf(&b, "| %.0f%% | %s | %.1f%% | %s | %s | %.2f |\n", loss*100, m.name,
				100*float64(len(lat))/n, p50, p99, float64(cs.ParitySent)/n)
		}
	}
	t.Log(b.String())
}

// FuzzDatagram feeds datagrams to a session's datagram path: raw bytes,
// as anyone on the path could send them, and (seal set) number and frames
// sealed with the peer's key, as an authenticated but misbehaving peer
// could. Nothing may panic, and only a malformed record from the peer may
// end the session.
func FuzzDatagram(f *testing.F) {
	pt := func(fs ...frame.Frame) []byte {
		var b []byte
		for _, fr := range fs {
			b, _ = frame.Append(b, fr)
		}
		return b
	}
	f.Add([]byte{0, 0, 0, 1}, false)
	f.Add(append([]byte{0, 0, 0, 1}, make([]byte, 40)...), false)
	f.Add(append([]byte{0, 0, 0, 7}, pt(media(1))...), true)
	f.Add(append([]byte{0xff, 0xff, 0xff, 0xff}, pt(frame.Frame{Type: frame.Ack, Payload: frame.DatagramAckPayload{Received: 3, Highest: 9}.Append(nil)})...), true)
	f.Add(append([]byte{0, 0, 0, 2}, pt(frame.Frame{Type: frame.FECParity, Payload: []byte{0, 0, 1, 1, 1, 28}}, frame.Frame{Type: frame.Ping, Payload: make([]byte, 16)})...), true)
	f.Add(append([]byte{0, 0, 0, 3}, pt(frame.Frame{Type: frame.Message, Seq: 1, Payload: []byte("hi")})...), true)
	f.Fuzz(func(t *testing.T, b []byte, seal bool) {
		var k1, k2 [32]byte
		k1[0], k2[0] = 1, 2
		h := make([]byte, 32)
		c := &handshake.Result{SendKey: k1, RecvKey: k2, Hash: h}
		a, z := simnet.Pipe(1, simnet.Link{}, simnet.Link{})
		defer a.Close()
		defer z.Close()
		s := New(Client, c, a, Endpoint{}, Config{Window: 64})
		defer s.Close()
		p := s.paths[0]
		if p.dg == nil {
			t.Fatal("a simnet path carries no datagrams")
		}
		if seal && len(b) >= dgHeader {
			raw, _, err := session.NewSealer(k2).Seal(nil, b[dgHeader:])
			if err != nil {
				return
			}
			b = append(b[:dgHeader:dgHeader], raw...)
		}
		var buf []byte
		err := s.onDatagram(p, b, &buf)
		if err != nil && !s.ended() {
			t.Fatalf("onDatagram: %v, but the session goes on", err)
		}
		s.mu.Lock()
		for {
			if _, ok := s.popRecv(); !ok {
				break
			}
		}
		if p.dg.recv > p.dg.high {
			t.Fatalf("received %d datagrams above the highest number %d", p.dg.recv, p.dg.high)
		}
		s.mu.Unlock()
	})
}

// TestDatagramsAllLost drops every datagram from the client on the best
// path, from the start: the gateway never reports any, so media stays
// off that path's datagrams, and still arrives.
func TestDatagramsAllLost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, nw := simEnv(t, 16, 2, 10*time.Millisecond, Config{}, Config{})
		defer e.stop()
		victim := e.addrs[0]
		nw.SetLinks(victim, simnet.Link{Delay: 10 * time.Millisecond, DatagramLoss: 1}, link(10*time.Millisecond))
		waitFor(t, "two paths", 5*time.Second, func() bool { return usable(e.client) == 2 })
		res := call(t, t.Context(), e.client, e.gateway, 500, 20*time.Millisecond)
		p := pathByAddr(e.client.Stats(), victim)
		t.Logf("media %d/500; black-holed path: %d datagrams, datagrams %v, loss %.2f", len(res.media), p.DatagramsSent, p.Datagrams, p.DatagramLoss)
		if p.Datagrams {
			t.Errorf("the path that loses every datagram is used for datagrams")
		}
		if len(res.media) < 495 {
			t.Errorf("%d of 500 media frames arrived", len(res.media))
		}
	})
}

// TestDatagramsLostMidCall drops every datagram on the path that carries
// them in the middle of a call: the silence is noticed, media moves, and
// little is lost.
func TestDatagramsLostMidCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, nw := simEnv(t, 17, 2, 10*time.Millisecond, Config{FEC: FECOff}, Config{})
		defer e.stop()
		waitFor(t, "two paths", 5*time.Second, func() bool { return usable(e.client) == 2 })
		var victim string
		go func() {
			time.Sleep(3 * time.Second)
			victim = e.client.bestDatagramAddr()
			l := simnet.Link{Delay: 10 * time.Millisecond, DatagramLoss: 1}
			nw.SetLinks(victim, l, l)
		}()
		res := call(t, t.Context(), e.client, e.gateway, 500, 20*time.Millisecond)
		p := pathByAddr(e.client.Stats(), victim)
		t.Logf("media %d/500; path %s: datagrams %v, loss %.2f", len(res.media), victim, p.Datagrams, p.DatagramLoss)
		if p.Datagrams {
			t.Errorf("the path that lost every datagram still carries them")
		}
		// Media sent into the hole until it is noticed (4 RTT + 1 s)
		// is lost: about 60 frames of 500.
		if len(res.media) < 420 {
			t.Errorf("%d of 500 media frames arrived", len(res.media))
		}
	})
}

// TestDatagramsBesideBulk sends media every 20 ms beside a bulk transfer
// that fills the only path: the media goes as datagrams past the queued
// stream data instead of waiting behind it.
func TestDatagramsBesideBulk(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := simnet.New(18)
		l := simnet.Link{Delay: 10 * time.Millisecond, Rate: 500 << 10}
		nw.SetLinks("gw:443", l, l)
		e := newEnv(t, nw.Transport("sim"), []string{"gw:443"}, Config{}, Config{})
		defer e.stop()
		ctx := t.Context()
		stop := make(chan struct{})
		bulk := make(chan error, 1)
		go func() {
			for {
				select {
				case <-stop:
					bulk <- nil
					return
				default:
				}
				if err := e.client.Send(ctx, frame.Frame{Type: frame.StreamData, Stream: 1, Payload: make([]byte, 16<<10)}); err != nil {
					bulk <- err
					return
				}
			}
		}()
		got := map[uint64]bool{}
		recvDone := make(chan struct{})
		go func() {
			defer close(recvDone)
			for {
				f, err := e.gateway.Recv(ctx)
				if err != nil {
					return
				}
				if f.Type == frame.Media {
					got[binary.BigEndian.Uint64(f.Payload)] = true
				}
			}
		}()
		const n = 150
		for i := range n {
			if err := e.client.Send(ctx, media(i)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(2 * time.Second)
		close(stop)
		st := e.client.Stats()
		t.Logf("dropped %d, stalls %d, datagrams %d", st.Dropped, st.Stalls, st.DatagramsSent)
		if err := <-bulk; err != nil {
			t.Fatal(err)
		}
		e.stop()
		<-recvDone
		t.Logf("media %d/%d beside a bulk transfer", len(got), n)
		if len(got) < n*9/10 {
			t.Errorf("%d of %d media frames arrived beside a bulk transfer", len(got), n)
		}
	})
}

// bestDatagramAddr is the address of the path s would put a datagram on.
func (s *Session) bestDatagramAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ps := s.pickDatagram(Spread); len(ps) > 0 {
		return ps[0].ep.Addr
	}
	return ""
}

// dgState reads the datagram state of s's first path.
func dgState(s *Session) (confirmed bool, loss float64, sent uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.paths[0].dg
	return d.confirmed, d.loss, d.sent
}

// TestDatagramsAfterIdle: a confirmed path that resumes with a burst
// after an idle spell (speech after silence, a keyframe) is not taken for
// a silent one: the peer's silence counts from the first datagram it has
// not reported, not from its last report, long past.
func TestDatagramsAfterIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, _ := simEnv(t, 31, 1, 10*time.Millisecond, Config{FEC: FECOff}, Config{})
		defer e.stop()
		waitFor(t, "datagrams confirmed", 5*time.Second, func() bool { c, _, _ := dgState(e.client); return c })
		time.Sleep(5 * time.Second) // idle: no report for 5 s
		ctx := t.Context()
		for i := range 20 {
			f := frame.Frame{Type: frame.Media, Stream: 7, Payload: make([]byte, 1000)}
			binary.BigEndian.PutUint64(f.Payload, uint64(i))
			if err := e.client.Send(ctx, f); err != nil {
				t.Fatal(err)
			}
		}
		// A reliable message beside it: its write wakes the timers.
		if err := e.client.Send(ctx, msg(0, 64)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // well under one round trip (20 ms)
		if c, l, n := dgState(e.client); !c || l != 0 {
			t.Fatalf("1 ms after a burst of %d: confirmed %v, loss %.2f; want confirmed, no loss", n, c, l)
		}
		time.Sleep(2 * time.Second)
		if c, l, n := dgState(e.client); !c || l != 0 {
			t.Fatalf("2 s after a burst of %d on a clean link: confirmed %v, loss %.2f", n, c, l)
		}
	})
}

// TestDatagramNumberBounds: the first datagram of a path counts only with
// a plausible number, as every later one does.
func TestDatagramNumberBounds(t *testing.T) {
	d := &dgPath{}
	if d.count(extendSerial(d.high, 0xffff_fff0)) {
		t.Fatalf("a first datagram numbered 0xfffffff0 counted (highest now %d)", d.high)
	}
	if !d.count(extendSerial(d.high, 1)) || d.high != 1 {
		t.Fatalf("datagram 1 not counted, or highest %d", d.high)
	}
	if !d.count(extendSerial(d.high, 64*dgWindow+1)) {
		t.Fatal("a datagram 64 windows ahead not counted")
	}
	if d.count(extendSerial(d.high, uint32(d.high+64*dgWindow+1))) {
		t.Fatal("a datagram more than 64 windows ahead counted")
	}
}
