package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/wevion/keyproxy/keystore"
)

func testCreateReturnsStored(t *testing.T, s keystore.Store) {
	nk := newKey(t, "team_a", "user_a", "owner")
	nk.ExpiresAt = timePtr(now().Add(48 * time.Hour))
	k := create(t, s, nk)
	want := keystore.Key{
		ID: nk.ID, Hash: nk.Hash, Start: nk.Start, Name: nk.Name, UserID: nk.UserID, TeamID: nk.TeamID,
		Role: "owner", CreatedAt: nk.CreatedAt, ExpiresAt: nk.ExpiresAt,
	}
	checkKey(t, k, want)
	checkKey(t, getKey(t, s, nk.ID), want)
	if len(k.EvictHashes) != 0 || k.OwnerChanged {
		t.Fatalf("first key of a new user evicts %d hashes, OwnerChanged %v", len(k.EvictHashes), k.OwnerChanged)
	}
}

func testCreateNewOwnerActive(t *testing.T, s keystore.Store) {
	nk := newKey(t, "team_a", "user_a", "admin")
	create(t, s, nk)
	got := resolve(t, s, nk.Hash)
	want := keystore.Identity{KeyID: nk.ID, UserID: "user_a", TeamID: "team_a", Role: "admin",
		UserActive: true, TeamActive: true, SameTeam: true}
	if got != want {
		t.Fatalf("Resolve = %+v, want %+v", got, want)
	}
	if got.Check(time.Now()) != keystore.StatusValid {
		t.Fatalf("new key is not valid: %v", got.Check(time.Now()))
	}
}

// A key for a deactivated user could never be used, and would hold one
// of the team's places: refused, and the user left as it was (not
// reactivated, not moved, role kept).
func testCreateDeactivatedUserRefused(t *testing.T, s keystore.Store) {
	if _, err := s.PutUser(ctx(t), keystore.User{ID: "user_a", TeamID: "team_a", Role: "member", Active: false}); err != nil {
		t.Fatal(err)
	}
	for _, team := range []string{"team_a", "team_b"} {
		nk := newKey(t, team, "user_a", "owner")
		_, err := s.CreateKey(ctx(t), nk)
		wantErr(t, err, keystore.ErrUserInactive, "CreateKey for a deactivated user in "+team)
		_, err = s.GetKey(ctx(t), nk.ID)
		wantErr(t, err, keystore.ErrNotFound, "GetKey of the refused key")
	}
	// Reactivated, the same create succeeds, under the create's role.
	if _, err := s.PutUser(ctx(t), keystore.User{ID: "user_a", TeamID: "team_a", Role: "member", Active: true}); err != nil {
		t.Fatal(err)
	}
	nk := newKey(t, "team_a", "user_a", "owner")
	create(t, s, nk)
	if id := resolve(t, s, nk.Hash); !id.UserActive || id.Role != "owner" || id.TeamID != "team_a" {
		t.Fatalf("after reactivation: %+v, want active owner in team_a", id)
	}
}

func testCreateInactiveTeam(t *testing.T, s keystore.Store) {
	if _, _, err := s.PutTeam(ctx(t), keystore.Team{ID: "team_a", Active: false}); err != nil {
		t.Fatal(err)
	}
	nk := newKey(t, "team_a", "user_a", "owner")
	_, err := s.CreateKey(ctx(t), nk)
	wantErr(t, err, keystore.ErrTeamInactive, "CreateKey in inactive team")
	_, err = s.GetKey(ctx(t), nk.ID)
	wantErr(t, err, keystore.ErrNotFound, "GetKey of refused key")
}

func testCreateConflict(t *testing.T, s keystore.Store) {
	first := newKey(t, "team_a", "user_a", "owner")
	create(t, s, first)

	sameID := newKey(t, "team_a", "user_a", "owner")
	sameID.ID = first.ID
	_, err := s.CreateKey(ctx(t), sameID)
	wantErr(t, err, keystore.ErrConflict, "duplicate id")

	sameHash := newKey(t, "team_a", "user_a", "owner")
	sameHash.Hash = first.Hash
	_, err = s.CreateKey(ctx(t), sameHash)
	wantErr(t, err, keystore.ErrConflict, "duplicate hash")

	keys, err := s.ListKeys(ctx(t), keystore.KeyFilter{TeamID: "team_a"})
	if err != nil || len(keys) != 1 {
		t.Fatalf("after conflicts: %d keys, %v; want 1", len(keys), err)
	}
}

func testCreateInvalid(t *testing.T, s keystore.Store) {
	tests := []struct {
		name   string
		mutate func(*keystore.NewKey)
	}{
		{"zero limit", func(k *keystore.NewKey) { k.MaxActivePerTeam = 0 }},
		{"no id", func(k *keystore.NewKey) { k.ID = "" }},
		{"no user", func(k *keystore.NewKey) { k.UserID = "" }},
		{"no team", func(k *keystore.NewKey) { k.TeamID = "" }},
	}
	for _, tt := range tests {
		nk := newKey(t, "team_a", "user_a", "owner")
		tt.mutate(&nk)
		if _, err := s.CreateKey(ctx(t), nk); err == nil {
			t.Errorf("%s: CreateKey succeeded", tt.name)
		}
	}
}

func testCreateLimit(t *testing.T, s keystore.Store) {
	for i := range Max {
		create(t, s, newKey(t, "team_a", fmt.Sprintf("user_%d", i%3), "owner"))
	}
	_, err := s.CreateKey(ctx(t), newKey(t, "team_a", "user_0", "owner"))
	wantErr(t, err, keystore.ErrKeyLimitReached, "key 11")
	// The bound is per team.
	create(t, s, newKey(t, "team_b", "user_b", "owner"))
	// A lower bound than the current count also refuses.
	low := newKey(t, "team_a", "user_0", "owner")
	low.MaxActivePerTeam = 3
	_, err = s.CreateKey(ctx(t), low)
	wantErr(t, err, keystore.ErrKeyLimitReached, "over a lower bound")
}

func testCreateLimitIgnoresInactiveKeys(t *testing.T, s keystore.Store) {
	var made []keystore.Key
	for range Max {
		made = append(made, create(t, s, newKey(t, "team_a", "user_a", "owner")))
	}
	if _, err := s.RevokeKey(ctx(t), made[0].ID, now()); err != nil {
		t.Fatal(err)
	}
	create(t, s, newKey(t, "team_a", "user_a", "owner")) // takes the revoked key's place
	if _, err := s.UpdateKey(ctx(t), made[1].ID, keystore.KeyUpdate{ExpiresAt: timePtr(now().Add(-time.Second))}); err != nil {
		t.Fatal(err)
	}
	create(t, s, newKey(t, "team_a", "user_a", "owner")) // takes the expired key's place
	_, err := s.CreateKey(ctx(t), newKey(t, "team_a", "user_a", "owner"))
	wantErr(t, err, keystore.ErrKeyLimitReached, "full again")
	// A key that expires later still counts.
	if _, err := s.UpdateKey(ctx(t), made[2].ID, keystore.KeyUpdate{ExpiresAt: timePtr(now().Add(time.Hour))}); err != nil {
		t.Fatal(err)
	}
	_, err = s.CreateKey(ctx(t), newKey(t, "team_a", "user_a", "owner"))
	wantErr(t, err, keystore.ErrKeyLimitReached, "future expiry still counts")
}

func testCreateConcurrent(t *testing.T, s keystore.Store) {
	const n = 50
	var (
		wg                    sync.WaitGroup
		mu                    sync.Mutex
		created, limited, bad int
		errs                  []error
	)
	start := make(chan struct{})
	for i := range n {
		nk := newKey(t, "team_a", fmt.Sprintf("user_%d", i%5), "owner")
		wg.Go(func() {
			<-start
			_, err := s.CreateKey(ctx(t), nk)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				created++
			case errors.Is(err, keystore.ErrKeyLimitReached):
				limited++
			default:
				bad++
				errs = append(errs, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if created != Max || limited != n-Max || bad != 0 {
		t.Fatalf("created %d, limited %d, failed %d (%v); want %d, %d, 0", created, limited, bad, errs, Max, n-Max)
	}
	keys, err := s.ListKeys(ctx(t), keystore.KeyFilter{TeamID: "team_a"})
	if err != nil || len(keys) != Max {
		t.Fatalf("stored %d keys (%v), want %d", len(keys), err, Max)
	}
}

func testCreateMovesUser(t *testing.T, s keystore.Store) {
	old1 := create(t, s, newKey(t, "team_a", "user_a", "owner"))
	old2 := create(t, s, newKey(t, "team_a", "user_a", "owner"))
	revoked := create(t, s, newKey(t, "team_a", "user_a", "owner"))
	if _, err := s.RevokeKey(ctx(t), revoked.ID, now()); err != nil {
		t.Fatal(err)
	}
	other := create(t, s, newKey(t, "team_a", "user_other", "admin"))

	before := time.Now()
	moved := create(t, s, newKey(t, "team_b", "user_a", "admin"))
	if !moved.OwnerChanged {
		t.Fatal("a create that moved its owner did not report OwnerChanged")
	}
	evict := moved.EvictHashes
	slices.SortFunc(evict, func(a, b keystore.Hash) int { return slices.Compare(a[:], b[:]) })
	want := []keystore.Hash{old1.Hash, old2.Hash}
	slices.SortFunc(want, func(a, b keystore.Hash) int { return slices.Compare(a[:], b[:]) })
	if !slices.Equal(evict, want) {
		t.Fatalf("EvictHashes = %v, want the two unrevoked old keys %v", evict, want)
	}
	// The move revoked the old team's keys, newest first; not the one
	// revoked before, not the new key.
	checkMoveRevoked(t, s, moved.RevokedByMove, before, old2, old1)
	if id := resolve(t, s, moved.Hash); !id.SameTeam || id.Check(time.Now()) != keystore.StatusValid {
		t.Fatalf("new key after move: %+v, want valid", id)
	}
	if id := resolve(t, s, other.Hash); !id.SameTeam || id.Revoked {
		t.Fatal("another user's key was affected by the move")
	}
	// They no longer hold the old team's places.
	if n := activeKeys(t, s, "team_a"); n != 1 {
		t.Fatalf("team_a lists %d active keys after the move, want the other user's 1", n)
	}
	// Same team and role again: nothing changes, nothing to evict.
	again := create(t, s, newKey(t, "team_b", "user_a", "admin"))
	if len(again.EvictHashes) != 0 || again.OwnerChanged || len(again.RevokedByMove) != 0 {
		t.Fatalf("unchanged owner evicts %d hashes, revokes %d, OwnerChanged %v", len(again.EvictHashes), len(again.RevokedByMove), again.OwnerChanged)
	}
	// A role change alone makes the other keys stale, and revokes none.
	promoted := create(t, s, newKey(t, "team_b", "user_a", "super_admin"))
	if len(promoted.EvictHashes) != 2 || !promoted.OwnerChanged || len(promoted.RevokedByMove) != 0 {
		t.Fatalf("role change evicts %d hashes (OwnerChanged %v) and revokes %d, want the user's 2 other unrevoked keys and none",
			len(promoted.EvictHashes), promoted.OwnerChanged, len(promoted.RevokedByMove))
	}
	// A create that moves the owner back does not bring the old keys back.
	back := create(t, s, newKey(t, "team_a", "user_a", "admin"))
	checkMoveRevoked(t, s, back.RevokedByMove, before, promoted, again, moved)
	for _, k := range []keystore.Key{old1, old2} {
		if id := resolve(t, s, k.Hash); !id.Revoked || id.Check(time.Now()) != keystore.StatusInvalid {
			t.Fatalf("old key after the owner came back: %+v, want revoked", id)
		}
	}
}

// checkMoveRevoked requires that a move revoked exactly want (newest
// first), at or after before, and that the store reads them revoked.
func checkMoveRevoked(t *testing.T, s keystore.Store, got []keystore.Key, before time.Time, want ...keystore.Key) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("the move revoked %d keys, want %d", len(got), len(want))
	}
	for i, k := range got {
		if k.ID != want[i].ID || k.Hash != want[i].Hash || k.TeamID != want[i].TeamID || k.UserID != want[i].UserID {
			t.Fatalf("revoked[%d] = %s (team %s), want %s (team %s)", i, k.ID, k.TeamID, want[i].ID, want[i].TeamID)
		}
		if k.RevokedAt == nil || k.RevokedAt.Before(before.Truncate(time.Microsecond)) {
			t.Fatalf("revoked[%d].RevokedAt = %v, want at or after %v", i, k.RevokedAt, before)
		}
		stored := getKey(t, s, k.ID)
		if stored.RevokedAt == nil || !stored.RevokedAt.Equal(*k.RevokedAt) {
			t.Fatalf("stored %s revoked at %v, returned %v", k.ID, stored.RevokedAt, k.RevokedAt)
		}
		if id := resolve(t, s, k.Hash); !id.Revoked || id.Check(time.Now()) != keystore.StatusInvalid {
			t.Fatalf("key %s revoked by a move resolves to %+v", k.ID, id)
		}
	}
}

// activeKeys counts the team's unrevoked keys as ListKeys shows them.
func activeKeys(t *testing.T, s keystore.Store, team string) int {
	t.Helper()
	keys, err := s.ListKeys(ctx(t), keystore.KeyFilter{TeamID: team})
	if err != nil {
		t.Fatal(err)
	}
	return len(keys)
}

// A move and a create for the same owner, racing: whichever commits last,
// no key of the owner is left unrevoked outside the owner's team.
func testMoveRacesCreate(t *testing.T, s keystore.Store) {
	teams := [2]string{"team_a", "team_b"}
	var keys []keystore.Key
	keys = append(keys, create(t, s, newKey(t, teams[0], "user_a", "owner")))
	for i := range 20 {
		to, other := teams[(i+1)%2], teams[i%2]
		nk := newKey(t, other, "user_a", "owner")
		var (
			wg             sync.WaitGroup
			putErr, keyErr error
		)
		start := make(chan struct{})
		wg.Go(func() {
			<-start
			_, putErr = s.PutUser(ctx(t), keystore.User{ID: "user_a", TeamID: to, Role: "owner", Active: true})
		})
		wg.Go(func() {
			<-start
			_, keyErr = s.CreateKey(ctx(t), nk)
		})
		close(start)
		wg.Wait()
		if putErr != nil || keyErr != nil {
			t.Fatalf("round %d: PutUser: %v; CreateKey: %v", i, putErr, keyErr)
		}
		keys = append(keys, getKey(t, s, nk.ID))
		for _, k := range keys {
			if id := resolve(t, s, k.Hash); !id.Revoked && !id.SameTeam {
				t.Fatalf("round %d: key %s of team %s is unrevoked while its owner is in another team", i, k.ID, id.TeamID)
			}
		}
	}
}
