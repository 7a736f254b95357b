package keystore_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wevion/keyproxy/internal/testserver"
	"github.com/wevion/keyproxy/keystore"
)

// The previous release's Resolve queries join the users and teams tables,
// which stay the source of truth. A migrated database must still answer
// them (a replica of that release runs during a rolling upgrade), and the
// tests compare the key rows' copies with them.
const (
	previousSQLiteResolve = `SELECT k.id, k.user_id, k.team_id, u.role, u.active, t.active,
		u.team_id = k.team_id, k.revoked_at IS NOT NULL
	FROM keys k INDEXED BY keys_resolve
		JOIN users u INDEXED BY users_resolve ON u.id = k.user_id
		JOIN teams t INDEXED BY teams_resolve ON t.id = k.team_id
	WHERE k.hash = ?`
	previousPostgresResolve = `SELECT k.id, k.user_id, k.team_id, u.role, u.active, t.active,
		u.team_id = k.team_id, k.revoked_at IS NOT NULL
	FROM keys k JOIN users u ON u.id = k.user_id JOIN teams t ON t.id = k.team_id
	WHERE k.hash = $1`
)

// joinedFunc resolves a hash with the previous release's query. Only the
// fields the copies feed, and the revocation, are compared.
type joinedFunc func(t *testing.T, h keystore.Hash) keystore.Identity

func scanJoined(t *testing.T, row interface{ Scan(...any) error }) keystore.Identity {
	t.Helper()
	var id keystore.Identity
	if err := row.Scan(&id.KeyID, &id.UserID, &id.TeamID, &id.Role, &id.UserActive, &id.TeamActive,
		&id.SameTeam, &id.Revoked); err != nil {
		t.Fatalf("previous release's resolve query: %v", err)
	}
	return id
}

func sqliteJoined(db *sql.DB) joinedFunc {
	return func(t *testing.T, h keystore.Hash) keystore.Identity {
		return scanJoined(t, db.QueryRow(previousSQLiteResolve, h[:]))
	}
}

func postgresJoined(pool *pgxpool.Pool) joinedFunc {
	return func(t *testing.T, h keystore.Hash) keystore.Identity {
		return scanJoined(t, pool.QueryRow(context.Background(), previousPostgresResolve, h[:]))
	}
}

func resolved(t *testing.T, s keystore.Store, h keystore.Hash) keystore.Identity {
	t.Helper()
	id, err := s.Resolve(context.Background(), h)
	if err != nil {
		t.Fatal(err)
	}
	id.ExpiresAt = time.Time{}
	return id
}

// upgradeTeams and upgradeUsers are what the upgrade tests write with the
// previous schema, and upgradeWant what each key must resolve to afterwards.
var (
	upgradeTeams = [][2]any{{"team_on", true}, {"team_off", false}}
	upgradeUsers = [][4]any{
		{"usr_admin", "team_on", "admin", true},
		{"usr_gone", "team_on", "member", false},
		{"usr_moved", "team_off", "owner", true},
	}
	upgradeWant = []keystore.Identity{
		{UserID: "usr_admin", TeamID: "team_on", Role: "admin", UserActive: true, TeamActive: true, SameTeam: true},
		{UserID: "usr_gone", TeamID: "team_on", Role: "member", UserActive: false, TeamActive: true, SameTeam: true},
		{UserID: "usr_moved", TeamID: "team_on", Role: "owner", UserActive: true, TeamActive: true, SameTeam: false},
		{UserID: "usr_moved", TeamID: "team_off", Role: "owner", UserActive: true, TeamActive: false, SameTeam: true},
	}
)

// writeUpgradeRows writes upgradeTeams, upgradeUsers and one key per
// upgradeWant through exec. The statements use ? placeholders and
// time.Time arguments; exec adapts both to its store.
func writeUpgradeRows(t *testing.T, exec func(q string, args ...any) error) {
	t.Helper()
	for _, tm := range upgradeTeams {
		if err := exec(`INSERT INTO teams (id, active, updated_at) VALUES (?, ?, ?)`, tm[0], tm[1], time.Unix(0, 0)); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range upgradeUsers {
		if err := exec(`INSERT INTO users (id, team_id, role, active, updated_at) VALUES (?, ?, ?, ?, ?)`,
			u[0], u[1], u[2], u[3], time.Unix(0, 0)); err != nil {
			t.Fatal(err)
		}
	}
	for i, w := range upgradeWant {
		h := hashOf(i)
		if err := exec(`INSERT INTO keys (id, hash, start, name, user_id, team_id, created_at) VALUES (?, ?, 'wev_AAAA', 'n', ?, ?, ?)`,
			keyIDOf(i), h[:], w.UserID, w.TeamID, time.Unix(0, 0)); err != nil {
			t.Fatal(err)
		}
	}
}

func checkUpgraded(t *testing.T, s keystore.Store, joined joinedFunc) {
	t.Helper()
	for i, w := range upgradeWant {
		w.KeyID = keyIDOf(i)
		if got := resolved(t, s, hashOf(i)); got != w {
			t.Errorf("key %d after the upgrade resolves to %+v, want %+v", i, got, w)
		}
		if got := joined(t, hashOf(i)); got != w {
			t.Errorf("key %d through the previous release's query: %+v, want %+v", i, got, w)
		}
	}
}

func keyIDOf(i int) string { return fmt.Sprintf("key_%020d", i) }

// A file written by the previous release gets each key's owner and team
// state copied onto the key when migration 3 runs.
func TestSQLite_UpgradeCopiesOwnerAndTeamOntoKeys(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "keys.db")
	db, err := sql.Open("sqlite", path+"?_foreign_keys=1")
	if err != nil {
		t.Fatal(err)
	}
	if err := keystore.MigrateSQLiteUpTo(ctx, db, 2); err != nil {
		t.Fatal(err)
	}
	writeUpgradeRows(t, func(q string, args ...any) error {
		for i, a := range args {
			if tm, ok := a.(time.Time); ok {
				args[i] = tm.UnixNano()
			}
		}
		_, err := db.Exec(q, args...)
		return err
	})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := keystore.OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkUpgraded(t, s, sqliteJoined(s.DB()))
}

// The same for a PostgreSQL database, at its migration 2.
func TestPostgres_UpgradeCopiesOwnerAndTeamOntoKeys(t *testing.T) {
	ctx := testserver.Context(t)
	dsn := pgSchema(t, testserver.NewPostgresDB(t))
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := keystore.MigratePostgresUpTo(ctx, pool, 1); err != nil {
		t.Fatal(err)
	}
	writeUpgradeRows(t, func(q string, args ...any) error {
		for n := 1; strings.Contains(q, "?"); n++ {
			q = strings.Replace(q, "?", "$"+strconv.Itoa(n), 1)
		}
		_, err := pool.Exec(ctx, q, args...)
		return err
	})
	s := openPostgres(t, dsn)
	checkUpgraded(t, s, postgresJoined(s.Pool()))
}

func hashOf(i int) keystore.Hash { return keystore.HashKey(fmt.Sprintf("wev_identity_%d", i)) }

// Whatever sequence of key, user and team changes the admin plane makes,
// every key resolves to what its owner and team rows say at that moment.
func TestSQLite_KeyCopiesFollowOwnersAndTeams(t *testing.T) {
	s := openTemp(t)
	checkCopiesFollow(t, s, sqliteJoined(s.DB()))
}

func TestPostgres_KeyCopiesFollowOwnersAndTeams(t *testing.T) {
	s := openPostgres(t, pgSchema(t, testserver.NewPostgresDB(t)))
	checkCopiesFollow(t, s, postgresJoined(s.Pool()))
}

func checkCopiesFollow(t *testing.T, s keystore.Store, joined joinedFunc) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	teams := []string{"team_a", "team_b", "team_c"}
	users := []string{"usr_1", "usr_2", "usr_3", "usr_4", "usr_5"}
	roles := []string{"owner", "admin", "member"}
	pick := func(xs []string) string { return xs[rng.IntN(len(xs))] }
	var keys []keystore.Key
	for step := range 300 {
		var err error
		op := rng.IntN(4)
		switch {
		case op == 0 || len(keys) == 0:
			var k keystore.Key
			k, err = s.CreateKey(ctx, keystore.NewKey{ID: keyIDOf(step), Hash: hashOf(step),
				Start: "wev_AAAA", Name: "n", UserID: pick(users), TeamID: pick(teams), Role: pick(roles),
				MaxActivePerTeam: 1000})
			if errors.Is(err, keystore.ErrTeamInactive) || errors.Is(err, keystore.ErrUserInactive) {
				continue
			}
			keys = append(keys, k)
		case op == 1:
			_, err = s.PutUser(ctx, keystore.User{ID: pick(users), TeamID: pick(teams), Role: pick(roles), Active: rng.IntN(3) > 0})
		case op == 2:
			_, _, err = s.PutTeam(ctx, keystore.Team{ID: pick(teams), Active: rng.IntN(3) > 0})
		default:
			_, err = s.RevokeKey(ctx, keys[rng.IntN(len(keys))].ID, time.Now())
		}
		if err != nil {
			t.Fatalf("step %d (op %d): %v", step, op, err)
		}
		for _, k := range keys {
			if got, want := resolved(t, s, k.Hash), joined(t, k.Hash); got != want {
				t.Fatalf("after step %d (op %d) key %s resolves to %+v, its rows say %+v", step, op, k.ID, got, want)
			}
		}
	}
}

// A key inserted while a change to its owner runs in another transaction
// must end with the owner's committed state. The copying trigger locks the
// owner's row (FOR SHARE), so the change waits for the key's commit and
// then updates it; without the lock the change's UPDATE skips the key,
// not yet visible, and the key keeps the state from before the change.
// CreateKey locks the owner itself, so the key is inserted here directly,
// as any other writer of the table might.
func TestPostgres_KeyCopyWaitsForAConcurrentOwnerChange(t *testing.T) {
	ctx := testserver.Context(t)
	s := openPostgres(t, pgSchema(t, testserver.NewPostgresDB(t)))
	if _, err := s.PutUser(ctx, keystore.User{ID: "usr_1", TeamID: "team_a", Role: "admin", Active: true}); err != nil {
		t.Fatal(err)
	}
	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	h := hashOf(0)
	if _, err := tx.Exec(ctx, `INSERT INTO keys (id, hash, start, name, user_id, team_id, created_at)
		VALUES ($1, $2, 'wev_AAAA', 'n', 'usr_1', 'team_a', now())`, keyIDOf(0), h[:]); err != nil {
		t.Fatal(err)
	}
	changed := make(chan error, 1)
	go func() {
		_, err := s.PutUser(ctx, keystore.User{ID: "usr_1", TeamID: "team_a", Role: "member", Active: false})
		changed <- err
	}()
	// Let the change run as far as it can: to its end, or to a wait for
	// the key's transaction.
	for blocked := false; !blocked; {
		select {
		case err := <-changed:
			changed <- err
			blocked = true
		case <-time.After(5 * time.Millisecond):
			if err := s.Pool().QueryRow(ctx, `SELECT count(*) > 0 FROM pg_stat_activity
				WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&blocked); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-changed; err != nil {
		t.Fatal(err)
	}
	got, want := resolved(t, s, h), postgresJoined(s.Pool())(t, h)
	if got != want || got.UserActive || got.Role != "member" {
		t.Fatalf("the key resolves to %+v; its owner's rows say %+v", got, want)
	}
}
