package scenario

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// A message of a run starts with its tag, "[cc/STEP/N] ", so the run can
// tell which program sent it and match every delivery to its send. The
// rest is filler up to the message's size.

// MessageBody returns message n of the program step, size bytes long (at
// least the tag).
func MessageBody(step string, n, size int) []byte {
	tag := fmt.Sprintf("[cc/%s/%d] ", step, n)
	if size < len(tag) {
		size = len(tag)
	}
	b := make([]byte, size)
	copy(b, tag)
	const filler = "the quick brown fox jumps over the lazy dog "
	for i := len(tag); i < size; i++ {
		b[i] = filler[(i-len(tag))%len(filler)]
	}
	return b
}

// ParseTag returns the program step and number of a message body made by
// MessageBody.
func ParseTag(body string) (step string, n int, ok bool) {
	rest, ok := strings.CutPrefix(body, "[cc/")
	if !ok {
		return "", 0, false
	}
	end := strings.IndexByte(rest, ']')
	if end < 0 || end > 64 {
		return "", 0, false
	}
	step, num, ok := strings.Cut(rest[:end], "/")
	if !ok || step == "" {
		return "", 0, false
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 0 {
		return "", 0, false
	}
	return step, n, true
}

// messageKey is the key of message n of step.
func messageKey(step string, n int) string { return step + "/" + strconv.Itoa(n) }

// ChatEvent is one line of the output of `commucat testnet chat`, the
// hidden command behind chat programs, as JSON.
type ChatEvent struct {
	// Ev is "session" (a session opened over Transport), "sent" (message
	// N stored by the gateway; Start is when it was first handed to a
	// session), "stats" (the router's paths), "error" or "done" (Sent
	// and Stored messages).
	Ev        string     `json:"ev"`
	T         time.Time  `json:"t"`
	N         int        `json:"n,omitempty"`
	Start     *time.Time `json:"start,omitempty"`
	Transport string     `json:"transport,omitempty"`
	Switches  uint64     `json:"switches,omitempty"`
	Paths     []PathInfo `json:"paths,omitempty"`
	Err       string     `json:"error,omitempty"`
	Sent      int        `json:"sent,omitempty"`
	Stored    int        `json:"stored,omitempty"`
}

// listenLine is one message as `commucat listen --json` prints it.
type listenLine struct {
	ID       string    `json:"id"`
	From     string    `json:"from"`
	Received time.Time `json:"received"`
	Text     string    `json:"text"`
}

// parseListen returns the messages a listener printed; lines that are
// not messages are skipped.
func parseListen(out string) []listenLine {
	var ls []listenLine
	for line := range strings.SplitSeq(out, "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var l listenLine
		if json.Unmarshal([]byte(line), &l) == nil {
			ls = append(ls, l)
		}
	}
	return ls
}

// parseChat returns the events a chat program printed.
func parseChat(out string) []ChatEvent {
	var evs []ChatEvent
	for line := range strings.SplitSeq(out, "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var e ChatEvent
		if json.Unmarshal([]byte(line), &e) == nil && e.Ev != "" {
			evs = append(evs, e)
		}
	}
	return evs
}
