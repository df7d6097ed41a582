package scenario

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/commucat/commucat/testnet/netns"
)

// RunDirRoot holds one directory per user id, each with one record per
// running testnet, so `commucat testnet down` can remove exactly the
// namespaces a crashed run left behind.
const RunDirRoot = "/run/commucat-testnet"

// prefixRE is the shape of the namespace prefixes this package makes:
// "cc-<pid>-s<k>-". Down removes nothing whose record has another prefix.
var prefixRE = regexp.MustCompile(`^cc-[0-9]+-s[0-9]+-$`)

// RunRecord is what a running testnet records about itself.
type RunRecord struct {
	// PID is the process that owns the namespaces; Start is its start
	// time in clock ticks since boot (/proc/PID/stat field 22), so a
	// reused PID is not mistaken for it.
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
	// Prefix starts every namespace name; Namespaces are the full names.
	Prefix     string    `json:"prefix"`
	Namespaces []string  `json:"namespaces"`
	Scenario   string    `json:"scenario"`
	Created    time.Time `json:"created"`
}

// RunDir returns this user's directory of run records.
func RunDir() string {
	return filepath.Join(RunDirRoot, strconv.Itoa(os.Getuid()))
}

// procStart returns the start time of process pid, or false if it does
// not run (a zombie does not count: its namespaces are nobody's).
func procStart(pid int) (uint64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// The command name (field 2) may hold spaces and parentheses: fields
	// after the last ')' start with field 3.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return 0, false
	}
	v, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, false
	}
	return v, true
}

// writeRecord records a run's namespaces before they are created and
// returns a function removing the record.
func writeRecord(prefix, scenario string, names []string) (func(), error) {
	start, _ := procStart(os.Getpid())
	rec := RunRecord{PID: os.Getpid(), Start: start, Prefix: prefix, Namespaces: names, Scenario: scenario, Created: time.Now().UTC()}
	dir := RunDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("scenario: run record: %w", err)
	}
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("scenario: run record: %w", err)
	}
	path := filepath.Join(dir, strings.TrimSuffix(prefix, "-")+".json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("scenario: run record: %w", err)
	}
	return func() { os.Remove(path) }, nil
}

// DownResult says what Down did with one run record.
type DownResult struct {
	Record RunRecord
	// Running is set when the owning process still runs: nothing was
	// removed.
	Running bool
	// Removed are the namespaces removed; Missing those already gone.
	Removed, Missing []string
	// Err is the first error, if any.
	Err error
}

// Down removes the namespaces of this user's runs whose process is gone:
// exactly the names in each record, and only when a name starts with the
// record's prefix and the prefix has the shape this package makes. Records
// of running processes are left alone. It needs root.
func Down() ([]DownResult, error) {
	if err := netns.Check(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotRoot, err)
	}
	entries, err := os.ReadDir(RunDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("scenario: down: %w", err)
	}
	var out []DownResult
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		path := filepath.Join(RunDir(), e.Name())
		var r DownResult
		b, err := os.ReadFile(path)
		if err == nil {
			err = json.Unmarshal(b, &r.Record)
		}
		if err != nil {
			r.Err = fmt.Errorf("scenario: down: %s: %w", e.Name(), err)
			out = append(out, r)
			continue
		}
		rec := r.Record
		if start, ok := procStart(rec.PID); ok && start == rec.Start {
			r.Running = true
			out = append(out, r)
			continue
		}
		if !prefixRE.MatchString(rec.Prefix) {
			r.Err = fmt.Errorf("scenario: down: %s: prefix %q is not one this program makes; left alone", e.Name(), rec.Prefix)
			out = append(out, r)
			continue
		}
		for _, name := range rec.Namespaces {
			if !strings.HasPrefix(name, rec.Prefix) || !netns.ValidName(name) || strings.ContainsRune(name, '/') {
				if r.Err == nil {
					r.Err = fmt.Errorf("scenario: down: %s: namespace %q does not start with %q; left alone", e.Name(), name, rec.Prefix)
				}
				continue
			}
			if !netns.Exists(name) {
				r.Missing = append(r.Missing, name)
				continue
			}
			p := filepath.Join(netns.Dir, name)
			if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
				if r.Err == nil {
					r.Err = fmt.Errorf("scenario: down: unmount %s: %w", name, err)
				}
				continue
			}
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				if r.Err == nil {
					r.Err = fmt.Errorf("scenario: down: remove %s: %w", name, err)
				}
				continue
			}
			r.Removed = append(r.Removed, name)
		}
		if r.Err == nil {
			os.Remove(path)
		}
		out = append(out, r)
	}
	return out, nil
}
