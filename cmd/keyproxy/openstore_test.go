package main

import (
	"context"
	"path/filepath"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wevion/keyproxy/keystore"
	"github.com/wevion/keyproxy/keystore/storetest"
)

// The SQLite store serve opens maps as much of its file as
// store.mmap_bytes says: SQLite's limit by default, nothing at 0.
func TestOpenStore_SQLiteMapsWhatTheConfigurationSays(t *testing.T) {
	for _, tt := range []struct {
		env  string
		want int64
	}{
		{"", keystore.MaxSQLiteMmapSize},
		{"KEYPROXY_STORE_MMAP_BYTES=0", 0},
		{"KEYPROXY_STORE_MMAP_BYTES=1048576", 1 << 20},
	} {
		env := []string{"KEYPROXY_STORE_DSN=" + filepath.Join(t.TempDir(), "kp.db")}
		if tt.env != "" {
			env = append(env, tt.env)
		}
		cfg, err := LoadConfig("", env)
		if err != nil {
			t.Fatal(err)
		}
		s, _, err := openStore(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		var got int64
		err = s.DB().QueryRow(`PRAGMA mmap_size`).Scan(&got)
		s.Close()
		if err != nil || got != tt.want {
			t.Errorf("%q: mmap_size = %d (%v), want %d", tt.env, got, err, tt.want)
		}
	}
}

// A store created before 16 KiB pages serves as it is, and the operator is
// told once that it keeps its smaller pages; a new store says nothing.
func TestOpenStore_SQLiteWithOldPagesIsNoted(t *testing.T) {
	old := storetest.OldSQLiteFile(t)
	for _, tt := range []struct {
		dsn  string
		want int // log entries
	}{
		{old, 1},
		{filepath.Join(t.TempDir(), "new.db"), 0},
	} {
		cfg, err := LoadConfig("", []string{"KEYPROXY_STORE_DSN=" + tt.dsn})
		if err != nil {
			t.Fatal(err)
		}
		s, _, err := openStore(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		core, logs := observer.New(zap.InfoLevel)
		noteSQLitePageSize(context.Background(), s.(*keystore.SQLite), zap.New(core))
		s.Close()
		if logs.Len() != tt.want {
			t.Fatalf("%s: %d log entries, want %d: %v", filepath.Base(tt.dsn), logs.Len(), tt.want, logs.All())
		}
		if tt.want == 1 {
			if got := logs.All()[0].ContextMap()["page_size"]; got != int64(4096) {
				t.Errorf("logged page_size %v, want 4096", got)
			}
		}
	}
}
