// Package storetest is the contract every keystore.Store must pass. A store
// package runs it from its own tests:
//
//	func TestSQLite_Contract(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) keystore.Store { return openTemp(t) })
//	}
package storetest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/wevion/keyproxy/keystore"
)

// Max is the team bound the suite creates keys with (the product's 10).
const Max = 10

// Run runs the contract. open must return a fresh, empty store for each
// call and close it when its test ends (t.Cleanup). Subtests run in
// parallel, each on its own store. Times are compared at microsecond
// precision, PostgreSQL's.
func Run(t *testing.T, open func(t *testing.T) keystore.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s keystore.Store)
	}{
		{"CreateKey_ReturnsWhatGetKeyReads", testCreateReturnsStored},
		{"CreateKey_NewUserAndTeamAreActive", testCreateNewOwnerActive},
		{"CreateKey_ExistingUserKeepsActiveFlag", testCreateKeepsUserActive},
		{"CreateKey_InactiveTeamRefused", testCreateInactiveTeam},
		{"CreateKey_DuplicateIDOrHashConflicts", testCreateConflict},
		{"CreateKey_InvalidInputRefused", testCreateInvalid},
		{"CreateKey_TeamLimit", testCreateLimit},
		{"CreateKey_RevokedAndExpiredDoNotCount", testCreateLimitIgnoresInactiveKeys},
		{"CreateKey_ConcurrentCreatesRespectLimit", testCreateConcurrent},
		{"CreateKey_MovingUserInvalidatesOldKeys", testCreateMovesUser},
		{"GetKey_UnknownIsNotFound", testGetUnknown},
		{"ListKeys_FiltersAndOrder", testList},
		{"UpdateKey_RenameAndExpiry", testUpdate},
		{"UpdateKey_UnknownIsNotFound", testUpdateUnknown},
		{"RevokeKey_IdempotentKeepsFirstTime", testRevoke},
		{"RevokeKey_UnknownIsNotFound", testRevokeUnknown},
		{"PutUser_RoleChangeIsLive", testPutUserRole},
		{"PutUser_DeactivateAndMove", testPutUserDeactivateMove},
		{"PutUser_NewUserCreatesTeam", testPutUserNewTeam},
		{"PutTeam_InactiveTeamKeys", testPutTeam},
		{"Resolve_UnknownIsNotFound", testResolveUnknown},
		{"Resolve_Expiry", testResolveExpiry},
		{"TouchKeys_LaterTimeWins", testTouch},
		{"CountActiveKeys", testCount},
		{"Ping", testPing},
		{"Close_LaterCallsUnavailable", testClose},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, open(t))
		})
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// now is truncated to the precision every store keeps.
func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

func newKey(t *testing.T, team, user, role string) keystore.NewKey {
	t.Helper()
	id, err := keystore.NewID()
	if err != nil {
		t.Fatal(err)
	}
	var h keystore.Hash
	if _, err := rand.Read(h[:]); err != nil {
		t.Fatal(err)
	}
	return keystore.NewKey{
		ID: id, Hash: h, Start: "wev_Ab12", Name: "key " + id[len(id)-4:],
		UserID: user, TeamID: team, Role: role, CreatedAt: now(), MaxActivePerTeam: Max,
	}
}

func create(t *testing.T, s keystore.Store, nk keystore.NewKey) keystore.Key {
	t.Helper()
	k, err := s.CreateKey(ctx(t), nk)
	if err != nil {
		t.Fatalf("CreateKey(%s): %v", nk.ID, err)
	}
	return k
}

func resolve(t *testing.T, s keystore.Store, h keystore.Hash) keystore.Identity {
	t.Helper()
	id, err := s.Resolve(ctx(t), h)
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	return id
}

func getKey(t *testing.T, s keystore.Store, id string) keystore.Key {
	t.Helper()
	k, err := s.GetKey(ctx(t), id)
	if err != nil {
		t.Fatalf("GetKey(%s): %v", id, err)
	}
	return k
}

func timePtr(t time.Time) *time.Time { return &t }

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Equal(*b) && a.Location() == time.UTC && b.Location() == time.UTC
}

// checkKey compares every stored field of a key.
func checkKey(t *testing.T, got, want keystore.Key) {
	t.Helper()
	if got.ID != want.ID || got.Hash != want.Hash || got.Start != want.Start || got.Name != want.Name ||
		got.UserID != want.UserID || got.TeamID != want.TeamID || got.Role != want.Role ||
		!sameTime(&got.CreatedAt, &want.CreatedAt) || !sameTime(got.ExpiresAt, want.ExpiresAt) ||
		!sameTime(got.RevokedAt, want.RevokedAt) || !sameTime(got.LastUsedAt, want.LastUsedAt) {
		t.Fatalf("key mismatch\n got %s\nwant %s", fmtKey(got), fmtKey(want))
	}
}

func fmtKey(k keystore.Key) string {
	f := func(p *time.Time) string {
		if p == nil {
			return "nil"
		}
		return p.Format(time.RFC3339Nano)
	}
	return fmt.Sprintf("{id=%s start=%s name=%q user=%s team=%s role=%s created=%s expires=%s revoked=%s used=%s hash=%s}",
		k.ID, k.Start, k.Name, k.UserID, k.TeamID, k.Role, f(&k.CreatedAt), f(k.ExpiresAt), f(k.RevokedAt), f(k.LastUsedAt), k.Hash)
}

func ids(keys []keystore.Key) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.ID
	}
	return out
}

func wantErr(t *testing.T, err, target error, what string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: error = %v, want %v", what, err, target)
	}
}

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
	if len(k.EvictHashes) != 0 {
		t.Fatalf("first key of a new user evicts %d hashes", len(k.EvictHashes))
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

func testCreateKeepsUserActive(t *testing.T, s keystore.Store) {
	if _, _, err := s.PutUser(ctx(t), keystore.User{ID: "user_a", TeamID: "team_a", Role: "member", Active: false}); err != nil {
		t.Fatal(err)
	}
	nk := newKey(t, "team_a", "user_a", "owner")
	create(t, s, nk)
	id := resolve(t, s, nk.Hash)
	if id.UserActive {
		t.Fatal("CreateKey reactivated a deactivated user")
	}
	if id.Role != "owner" {
		t.Fatalf("role = %q, want the create's role owner", id.Role)
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

	moved := create(t, s, newKey(t, "team_b", "user_a", "admin"))
	evict := moved.EvictHashes
	slices.SortFunc(evict, func(a, b keystore.Hash) int { return slices.Compare(a[:], b[:]) })
	want := []keystore.Hash{old1.Hash, old2.Hash}
	slices.SortFunc(want, func(a, b keystore.Hash) int { return slices.Compare(a[:], b[:]) })
	if !slices.Equal(evict, want) {
		t.Fatalf("EvictHashes = %v, want the two unrevoked old keys %v", evict, want)
	}
	for _, k := range []keystore.Key{old1, old2} {
		id := resolve(t, s, k.Hash)
		if id.SameTeam || id.Check(time.Now()) != keystore.StatusInvalid {
			t.Fatalf("old key after move: %+v, want SameTeam false and invalid", id)
		}
		if id.TeamID != "team_a" || id.Role != "admin" {
			t.Fatalf("old key after move: team %q role %q, want team_a and the current role", id.TeamID, id.Role)
		}
	}
	if id := resolve(t, s, moved.Hash); !id.SameTeam || id.Check(time.Now()) != keystore.StatusValid {
		t.Fatalf("new key after move: %+v, want valid", id)
	}
	if id := resolve(t, s, other.Hash); !id.SameTeam {
		t.Fatal("another user's key was affected by the move")
	}
	// Same team and role again: nothing changes, nothing to evict.
	again := create(t, s, newKey(t, "team_b", "user_a", "admin"))
	if len(again.EvictHashes) != 0 {
		t.Fatalf("unchanged owner evicts %d hashes", len(again.EvictHashes))
	}
	// A role change alone also makes the other keys stale.
	promoted := create(t, s, newKey(t, "team_b", "user_a", "super_admin"))
	if len(promoted.EvictHashes) != 4 {
		t.Fatalf("role change evicts %d hashes, want the user's 4 other unrevoked keys", len(promoted.EvictHashes))
	}
}

func testGetUnknown(t *testing.T, s keystore.Store) {
	_, err := s.GetKey(ctx(t), "key_00000000000000000000")
	wantErr(t, err, keystore.ErrNotFound, "GetKey unknown")
}

func testList(t *testing.T, s keystore.Store) {
	base := now().Add(-time.Hour)
	var made []keystore.Key
	for i, owner := range []string{"user_a", "user_b", "user_a", "user_b"} {
		nk := newKey(t, "team_a", owner, "owner")
		nk.CreatedAt = base.Add(time.Duration(i) * time.Minute)
		made = append(made, create(t, s, nk))
	}
	create(t, s, newKey(t, "team_other", "user_c", "owner"))
	if _, err := s.RevokeKey(ctx(t), made[1].ID, now()); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		f    keystore.KeyFilter
		want []string
	}{
		{"team, active only, newest first", keystore.KeyFilter{TeamID: "team_a"}, []string{made[3].ID, made[2].ID, made[0].ID}},
		{"with revoked", keystore.KeyFilter{TeamID: "team_a", IncludeRevoked: true}, []string{made[3].ID, made[2].ID, made[1].ID, made[0].ID}},
		{"one user", keystore.KeyFilter{TeamID: "team_a", UserID: "user_b"}, []string{made[3].ID}},
		{"one user with revoked", keystore.KeyFilter{TeamID: "team_a", UserID: "user_b", IncludeRevoked: true}, []string{made[3].ID, made[1].ID}},
		{"user of another team", keystore.KeyFilter{TeamID: "team_a", UserID: "user_c"}, []string{}},
		{"unknown team", keystore.KeyFilter{TeamID: "team_none"}, []string{}},
	}
	for _, tt := range tests {
		got, err := s.ListKeys(ctx(t), tt.f)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if !slices.Equal(ids(got), tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, ids(got), tt.want)
		}
	}
	all, _ := s.ListKeys(ctx(t), keystore.KeyFilter{TeamID: "team_a", IncludeRevoked: true})
	if all[2].RevokedAt == nil || all[0].RevokedAt != nil {
		t.Fatalf("listed RevokedAt wrong: %s / %s", fmtKey(all[2]), fmtKey(all[0]))
	}
	if _, err := s.ListKeys(ctx(t), keystore.KeyFilter{}); err == nil {
		t.Fatal("ListKeys without a team id succeeded")
	}
}

func testUpdate(t *testing.T, s keystore.Store) {
	k := create(t, s, newKey(t, "team_a", "user_a", "owner"))
	name := "renamed"
	end := now().Add(24 * time.Hour)
	steps := []struct {
		name string
		u    keystore.KeyUpdate
		want func(*keystore.Key)
	}{
		{"rename", keystore.KeyUpdate{Name: &name}, func(k *keystore.Key) { k.Name = name }},
		{"set expiry", keystore.KeyUpdate{ExpiresAt: &end}, func(k *keystore.Key) { k.ExpiresAt = &end }},
		{"nothing", keystore.KeyUpdate{}, func(*keystore.Key) {}},
		{"clear expiry", keystore.KeyUpdate{ClearExpiry: true}, func(k *keystore.Key) { k.ExpiresAt = nil }},
	}
	want := k
	for _, st := range steps {
		got, err := s.UpdateKey(ctx(t), k.ID, st.u)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		st.want(&want)
		checkKey(t, got, want)
		checkKey(t, getKey(t, s, k.ID), want)
	}
}

func testUpdateUnknown(t *testing.T, s keystore.Store) {
	name := "x"
	for _, u := range []keystore.KeyUpdate{{Name: &name}, {ClearExpiry: true}, {}} {
		_, err := s.UpdateKey(ctx(t), "key_00000000000000000000", u)
		wantErr(t, err, keystore.ErrNotFound, "UpdateKey unknown")
	}
}

func testRevoke(t *testing.T, s keystore.Store) {
	k := create(t, s, newKey(t, "team_a", "user_a", "owner"))
	first := now()
	got, err := s.RevokeKey(ctx(t), k.ID, first)
	if err != nil {
		t.Fatal(err)
	}
	if !sameTime(got.RevokedAt, &first) {
		t.Fatalf("RevokedAt = %v, want %v", got.RevokedAt, first)
	}
	again, err := s.RevokeKey(ctx(t), k.ID, first.Add(time.Hour))
	if err != nil {
		t.Fatalf("second revoke: %v", err)
	}
	if !sameTime(again.RevokedAt, &first) {
		t.Fatalf("second revoke moved RevokedAt to %v", again.RevokedAt)
	}
	id := resolve(t, s, k.Hash)
	if !id.Revoked || id.Check(time.Now()) != keystore.StatusInvalid {
		t.Fatalf("revoked key resolves to %+v", id)
	}
}

func testRevokeUnknown(t *testing.T, s keystore.Store) {
	_, err := s.RevokeKey(ctx(t), "key_00000000000000000000", now())
	wantErr(t, err, keystore.ErrNotFound, "RevokeKey unknown")
}

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

func testResolveUnknown(t *testing.T, s keystore.Store) {
	create(t, s, newKey(t, "team_a", "user_a", "owner"))
	_, err := s.Resolve(ctx(t), keystore.HashKey("wev_unknown"))
	wantErr(t, err, keystore.ErrNotFound, "Resolve unknown")
}

func testResolveExpiry(t *testing.T, s keystore.Store) {
	nk := newKey(t, "team_a", "user_a", "owner")
	end := now().Add(time.Hour)
	nk.ExpiresAt = &end
	create(t, s, nk)
	id := resolve(t, s, nk.Hash)
	if !id.ExpiresAt.Equal(end) {
		t.Fatalf("ExpiresAt = %v, want %v", id.ExpiresAt, end)
	}
	if id.Check(end.Add(-time.Second)) != keystore.StatusValid || id.Check(end) != keystore.StatusInvalid {
		t.Fatal("expiry not decided at ExpiresAt")
	}
	if _, err := s.UpdateKey(ctx(t), nk.ID, keystore.KeyUpdate{ClearExpiry: true}); err != nil {
		t.Fatal(err)
	}
	if id := resolve(t, s, nk.Hash); !id.ExpiresAt.IsZero() {
		t.Fatalf("cleared expiry resolves to %v", id.ExpiresAt)
	}
}

func testTouch(t *testing.T, s keystore.Store) {
	a := create(t, s, newKey(t, "team_a", "user_a", "owner"))
	b := create(t, s, newKey(t, "team_a", "user_a", "owner"))
	t1 := now()
	t2 := t1.Add(time.Minute)
	steps := []struct {
		used         map[string]time.Time
		wantA, wantB *time.Time
	}{
		{map[string]time.Time{}, nil, nil},
		{map[string]time.Time{a.ID: t2, "key_00000000000000000000": t2}, &t2, nil},
		{map[string]time.Time{a.ID: t1, b.ID: t1}, &t2, &t1},
		{map[string]time.Time{b.ID: t2}, &t2, &t2},
	}
	for i, st := range steps {
		if err := s.TouchKeys(ctx(t), st.used); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got := getKey(t, s, a.ID).LastUsedAt; !sameTime(got, st.wantA) {
			t.Fatalf("step %d: a.LastUsedAt = %v, want %v", i, got, st.wantA)
		}
		if got := getKey(t, s, b.ID).LastUsedAt; !sameTime(got, st.wantB) {
			t.Fatalf("step %d: b.LastUsedAt = %v, want %v", i, got, st.wantB)
		}
	}
}

func testCount(t *testing.T, s keystore.Store) {
	count := func() int64 {
		n, err := s.CountActiveKeys(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(); n != 0 {
		t.Fatalf("empty store counts %d", n)
	}
	a := create(t, s, newKey(t, "team_a", "user_a", "owner"))
	b := create(t, s, newKey(t, "team_a", "user_a", "owner"))
	create(t, s, newKey(t, "team_b", "user_b", "owner"))
	if n := count(); n != 3 {
		t.Fatalf("counts %d, want 3", n)
	}
	if _, err := s.RevokeKey(ctx(t), a.ID, now()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateKey(ctx(t), b.ID, keystore.KeyUpdate{ExpiresAt: timePtr(now().Add(-time.Minute))}); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 1 {
		t.Fatalf("counts %d after a revoke and an expiry, want 1", n)
	}
}

func testPing(t *testing.T, s keystore.Store) {
	if err := s.Ping(ctx(t)); err != nil {
		t.Fatal(err)
	}
}

func testClose(t *testing.T, s keystore.Store) {
	k := create(t, s, newKey(t, "team_a", "user_a", "owner"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := s.Resolve(ctx(t), k.Hash)
	wantErr(t, err, keystore.ErrUnavailable, "Resolve after Close")
	_, err = s.CreateKey(ctx(t), newKey(t, "team_a", "user_a", "owner"))
	wantErr(t, err, keystore.ErrUnavailable, "CreateKey after Close")
	wantErr(t, s.Ping(ctx(t)), keystore.ErrUnavailable, "Ping after Close")
}
