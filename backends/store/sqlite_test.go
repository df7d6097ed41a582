package store_test

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/commucat/commucat/backends/store"
	"github.com/commucat/commucat/backends/store/storetest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv("STORE_TEST_CHILD") != "" {
		os.Exit(child())
	}
	goleak.VerifyTestMain(m)
}

func sqliteDB(t *testing.T) storetest.Opener {
	path := filepath.Join(t.TempDir(), "commucat.db")
	return func() (store.Store, error) { return store.OpenSQLite(path) }
}

func TestConformance(t *testing.T) {
	storetest.Run(t, sqliteDB)
}

func TestOpenSQLiteRefuses(t *testing.T) {
	for _, path := range []string{"", ":memory:", "file:x.db", "x.db?mode=ro"} {
		t.Run(path, func(t *testing.T) {
			s, err := store.OpenSQLite(path)
			if !errors.Is(err, store.ErrInvalid) {
				if s != nil {
					s.Close()
				}
				t.Fatalf("OpenSQLite(%q) = %v, want ErrInvalid", path, err)
			}
		})
	}
	_, err := store.OpenSQLite(filepath.Join(t.TempDir(), "missing", "dir", "db"))
	if err == nil {
		t.Fatal("OpenSQLite in a missing directory succeeded")
	}
}

func TestFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "commucat.db")
	s := storetest.Open(t, func() (store.Store, error) { return store.OpenSQLite(path) })
	if err := s.AddCode(context.Background(), storetest.Rand32(), storetest.T0); err != nil {
		t.Fatalf("AddCode: %v", err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("stat: %v", err)
		}
		if mode := fi.Mode().Perm(); mode != 0o600 {
			t.Errorf("%s has mode %v, want 0600", filepath.Base(p), mode)
		}
	}
}

// TestMigrations checks that opening applies each migration once, that
// reopening changes nothing, and that a database from a newer program is
// refused.
func TestMigrations(t *testing.T) {
	path := filepath.Join(t.TempDir(), "commucat.db")
	for range 3 {
		s, err := store.OpenSQLite(path)
		if err != nil {
			t.Fatalf("OpenSQLite: %v", err)
		}
		s.Close()
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n, max int
	if err := db.QueryRow(`SELECT COUNT(*), MAX(version) FROM schema_migrations`).Scan(&n, &max); err != nil {
		t.Fatal(err)
	}
	if want := store.SchemaVersion(); n != want || max != want {
		t.Fatalf("schema_migrations has %d rows up to %d, want %d", n, max, want)
	}
	var mode string
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q, %v; want wal", mode, err)
	}
	if _, err := db.Exec(`INSERT INTO schema_migrations VALUES (999, 'future', 0)`); err != nil {
		t.Fatal(err)
	}
	if s, err := store.OpenSQLite(path); err == nil {
		s.Close()
		t.Fatal("OpenSQLite accepted a database with a newer schema")
	}
}

// TestConcurrentOpen opens new files from several goroutines at once, as
// the gateway and `commucat invite` may: every open succeeds and every
// handle sees the schema. When two openers switch a new file to WAL at
// once, SQLite refuses one of them at once with SQLITE_BUSY, busy timeout
// or not, and OpenSQLite must try again; a few openers released together
// on each of a hundred new files make that race likely (TestSetWALRetries
// sets it up exactly).
func TestConcurrentOpen(t *testing.T) {
	const files, n = 100, 4
	ctx := context.Background()
	dir := t.TempDir()
	for i := range files {
		path := filepath.Join(dir, fmt.Sprintf("%d.db", i))
		start := make(chan struct{})
		errs := make(chan error, n)
		for range n {
			go func() {
				<-start
				s, err := store.OpenSQLite(path)
				if err == nil {
					if _, err = s.UserByName(ctx, "nobody"); errors.Is(err, store.ErrNotFound) {
						err = nil // the schema is there
					}
					s.Close()
				}
				errs <- err
			}()
		}
		close(start)
		for range n {
			if err := <-errs; err != nil {
				t.Errorf("file %d: open: %v", i, err)
			}
		}
		if t.Failed() {
			return
		}
	}
}

// TestTwoProcesses runs this test binary again as a second process that
// adds registration codes while this one writes messages, as `commucat
// invite` does next to a running gateway.
func TestTwoProcesses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "commucat.db")
	s := storetest.Open(t, func() (store.Store, error) { return store.OpenSQLite(path) })
	a, _ := storetest.AddUser(t, s, "a")
	const codes = 20
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), "STORE_TEST_CHILD="+path, "STORE_TEST_CODES="+strconv.Itoa(codes))
	out := make(chan error, 1)
	var output []byte
	go func() {
		var err error
		output, err = cmd.CombinedOutput()
		out <- err
	}()
	ctx := context.Background()
	for i := range 50 {
		m := store.Message{ID: storetest.Rand16(), From: a.ID, To: a.ID, Body: []byte(fmt.Sprint(i)),
			Stored: storetest.T0, Expires: storetest.T0.Add(time.Hour)}
		if _, err := s.Enqueue(ctx, m, 0); err != nil {
			t.Fatalf("Enqueue while another process writes: %v", err)
		}
	}
	if err := <-out; err != nil {
		t.Fatalf("child process: %v\n%s", err, output)
	}
	for i := range codes {
		h := sha256.Sum256([]byte(fmt.Sprint("child code ", i)))
		if _, err := s.Register(ctx, h, fmt.Sprint("user", i), storetest.NewDevice(), storetest.T0); err != nil {
			t.Fatalf("Register with a code from the other process: %v", err)
		}
	}
}

func child() int {
	path := os.Getenv("STORE_TEST_CHILD")
	n, _ := strconv.Atoi(os.Getenv("STORE_TEST_CODES"))
	s, err := store.OpenSQLite(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer s.Close()
	for i := range n {
		h := sha256.Sum256([]byte(fmt.Sprint("child code ", i)))
		if err := s.AddCode(context.Background(), h, storetest.T0.Add(time.Hour)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return 0
}

func BenchmarkEnqueue(b *testing.B) {
	s, err := store.OpenSQLite(filepath.Join(b.TempDir(), "commucat.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	h := sha256.Sum256([]byte("c"))
	s.AddCode(ctx, h, storetest.T0.Add(time.Hour))
	u, err := s.Register(ctx, h, "u", storetest.NewDevice(), storetest.T0)
	if err != nil {
		b.Fatal(err)
	}
	body := make([]byte, 256)
	b.ReportAllocs()
	for b.Loop() {
		m := store.Message{ID: storetest.Rand16(), From: u.ID, To: u.ID, Body: body,
			Stored: storetest.T0, Expires: storetest.T0.Add(time.Hour)}
		if _, err := s.Enqueue(ctx, m, 0); err != nil {
			b.Fatal(err)
		}
	}
}
