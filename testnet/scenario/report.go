package scenario

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/commucat/commucat/testnet/censor"
)

// Report is the result of one run: what ran where, every message and
// its fate, the probes, the client router's path choices, what the
// censor did (from its action log), the router's drop counters, and the
// checks of the scenario's expect section. Times are seconds since the
// start of Run (negative during set-up) unless named otherwise.
type Report struct {
	Scenario    string `json:"scenario"`
	Description string `json:"description,omitempty"`
	// Profile is the censor profile's name, empty without a censor.
	Profile string `json:"profile,omitempty"`
	// Seed seeds the links; CensorSeed the censor. Run again with both to
	// repeat the run's random choices.
	Seed       uint64    `json:"seed"`
	CensorSeed uint64    `json:"censor_seed,omitempty"`
	Prefix     string    `json:"prefix"`
	Started    time.Time `json:"started"`
	// SetupSeconds is how long set-up took; RunSeconds the run after it.
	SetupSeconds float64 `json:"setup_seconds"`
	RunSeconds   float64 `json:"run_seconds"`
	// Dir holds the logs, the censor's action log and the report files.
	Dir      string          `json:"dir"`
	Hosts    []HostInfo      `json:"hosts"`
	Gateway  []Endpoint      `json:"gateway,omitempty"`
	Timeline []AppliedEvent  `json:"timeline,omitempty"`
	Programs []ProgramResult `json:"programs"`
	Messages []Message       `json:"messages,omitempty"`
	Probes   []ProbeAttempt  `json:"probes,omitempty"`
	Chats    []ChatResult    `json:"chats,omitempty"`
	Censor   *CensorResult   `json:"censor,omitempty"`
	Links    []LinkDrops     `json:"links"`
	Checks   []Check         `json:"checks"`
	// Notes are warnings about the run (a prober without a prober host).
	Notes []string `json:"notes,omitempty"`
	// OK reports whether every check passed.
	OK bool `json:"ok"`
}

// HostInfo is one host of the run.
type HostInfo struct {
	Name      string `json:"name"`
	Role      string `json:"role"`
	Zone      string `json:"zone"`
	Addr      string `json:"addr"`
	Namespace string `json:"namespace"`
}

// Endpoint is one of the gateway's transports.
type Endpoint struct {
	Transport string `json:"transport"`
	Proto     string `json:"proto"`
	Port      uint16 `json:"port"`
}

// AppliedEvent is a timeline event as applied.
type AppliedEvent struct {
	At   float64 `json:"at"`
	What string  `json:"what"`
	Err  string  `json:"error,omitempty"`
}

// ProgramResult is one process the run started.
type ProgramResult struct {
	// Step is where the scenario asked for it: "setup[1]", "run[0]".
	Step string `json:"step"`
	Kind string `json:"kind"`
	Host string `json:"host"`
	// Args are the arguments after the binary, secrets (invites) replaced.
	Args  []string `json:"args"`
	Start float64  `json:"start"`
	End   float64  `json:"end"`
	// Exit is the exit status, -1 when killed at the end of the run.
	Exit int    `json:"exit"`
	Err  string `json:"error,omitempty"`
	// Log is the file holding its standard error.
	Log string `json:"log"`
}

// Message is one message of the run, by its tag.
type Message struct {
	Key  string `json:"key"`
	Step string `json:"step"`
	From string `json:"from"`
	To   string `json:"to"`
	Size int    `json:"size"`
	// Transport is the one the sender was restricted to, if any.
	Transport string `json:"transport,omitempty"`
	// Probe marks a probe's message: the delivery checks other than
	// exactly-once leave it out (the probe records its fate).
	Probe bool `json:"probe,omitempty"`
	// Sent is when the first attempt started; Stored when the gateway
	// confirmed it (absent if never).
	Sent     float64  `json:"sent"`
	Stored   *float64 `json:"stored,omitempty"`
	Attempts int      `json:"attempts"`
	// Delivered are the times the recipient showed it: once, if all
	// went well.
	Delivered []float64 `json:"delivered,omitempty"`
}

// Latency returns the time from Sent to the first delivery, or false.
func (m Message) Latency() (float64, bool) {
	if len(m.Delivered) == 0 {
		return 0, false
	}
	return m.Delivered[0] - m.Sent, true
}

// ProbeAttempt is one attempt of a probe program.
type ProbeAttempt struct {
	Step      string `json:"step"`
	Transport string `json:"transport"`
	// Fingerprint is the probe's --fingerprint, if any.
	Fingerprint string  `json:"fingerprint,omitempty"`
	Attempt     int     `json:"attempt"`
	OK          bool    `json:"ok"`
	Start       float64 `json:"start"`
	Seconds     float64 `json:"seconds"`
	// Failure says which stage failed: "listen" (the recipient could not
	// connect), "send" or "delivery".
	Failure string `json:"failure,omitempty"`
}

// ChatResult is one chat program: its messages' goodput and the client
// router's path statistics over time.
type ChatResult struct {
	Step      string `json:"step"`
	User      string `json:"user"`
	To        string `json:"to"`
	Transport string `json:"transport,omitempty"`
	Sent      int    `json:"sent"`
	Stored    int    `json:"stored"`
	Delivered int    `json:"delivered"`
	// Bytes are the delivered messages' bytes; GoodputMbps them over the
	// time from the first message's start to the last delivery.
	Bytes       int64   `json:"bytes"`
	GoodputMbps float64 `json:"goodput_mbps"`
	// Sessions are the transports of the sessions chat opened, in order.
	Sessions []string     `json:"sessions,omitempty"`
	Samples  []PathSample `json:"samples,omitempty"`
	Errors   []string     `json:"errors,omitempty"`
}

// PathSample is the client router's view at one moment.
type PathSample struct {
	T        float64    `json:"t"`
	Switches uint64     `json:"switches"`
	Paths    []PathInfo `json:"paths"`
}

// PathInfo is one path of a PathSample.
type PathInfo struct {
	ID        uint64  `json:"id"`
	Transport string  `json:"transport"`
	State     string  `json:"state"`
	Best      bool    `json:"best,omitempty"`
	SRTTms    float64 `json:"srtt_ms,omitempty"`
	BytesSent uint64  `json:"bytes_sent"`
	BytesRecv uint64  `json:"bytes_received"`
}

// Best returns the transport of the sample's best path, or "".
func (s PathSample) Best() string {
	for _, p := range s.Paths {
		if p.Best {
			return p.Transport
		}
	}
	return ""
}

// CensorResult is what the censor did, from its action log.
type CensorResult struct {
	Profile string       `json:"profile"`
	Log     string       `json:"log"`
	Events  int          `json:"events"`
	Stats   censor.Stats `json:"stats"`
	// Rules count the log's events by rule, action and transport (the
	// gateway endpoint the flow went to; "" for other flows).
	Rules []RuleCount `json:"rules,omitempty"`
	// Transports say, per gateway transport, what the censor did to it.
	Transports []TransportVerdict `json:"transports,omitempty"`
}

// RuleCount counts action-log events.
type RuleCount struct {
	Rule      string  `json:"rule"`
	Action    string  `json:"action"`
	Transport string  `json:"transport,omitempty"`
	Count     int     `json:"count"`
	First     float64 `json:"first"`
}

// TransportVerdict sums up what the censor did to one transport.
type TransportVerdict struct {
	Transport string `json:"transport"`
	// Blocked lists the rules that dropped, reset, froze or cut its
	// flows, or blocked its server; Throttled those that throttled it;
	// Other those with other actions (probe, log).
	Blocked   []string `json:"blocked,omitempty"`
	Throttled []string `json:"throttled,omitempty"`
	Other     []string `json:"other,omitempty"`
}

// Verdict returns "blocked by R", "throttled by R", "seen by R" or "pass".
func (v TransportVerdict) Verdict() string {
	switch {
	case len(v.Blocked) > 0:
		return "blocked (" + strings.Join(v.Blocked, ", ") + ")"
	case len(v.Throttled) > 0:
		return "throttled (" + strings.Join(v.Throttled, ", ") + ")"
	case len(v.Other) > 0:
		return "seen (" + strings.Join(v.Other, ", ") + ")"
	}
	return "pass"
}

// LinkDrops are the router's drop counters of one host's links.
type LinkDrops struct {
	Host string            `json:"host"`
	Up   map[string]uint64 `json:"up,omitempty"`
	Down map[string]uint64 `json:"down,omitempty"`
}

// Check is one expectation and whether it held.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// Failed returns the checks that did not hold.
func (r *Report) Failed() []Check {
	var out []Check
	for _, c := range r.Checks {
		if !c.OK {
			out = append(out, c)
		}
	}
	return out
}

// Transport returns the censor's verdict on transport t, and false
// without a censor.
func (r *Report) Transport(t string) (TransportVerdict, bool) {
	if r.Censor == nil {
		return TransportVerdict{}, false
	}
	for _, v := range r.Censor.Transports {
		if v.Transport == t {
			return v, true
		}
	}
	return TransportVerdict{Transport: t}, true
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteMarkdown writes a readable summary in Markdown.
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	status := "PASS"
	if !r.OK {
		status = "FAIL"
	}
	fmt.Fprintf(&b, "# Scenario %s: %s\n\n", r.Scenario, status)
	if r.Description != "" {
		fmt.Fprintf(&b, "%s\n\n", r.Description)
	}
	prof := r.Profile
	if prof == "" {
		prof = "none"
	}
	fmt.Fprintf(&b, "censor %s, seed %d, censor seed %d, set-up %.1fs, run %.1fs, started %s\n\n",
		prof, r.Seed, r.CensorSeed, r.SetupSeconds, r.RunSeconds, r.Started.UTC().Format(time.RFC3339))
	b.WriteString("| host | role | zone | address | namespace |\n| --- | --- | --- | --- | --- |\n")
	for _, h := range r.Hosts {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", h.Name, h.Role, h.Zone, h.Addr, h.Namespace)
	}
	if len(r.Checks) > 0 {
		b.WriteString("\n| check | result | detail |\n| --- | --- | --- |\n")
		for _, c := range r.Checks {
			res := "ok"
			if !c.OK {
				res = "**FAILED**"
			}
			fmt.Fprintf(&b, "| %s | %s | %s |\n", c.Name, res, mdEscape(c.Detail))
		}
	}
	if r.Censor != nil && len(r.Gateway) > 0 {
		b.WriteString("\n| transport | port | censor |\n| --- | --- | --- |\n")
		for _, e := range r.Gateway {
			v, _ := r.Transport(e.Transport)
			fmt.Fprintf(&b, "| %s | %d/%s | %s |\n", e.Transport, e.Port, e.Proto, v.Verdict())
		}
	}
	if r.Censor != nil && len(r.Censor.Rules) > 0 {
		b.WriteString("\n| rule | action | transport | events | first (s) |\n| --- | --- | --- | --- | --- |\n")
		for _, rc := range r.Censor.Rules {
			fmt.Fprintf(&b, "| %s | %s | %s | %d | %.2f |\n", rc.Rule, rc.Action, orDash(rc.Transport), rc.Count, rc.First)
		}
	}
	if len(r.Probes) > 0 {
		b.WriteString("\n| probe | transport | attempt | result | seconds |\n| --- | --- | --- | --- | --- |\n")
		for _, p := range r.Probes {
			res := "delivered"
			if !p.OK {
				res = "failed at " + p.Failure
			}
			fmt.Fprintf(&b, "| %s | %s | %d | %s | %.2f |\n", p.Step, p.Transport, p.Attempt, res, p.Seconds)
		}
	}
	if len(r.Chats) > 0 {
		b.WriteString("\n| chat | transport | sent | stored | delivered | goodput (Mbit/s) | sessions |\n| --- | --- | --- | --- | --- | --- | --- |\n")
		for _, c := range r.Chats {
			fmt.Fprintf(&b, "| %s %s→%s | %s | %d | %d | %d | %.2f | %s |\n", c.Step, c.User, c.To, orDash(c.Transport), c.Sent, c.Stored, c.Delivered, c.GoodputMbps, strings.Join(c.Sessions, ", "))
		}
	}
	if n := len(r.Messages); n > 0 {
		delivered, dup := 0, 0
		var lat []float64
		for _, m := range r.Messages {
			if len(m.Delivered) > 0 {
				delivered++
			}
			if len(m.Delivered) > 1 {
				dup++
			}
			if l, ok := m.Latency(); ok {
				lat = append(lat, l)
			}
		}
		slices.Sort(lat)
		fmt.Fprintf(&b, "\nmessages: %d sent, %d delivered, %d delivered more than once", n, delivered, dup)
		if len(lat) > 0 {
			fmt.Fprintf(&b, "; latency median %.2fs, max %.2fs", lat[len(lat)/2], lat[len(lat)-1])
		}
		b.WriteString("\n")
	}
	if len(r.Timeline) > 0 {
		b.WriteString("\n| at (s) | event |\n| --- | --- |\n")
		for _, e := range r.Timeline {
			fmt.Fprintf(&b, "| %.2f | %s%s |\n", e.At, e.What, errSuffix(e.Err))
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "\nnote: %s\n", n)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteFiles writes report.json and report.md into r.Dir.
func (r *Report) WriteFiles() error {
	for name, write := range map[string]func(io.Writer) error{"report.json": r.WriteJSON, "report.md": r.WriteMarkdown} {
		f, err := os.Create(filepath.Join(r.Dir, name))
		if err != nil {
			return fmt.Errorf("scenario: report: %w", err)
		}
		err = write(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("scenario: report: %w", err)
		}
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func errSuffix(s string) string {
	if s == "" {
		return ""
	}
	return " (error: " + mdEscape(s) + ")"
}

// mdEscape keeps a string inside one Markdown table cell.
func mdEscape(s string) string {
	return strings.NewReplacer("|", "\\|", "\n", " ").Replace(s)
}
