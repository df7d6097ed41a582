package ring

import (
	"io"
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkSetup is what rings add to opening and closing a flow: Offer,
// Accept and both Closes, without the flow socket itself.
func BenchmarkSetup(b *testing.B) {
	for b.Loop() {
		host, plugin := pair(b, Size)
		host.Close()
		plugin.Close()
	}
}

// BenchmarkStream moves 64 KiB writes through rings and, as the
// baseline, through the socket pair they replace (with the host's 2 MiB
// send buffers), both ends in one process.
func BenchmarkStream(b *testing.B) {
	b.Run("rings", func(b *testing.B) {
		host, plugin := pair(b, Size)
		benchStream(b, host, plugin)
	})
	b.Run("socketpair", func(b *testing.B) {
		w, r := socketPair(b)
		defer w.Close()
		defer r.Close()
		for _, c := range []*net.UnixConn{w, r} {
			raw, _ := c.SyscallConn()
			raw.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 2<<20) })
		}
		benchStream(b, w, r)
	})
}

func benchStream(b *testing.B, w io.WriteCloser, r io.Reader) {
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(buf)))
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, r)
		done <- err
	}()
	for b.Loop() {
		if _, err := w.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if cw, ok := w.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}
