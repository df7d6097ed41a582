package pt

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/commucat/commucat/core/transport"
)

// pastDeadline wakes a blocked read.
var pastDeadline = time.Unix(1, 0)

// proc is one running PT process. It holds the write end of the PT's stdin
// (closing it asks the PT to exit) and the read ends of its stdout and
// stderr, and owns up to three goroutines: the waiter (cmd.Wait), the
// stderr reader, and, once set-up is over, the stdout reader. stop ends
// the process and waits for all three.
type proc struct {
	method string
	binary string // base name, for logs and errors
	log    *slog.Logger
	grace  time.Duration

	cmd    *exec.Cmd
	stdin  *os.File
	stdout *os.File
	stderr *os.File
	out    *bufio.Reader // over stdout
	tmpDir string        // a client's temporary state directory, removed by stop

	exited  chan struct{} // closed by the waiter once the process has exited
	waitErr error         // written by the waiter before it closes exited

	readers sync.WaitGroup // the stdout and stderr readers
	waiter  sync.WaitGroup

	mu         sync.Mutex
	lastStderr string
	stopping   bool // stop has begun: an exit from now on is expected

	stopOnce sync.Once
}

// launch starts cfg's PT with the protocol variables env (beside the
// common ones) and reads its set-up lines until CMETHODS DONE (server:
// SMETHODS DONE), for at most cfg.StartTimeout and while ctx lasts. It
// returns the running process and the C/SMETHOD line for cfg.Method.
// An exit before stop was called is logged ("pt exited") and closes
// p.exited, which its owner watches. On failure the process is stopped and
// the error is a *StartError.
func launch(ctx context.Context, cfg *Config, env []string, server bool) (*proc, message, error) {
	p := &proc{
		method: cfg.Method,
		binary: filepath.Base(cfg.Binary),
		log:    cfg.logger(),
		grace:  cfg.stopTimeout(),
		exited: make(chan struct{}),
	}
	if err := p.start(cfg, env); err != nil {
		return nil, message{}, &StartError{Binary: p.binary, Method: p.method, Err: err}
	}
	m, serr := p.setup(ctx, cfg.startTimeout(), server, cfg.Proxy != "")
	if serr != nil {
		if signaled := p.stop(); !signaled && p.waitErr != nil {
			serr.Exit = p.waitErr
		}
		p.mu.Lock()
		serr.Stderr = p.lastStderr
		p.mu.Unlock()
		return nil, message{}, serr
	}
	p.readers.Go(p.readStdout)
	return p, m, nil
}

// start starts the process with its three pipes and the waiter and stderr
// reader.
func (p *proc) start(cfg *Config, env []string) (err error) {
	path, err := exec.LookPath(cfg.Binary)
	if err != nil {
		return err
	}
	dir := cfg.StateDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "commucat-pt-"+cfg.Method+"-"); err != nil {
			return fmt.Errorf("pt: state directory: %w", err)
		}
		p.tmpDir = dir
	} else if dir, err = filepath.Abs(dir); err != nil {
		return fmt.Errorf("pt: state directory: %w", err)
	}
	var files []*os.File // every pipe end, closed on failure
	defer func() {
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			p.removeTmp()
		}
	}()
	pipe := func() (r, w *os.File, err error) {
		r, w, err = os.Pipe()
		if err == nil {
			files = append(files, r, w)
		}
		return r, w, err
	}
	stdinR, stdinW, err := pipe()
	if err != nil {
		return err
	}
	stdoutR, stdoutW, err := pipe()
	if err != nil {
		return err
	}
	stderrR, stderrW, err := pipe()
	if err != nil {
		return err
	}
	full := []string{
		"TOR_PT_MANAGED_TRANSPORT_VER=1",
		"TOR_PT_STATE_LOCATION=" + dir,
		"TOR_PT_EXIT_ON_STDIN_CLOSE=1",
	}
	full = append(full, env...)
	full = append(full, cfg.Env...)
	p.cmd = &exec.Cmd{
		Path:        path,
		Args:        append([]string{path}, cfg.Args...),
		Env:         full,
		Dir:         dir,
		Stdin:       stdinR,
		Stdout:      stdoutW,
		Stderr:      stderrW,
		SysProcAttr: sysProcAttr(),
	}
	if err := p.cmd.Start(); err != nil {
		return err
	}
	// The child holds its ends now; the host keeps only its own.
	stdinR.Close()
	stdoutW.Close()
	stderrW.Close()
	p.stdin, p.stdout, p.stderr = stdinW, stdoutR, stderrR
	p.out = bufio.NewReaderSize(stdoutR, maxLine)
	p.log.Debug("pt started", "pid", p.cmd.Process.Pid)
	p.waiter.Go(func() {
		err := p.cmd.Wait()
		p.waitErr = err
		// Logged before exited is closed: an owner that sees exited
		// and calls stop must not silence it.
		p.mu.Lock()
		expected := p.stopping
		p.mu.Unlock()
		if !expected {
			p.log.Warn("pt exited", "err", exitText(err))
		}
		close(p.exited)
	})
	p.readers.Go(p.readStderr)
	return nil
}

// exitText describes a process's exit for logs.
func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// hasExited reports whether the process has exited.
func (p *proc) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// setup reads the PT's set-up lines (pt-spec.txt 3.3) until CMETHODS DONE
// or SMETHODS DONE and returns the line for p.method. LOG and STATUS lines
// are logged; unknown keywords and garbage are logged at debug level and
// skipped. The returned *StartError lacks Exit and Stderr, which launch
// fills in once the process has stopped.
func (p *proc) setup(ctx context.Context, timeout time.Duration, server, proxy bool) (message, *StartError) {
	fail := func(err error, detail string) (message, *StartError) {
		return message{}, &StartError{Binary: p.binary, Method: p.method, Err: err, Detail: detail}
	}
	if ctx.Err() != nil {
		return fail(ctx.Err(), "")
	}
	done, method, methodErr := kindCmethodsDone, kindCmethod, kindCmethodError
	doneName := "CMETHODS DONE"
	if server {
		done, method, methodErr = kindSmethodsDone, kindSmethod, kindSmethodError
		doneName = "SMETHODS DONE"
	}
	deadline := time.Now().Add(timeout)
	p.stdout.SetReadDeadline(deadline) //nolint:errcheck // a pipe from os.Pipe supports deadlines
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		p.stdout.SetReadDeadline(pastDeadline) //nolint:errcheck // as above
	})
	defer func() {
		if !stop() {
			<-fired
		}
		p.stdout.SetReadDeadline(time.Time{}) //nolint:errcheck // as above
	}()
	var versioned, proxied bool
	var found *message
	for {
		line, err := readLine(p.out)
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return fail(ctx.Err(), "while waiting for "+doneName)
		case errors.Is(err, os.ErrDeadlineExceeded):
			return fail(transport.ErrTimeout, fmt.Sprintf("no %s within %v", doneName, timeout))
		case errors.Is(err, io.EOF):
			return fail(ErrExited, "before "+doneName)
		default:
			return fail(err, "reading its stdout")
		}
		if line == nil {
			p.log.Debug("pt stdout line too long; discarded", "max", maxLine)
			continue
		}
		m, err := parseLine(line)
		if err != nil {
			if k := keywords[firstWord(line)]; k != kindUnknown && k != kindLog && k != kindStatus {
				if k == kindSmethod {
					// Neither the line nor the parser's words: its ARGS
					// are the secrets clients need (obfs4's cert).
					return fail(ErrProtocol, "a malformed SMETHOD line (not shown: its ARGS may hold secrets)")
				}
				return fail(ErrProtocol, fmt.Sprintf("%v in %q", strings.TrimPrefix(err.Error(), "pt: "), clip(line)))
			}
			p.log.Debug("pt stdout line ignored", "err", err, "line", clip(line))
			continue
		}
		switch {
		case m.kind == kindLog || m.kind == kindStatus:
			p.logMessage(m)
		case m.kind == kindVersion:
			if m.text != "1" {
				return fail(ErrVersion, fmt.Sprintf("VERSION %s, but only 1 was offered", m.text))
			}
			versioned = true
		case m.kind == kindVersionError:
			return fail(ErrVersion, "VERSION-ERROR "+m.text)
		case m.kind == kindEnvError:
			return fail(ErrEnv, "ENV-ERROR "+m.text)
		case m.kind == kindProxyError:
			return fail(ErrProxy, "PROXY-ERROR "+m.text)
		case m.kind == kindProxyDone:
			proxied = true
		case m.kind == method && m.method == p.method:
			found = &m
		case m.kind == methodErr && m.method == p.method:
			return fail(ErrMethod, m.keyword+" "+m.method+" "+m.text)
		case m.kind == done:
			switch {
			case !versioned:
				return fail(ErrProtocol, doneName+" without a VERSION line")
			case proxy && !proxied:
				return fail(ErrProxy, doneName+" without PROXY DONE: the PT would not use the proxy")
			case found == nil:
				return fail(ErrMethod, fmt.Sprintf("%s without a %s line for it", doneName, strings.TrimSuffix(doneName, "S DONE")))
			}
			if server {
				p.log.Debug("pt listening", "addr", found.addr)
			} else {
				p.log.Debug("pt ready", "socks", found.addr, "protocol", found.proto)
			}
			return *found, nil
		case m.kind == kindSmethod:
			p.log.Debug("pt SMETHOD line of another method ignored", "method", m.method) // its ARGS may be secrets
		default:
			p.log.Debug("pt stdout line ignored", "line", clip(line))
		}
	}
}

// readLine reads one line of at most maxLine bytes from r. A longer line
// is consumed and reported as a nil line with a nil error. The last line
// may lack its newline.
func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		for errors.Is(err, bufio.ErrBufferFull) {
			_, err = r.ReadSlice('\n')
		}
		if err != nil {
			return nil, err
		}
		return nil, nil
	}
	if err != nil {
		if errors.Is(err, io.EOF) && len(line) > 0 {
			return line, nil
		}
		return nil, err
	}
	return line, nil
}

// firstWord is a line's keyword, for telling known from unknown keywords
// in a line that does not parse.
func firstWord(line []byte) string {
	w, _, _ := strings.Cut(strings.TrimRight(string(line), "\r\n"), " ")
	return w
}

// clip shortens a line for a log or an error.
func clip(line []byte) string {
	s := strings.TrimRight(string(line), "\r\n")
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

// logSeverity maps a LOG line's SEVERITY (tor's levels) to slog's.
var logSeverity = map[string]slog.Level{
	"error":   slog.LevelError,
	"warning": slog.LevelWarn,
	"notice":  slog.LevelInfo,
	"info":    slog.LevelDebug,
	"debug":   slog.LevelDebug - 4,
}

// logMessage re-logs a LOG or STATUS line under the PT's name.
func (p *proc) logMessage(m message) {
	ctx := context.Background()
	if m.kind == kindLog {
		level, ok := logSeverity[m.args["SEVERITY"]]
		if !ok {
			level = slog.LevelInfo
		}
		p.log.Log(ctx, level, m.args["MESSAGE"], "source", "LOG")
		return
	}
	attrs := make([]any, 0, 2*len(m.args))
	for _, k := range sortedKeys(m.args) {
		attrs = append(attrs, k, m.args[k])
	}
	if m.args["TYPE"] == "version" {
		p.log.Info("pt version", attrs...)
		return
	}
	p.log.Debug("pt status", attrs...)
}

// readStdout logs the PT's LOG and STATUS lines after set-up, until EOF.
func (p *proc) readStdout() {
	for {
		line, err := readLine(p.out)
		if err != nil {
			return
		}
		if line == nil {
			continue
		}
		m, err := parseLine(line)
		if err != nil || (m.kind != kindLog && m.kind != kindStatus) {
			p.log.Debug("pt stdout line ignored", "line", clip(line))
			continue
		}
		p.logMessage(m)
	}
}

// readStderr logs the PT's stderr, line by line, until EOF, and keeps the
// last line for a *StartError.
func (p *proc) readStderr() {
	r := bufio.NewReaderSize(p.stderr, maxLine)
	for {
		line, err := readLine(r)
		if err != nil {
			return
		}
		if line == nil {
			p.log.Info("pt stderr line too long; discarded", "max", maxLine)
			continue
		}
		s := clip(line)
		if s == "" {
			continue
		}
		p.mu.Lock()
		p.lastStderr = s
		p.mu.Unlock()
		p.log.Info("pt stderr", "line", s)
	}
}

// stop ends the process as pt-spec.txt 3.4 recommends: it closes the PT's
// stdin, waits up to the grace period for the PT to exit, sends SIGTERM,
// waits again, and then SIGKILL. Then it waits for the readers (a child of
// the PT that still holds its stdout or stderr is killed after one more
// grace period) and removes a temporary state directory. It reports
// whether the process had to be signalled; if not, p.waitErr is its own
// exit status. stop is idempotent; later calls wait for the first and
// return false.
func (p *proc) stop() (signaled bool) {
	p.stopOnce.Do(func() {
		p.mu.Lock()
		p.stopping = true
		p.mu.Unlock()
		p.stdin.Close()
		if !p.waitExit(p.grace) {
			signaled = true
			p.log.Debug("pt still running after stdin closed; sending SIGTERM")
			signalGroup(p.cmd.Process, syscall.SIGTERM) //nolint:errcheck // it may have just exited
			if !p.waitExit(p.grace) {
				p.log.Warn("pt ignored SIGTERM; killing it")
				signalGroup(p.cmd.Process, syscall.SIGKILL) //nolint:errcheck // as above
				<-p.exited
			}
		}
		p.waiter.Wait()
		readers := make(chan struct{})
		go func() { p.readers.Wait(); close(readers) }()
		t := time.NewTimer(p.grace)
		select {
		case <-readers:
			t.Stop()
		case <-t.C:
			p.log.Warn("a child of the pt still holds its output; killing its process group")
			signalGroup(p.cmd.Process, syscall.SIGKILL) //nolint:errcheck // the group may be gone
			p.stdout.Close()
			p.stderr.Close()
			<-readers
		}
		p.stdout.Close()
		p.stderr.Close()
		p.removeTmp()
		p.log.Debug("pt stopped", "exit", exitText(p.waitErr))
	})
	return signaled
}

// waitExit waits up to d for the process to exit and reports whether it
// did.
func (p *proc) waitExit(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.exited:
		return true
	case <-t.C:
		return false
	}
}

func (p *proc) removeTmp() {
	if p.tmpDir == "" {
		return
	}
	if err := os.RemoveAll(p.tmpDir); err != nil {
		p.log.Warn("pt: remove temporary state directory", "err", err)
	}
	p.tmpDir = ""
}
