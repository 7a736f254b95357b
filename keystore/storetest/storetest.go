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
		{"CreateKey_DeactivatedUserRefused", testCreateDeactivatedUserRefused},
		{"CreateKey_InactiveTeamRefused", testCreateInactiveTeam},
		{"CreateKey_DuplicateIDOrHashConflicts", testCreateConflict},
		{"CreateKey_InvalidInputRefused", testCreateInvalid},
		{"CreateKey_TeamLimit", testCreateLimit},
		{"CreateKey_RevokedAndExpiredDoNotCount", testCreateLimitIgnoresInactiveKeys},
		{"CreateKey_ConcurrentCreatesRespectLimit", testCreateConcurrent},
		{"CreateKey_MovingUserRevokesOldKeys", testCreateMovesUser},
		{"CreateKey_RacingAMoveLeavesNoKeyBehind", testMoveRacesCreate},
		{"GetKey_UnknownIsNotFound", testGetUnknown},
		{"ListKeys_FiltersAndOrder", testList},
		{"UpdateKey_RenameAndExpiry", testUpdate},
		{"UpdateKey_UnknownIsNotFound", testUpdateUnknown},
		{"RevokeKey_IdempotentKeepsFirstTime", testRevoke},
		{"RevokeKey_UnknownIsNotFound", testRevokeUnknown},
		{"PutUser_RoleChangeIsLive", testPutUserRole},
		{"PutUser_DeactivateAndMoveRevokes", testPutUserDeactivateMove},
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
