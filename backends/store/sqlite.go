package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Compile-time check that SQLite implements Store.
var _ Store = (*SQLite)(nil)

//go:embed migrations/*.sql
var migrationFS embed.FS

// BusyTimeout is how long an SQLite call waits for another connection or
// process holding the write lock before it fails.
const BusyTimeout = 5 * time.Second

// SQLite is the embedded Store: one database file shared by every process
// that opens it (the gateway and `commucat invite`, for example). The file
// is opened in WAL mode with synchronous=FULL (a committed transaction
// survives a power cut or an OS crash, not just a crash of the process:
// Ack{stored} promises that), foreign keys on and a busy timeout of
// BusyTimeout; write transactions begin IMMEDIATE, so concurrent writers
// from several processes queue instead of failing. A file that OpenSQLite
// creates has mode 0600.
//
// SQLite is safe for concurrent use.
type SQLite struct {
	db     *sql.DB
	wmu    chan struct{} // one writer per handle; other processes queue on the file lock
	closed atomic.Bool
	once   sync.Once
	err    error
}

// OpenSQLite opens (creating it if needed) the SQLite database file at path
// and applies pending schema migrations. path is a plain file name; URI
// names ("file:...") and ":memory:" are refused, since several connections
// must share the file.
func OpenSQLite(path string) (*SQLite, error) {
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") || strings.ContainsAny(path, "?\x00") {
		return nil, fmt.Errorf("%w: sqlite path %q: want a plain file name", ErrInvalid, path)
	}
	// Create the file ourselves so that it (and its -wal and -shm files,
	// which SQLite creates with the database file's mode) is private.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case err == nil:
		if err := f.Close(); err != nil {
			return nil, fmt.Errorf("store: create %s: %w", path, err)
		}
	case !errors.Is(err, fs.ErrExist):
		return nil, fmt.Errorf("store: create %s: %w", path, err)
	}
	dsn := path + "?_pragma=busy_timeout(" + strconv.FormatInt(BusyTimeout.Milliseconds(), 10) + ")" +
		"&_pragma=foreign_keys(1)&_pragma=synchronous(FULL)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(4)
	s := &SQLite{db: db, wmu: make(chan struct{}, 1)}
	ctx, cancel := context.WithTimeout(context.Background(), 4*BusyTimeout)
	defer cancel()
	if err := setWAL(ctx, db, walWait); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	return s, nil
}

// walAttempts bounds the attempts setWAL makes, besides its time limit.
const walAttempts = 100

// setWAL switches the database file to WAL mode, which the file keeps, so
// that every later connection uses it too. Switching a file still in
// rollback mode (a new one) upgrades a read lock to the write lock, and
// SQLite refuses that upgrade at once with SQLITE_BUSY, without waiting out
// the busy timeout, while another connection holds the write lock: another
// opener switching the same file, in this process or another. setWAL then
// calls wait and tries again, for up to BusyTimeout and walAttempts
// attempts; once the other opener has switched the file, an attempt finds
// it in WAL mode and has nothing to write.
func setWAL(ctx context.Context, db *sql.DB, wait func(ctx context.Context, attempt int) error) error {
	ctx, cancel := context.WithTimeout(ctx, BusyTimeout)
	defer cancel()
	var mode string
	for attempt := 1; ; attempt++ {
		err := db.QueryRowContext(ctx, "PRAGMA journal_mode=WAL").Scan(&mode)
		if err == nil {
			break
		}
		if sqliteCode(err)&0xff != sqlite3.SQLITE_BUSY {
			return fmt.Errorf("set journal mode: %w", err)
		}
		if attempt == walAttempts || wait(ctx, attempt) != nil {
			return fmt.Errorf("set journal mode: %d attempts: %w", attempt, err)
		}
	}
	if mode != "wal" {
		return fmt.Errorf("set journal mode: journal mode is %q, want wal", mode)
	}
	return nil
}

// walWait is setWAL's wait between attempts: 10ms more each attempt, at most
// 100ms, or until ctx ends.
func walWait(ctx context.Context, attempt int) error {
	t := time.NewTimer(min(time.Duration(attempt)*10*time.Millisecond, 100*time.Millisecond))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close closes the database. It is idempotent.
func (s *SQLite) Close() error {
	s.once.Do(func() {
		s.closed.Store(true)
		if err := s.db.Close(); err != nil {
			s.err = wrap("close", err)
		}
	})
	return s.err
}

type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations in order. Their file names are
// NNNN_name.sql, numbered from 1 without gaps.
func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must be NNNN_name.sql", e.Name())
		}
		b, err := migrationFS.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(b)})
	}
	slices.SortFunc(ms, func(a, b migration) int { return a.version - b.version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %s: want version %d", m.name, i+1)
		}
	}
	return ms, nil
}

// SchemaVersion is the schema version this package's migrations produce.
func SchemaVersion() int {
	ms, err := migrations()
	if err != nil {
		return 0
	}
	return len(ms)
}

// migrate applies the migrations the database lacks, all in one IMMEDIATE
// transaction, so concurrent openers apply each migration exactly once.
func (s *SQLite) migrate(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER PRIMARY KEY,
			name       TEXT    NOT NULL,
			applied_ms INTEGER NOT NULL)`); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		var cur int
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&cur); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		if cur > len(ms) {
			return fmt.Errorf("migrate: database schema version %d is newer than this program's %d", cur, len(ms))
		}
		for _, m := range ms[cur:] {
			if _, err := tx.ExecContext(ctx, m.sql); err != nil {
				return fmt.Errorf("migrate: %s: %w", m.name, err)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_ms) VALUES (?, ?, ?)`,
				m.version, m.name, time.Now().UnixMilli()); err != nil {
				return fmt.Errorf("migrate: %s: %w", m.name, err)
			}
		}
		return nil
	})
}

// lockWrite takes this handle's writer slot. Writers of one process queue
// here (honouring ctx) rather than spinning in SQLite's busy handler.
func (s *SQLite) lockWrite(ctx context.Context) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case s.wmu <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *SQLite) unlockWrite() { <-s.wmu }

// write runs fn in an IMMEDIATE transaction and commits it if fn succeeds.
func (s *SQLite) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if err := s.lockWrite(ctx); err != nil {
		return err
	}
	defer s.unlockWrite()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return s.mapErr(err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return s.mapErr(tx.Commit())
}

// exec runs one write statement and returns the number of rows it changed.
func (s *SQLite) exec(ctx context.Context, query string, args ...any) (int64, error) {
	if err := s.lockWrite(ctx); err != nil {
		return 0, err
	}
	defer s.unlockWrite()
	res, err := s.db.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, s.mapErr(err)
	}
	return res.RowsAffected()
}

func (s *SQLite) mapErr(err error) error {
	if err == nil {
		return nil
	}
	if s.closed.Load() || errors.Is(err, sql.ErrConnDone) {
		return fmt.Errorf("%w: %v", ErrClosed, err)
	}
	return err
}

// wrap adds the operation to err, unless err is (or wraps) one of the
// package's sentinels, whose messages already say what failed.
func wrap(op string, err error) error {
	for _, e := range sentinels {
		if errors.Is(err, e) {
			return err
		}
	}
	return fmt.Errorf("store: %s: %w", op, err)
}

var sentinels = []error{ErrNotFound, ErrNameTaken, ErrCodeUnknown, ErrCodeUsed, ErrCodeExpired,
	ErrQuotaExceeded, ErrDuplicate, ErrInvalid, ErrClosed}

func sqliteCode(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code()
	}
	return 0
}

func isUnique(err error) bool {
	c := sqliteCode(err)
	return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

func ms(t time.Time) int64 { return t.UnixMilli() }

func fromMS(v int64) time.Time { return time.UnixMilli(v).UTC() }

func validName(name string) error {
	if len(name) < 1 || len(name) > MaxNameLen || !utf8.ValidString(name) {
		return fmt.Errorf("%w: name must be 1..%d bytes of UTF-8", ErrInvalid, MaxNameLen)
	}
	return nil
}

// AddCode implements Store.
func (s *SQLite) AddCode(ctx context.Context, hash [32]byte, expires time.Time) error {
	_, err := s.exec(ctx, `INSERT INTO registration_codes (hash, expires_ms) VALUES (?, ?)`, hash[:], ms(expires))
	if isUnique(err) {
		return fmt.Errorf("%w: registration code hash exists", ErrDuplicate)
	}
	if err != nil {
		return wrap("add code", err)
	}
	return nil
}

// Register implements Store.
func (s *SQLite) Register(ctx context.Context, codeHash [32]byte, name string, device Device, now time.Time) (User, error) {
	if err := validName(name); err != nil {
		return User{}, wrap("register", err)
	}
	if device.Created.IsZero() {
		device.Created = now
	}
	u := User{Name: name, Created: fromMS(ms(now))}
	err := s.write(ctx, func(tx *sql.Tx) error {
		var expires int64
		var used sql.NullInt64
		err := tx.QueryRowContext(ctx, `SELECT expires_ms, used_ms FROM registration_codes WHERE hash = ?`, codeHash[:]).Scan(&expires, &used)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return ErrCodeUnknown
		case err != nil:
			return err
		case used.Valid:
			return ErrCodeUsed
		case expires <= ms(now):
			return ErrCodeExpired
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM users WHERE name = ?`, name).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return ErrNameTaken
		}
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM devices WHERE id = ? OR static_key = ?`, device.ID[:], device.Key[:]).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("%w: device already registered", ErrDuplicate)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE registration_codes SET used_ms = ? WHERE hash = ?`, ms(now), codeHash[:]); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO users (name, created_ms) VALUES (?, ?)`, name, ms(now))
		if isUnique(err) {
			return ErrNameTaken
		}
		if err != nil {
			return err
		}
		if u.ID, err = res.LastInsertId(); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO devices (id, user_id, static_key, certificate, created_ms) VALUES (?, ?, ?, ?, ?)`,
			device.ID[:], u.ID, device.Key[:], device.Certificate, ms(device.Created))
		if isUnique(err) {
			return fmt.Errorf("%w: device already registered", ErrDuplicate)
		}
		return err
	})
	if err != nil {
		return User{}, wrap("register", err)
	}
	return u, nil
}

// SetCertificate implements Store.
func (s *SQLite) SetCertificate(ctx context.Context, deviceID [16]byte, cert []byte) error {
	n, err := s.exec(ctx, `UPDATE devices SET certificate = ? WHERE id = ?`, cert, deviceID[:])
	if err != nil {
		return wrap("set certificate", err)
	}
	if n == 0 {
		return fmt.Errorf("%w: device %x", ErrNotFound, deviceID)
	}
	return nil
}

// DeviceByKey implements Store.
func (s *SQLite) DeviceByKey(ctx context.Context, key [32]byte) (Device, User, error) {
	if s.closed.Load() {
		return Device{}, User{}, ErrClosed
	}
	var d Device
	var u User
	var id []byte
	var dCreated, uCreated int64
	err := s.db.QueryRowContext(ctx, `SELECT d.id, d.certificate, d.created_ms, u.id, u.name, u.created_ms
		FROM devices d JOIN users u ON u.id = d.user_id WHERE d.static_key = ?`, key[:]).
		Scan(&id, &d.Certificate, &dCreated, &u.ID, &u.Name, &uCreated)
	if errors.Is(err, sql.ErrNoRows) {
		return Device{}, User{}, fmt.Errorf("%w: no device has that key", ErrNotFound)
	}
	if err != nil {
		return Device{}, User{}, wrap("device by key", s.mapErr(err))
	}
	if len(id) != len(d.ID) {
		return Device{}, User{}, fmt.Errorf("store: device by key: corrupt device id of %d bytes", len(id))
	}
	copy(d.ID[:], id)
	d.UserID, d.Key, d.Created = u.ID, key, fromMS(dCreated)
	u.Created = fromMS(uCreated)
	return d, u, nil
}

// UserByName implements Store.
func (s *SQLite) UserByName(ctx context.Context, name string) (User, error) {
	if s.closed.Load() {
		return User{}, ErrClosed
	}
	u := User{Name: name}
	var created int64
	err := s.db.QueryRowContext(ctx, `SELECT id, created_ms FROM users WHERE name = ?`, name).Scan(&u.ID, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, fmt.Errorf("%w: user %q", ErrNotFound, name)
	}
	if err != nil {
		return User{}, wrap("user by name", s.mapErr(err))
	}
	u.Created = fromMS(created)
	return u, nil
}

// Enqueue implements Store.
func (s *SQLite) Enqueue(ctx context.Context, m Message, quota int) (dup bool, err error) {
	err = s.write(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM inbox WHERE id = ? AND from_user = ?`, m.ID[:], m.From).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			dup = true
			return nil
		}
		if quota > 0 {
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM inbox WHERE to_user = ? AND delivered = 0 AND expires_ms > ?`, m.To, ms(m.Stored)).Scan(&n); err != nil {
				return err
			}
			if n >= quota {
				return fmt.Errorf("%w (%d messages)", ErrQuotaExceeded, n)
			}
		}
		body := m.Body
		if body == nil {
			body = []byte{}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO inbox (id, from_user, to_user, body, sent_ms, stored_ms, expires_ms) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			m.ID[:], m.From, m.To, body, ms(m.Sent), ms(m.Stored), ms(m.Expires))
		if sqliteCode(err) == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY {
			return fmt.Errorf("%w: sender %d or recipient %d", ErrNotFound, m.From, m.To)
		}
		return err
	})
	if err != nil {
		return false, wrap("enqueue", err)
	}
	return dup, nil
}

// Pending implements Store.
func (s *SQLite) Pending(ctx context.Context, userID int64, now time.Time, limit int) ([]Message, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if limit <= 0 {
		limit = DefaultPendingLimit
	}
	rows, err := s.db.QueryContext(ctx, `SELECT i.id, i.from_user, u.name, i.body, i.sent_ms, i.stored_ms, i.expires_ms
		FROM inbox i JOIN users u ON u.id = i.from_user
		WHERE i.to_user = ? AND i.delivered = 0 AND i.expires_ms > ? ORDER BY i.seq LIMIT ?`, userID, ms(now), limit)
	if err != nil {
		return nil, wrap("pending", s.mapErr(err))
	}
	defer rows.Close()
	var out []Message
	for rows.Next() {
		m := Message{To: userID}
		var id []byte
		var sent, stored, expires int64
		if err := rows.Scan(&id, &m.From, &m.FromName, &m.Body, &sent, &stored, &expires); err != nil {
			return nil, wrap("pending", err)
		}
		if len(id) != len(m.ID) {
			return nil, fmt.Errorf("store: pending: corrupt message id of %d bytes", len(id))
		}
		copy(m.ID[:], id)
		m.Sent, m.Stored, m.Expires = fromMS(sent), fromMS(stored), fromMS(expires)
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap("pending", s.mapErr(err))
	}
	return out, nil
}

// Ack implements Store.
func (s *SQLite) Ack(ctx context.Context, userID, fromID int64, id [16]byte) (bool, error) {
	n, err := s.exec(ctx, `UPDATE inbox SET delivered = 1, body = x'' WHERE id = ? AND from_user = ? AND to_user = ? AND delivered = 0`, id[:], fromID, userID)
	if err != nil {
		return false, wrap("ack", err)
	}
	return n > 0, nil
}

// PurgeExpired implements Store.
func (s *SQLite) PurgeExpired(ctx context.Context, now time.Time) (int, error) {
	n, err := s.exec(ctx, `DELETE FROM inbox WHERE expires_ms <= ?`, ms(now))
	if err != nil {
		return 0, wrap("purge expired", err)
	}
	return int(n), nil
}

// MarkSeen implements Store.
func (s *SQLite) MarkSeen(ctx context.Context, from string, id [16]byte, now time.Time) (bool, error) {
	n, err := s.exec(ctx, `INSERT INTO seen (from_name, id, seen_ms) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`, from, id[:], ms(now))
	if err != nil {
		return false, wrap("mark seen", err)
	}
	return n > 0, nil
}

// PurgeSeen implements Store.
func (s *SQLite) PurgeSeen(ctx context.Context, before time.Time) (int, error) {
	n, err := s.exec(ctx, `DELETE FROM seen WHERE seen_ms < ?`, ms(before))
	if err != nil {
		return 0, wrap("purge seen", err)
	}
	return int(n), nil
}

// Ping checks that the database answers, for readiness probes.
func (s *SQLite) Ping(ctx context.Context) error {
	if err := s.db.PingContext(ctx); err != nil {
		return fmt.Errorf("store: ping: %w", err)
	}
	var one int
	if err := s.db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("store: ping: %w", err)
	}
	return nil
}
