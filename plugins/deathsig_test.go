//go:build linux

package plugins

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// hostHelperEnv makes the test binary a bare host process over the
// plugin folder it names (see runHostHelper).
const hostHelperEnv = "COMMUCAT_PLUGINS_TEST_HOST_DIR"

// runHostHelper starts a host over dir, prints the pid of each plugin
// process and waits to be killed.
func runHostHelper(dir string) {
	h, err := NewHost(HostConfig{Dirs: []string{dir}}, nil)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	if _, err := h.Discover(); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	for _, p := range h.plugins {
		p.mu.Lock()
		g := p.gen
		p.mu.Unlock()
		if g != nil {
			fmt.Println(g.pid())
		}
	}
	select {} // until killed
}

// TestPluginDiesWithHost kills a host process with SIGKILL (no chance to
// clean up) and checks that its plugin process goes away too. The plugin
// is stopped with SIGSTOP first, so that it cannot exit on its own when its
// control socket reaches EOF: only the parent-death signal ends it.
func TestPluginDiesWithHost(t *testing.T) {
	dir := pluginDir(t, map[string]string{"tcp": buildPlugin(t, "tcp", "./cmd/commucat-transport-tcp")})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), hostHelperEnv+"="+dir, "TMPDIR="+t.TempDir())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The bound only keeps a helper that never answers from hanging the
	// run.
	type answer struct {
		line string
		err  error
	}
	answers := make(chan answer, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		answers <- answer{line, err}
	}()
	var a answer
	select {
	case a = <-answers:
	case <-time.After(30 * time.Second):
		a.err = errors.New("no answer within 30 s")
	}
	line, err := a.line, a.err
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("host helper: %q, %v", line, err)
	}
	pid, err := strconv.Atoi(line[:len(line)-1])
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("host helper: %q", line)
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("pidfd_open(%d): %v", pid, err)
	}
	// Whatever happens, no stopped plugin outlives the test; the pidfd
	// cannot signal another process that reused the pid.
	t.Cleanup(func() {
		unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0) //nolint:errcheck // gone already if the test passed
		unix.Close(pidfd)
	})
	if err := unix.PidfdSendSignal(pidfd, unix.SIGSTOP, nil, 0); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("stop plugin %d: %v", pid, err)
	}
	if err := waitStopped(pid); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal(err)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait() //nolint:errcheck // killed
	// The pidfd becomes readable when the plugin exits. The bound only
	// keeps a failure from hanging the run.
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	deadline := time.Now().Add(30 * time.Second)
	for fds[0].Revents == 0 {
		ms := int(time.Until(deadline).Milliseconds())
		if ms <= 0 {
			t.Fatalf("plugin %d, stopped, still there after its host was killed", pid)
		}
		if _, err := unix.Poll(fds, ms); err != nil && err != unix.EINTR {
			t.Fatalf("poll: %v", err)
		}
	}
}

// waitStopped waits until process pid is stopped (state T in
// /proc/<pid>/stat), when none of its threads runs any more. The bound
// only keeps a failure from hanging the run.
func waitStopped(pid int) error {
	for range 1000 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return err
		}
		// The state follows the command name, which is in parentheses.
		stat := string(b)
		if i := strings.LastIndexByte(stat, ')'); i >= 0 && strings.HasPrefix(stat[i:], ") T") {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("process %d not stopped after SIGSTOP", pid)
}
