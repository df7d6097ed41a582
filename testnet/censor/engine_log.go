package censor

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// Event is one line of the censor's action log: every action the engine
// and its prober take, as a JSON object on its own line, so a test or a
// scenario report can tell why a flow was blocked.
//
//	{"time":"2025-01-01T00:00:01.5Z","profile":"gfw-sni","rule":"sni-reset",
//	 "action":"reset","proto":"tcp","client":"198.18.0.2:40000",
//	 "server":"198.18.1.2:443","detail":{"sni":"blocked.example"}}
//
// Action is a rule action (ActionKind), or one of the EventX names.
type Event struct {
	Time    time.Time         `json:"time"`
	Profile string            `json:"profile,omitempty"`
	Rule    string            `json:"rule"`
	Action  string            `json:"action"`
	Proto   string            `json:"proto,omitempty"`
	Client  string            `json:"client,omitempty"`
	Server  string            `json:"server,omitempty"`
	Detail  map[string]string `json:"detail,omitempty"`
}

// Event actions that are not rule actions.
const (
	// EventResidual: a flow hit a residual block; Rule is the rule that
	// set it, Detail says its key and action.
	EventResidual = "residual"
	// EventBlock: a block set through Engine.Block (by the prober).
	EventBlock = "block"
	// EventProbeResult: the prober judged a server; Detail holds the
	// verdict and each probe's reaction.
	EventProbeResult = "probe-result"
	// EventSuspectDropped: a suspect was not handed to the prober because
	// its queue was full.
	EventSuspectDropped = "suspect-dropped"
)

// ParseLog reads an action log back, one Event per line.
func ParseLog(r io.Reader) ([]Event, error) {
	var evs []Event
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var ev Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return evs, fmt.Errorf("censor: action log line %d: %w", line, err)
		}
		evs = append(evs, ev)
	}
	if err := sc.Err(); err != nil {
		return evs, fmt.Errorf("censor: action log: %w", err)
	}
	return evs, nil
}

// eventFor returns an event about flow key k.
func eventFor(now time.Time, profile, rule, action string, k FlowKey, detail map[string]string) Event {
	return Event{
		Time: now.UTC(), Profile: profile, Rule: rule, Action: action,
		Proto: protoName(k.Proto), Client: k.Client.String(), Server: k.Server.String(),
		Detail: detail,
	}
}
