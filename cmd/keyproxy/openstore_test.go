package main

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/wevion/keyproxy/keystore"
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
