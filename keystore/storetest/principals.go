package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/wevion/keyproxy/keystore"
)

func testPutUserRole(t *testing.T, s keystore.Store) {
	k := create(t, s, newKey(t, "team_a", "user_a", "owner"))
	u, hashes, err := s.PutUser(ctx(t), keystore.User{ID: "user_a", TeamID: "team_a", Role: "member", Active: true})
	if err != nil {
		t.Fatal(err)
	}
	if u.ID != "user_a" || u.Role != "member" || !u.Active || u.UpdatedAt.IsZero() {
		t.Fatalf("PutUser returned %+v", u)
	}
	if !slices.Equal(hashes, []keystore.Hash{k.Hash}) {
		t.Fatalf("PutUser hashes = %v, want the user's key", hashes)
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
	_, hashes, err := s.PutUser(ctx(t), keystore.User{ID: "user_a", TeamID: "team_a", Role: "owner", Active: false})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(hashes, []keystore.Hash{k.Hash}) {
		t.Fatalf("hashes = %v, want only the unrevoked key", hashes)
	}
	if id := resolve(t, s, k.Hash); id.UserActive || id.Check(time.Now()) != keystore.StatusInvalid {
		t.Fatalf("deactivated owner's key resolves to %+v", id)
	}
	if _, _, err := s.PutUser(ctx(t), keystore.User{ID: "user_a", TeamID: "team_b", Role: "owner", Active: true}); err != nil {
		t.Fatal(err)
	}
	if id := resolve(t, s, k.Hash); id.SameTeam || !id.UserActive || id.Check(time.Now()) != keystore.StatusInvalid {
		t.Fatalf("moved owner's old key resolves to %+v", id)
	}
	if _, _, err := s.PutUser(ctx(t), keystore.User{ID: "user_a", TeamID: "team_a", Role: "owner", Active: true}); err != nil {
		t.Fatal(err)
	}
	if id := resolve(t, s, k.Hash); id.Check(time.Now()) != keystore.StatusValid {
		t.Fatalf("key of owner moved back resolves to %+v", id)
	}
}

func testPutUserNewTeam(t *testing.T, s keystore.Store) {
	u, hashes, err := s.PutUser(ctx(t), keystore.User{ID: "user_new", TeamID: "team_new", Role: "admin", Active: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(hashes) != 0 || u.TeamID != "team_new" {
		t.Fatalf("PutUser new = %+v, %v", u, hashes)
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
