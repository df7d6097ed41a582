package plugins

import (
	"errors"
	"testing"

	"github.com/commucat/commucat/plugins/internal/ctl"
)

// TestEndsBounded checks that a plugin may announce the end of each
// flow's stream and datagrams once, whether the host still knows the flow
// or has forgotten it, and is cut off (a violation) for more: otherwise
// a plugin could keep the host's control reader busy with them forever.
func TestEndsBounded(t *testing.T) {
	g := &generation{flows: map[uint64]*hostFlow{}}
	g.datagram.Store(true)
	open := func() uint64 {
		g.lastFlow++
		g.flows[g.lastFlow] = &hostFlow{}
		return g.lastFlow
	}
	send := func(typ ctl.Type, id uint64) error { return g.handleCtl(ctl.Msg{Type: typ, Flow: id}, nil) }
	violation := func(err error) bool {
		var v *ctl.ViolationError
		return errors.As(err, &v)
	}

	a, b := open(), open()
	if err := send(ctl.TypeEOF, a); err != nil || !g.flows[a].eof {
		t.Fatalf("first EOF: %v, eof %v", err, g.flows[a].eof)
	}
	if err := send(ctl.TypeEOF, a); !violation(err) {
		t.Errorf("second EOF for an open flow = %v; want a violation", err)
	}
	if err := send(ctl.TypeDgramEOF, a); err != nil || !g.flows[a].dgramEOF {
		t.Fatalf("first DGRAM_EOF: %v", err)
	}
	if err := send(ctl.TypeDgramEOF, a); !violation(err) {
		t.Errorf("second DGRAM_EOF for an open flow = %v; want a violation", err)
	}

	// Forgotten flows: the host may have closed a flow before the
	// plugin's EOF, DGRAM_EOF or HANDOVER came, so up to three such
	// messages per forgotten flow pass.
	g.forget(a)
	g.forget(b)
	for i := range 6 {
		if err := send(ctl.TypeEOF, b); err != nil {
			t.Fatalf("message %d for forgotten flows: %v", i+1, err)
		}
	}
	if err := send(ctl.TypeEOF, b); !violation(err) {
		t.Errorf("a seventh message for two forgotten flows = %v; want a violation", err)
	}
	if err := send(ctl.TypeEOF, b+1); !violation(err) {
		t.Errorf("EOF for a flow never opened = %v; want a violation", err)
	}
}
