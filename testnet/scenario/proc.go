package scenario

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/commucat/commucat/testnet/topology"
)

// maxOutput caps what is kept of one process's stdout or stderr.
const maxOutput = 64 << 20

// capBuffer keeps a process's output up to maxOutput bytes and wakes
// waiters on every write. It is safe for concurrent use.
type capBuffer struct {
	mu        sync.Mutex
	b         bytes.Buffer
	truncated bool
	changed   chan struct{}
}

func newCapBuffer() *capBuffer { return &capBuffer{changed: make(chan struct{})} }

// Write keeps p, or what fits of it, and never fails.
func (c *capBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	room := maxOutput - c.b.Len()
	if room < len(p) {
		c.truncated = true
		if room > 0 {
			c.b.Write(p[:room])
		}
	} else {
		c.b.Write(p)
	}
	close(c.changed)
	c.changed = make(chan struct{})
	return len(p), nil
}

// String returns the kept output.
func (c *capBuffer) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.String()
}

// state returns the kept output and a channel closed at the next write.
func (c *capBuffer) state() (string, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.String(), c.changed
}

// proc is one commucat process of a run.
type proc struct {
	step, kind, host string
	user             string   // the chat's sender
	args             []string // for the report, secrets replaced
	cmd              *exec.Cmd
	stdout, stderr   *capBuffer
	start, end       time.Time
	done             chan struct{}
	err              error
	killed           atomic.Bool
	log              string
}

// startProc starts bin with args on host. shown replaces args in the
// report (nil: args). The process gets SIGKILL if this process dies, so a
// crashed run leaves no programs behind.
func startProc(n *topology.Net, step, kind, host, bin string, args, shown []string, stdin []byte) (*proc, error) {
	if shown == nil {
		shown = args
	}
	p := &proc{step: step, kind: kind, host: host, args: shown, stdout: newCapBuffer(), stderr: newCapBuffer(), done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if stdin != nil {
		p.cmd.Stdin = bytes.NewReader(stdin)
	}
	p.cmd.Env = append(os.Environ(), "COMMUCAT_STATE=")
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p.start = time.Now()
	if err := n.Start(host, p.cmd); err != nil {
		return nil, fmt.Errorf("scenario: %s %s on %s: %w", step, kind, host, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		p.end = time.Now()
		n.Forget(p.cmd)
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitCode returns the exit status, or -1 if it was killed or still runs.
func (p *proc) exitCode() int {
	if !p.exited() || p.killed.Load() {
		return -1
	}
	if p.err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// wait waits for the process to end, at most d (0: no bound besides ctx);
// then it is stopped.
func (p *proc) wait(ctx context.Context, d time.Duration) error {
	var timeout <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-p.done:
		return p.err
	case <-timeout:
		p.stop(0)
		return fmt.Errorf("%s did not end within %s", p.kind, d)
	case <-ctx.Done():
		p.stop(0)
		return ctx.Err()
	}
}

// waitFor waits until the process printed s on stdout or stderr, or ends
// (an error), or d passes.
func (p *proc) waitFor(ctx context.Context, s string, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		out, ch1 := p.stdout.state()
		errOut, ch2 := p.stderr.state()
		if strings.Contains(out, s) || strings.Contains(errOut, s) {
			return nil
		}
		select {
		case <-p.done:
			out, errOut = p.stdout.String(), p.stderr.String()
			if strings.Contains(out, s) || strings.Contains(errOut, s) {
				return nil
			}
			return fmt.Errorf("%s exited (%v) before it was ready: %s", p.kind, p.err, lastLine(errOut))
		case <-ch1:
		case <-ch2:
		case <-t.C:
			return fmt.Errorf("%s not ready within %s: %s", p.kind, d, lastLine(errOut))
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// stop ends the process: SIGTERM, then SIGKILL after grace (at once if
// grace is 0). It waits for the process.
func (p *proc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	p.killed.Store(true)
	if grace > 0 && p.cmd.Process.Signal(syscall.SIGTERM) == nil {
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-p.done:
			return
		case <-t.C:
		}
	}
	p.cmd.Process.Kill()
	<-p.done
}

// lastLine returns the last non-empty line of s, shortened.
func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}
