package censor

import (
	"net/netip"
	"time"

	"github.com/commucat/commucat/testnet/packet"
)

// FlowKey names a flow: its transport protocol and its two endpoints,
// Client being the one that sent the first packet the censor saw (the
// receiver of a first SYN+ACK).
type FlowKey struct {
	Proto          uint8
	Client, Server netip.AddrPort
}

// String returns e.g. "tcp 198.18.0.2:40000 -> 198.18.1.2:443".
func (k FlowKey) String() string {
	return protoName(k.Proto) + " " + k.Client.String() + " -> " + k.Server.String()
}

func protoName(p uint8) string {
	switch p {
	case packet.ProtoTCP:
		return "tcp"
	case packet.ProtoUDP:
		return "udp"
	}
	return "ip"
}

// maxFirst is how many first client data packets a flow keeps: the
// protocol filter reads two.
const maxFirst = 2

// maxQUICDatagrams is how many client datagrams a reassembling quic-sni
// condition reads.
const maxQUICDatagrams = 4

// tri is a condition's state for a flow: decided true, decided false, or
// waiting for more packets.
type tri uint8

const (
	wait tri = iota
	yes
	no
)

// block is what the censor does to the rest of a flow.
type block uint8

const (
	blockNone block = iota
	blockAll        // every packet, both directions
	blockS2C        // the server's payload beyond cutAt
)

// fact is a lazily computed property of a flow's first bytes.
type fact uint8

const (
	factPending fact = iota
	factNone         // decided: not present (not TLS, not HTTP...)
	factOK
)

// flow is the censor's state of one flow. Flows live in the table's map
// and in its idle list, least recently active first.
type flow struct {
	key        FlowKey
	id         uint64
	initiator  Direction
	start      time.Time
	last       time.Time
	prev, next *flow

	pkts  [2]uint64 // packets per side (Client, Server)
	bytes [2]uint64 // payload bytes per side

	first  [maxFirst][]byte // first client data payloads, copied
	nFirst int

	// The client's TCP stream, in order, up to the reassembly cap.
	stream     []byte
	streamNext uint32
	streamOn   bool // streamNext is known
	streamEnd  bool // a gap or the cap ended reassembly

	tcp   TCPState
	isTCP bool
	fin   bool // a FIN or RST was seen

	// Facts, for [first packet only, reassembled].
	hello     [2]fact
	helloVal  [2]*ClientHello
	http      [2]fact
	httpVal   [2]HTTPRequest
	httpDone  [2]bool // the request's header section is complete
	proto     fact
	protoVal  Protocol
	quic      fact
	quicVal   *ClientHello
	quicAsm   *QUICHelloAssembler
	quicCount int

	live   uint64   // rules that may still fire
	sticky []uint16 // per rule: conditions decided true

	block    block
	cutSeq   uint32 // blockS2C: the server's sequence number where data stops
	throttle *throttleState
	resGen   uint64 // residual generation last checked
}

// addFirst keeps a copy of a client data payload if fewer than maxFirst
// are kept.
func (f *flow) addFirst(payload []byte) {
	if f.nFirst < maxFirst {
		f.first[f.nFirst] = append([]byte(nil), payload...)
		f.nFirst++
	}
}

// reassemble appends a client TCP segment's payload to the stream when it
// continues it; retransmitted bytes are skipped. A segment after a gap
// ends reassembly: the engine reassembles in order only, and what it has
// not read by then it never reads.
func (f *flow) reassemble(seq uint32, payload []byte, limit int) {
	if f.streamEnd {
		return
	}
	if !f.streamOn {
		f.streamNext = seq
		f.streamOn = true
	}
	off := int32(f.streamNext - seq) // bytes of payload already in the stream
	switch {
	case off < 0:
		f.streamEnd = true // a gap: out of order
		return
	case int(off) >= len(payload):
		return // a retransmission
	}
	add := payload[off:]
	if room := limit - len(f.stream); len(add) > room {
		add = add[:room]
		f.streamEnd = true
	}
	f.stream = append(f.stream, add...)
	f.streamNext += uint32(len(add))
	if len(f.stream) >= limit {
		f.streamEnd = true
	}
}

// release drops the bytes and parsed messages no live rule of f needs
// any more, so a long flow holds only its counters and sequence state.
// stream is the set of rules that read the reassembled stream.
func (f *flow) release(stream uint64) {
	if f.live&stream == 0 && f.stream != nil {
		f.stream, f.streamEnd = nil, true
	}
	if f.live == 0 {
		f.first = [maxFirst][]byte{}
		f.helloVal = [2]*ClientHello{}
		f.httpVal = [2]HTTPRequest{}
		f.quicVal, f.quicAsm = nil, nil
	}
}

// flowTable holds the flows by key, and a list ordered by last activity
// for idle expiry and eviction. It is not safe for concurrent use; the
// engine's mutex guards it.
type flowTable struct {
	m          map[FlowKey]*flow
	head, tail *flow // head: idle longest
	max        int
	idle       time.Duration
	nextID     uint64
	evicted    uint64
	expired    uint64
}

func newFlowTable(max int, idle time.Duration) *flowTable {
	return &flowTable{m: make(map[FlowKey]*flow, min(max, 1024)), max: max, idle: idle}
}

// lookup finds the flow of p, and which side sent it.
func (t *flowTable) lookup(proto uint8, src, dst netip.AddrPort) (*flow, Side) {
	if f := t.m[FlowKey{proto, src, dst}]; f != nil {
		return f, Client
	}
	if f := t.m[FlowKey{proto, dst, src}]; f != nil {
		return f, Server
	}
	return nil, Client
}

// insert adds a new flow, evicting the flow idle longest when full.
func (t *flowTable) insert(f *flow) {
	if len(t.m) >= t.max && t.head != nil {
		t.remove(t.head)
		t.evicted++
	}
	t.nextID++
	f.id = t.nextID
	t.m[f.key] = f
	t.pushBack(f)
}

// touch marks f active at now: it moves to the back of the idle list.
func (t *flowTable) touch(f *flow, now time.Time) {
	if now.After(f.last) {
		f.last = now
	}
	if t.tail == f {
		return
	}
	t.unlink(f)
	t.pushBack(f)
}

// expire removes the flows idle since before now - idle.
func (t *flowTable) expire(now time.Time) {
	for t.head != nil && now.Sub(t.head.last) > t.idle {
		t.remove(t.head)
		t.expired++
	}
}

func (t *flowTable) remove(f *flow) {
	t.unlink(f)
	delete(t.m, f.key)
}

func (t *flowTable) pushBack(f *flow) {
	f.prev, f.next = t.tail, nil
	if t.tail != nil {
		t.tail.next = f
	} else {
		t.head = f
	}
	t.tail = f
}

func (t *flowTable) unlink(f *flow) {
	if f.prev != nil {
		f.prev.next = f.next
	} else if t.head == f {
		t.head = f.next
	}
	if f.next != nil {
		f.next.prev = f.prev
	} else if t.tail == f {
		t.tail = f.prev
	}
	f.prev, f.next = nil, nil
}
