package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/wevion/keyproxy/keystore"
)

func testPutUserRole(t *testing.T, s keystore.Store) {
	k := create(t, s, newKey(t, "team_a", "user_a", "owner"))
	c, err := s.PutUser(ctx(t), keystore.User{ID: "user_a", TeamID: "team_a", Role: "member", Active: true})
	if err != nil {
		t.Fatal(err)
	}
	if u := c.User; u.ID != "user_a" || u.Role != "member" || !u.Active || u.UpdatedAt.IsZero() {
		t.Fatalf("PutUser returned %+v", u)
	}
	if !slices.Equal(c.Evict, []keystore.Hash{k.Hash}) || len(c.Revoked) != 0 {
		t.Fatalf("PutUser evicts %v and revokes %d, want the user's key and none", c.Evict, len(c.Revoked))
	}
	if id := resolve(t, s, k.Hash); id.Role != "member" {
		t.Fatalf("Resolve role = %q after demotion", id.Role)
	}
	if got := getKey(t, s, k.ID); got.Role != "member" {
		t.Fatalf("GetKey role = %q after demotion", got.Role)
	}
	keys, err := s.ListKeys(ctx(t), keystore.KeyFilter{TeamID: "team_a"})
	if err != nil || len(keys) != 1 || keys[0].Role != "member" {
		t.Fatalf("ListKeys after demotion: %v %v", keys, err)
	}
}

func testPutUserDeactivateMove(t *testing.T, s keystore.Store) {
	k := create(t, s, newKey(t, "team_a", "user_a", "owner"))
	revoked := create(t, s, newKey(t, "team_a", "user_a", "owner"))
	if _, err := s.RevokeKey(ctx(t), revoked.ID, now()); err != nil {
		t.Fatal(err)
	}
	c, err := s.PutUser(ctx(t), keystore.User{ID: "user_a", TeamID: "team_a", Role: "owner", Active: false})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Evict, []keystore.Hash{k.Hash}) || len(c.Revoked) != 0 {
		t.Fatalf("deactivation evicts %v and revokes %d, want only the unrevoked key and none", c.Evict, len(c.Revoked))
	}
	if id := resolve(t, s, k.Hash); id.UserActive || id.Check(time.Now()) != keystore.StatusInvalid {
		t.Fatalf("deactivated owner's key resolves to %+v", id)
	}
	// Reactivated in the same team: the key works again.
	if _, err := s.PutUser(ctx(t), keystore.User{ID: "user_a", TeamID: "team_a", Role: "owner", Active: true}); err != nil {
		t.Fatal(err)
	}
	if id := resolve(t, s, k.Hash); id.Check(time.Now()) != keystore.StatusValid {
		t.Fatalf("reactivated owner's key resolves to %+v", id)
	}
	// Moved, even while deactivated: the key is revoked, for good.
	at := now()
	c, err = s.PutUser(ctx(t), keystore.User{ID: "user_a", TeamID: "team_b", Role: "owner", Active: false, UpdatedAt: at})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Evict, []keystore.Hash{k.Hash}) {
		t.Fatalf("move evicts %v, want the unrevoked key", c.Evict)
	}
	checkMoveRevoked(t, s, c.Revoked, at, k)
	if !c.Revoked[0].RevokedAt.Equal(at) {
		t.Fatalf("revoked at %v, want the change's time %v", c.Revoked[0].RevokedAt, at)
	}
	if n := activeKeys(t, s, "team_a"); n != 0 {
		t.Fatalf("team_a lists %d active keys after its only owner moved, want 0", n)
	}
	if c, err = s.PutUser(ctx(t), keystore.User{ID: "user_a", TeamID: "team_a", Role: "owner", Active: true}); err != nil {
		t.Fatal(err)
	}
	if len(c.Evict) != 0 || len(c.Revoked) != 0 {
		t.Fatalf("moving back evicts %d and revokes %d, want nothing left to end", len(c.Evict), len(c.Revoked))
	}
	if id := resolve(t, s, k.Hash); !id.Revoked || id.Check(time.Now()) != keystore.StatusInvalid {
		t.Fatalf("key of owner moved back resolves to %+v, want still revoked", id)
	}
}

func testPutUserNewTeam(t *testing.T, s keystore.Store) {
	c, err := s.PutUser(ctx(t), keystore.User{ID: "user_new", TeamID: "team_new", Role: "admin", Active: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Evict) != 0 || len(c.Revoked) != 0 || c.User.TeamID != "team_new" {
		t.Fatalf("PutUser new = %+v", c)
	}
	k := create(t, s, newKey(t, "team_new", "user_new", "admin"))
	if id := resolve(t, s, k.Hash); !id.TeamActive || !id.UserActive {
		t.Fatalf("team created by PutUser: %+v, want active", id)
	}
}

func testPutTeam(t *testing.T, s keystore.Store) {
	k1 := create(t, s, newKey(t, "team_a", "user_a", "owner"))
	k2 := create(t, s, newKey(t, "team_a", "user_b", "owner"))
	create(t, s, newKey(t, "team_b", "user_c", "owner"))
	at := now()
	team, hashes, err := s.PutTeam(ctx(t), keystore.Team{ID: "team_a", Active: false, UpdatedAt: at})
	if err != nil {
		t.Fatal(err)
	}
	if team.Active || !team.UpdatedAt.Equal(at) {
		t.Fatalf("PutTeam returned %+v", team)
	}
	slices.SortFunc(hashes, func(a, b keystore.Hash) int { return slices.Compare(a[:], b[:]) })
	want := []keystore.Hash{k1.Hash, k2.Hash}
	slices.SortFunc(want, func(a, b keystore.Hash) int { return slices.Compare(a[:], b[:]) })
	if !slices.Equal(hashes, want) {
		t.Fatalf("PutTeam hashes = %v, want the team's two keys", hashes)
	}
	if id := resolve(t, s, k1.Hash); id.TeamActive || id.Check(time.Now()) != keystore.StatusTeamInactive {
		t.Fatalf("key of inactive team resolves to %+v", id)
	}
	if _, _, err := s.PutTeam(ctx(t), keystore.Team{ID: "team_a", Active: true}); err != nil {
		t.Fatal(err)
	}
	if id := resolve(t, s, k1.Hash); id.Check(time.Now()) != keystore.StatusValid {
		t.Fatalf("key of reactivated team resolves to %+v", id)
	}
	if _, hashes, err := s.PutTeam(ctx(t), keystore.Team{ID: "team_empty", Active: true}); err != nil || len(hashes) != 0 {
		t.Fatalf("new team: %v, %v", hashes, err)
	}
}
