package keystore_test

import (
	"context"
	"testing"
	"time"

	"github.com/wevion/keyproxy/internal/testserver"
	"github.com/wevion/keyproxy/keystore"
)

// An earlier release moved a user without revoking the keys left in the
// old team. The next change to that user ends them, whichever team it
// names: coming back to the old team must not bring them back.
func TestSQLite_KeysLeftByAnEarlierMoveAreRevokedByTheNextChange(t *testing.T) {
	s := openTemp(t)
	checkLegacyMoveCleanup(t, s, func(q string) error { _, err := s.DB().Exec(q); return err })
}

func TestPostgres_KeysLeftByAnEarlierMoveAreRevokedByTheNextChange(t *testing.T) {
	s := openPostgres(t, pgSchema(t, testserver.NewPostgresDB(t)))
	checkLegacyMoveCleanup(t, s, func(q string) error { _, err := s.Pool().Exec(context.Background(), q); return err })
}

func checkLegacyMoveCleanup(t *testing.T, s keystore.Store, exec func(string) error) {
	ctx := context.Background()
	newKey := func(i int, team string) keystore.Key {
		k, err := s.CreateKey(ctx, keystore.NewKey{ID: keyIDOf(i), Hash: hashOf(i), Start: "wev_AAAA", Name: "n",
			UserID: "usr_" + team[len(team)-1:], TeamID: team, Role: "admin", MaxActivePerTeam: 10})
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	// usr_a's key stays in team_a when the earlier release moves usr_a to
	// team_b; usr_c's the same, to team_d.
	left := newKey(1, "team_a")
	back := newKey(2, "team_c")
	for _, team := range []string{"team_b", "team_d"} {
		if _, _, err := s.PutTeam(ctx, keystore.Team{ID: team, Active: true}); err != nil {
			t.Fatal(err)
		}
	}
	if err := exec(`UPDATE users SET team_id = 'team_b' WHERE id = 'usr_a'`); err != nil {
		t.Fatal(err)
	}
	if err := exec(`UPDATE users SET team_id = 'team_d' WHERE id = 'usr_c'`); err != nil {
		t.Fatal(err)
	}
	if id, err := s.Resolve(ctx, left.Hash); err != nil || id.Refusal(time.Now()) != "owner_moved" {
		t.Fatalf("the left key resolves to %+v (%v), want refused as owner_moved", id, err)
	}

	cases := []struct {
		name string
		user keystore.User
		key  keystore.Key
	}{
		{"a role change in the new team", keystore.User{ID: "usr_a", TeamID: "team_b", Role: "member", Active: true}, left},
		{"a move back to the key's team", keystore.User{ID: "usr_c", TeamID: "team_c", Role: "admin", Active: true}, back},
	}
	for _, tc := range cases {
		c, err := s.PutUser(ctx, tc.user)
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Revoked) != 1 || c.Revoked[0].ID != tc.key.ID || c.Revoked[0].RevokedAt == nil {
			t.Fatalf("%s revoked %+v, want the left key %s", tc.name, c.Revoked, tc.key.ID)
		}
		if id, err := s.Resolve(ctx, tc.key.Hash); err != nil || !id.Revoked {
			t.Fatalf("after %s the left key resolves to %+v (%v), want revoked", tc.name, id, err)
		}
	}
}
