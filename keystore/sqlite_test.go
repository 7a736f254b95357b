package keystore_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wevion/keyproxy/keystore"
	"github.com/wevion/keyproxy/keystore/storetest"
)

func openTemp(t *testing.T) *keystore.SQLite {
	t.Helper()
	s, err := keystore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "keys.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestSQLite_Contract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) keystore.Store { return openTemp(t) })
}

func TestOpenSQLite_EnablesWALAndForeignKeys(t *testing.T) {
	s := openTemp(t)
	var mode string
	if err := s.DB().QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q (%v), want wal", mode, err)
	}
	var fk int
	if err := s.DB().QueryRow(`PRAGMA foreign_keys`).Scan(&fk); err != nil || fk != 1 {
		t.Fatalf("foreign_keys = %d (%v), want 1", fk, err)
	}
	var busy int
	if err := s.DB().QueryRow(`PRAGMA busy_timeout`).Scan(&busy); err != nil || busy != int(keystore.DefaultSQLiteBusyTimeout.Milliseconds()) {
		t.Fatalf("busy_timeout = %d (%v)", busy, err)
	}
}

// Every pooled connection gets the map size asked for (the pragma is per
// connection), and none unless asked.
func TestOpenSQLiteWith_MapsTheFileOnEveryConnection(t *testing.T) {
	ctx := context.Background()
	for _, want := range []int64{0, 1 << 20, keystore.MaxSQLiteMmapSize} {
		s, err := keystore.OpenSQLiteWith(ctx, filepath.Join(t.TempDir(), "keys.db"), keystore.SQLiteOptions{MmapSize: want})
		if err != nil {
			t.Fatal(err)
		}
		conns := make([]*sql.Conn, 3)
		for i := range conns {
			if conns[i], err = s.DB().Conn(ctx); err != nil {
				t.Fatal(err)
			}
			var got int64
			if err := conns[i].QueryRowContext(ctx, `PRAGMA mmap_size`).Scan(&got); err != nil || got != want {
				t.Errorf("connection %d: mmap_size = %d (%v), want %d", i, got, err, want)
			}
		}
		for _, c := range conns {
			c.Close()
		}
		s.Close()
	}
	// SQLite would quietly map less than a larger size asks for.
	for _, bad := range []int64{-1, keystore.MaxSQLiteMmapSize + 1} {
		if s, err := keystore.OpenSQLiteWith(ctx, filepath.Join(t.TempDir(), "keys.db"), keystore.SQLiteOptions{MmapSize: bad}); err == nil {
			s.Close()
			t.Errorf("map size %d was accepted", bad)
		}
	}
}

// A new file takes SQLitePageSize; a file made before, with SQLite's
// default pages, opens as it is and keeps working, since WAL mode cannot
// change a page size.
func TestOpenSQLite_PageSize(t *testing.T) {
	ctx := context.Background()
	pageSize := func(t *testing.T, s *keystore.SQLite) int {
		t.Helper()
		n, err := s.PageSize(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if got := pageSize(t, openTemp(t)); got != keystore.SQLitePageSize {
		t.Errorf("new file: page_size %d, want %d", got, keystore.SQLitePageSize)
	}

	path := storetest.OldSQLiteFile(t)
	s, err := keystore.OpenSQLite(ctx, path)
	if err != nil {
		t.Fatalf("a file with 4 KiB pages: %v", err)
	}
	defer s.Close()
	if got := pageSize(t, s); got != 4096 {
		t.Errorf("existing file: page_size %d, want its own 4096", got)
	}
	nk := keystore.NewKey{ID: "key_AAAAAAAAAAAAAAAAAAAA", Hash: keystore.HashKey("k"), Start: "wev_AAAA", Name: "n",
		UserID: "u", TeamID: "t", Role: "owner", MaxActivePerTeam: 10}
	if _, err := s.CreateKey(ctx, nk); err != nil {
		t.Fatal(err)
	}
	if id, err := s.Resolve(ctx, nk.Hash); err != nil || id.KeyID != nk.ID {
		t.Fatalf("Resolve in the existing file: %+v, %v", id, err)
	}
}

func TestOpenSQLite_MigrationsIdempotentOnReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "keys.db")
	s, err := keystore.OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	nk := keystore.NewKey{ID: "key_AAAAAAAAAAAAAAAAAAAA", Hash: keystore.HashKey("k"), Start: "wev_AAAA", Name: "n",
		UserID: "u", TeamID: "t", Role: "owner", MaxActivePerTeam: 10}
	if _, err := s.CreateKey(ctx, nk); err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	s.Close()

	s2, err := keystore.OpenSQLite(ctx, path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s2.Close()
	if _, err := s2.GetKey(ctx, nk.ID); err != nil {
		t.Fatalf("key lost on reopen: %v", err)
	}
	var rows, max int
	if err := s2.DB().QueryRow(`SELECT count(*), max(version) FROM schema_migrations`).Scan(&rows, &max); err != nil {
		t.Fatal(err)
	}
	if rows != max || rows == 0 {
		t.Fatalf("schema_migrations holds %d rows up to version %d: a step ran twice or none ran", rows, max)
	}
}

func TestOpenSQLite_ConcurrentOpenersMigrateOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.db")
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			s, err := keystore.OpenSQLite(context.Background(), path)
			if err == nil {
				err = s.Close()
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent open: %v", err)
		}
	}
}

func TestOpenSQLite_RefusesURIsAndMemory(t *testing.T) {
	for _, p := range []string{"", ":memory:", "file:x.db", "x.db?mode=ro", "x#y.db"} {
		if s, err := keystore.OpenSQLite(context.Background(), p); err == nil {
			s.Close()
			t.Errorf("OpenSQLite(%q) succeeded", p)
		}
	}
}

func TestOpenSQLite_UnwritableDirIsAnError(t *testing.T) {
	_, err := keystore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "missing", "dir", "keys.db"))
	if err == nil {
		t.Fatal("opened a database in a missing directory")
	}
}

// A writer holding the lock longer than the busy timeout makes the store
// report ErrUnavailable, never a raw "database is locked".
func TestSQLite_LockedDatabaseIsUnavailable(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "keys.db")
	s, err := keystore.OpenSQLiteWith(ctx, path, keystore.SQLiteOptions{BusyTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	other, err := sql.Open("sqlite", path+"?_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	tx, err := other.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()

	nk := keystore.NewKey{ID: "key_AAAAAAAAAAAAAAAAAAAA", Hash: keystore.HashKey("k"), Start: "wev_AAAA", Name: "n",
		UserID: "u", TeamID: "t", Role: "owner", MaxActivePerTeam: 10}
	_, err = s.CreateKey(ctx, nk)
	if !errors.Is(err, keystore.ErrUnavailable) {
		t.Fatalf("CreateKey under a held write lock: %v, want ErrUnavailable", err)
	}
	// Readers are not blocked by a writer in WAL mode.
	if _, err := s.Resolve(ctx, nk.Hash); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("Resolve during a write: %v, want ErrNotFound", err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateKey(ctx, nk); err != nil {
		t.Fatalf("CreateKey after the lock is gone: %v", err)
	}
}

func TestSQLite_TimesOutsideStorableRangeRefused(t *testing.T) {
	s := openTemp(t)
	far := time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)
	nk := keystore.NewKey{ID: "key_AAAAAAAAAAAAAAAAAAAA", Hash: keystore.HashKey("k"), Start: "wev_AAAA", Name: "n",
		UserID: "u", TeamID: "t", Role: "owner", MaxActivePerTeam: 10, ExpiresAt: &far}
	if _, err := s.CreateKey(context.Background(), nk); err == nil {
		t.Fatal("stored an expiry in year 9999")
	}
	nk.ExpiresAt = nil
	if _, err := s.CreateKey(context.Background(), nk); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateKey(context.Background(), nk.ID, keystore.KeyUpdate{ExpiresAt: &far}); err == nil {
		t.Fatal("UpdateKey stored an expiry in year 9999")
	}
}

// A cache miss must not read table rows: with a million keys every row
// read is a page read (bench/storebench measures the effect).
func TestSQLite_ResolveReadsOnlyCoveringIndexes(t *testing.T) {
	s := openTemp(t)
	rows, err := s.DB().Query(`EXPLAIN QUERY PLAN `+keystore.SQLiteResolveQuery, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var steps []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		steps = append(steps, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{"keys_identity"}
	if len(steps) != len(want) {
		t.Fatalf("plan has %d steps, want %d: %q", len(steps), len(want), steps)
	}
	for i, step := range steps {
		if !strings.Contains(step, "USING COVERING INDEX "+want[i]) {
			t.Errorf("step %d is %q, want a search of covering index %s", i, step, want[i])
		}
	}
}
