package router

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/commucat/commucat/core/frame"
	"github.com/commucat/commucat/core/handshake"
)

// Sizes and limits of path joins (see the package documentation).
const (
	// TokenSize is the length of a join token.
	TokenSize = 32
	// MaxJoinMessage is the longest join message body, the handshake's
	// message limit.
	MaxJoinMessage = handshake.MaxMessageSize
	// TokenWindow is how many join indexes above the highest one used the
	// gateway accepts, and how far below it unused ones stay valid.
	TokenWindow = 8
	// maxPathJoin bounds a PathJoin payload: one varint.
	maxPathJoin = 10
)

// joinInfo is the HKDF info string of the join key.
const joinInfo = "CommuCat path join v1"

// tokenLabel prefixes the HMAC input of every token.
const tokenLabel = "token"

// ErrMalformedJoin is matched by the errors of ParseJoinMessage and
// ParsePathJoin.
var ErrMalformedJoin = errors.New("router: malformed join")

// joinKey derives the session's join key from the handshake result, as
// both sides do: HKDF-SHA256 with the client-to-gateway key followed by
// the gateway-to-client key as secret, the handshake hash as salt and
// joinInfo as info.
func joinKey(role Role, res *handshake.Result) ([32]byte, error) {
	var secret [64]byte
	defer clear(secret[:])
	c2g, g2c := res.SendKey, res.RecvKey
	if role == Gateway {
		c2g, g2c = res.RecvKey, res.SendKey
	}
	copy(secret[:32], c2g[:])
	copy(secret[32:], g2c[:])
	clear(c2g[:])
	clear(g2c[:])
	k, err := hkdf.Key(sha256.New, secret[:], res.Hash, joinInfo, 32)
	if err != nil {
		return [32]byte{}, fmt.Errorf("router: join key: %w", err)
	}
	defer clear(k)
	return [32]byte(k), nil
}

// token returns join token i of key: HMAC-SHA256(key, "token" ||
// uint64_be(i)) with the top bit of its last byte cleared, so that a token
// looks like the X25519 public key that opens handshake message 1 (whose
// top bit is always clear).
func token(key *[32]byte, i uint64) [TokenSize]byte {
	m := hmac.New(sha256.New, key[:])
	var in [len(tokenLabel) + 8]byte
	copy(in[:], tokenLabel)
	binary.BigEndian.PutUint64(in[len(tokenLabel):], i)
	m.Write(in[:])
	var t [TokenSize]byte
	m.Sum(t[:0])
	t[TokenSize-1] &= 0x7f
	return t
}

// AppendJoinMessage appends a join message body carrying tok, padded with
// pad random bytes, to dst. On the wire it is framed like a handshake
// message: a 2-byte big-endian length first (handshake.WriteMessage).
// pad is capped so the body fits MaxJoinMessage.
func AppendJoinMessage(dst []byte, tok [TokenSize]byte, pad int) ([]byte, error) {
	pad = max(0, min(pad, MaxJoinMessage-TokenSize))
	dst = append(dst, tok[:]...)
	start := len(dst)
	dst = append(dst, make([]byte, pad)...)
	if _, err := io.ReadFull(rand.Reader, dst[start:]); err != nil {
		return nil, fmt.Errorf("router: join padding: %w", err)
	}
	return dst, nil
}

// ParseJoinMessage returns the token of a join message body: its first
// TokenSize bytes. The rest is padding and is ignored. It fails, matching
// ErrMalformedJoin, for a body shorter than TokenSize or longer than
// MaxJoinMessage, or a token whose top bit is set (no join token has it).
func ParseJoinMessage(msg []byte) ([TokenSize]byte, error) {
	if len(msg) < TokenSize || len(msg) > MaxJoinMessage {
		return [TokenSize]byte{}, fmt.Errorf("%w: %d-byte message (want %d..%d)", ErrMalformedJoin, len(msg), TokenSize, MaxJoinMessage)
	}
	if msg[TokenSize-1]&0x80 != 0 {
		return [TokenSize]byte{}, fmt.Errorf("%w: top bit set", ErrMalformedJoin)
	}
	return [TokenSize]byte(msg[:TokenSize]), nil
}

// PathJoin is the payload of the frame.PathJoin frame the gateway puts in
// the first record it sends on a joined path: the join index the client
// used, as a minimal varint.
type PathJoin struct {
	Index uint64
}

// Append encodes p and appends it to dst.
func (p PathJoin) Append(dst []byte) []byte { return binary.AppendUvarint(dst, p.Index) }

// ParsePathJoin decodes a PathJoin payload: exactly one minimal varint,
// at least 1.
func ParsePathJoin(b []byte) (PathJoin, error) {
	if len(b) == 0 || len(b) > maxPathJoin {
		return PathJoin{}, fmt.Errorf("%w: %d-byte path-join payload", ErrMalformedJoin, len(b))
	}
	// frame.Decode's varint rules: decode through a frame would need a
	// header, so check minimality here.
	v, n := binary.Uvarint(b)
	if n != len(b) || (n > 1 && b[n-1] == 0) {
		return PathJoin{}, fmt.Errorf("%w: bad varint", ErrMalformedJoin)
	}
	if v == 0 {
		return PathJoin{}, fmt.Errorf("%w: index 0", ErrMalformedJoin)
	}
	return PathJoin{Index: v}, nil
}

// pathJoinFrame is the confirmation frame for index i.
func pathJoinFrame(i uint64) frame.Frame {
	return frame.Frame{Type: frame.PathJoin, Payload: PathJoin{Index: i}.Append(nil)}
}

// Table is the gateway's directory of live sessions by the join tokens
// they expect next. A connection whose first message carries one of them
// joins that session as a new path. Table is safe for concurrent use; its
// zero value is ready.
type Table struct {
	mu     sync.Mutex
	tokens map[[TokenSize]byte]tokenEntry
	// gone holds the tokens of sessions that ended recently, oldest
	// first: a join for one of them is refused without being taken for a
	// handshake (which the gateway would count against the source's rate
	// limit). A client that closes a session while its extra paths are
	// still joining sends exactly such joins.
	gone     map[[TokenSize]byte]time.Time
	goneFIFO [][TokenSize]byte
}

// Tombstones: how long and how many tokens of ended sessions are kept.
const (
	goneTTL = time.Minute
	maxGone = 1 << 16
)

type tokenEntry struct {
	s *Session
	i uint64
}

// tokenState is a gateway session's join bookkeeping, guarded by the
// Table's mutex.
type tokenState struct {
	table   *Table
	highest uint64                     // highest index used, 0 if none
	live    map[uint64][TokenSize]byte // index -> token, in the table
	used    map[uint64]bool            // used indexes within the window
}

// Add registers a gateway session so that clients can join paths to it
// and resume it, until it ends. Adding a client session, or one twice,
// does nothing.
func (t *Table) Add(s *Session) {
	if s.role != Gateway {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	s.tokMu.Lock()
	defer s.tokMu.Unlock()
	if s.tok.table != nil || s.ended() {
		return
	}
	if t.tokens == nil {
		t.tokens = make(map[[TokenSize]byte]tokenEntry)
	}
	s.tok.table = t
	s.tok.live = make(map[uint64][TokenSize]byte)
	s.tok.used = make(map[uint64]bool)
	t.refill(s)
}

// refill keeps s's tokens in the table: every unused index in
// (highest - TokenWindow, highest + TokenWindow]. Called with t.mu held.
func (t *Table) refill(s *Session) {
	st := &s.tok
	lo := uint64(1)
	if st.highest > TokenWindow {
		lo = st.highest - TokenWindow + 1
	}
	for i, tok := range st.live {
		if i < lo {
			delete(t.tokens, tok)
			delete(st.live, i)
		}
	}
	for i := range st.used {
		if i < lo {
			delete(st.used, i)
		}
	}
	for i := lo; i <= st.highest+TokenWindow; i++ {
		if _, ok := st.live[i]; ok || st.used[i] {
			continue
		}
		tok := token(&s.joinKey, i)
		st.live[i] = tok
		t.tokens[tok] = tokenEntry{s: s, i: i}
	}
}

// joinTable returns the Table s was added to, or nil.
func (s *Session) joinTable() *Table {
	s.tokMu.Lock()
	defer s.tokMu.Unlock()
	return s.tok.table
}

// remove drops every token of s, keeping them as tombstones for goneTTL.
func (t *Table) remove(s *Session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	t.expireGone(now)
	if t.gone == nil {
		t.gone = make(map[[TokenSize]byte]time.Time)
	}
	for i, tok := range s.tok.live {
		delete(t.tokens, tok)
		delete(s.tok.live, i)
		if len(t.goneFIFO) >= maxGone {
			delete(t.gone, t.goneFIFO[0])
			t.goneFIFO = t.goneFIFO[1:]
		}
		t.gone[tok] = now.Add(goneTTL)
		t.goneFIFO = append(t.goneFIFO, tok)
	}
}

// expireGone drops tombstones older than goneTTL. Called with t.mu held.
func (t *Table) expireGone(now time.Time) {
	for len(t.goneFIFO) > 0 {
		tok := t.goneFIFO[0]
		if exp, ok := t.gone[tok]; ok && now.Before(exp) {
			return
		}
		delete(t.gone, tok)
		t.goneFIFO = t.goneFIFO[1:]
	}
	if len(t.goneFIFO) == 0 {
		t.goneFIFO = nil
	}
}

// buried reports whether tok belonged to a session that ended recently,
// and forgets it (a token is refused once).
func (t *Table) buried(tok [TokenSize]byte) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expireGone(time.Now())
	if _, ok := t.gone[tok]; !ok {
		return false
	}
	delete(t.gone, tok)
	return true
}

// claim takes the token out of the table, once, and returns its session
// and index.
func (t *Table) claim(tok [TokenSize]byte) (*Session, uint64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.tokens[tok]
	if !ok {
		return nil, 0, false
	}
	st := &e.s.tok
	delete(t.tokens, tok)
	delete(st.live, e.i)
	st.used[e.i] = true
	st.highest = max(st.highest, e.i)
	t.refill(e.s)
	return e.s, e.i, true
}

// Join handles a connection whose first message (the body of a
// handshake-framed message, msg) may be a join message. If msg carries a
// token a live session expects, the token is used up, conn becomes a new
// path of that session (which answers on it with a PathJoin confirmation)
// and Join reports true: the session now owns conn. If it carries a token
// of a session that ended within the last minute, Join closes conn (the
// join is refused, as it would be as a handshake, but without costing the
// source a handshake) and reports true. Otherwise it reports false and
// leaves conn alone, and the caller treats msg as handshake message 1. ep
// describes the path for stats and logs.
func (t *Table) Join(conn net.Conn, ep Endpoint, msg []byte) bool {
	tok, err := ParseJoinMessage(msg)
	if err != nil {
		return false
	}
	s, i, ok := t.claim(tok)
	if !ok {
		if t.buried(tok) {
			conn.Close()
			return true
		}
		return false
	}
	s.attach(conn, ep, i)
	return true
}

// Len is how many tokens the table holds.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.tokens)
}

// Sessions lists the live sessions in the table, each once.
func (t *Table) Sessions() []*Session {
	t.mu.Lock()
	defer t.mu.Unlock()
	seen := make(map[*Session]bool)
	var out []*Session
	for _, e := range t.tokens {
		if !seen[e.s] {
			seen[e.s] = true
			out = append(out, e.s)
		}
	}
	return out
}
