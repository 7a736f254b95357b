package storebench

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/wevion/keyproxy/internal/testserver"
	"github.com/wevion/keyproxy/keystore"
)

// testStore is a migrated store and its database handle.
type testStore struct {
	name    string
	store   keystore.Store
	dialect Dialect
	fill    func(ctx context.Context, from, to int) error
}

func openSQLite(tb testing.TB) testStore {
	// Opened as keyproxy opens it by default, file mapped.
	s, err := keystore.OpenSQLiteWith(context.Background(), filepath.Join(tb.TempDir(), "keys.db"),
		keystore.SQLiteOptions{MmapSize: keystore.DefaultSQLiteMmapSize})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return testStore{"sqlite", s, SQLite, func(ctx context.Context, from, to int) error { return Fill(ctx, s.DB(), SQLite, from, to) }}
}

func openPostgres(tb testing.TB) testStore {
	s, err := keystore.OpenPostgres(context.Background(), testserver.NewPostgresDB(tb), keystore.PostgresOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return testStore{"postgres", s, Postgres, func(ctx context.Context, from, to int) error { return Fill(ctx, s.DB(), Postgres, from, to) }}
}

func TestFill_KeysResolveToTheirOwnersInEveryStore(t *testing.T) {
	for _, open := range []func(testing.TB) testStore{openSQLite, openPostgres} {
		ts := open(t)
		t.Run(ts.name, func(t *testing.T) {
			ctx := context.Background()
			// Two calls, as the benchmark grows a store from 1 k keys.
			if err := ts.fill(ctx, 0, 1000); err != nil {
				t.Fatal(err)
			}
			if err := ts.fill(ctx, 1000, 2345); err != nil {
				t.Fatal(err)
			}
			for _, i := range []int{0, 1, 999, 1000, 2344} {
				id, err := ts.store.Resolve(ctx, Hash(i))
				if err != nil {
					t.Fatalf("key %d: %v", i, err)
				}
				want := keystore.Identity{KeyID: KeyID(i), UserID: UserID(i), TeamID: TeamID(i), Role: "admin",
					UserActive: true, TeamActive: true, SameTeam: true}
				if id != want {
					t.Fatalf("key %d resolved to %+v, want %+v", i, id, want)
				}
			}
			if _, err := ts.store.Resolve(ctx, Hash(2345)); !errors.Is(err, keystore.ErrNotFound) {
				t.Fatalf("key past the fill: %v, want ErrNotFound", err)
			}
			if n, err := ts.store.CountActiveKeys(ctx); err != nil || n != 2345 {
				t.Fatalf("CountActiveKeys = %d, %v; want 2345", n, err)
			}
		})
	}
}

func TestFill_RefusesARangeThatSplitsATeam(t *testing.T) {
	ts := openSQLite(t)
	if err := ts.fill(context.Background(), 5, 100); err == nil {
		t.Fatal("from not a multiple of KeysPerTeam accepted")
	}
}
