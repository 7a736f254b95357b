package keystore_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/wevion/keyproxy/keystore"
)

// previousResolveQuery is the previous release's SQLite.Resolve: it joins
// the users and teams tables, which stay the source of truth. A migrated
// file must still answer it (a replica of that release runs during a
// rolling upgrade), and the tests compare the key rows' copies with it.
const previousResolveQuery = `SELECT k.id, k.user_id, k.team_id, u.role, u.active, t.active,
		u.team_id = k.team_id, k.revoked_at, k.expires_at
	FROM keys k INDEXED BY keys_resolve
		JOIN users u INDEXED BY users_resolve ON u.id = k.user_id
		JOIN teams t INDEXED BY teams_resolve ON t.id = k.team_id
	WHERE k.hash = ?`

// joined resolves h with previousResolveQuery. Only the fields the copies
// feed are compared, so expiry is left out.
func joined(t *testing.T, db *sql.DB, h keystore.Hash) keystore.Identity {
	t.Helper()
	var (
		id                keystore.Identity
		revoked, expiring sql.NullInt64
	)
	if err := db.QueryRow(previousResolveQuery, h[:]).Scan(&id.KeyID, &id.UserID, &id.TeamID, &id.Role,
		&id.UserActive, &id.TeamActive, &id.SameTeam, &revoked, &expiring); err != nil {
		t.Fatalf("previous release's resolve query: %v", err)
	}
	id.Revoked = revoked.Valid
	return id
}

func resolved(t *testing.T, s *keystore.SQLite, h keystore.Hash) keystore.Identity {
	t.Helper()
	id, err := s.Resolve(context.Background(), h)
	if err != nil {
		t.Fatal(err)
	}
	id.ExpiresAt = time.Time{}
	return id
}

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
	for _, q := range []string{
		`INSERT INTO teams (id, active, updated_at) VALUES ('team_on', 1, 0), ('team_off', 0, 0)`,
		`INSERT INTO users (id, team_id, role, active, updated_at) VALUES
			('usr_admin', 'team_on', 'admin', 1, 0),
			('usr_gone', 'team_on', 'member', 0, 0),
			('usr_moved', 'team_off', 'owner', 1, 0)`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	want := []keystore.Identity{
		{UserID: "usr_admin", TeamID: "team_on", Role: "admin", UserActive: true, TeamActive: true, SameTeam: true},
		{UserID: "usr_gone", TeamID: "team_on", Role: "member", UserActive: false, TeamActive: true, SameTeam: true},
		{UserID: "usr_moved", TeamID: "team_on", Role: "owner", UserActive: true, TeamActive: true, SameTeam: false},
		{UserID: "usr_moved", TeamID: "team_off", Role: "owner", UserActive: true, TeamActive: false, SameTeam: true},
	}
	for i := range want {
		want[i].KeyID = fmt.Sprintf("key_%020d", i)
		h := hashOf(i)
		_, err := db.Exec(`INSERT INTO keys (id, hash, start, name, user_id, team_id, created_at) VALUES (?, ?, 'wev_AAAA', 'n', ?, ?, 0)`,
			want[i].KeyID, h[:], want[i].UserID, want[i].TeamID)
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s, err := keystore.OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i, w := range want {
		h := hashOf(i)
		if got := resolved(t, s, h); got != w {
			t.Errorf("key %d after the upgrade resolves to %+v, want %+v", i, got, w)
		}
		if got := joined(t, s.DB(), h); got != w {
			t.Errorf("key %d through the previous release's query: %+v, want %+v", i, got, w)
		}
	}
}

func hashOf(i int) keystore.Hash { return keystore.HashKey(fmt.Sprintf("wev_identity_%d", i)) }

// Whatever sequence of key, user and team changes the admin plane makes,
// every key resolves to what its owner and team rows say at that moment.
func TestSQLite_KeyCopiesFollowOwnersAndTeams(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t)
	rng := rand.New(rand.NewPCG(1, 2))
	teams := []string{"team_a", "team_b", "team_c"}
	users := []string{"usr_1", "usr_2", "usr_3", "usr_4", "usr_5"}
	roles := []string{"owner", "admin", "member"}
	pick := func(xs []string) string { return xs[rng.IntN(len(xs))] }
	var keys []keystore.Key
	for step := range 400 {
		var err error
		op := rng.IntN(4)
		switch {
		case op == 0 || len(keys) == 0:
			var k keystore.Key
			k, err = s.CreateKey(ctx, keystore.NewKey{ID: fmt.Sprintf("key_%020d", step), Hash: hashOf(step),
				Start: "wev_AAAA", Name: "n", UserID: pick(users), TeamID: pick(teams), Role: pick(roles),
				MaxActivePerTeam: 1000})
			if errors.Is(err, keystore.ErrTeamInactive) {
				continue
			}
			keys = append(keys, k)
		case op == 1:
			_, _, err = s.PutUser(ctx, keystore.User{ID: pick(users), TeamID: pick(teams), Role: pick(roles), Active: rng.IntN(3) > 0})
		case op == 2:
			_, _, err = s.PutTeam(ctx, keystore.Team{ID: pick(teams), Active: rng.IntN(3) > 0})
		default:
			_, err = s.RevokeKey(ctx, keys[rng.IntN(len(keys))].ID, time.Now())
		}
		if err != nil {
			t.Fatalf("step %d (op %d): %v", step, op, err)
		}
		for _, k := range keys {
			if got, want := resolved(t, s, k.Hash), joined(t, s.DB(), k.Hash); got != want {
				t.Fatalf("after step %d (op %d) key %s resolves to %+v, its rows say %+v", step, op, k.ID, got, want)
			}
		}
	}
}
