package plugins

import (
	"net"
	"os"
	"sync"

	"github.com/commucat/commucat/plugins/internal/ring"
)

// stream is a flow's byte stream: its socket, or the rings over it.
type stream interface {
	net.Conn
	CloseWrite() error
}

// ringStream is a flow's rings, holding one of HostConfig.RingFlows until
// it is closed.
type ringStream struct {
	*ring.Conn
	h    *Host
	once sync.Once
}

// Close closes the rings and gives their place back.
func (r *ringStream) Close() error {
	err := r.Conn.Close()
	r.once.Do(r.h.ringDone)
	return err
}

// newRing returns rings over the flow socket sock and the files to send
// the plugin after sock's other end, or nil if HostConfig.RingFlows allows
// no more or the rings cannot be had; the flow then goes through sock
// alone.
func (h *Host) newRing(sock *net.UnixConn) (*ringStream, []*os.File) {
	if !h.takeRing() {
		return nil, nil
	}
	rc, files, err := ring.Offer(sock, ring.Size)
	if err != nil {
		h.ringDone()
		h.log.Debug("no ring for a flow; it goes through its socket", "error", err)
		return nil, nil
	}
	return &ringStream{Conn: rc, h: h}, files
}

var _ stream = (*ringStream)(nil)
