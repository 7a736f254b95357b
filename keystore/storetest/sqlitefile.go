package storetest

import (
	"database/sql"
	"path/filepath"
	"testing"
)

// OldSQLiteFile makes a SQLite file as keyproxy created them before
// keystore.SQLitePageSize: 4 KiB pages, in WAL mode, which keeps them.
// It holds one table of no store's, so the migrations still run on it.
func OldSQLiteFile(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", path+"?_pragma=page_size(4096)&_journal_mode=WAL")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE before_keyproxy (x INTEGER)`); err != nil {
		t.Fatal(err)
	}
	return path
}
