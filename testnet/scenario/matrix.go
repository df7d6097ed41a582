package scenario

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/commucat/commucat/configs"
)

// MatrixOptions configure RunMatrix. Zero fields take the defaults.
type MatrixOptions struct {
	// Binary is the commucat binary; required.
	Binary string
	// Dir receives one directory per cell and the matrix's files;
	// required.
	Dir string
	// Profiles are the censor profiles; if empty, every shipped one.
	Profiles []string
	// Transports are the transports; if empty, Transports.
	Transports []string
	// Count messages of Size bytes, Parallel in flight, within For per
	// cell; defaults 48, 16384, 4 and 20s.
	Count, Size, Parallel int
	For                   time.Duration
	// Seed seeds every cell's links and censor; if zero, 1.
	Seed uint64
	// NoPaths skips the failover scenario.
	NoPaths bool
	// Logger receives the runs' logs; Progress a line per cell.
	Logger   *slog.Logger
	Progress io.Writer
}

// Cell is one transport under one censor profile.
type Cell struct {
	Profile   string `json:"profile"`
	Transport string `json:"transport"`
	// Sent and Delivered count the chat's messages; Bytes the delivered
	// ones' bytes.
	Sent      int   `json:"sent"`
	Delivered int   `json:"delivered"`
	Bytes     int64 `json:"bytes"`
	// GoodputMbps is the delivered bytes over the time from the first
	// send to the last delivery, through the real gateway.
	GoodputMbps float64 `json:"goodput_mbps"`
	// Censor is what the censor's log says it did to the transport.
	Censor TransportVerdict `json:"censor"`
	// Errors are the sender's errors (first few), Err a run failure.
	Errors  []string `json:"errors,omitempty"`
	Err     string   `json:"error,omitempty"`
	Seconds float64  `json:"seconds"`
	Dir     string   `json:"dir"`
}

// Status returns a short description for tables: the goodput, or why
// there is none.
func (c Cell) Status() string {
	switch {
	case c.Err != "" && c.Delivered == 0:
		return "error"
	case c.Delivered == 0 && len(c.Censor.Blocked) > 0:
		return "blocked (" + strings.Join(c.Censor.Blocked, ", ") + ")"
	case c.Delivered == 0:
		return "nothing delivered"
	}
	s := fmt.Sprintf("%.2f Mbit/s", c.GoodputMbps)
	if c.Delivered < c.Sent {
		s += fmt.Sprintf(", %d/%d", c.Delivered, c.Sent)
	}
	switch {
	case len(c.Censor.Blocked) > 0:
		s += " (" + strings.Join(c.Censor.Blocked, ", ") + ")"
	case len(c.Censor.Throttled) > 0:
		s += " (throttled: " + strings.Join(c.Censor.Throttled, ", ") + ")"
	}
	return s
}

// Matrix is the result of RunMatrix.
type Matrix struct {
	Started    time.Time `json:"started"`
	Seconds    float64   `json:"seconds"`
	Seed       uint64    `json:"seed"`
	Count      int       `json:"count"`
	Size       int       `json:"size"`
	Parallel   int       `json:"parallel"`
	Profiles   []string  `json:"profiles"`
	Transports []string  `json:"transports"`
	Cells      []Cell    `json:"cells"`
	// Paths is the failover scenario's report: the client router's path
	// choices over time.
	Paths *Report `json:"paths,omitempty"`
	// Files are the pictures written.
	Files []string `json:"files,omitempty"`
}

// Cell returns the cell of a profile and a transport.
func (m *Matrix) Cell(profile, transport string) (Cell, bool) {
	for _, c := range m.Cells {
		if c.Profile == profile && c.Transport == transport {
			return c, true
		}
	}
	return Cell{}, false
}

// MatrixScenario returns the scenario of one cell: the standard network
// serving transport alone; both users register with the censor off, the
// censor is switched on, then bob listens and alice chats over transport.
func MatrixScenario(profile, transport string, count, size, parallel int, d time.Duration, seed uint64) *Scenario {
	s := Standard("matrix-"+profile+"-"+transport, profile, transport)
	s.Seed = seed
	if s.Censor != nil {
		s.Censor.Off = true
		s.Timeline = []Event{{At: 0, Censor: "on"}}
	}
	s.Duration = d + 3*time.Minute
	s.Drain = 5 * time.Second
	s.Run = []Program{
		{Listen: &Listen{User: "bob", Transport: transport}},
		{Chat: &Send{User: "alice", To: "bob", Transport: transport, Count: count, Size: size, Parallel: parallel, For: d, Stats: 500 * time.Millisecond, Timeout: 10 * time.Second}},
	}
	return s
}

// RunMatrix runs every transport against every censor profile, each cell
// in a fresh network, in sequence, then the failover scenario, and writes
// matrix.json, matrix.md and the pictures (goodput.svg/png, paths.svg/png)
// into o.Dir. A cell that fails to run is recorded with its error and the
// matrix goes on; the returned error joins the cells' errors.
func RunMatrix(ctx context.Context, o MatrixOptions) (*Matrix, error) {
	if o.Binary == "" || o.Dir == "" {
		return nil, errors.New("scenario: MatrixOptions.Binary and Dir are required")
	}
	m := &Matrix{Started: time.Now().UTC(), Seed: o.Seed, Count: o.Count, Size: o.Size, Parallel: o.Parallel, Profiles: o.Profiles, Transports: o.Transports}
	if m.Seed == 0 {
		m.Seed = 1
	}
	if m.Count == 0 {
		m.Count = 48
	}
	if m.Size == 0 {
		m.Size = 16384
	}
	if m.Parallel == 0 {
		m.Parallel = 4
	}
	d := o.For
	if d == 0 {
		d = 20 * time.Second
	}
	if len(m.Profiles) == 0 {
		m.Profiles = configs.CensorProfileNames()
	}
	if len(m.Transports) == 0 {
		m.Transports = slices.Clone(Transports)
	}
	for _, t := range m.Transports {
		if !slices.Contains(Transports, t) {
			return nil, fmt.Errorf("scenario: matrix: unknown transport %q", t)
		}
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("scenario: matrix: %w", err)
	}
	progress := o.Progress
	if progress == nil {
		progress = io.Discard
	}
	start := time.Now()
	var errs []error
	for _, p := range m.Profiles {
		for _, t := range m.Transports {
			if ctx.Err() != nil {
				break
			}
			s := MatrixScenario(p, t, m.Count, m.Size, m.Parallel, d, m.Seed)
			dir := filepath.Join(o.Dir, p+"-"+t)
			cs := time.Now()
			rep, err := Run(ctx, s, Options{Binary: o.Binary, Dir: dir, Logger: o.Logger})
			c := Cell{Profile: p, Transport: t, Sent: m.Count, Dir: dir, Seconds: time.Since(cs).Seconds()}
			if err != nil && !errors.Is(err, ErrFailed) {
				c.Err = err.Error()
				errs = append(errs, fmt.Errorf("%s/%s: %w", p, t, err))
			}
			if rep != nil {
				if len(rep.Chats) == 1 {
					ch := rep.Chats[0]
					c.Delivered, c.Bytes, c.GoodputMbps, c.Errors = ch.Delivered, ch.Bytes, ch.GoodputMbps, ch.Errors
					if len(c.Errors) > 3 {
						c.Errors = c.Errors[:3]
					}
				}
				if v, ok := rep.Transport(t); ok {
					c.Censor = v
				}
			}
			m.Cells = append(m.Cells, c)
			fmt.Fprintf(progress, "%-22s %-10s %s (%.0fs)\n", p, t, c.Status(), c.Seconds)
		}
	}
	if !o.NoPaths && ctx.Err() == nil {
		s, err := Shipped("failover")
		if err == nil {
			s.Seed = m.Seed
			m.Paths, err = Run(ctx, s, Options{Binary: o.Binary, Dir: filepath.Join(o.Dir, "failover"), Logger: o.Logger})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("failover: %w", err))
		}
		if m.Paths != nil {
			fmt.Fprintf(progress, "failover: ok=%t\n", m.Paths.OK)
		}
	}
	m.Seconds = time.Since(start).Seconds()
	files, err := m.Draw(o.Dir)
	m.Files = files
	if err != nil {
		errs = append(errs, err)
	}
	if err := m.writeFiles(o.Dir); err != nil {
		errs = append(errs, err)
	}
	if err := ctx.Err(); err != nil {
		errs = append(errs, err)
	}
	return m, errors.Join(errs...)
}

// writeFiles writes matrix.json and matrix.md.
func (m *Matrix) writeFiles(dir string) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("scenario: matrix: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "matrix.json"), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("scenario: matrix: %w", err)
	}
	f, err := os.Create(filepath.Join(dir, "matrix.md"))
	if err != nil {
		return fmt.Errorf("scenario: matrix: %w", err)
	}
	err = m.WriteMarkdown(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// WriteMarkdown writes the matrix as a Markdown table (profiles by
// transports), the failover scenario's path choices, and the legend.
func (m *Matrix) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Transport × censor matrix\n\n%d messages of %d bytes per cell, %d in flight, seed %d, %.0f s in all, %s.\n\n",
		m.Count, m.Size, m.Parallel, m.Seed, m.Seconds, m.Started.Format(time.RFC3339))
	b.WriteString("| profile |")
	for _, t := range m.Transports {
		b.WriteString(" " + t + " |")
	}
	b.WriteString("\n| --- |")
	for range m.Transports {
		b.WriteString(" --- |")
	}
	b.WriteString("\n")
	for _, p := range m.Profiles {
		b.WriteString("| " + p + " |")
		for _, t := range m.Transports {
			c, ok := m.Cell(p, t)
			if !ok {
				b.WriteString(" - |")
				continue
			}
			b.WriteString(" " + mdEscape(c.Status()) + " |")
		}
		b.WriteString("\n")
	}
	b.WriteString("\nGoodput: the delivered messages' bytes over the time from the first send to the last delivery, alice to bob through the real gateway (both clients behind the censor, restricted to the transport). In parentheses: the censor rules that blocked or throttled the transport's flows, from the censor's action log. Each cell is one run with the seed above; gfw-fet blocks a flagged connection with probability 0.26 only, so a cell with few connections may pass.\n")
	if p := m.Paths; p != nil && len(p.Chats) > 0 {
		c := p.Chats[0]
		fmt.Fprintf(&b, "\n## Path choices: %s\n\n%s\n\n", p.Scenario, p.Description)
		b.WriteString("| t (s) | best path | active paths |\n| --- | --- | --- |\n")
		last := ""
		for _, s := range c.Samples {
			var act []string
			for _, pi := range s.Paths {
				if pi.State == "active" {
					act = append(act, pi.Transport)
				}
			}
			row := s.Best() + "|" + strings.Join(act, ", ")
			if row == last {
				continue
			}
			last = row
			fmt.Fprintf(&b, "| %.1f | %s | %s |\n", s.T, orDash(s.Best()), strings.Join(act, ", "))
		}
		for _, e := range p.Timeline {
			fmt.Fprintf(&b, "\nevent at %.1f s: %s", e.At, e.What)
		}
		fmt.Fprintf(&b, "\n\nfailover checks: ok=%t\n", p.OK)
		for _, ch := range p.Checks {
			fmt.Fprintf(&b, "- %s: %t (%s)\n", ch.Name, ch.OK, ch.Detail)
		}
	}
	for _, f := range m.Files {
		fmt.Fprintf(&b, "\n![%s](%s)\n", filepath.Base(f), filepath.Base(f))
	}
	_, err := io.WriteString(w, b.String())
	return err
}
