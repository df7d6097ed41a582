package simnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/commucat/commucat/core/transport"
)

// backlog is how many dialled connections wait for Accept.
const backlog = 1024

// Network is a set of listening addresses joined by simulated links. Links
// are configured per listening address (SetLinks) and apply to every pipe
// dialled to it, including pipes already open. The zero value is not
// usable; call New.
type Network struct {
	seed uint64

	mu        sync.Mutex
	pipes     uint64 // pipes made so far: each one's random stream index
	ports     int
	listeners map[string]*listener
	links     map[string][2]Link   // address -> up (client to server), down
	holes     map[string]bool      // blackholed addresses
	live      map[string][]*Conn   // address -> client ends of open pipes
	clients   map[string]int       // per address, how many dialled (client port numbers)
	dialers   map[string]*dialWait // dials waiting in a blackhole
}

type dialWait struct{ wake chan struct{} }

// New returns an empty network whose randomness derives from seed.
func New(seed uint64) *Network {
	return &Network{
		seed:      seed,
		listeners: make(map[string]*listener),
		links:     make(map[string][2]Link),
		holes:     make(map[string]bool),
		live:      make(map[string][]*Conn),
		clients:   make(map[string]int),
		dialers:   make(map[string]*dialWait),
	}
}

// SetLinks sets the links of every pipe to addr, open or future: up
// carries what the dialling side sends, down what the listener sends. It
// panics on an invalid Link, a programmer error in a test.
func (n *Network) SetLinks(addr string, up, down Link) {
	for _, l := range []Link{up, down} {
		if err := l.Validate(); err != nil {
			panic(err)
		}
	}
	n.mu.Lock()
	n.links[addr] = [2]Link{up, down}
	live := append([]*Conn(nil), n.live[addr]...)
	n.mu.Unlock()
	for _, c := range live {
		c.SetLinks(up, down)
	}
}

// Blackhole makes addr silently drop everything (on): open pipes hold what
// is in flight, new dials hang until their context ends. Off lets traffic
// through again.
func (n *Network) Blackhole(addr string, on bool) {
	n.mu.Lock()
	n.holes[addr] = on
	live := append([]*Conn(nil), n.live[addr]...)
	if w := n.dialers[addr]; w != nil && !on {
		close(w.wake)
		delete(n.dialers, addr)
	}
	n.mu.Unlock()
	for _, c := range live {
		c.SetBlackhole(on)
	}
}

// Kill resets every open pipe to addr.
func (n *Network) Kill(addr string) {
	n.mu.Lock()
	live := n.live[addr]
	delete(n.live, addr)
	n.mu.Unlock()
	for _, c := range live {
		c.Kill()
	}
}

// Conns returns the client ends of the open pipes to addr, oldest first.
func (n *Network) Conns(addr string) []*Conn {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*Conn(nil), n.live[addr]...)
}

// Transport returns a transport.Transport named name that dials and listens
// on n.
func (n *Network) Transport(name string) *Transport { return &Transport{n: n, name: name} }

// Transport is a transport.Transport over a Network.
type Transport struct {
	n    *Network
	name string
}

var _ transport.Transport = (*Transport)(nil)

// Name returns the name given to Network.Transport.
func (t *Transport) Name() string { return t.name }

// Listen listens on addr, "host:port"; port 0 picks a free one.
func (t *Transport) Listen(ctx context.Context, addr string) (transport.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("simnet: listen %s: %w: %w", addr, transport.ErrBadParams, err)
	}
	n := t.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if port == "0" {
		for {
			n.ports++
			addr = net.JoinHostPort(host, strconv.Itoa(1000+n.ports))
			if n.listeners[addr] == nil {
				break
			}
		}
	}
	if n.listeners[addr] != nil {
		return nil, fmt.Errorf("simnet: listen %s: address in use", addr)
	}
	l := &listener{n: n, addr: Addr(addr), q: make(chan *Conn, backlog), done: make(chan struct{})}
	n.listeners[addr] = l
	return l, nil
}

// Dial connects to addr after one round trip of its links. A dial to an
// address nobody listens on fails at once with transport.ErrRefused; a
// dial into a blackhole waits until ctx ends.
func (t *Transport) Dial(ctx context.Context, addr string) (net.Conn, error) {
	n := t.n
	for {
		n.mu.Lock()
		l := n.listeners[addr]
		if l == nil {
			n.mu.Unlock()
			return nil, fmt.Errorf("simnet: dial %s: %w", addr, transport.ErrRefused)
		}
		if !n.holes[addr] {
			links := n.links[addr]
			n.mu.Unlock()
			if err := sleep(ctx, links[0].Delay+links[1].Delay); err != nil {
				return nil, fmt.Errorf("simnet: dial %s: %w", addr, err)
			}
			break
		}
		w := n.dialers[addr]
		if w == nil {
			w = &dialWait{wake: make(chan struct{})}
			n.dialers[addr] = w
		}
		n.mu.Unlock()
		select {
		case <-w.wake:
		case <-ctx.Done():
			return nil, fmt.Errorf("simnet: dial %s: %w: %w", addr, transport.ErrTimeout, ctx.Err())
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	l := n.listeners[addr]
	if l == nil {
		return nil, fmt.Errorf("simnet: dial %s: %w", addr, transport.ErrRefused)
	}
	links := n.links[addr]
	host, _, _ := net.SplitHostPort(addr)
	n.clients[addr]++
	caddr := Addr(net.JoinHostPort("client."+t.name+"."+host, strconv.Itoa(n.clients[addr])))
	c, s := newPipe(n.seed, n.pipes, links[0], links[1], caddr, Addr(addr))
	n.pipes++
	select {
	case l.q <- s:
	default:
		return nil, fmt.Errorf("simnet: dial %s: backlog full: %w", addr, transport.ErrRefused)
	}
	n.live[addr] = append(n.live[addr], c)
	forget := func() { n.forget(addr, c) }
	c.onClose, s.onClose = forget, forget
	return c, nil
}

// forget drops c from the open pipes to addr.
func (n *Network) forget(addr string, c *Conn) {
	n.mu.Lock()
	defer n.mu.Unlock()
	live := n.live[addr]
	for i, x := range live {
		if x == c {
			n.live[addr] = append(live[:i:i], live[i+1:]...)
			break
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		err := ctx.Err()
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("%w: %w", transport.ErrTimeout, err)
		}
		return err
	}
}

// listener is a transport.Listener on a Network.
type listener struct {
	n         *Network
	addr      Addr
	q         chan *Conn
	done      chan struct{}
	closeOnce sync.Once
}

// Accept waits for the next dialled connection.
func (l *listener) Accept(ctx context.Context) (net.Conn, error) {
	select {
	case <-l.done:
		return nil, fmt.Errorf("simnet: accept on %s: %w", l.addr, transport.ErrClosed)
	default:
	}
	select {
	case c := <-l.q:
		return c, nil
	case <-l.done:
		return nil, fmt.Errorf("simnet: accept on %s: %w", l.addr, transport.ErrClosed)
	case <-ctx.Done():
		err := ctx.Err()
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("simnet: accept on %s: %w: %w", l.addr, transport.ErrTimeout, err)
		}
		return nil, fmt.Errorf("simnet: accept on %s: %w", l.addr, err)
	}
}

// Close stops listening; connections waiting for Accept are closed.
func (l *listener) Close() error {
	l.closeOnce.Do(func() {
		l.n.mu.Lock()
		if l.n.listeners[string(l.addr)] == l {
			delete(l.n.listeners, string(l.addr))
		}
		l.n.mu.Unlock()
		close(l.done)
		for {
			select {
			case c := <-l.q:
				c.Close()
			default:
				return
			}
		}
	})
	return nil
}

// Addr returns the address the listener is bound to.
func (l *listener) Addr() net.Addr { return l.addr }
