package store

import (
	"context"
	"database/sql"
	"path/filepath"
	"strconv"
	"testing"
)

// TestSetWALRetries holds the write lock of a new file, still in rollback
// mode, on another connection while setWAL switches the file to WAL, the
// state two openers of one new file reach when both switch it at once.
// SQLite refuses setWAL's lock upgrade at once with SQLITE_BUSY, whatever
// the busy timeout; setWAL must wait and try again, not fail.
func TestSetWALRetries(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "commucat.db")
	other, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	holder, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if _, err := holder.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatalf("take the write lock: %v", err)
	}
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout("+strconv.FormatInt(BusyTimeout.Milliseconds(), 10)+")")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var waits []int
	wait := func(ctx context.Context, attempt int) error {
		waits = append(waits, attempt)
		if attempt > 1 {
			return nil
		}
		_, err := holder.ExecContext(ctx, "ROLLBACK")
		return err
	}
	if err := setWAL(ctx, db, wait); err != nil {
		t.Fatalf("setWAL while another connection holds the write lock: %v", err)
	}
	if len(waits) != 1 {
		t.Errorf("setWAL waited before attempts %v, want once after the first", waits)
	}
	var mode string
	if err := other.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q, %v; want wal", mode, err)
	}
}
