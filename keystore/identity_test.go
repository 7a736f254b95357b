package keystore_test

import (
	"testing"
	"time"

	"github.com/wevion/keyproxy/keystore"
)

// TestIdentity_CheckAndRefusal: Refusal names a reason exactly when Check
// refuses the key as invalid, with Check's precedence.
func TestIdentity_CheckAndRefusal(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	ok := keystore.Identity{KeyID: "key_a", UserID: "usr_a", TeamID: "team_a", Role: "admin",
		UserActive: true, TeamActive: true, SameTeam: true}
	with := func(f func(*keystore.Identity)) keystore.Identity {
		id := ok
		f(&id)
		return id
	}
	tests := []struct {
		name    string
		id      keystore.Identity
		status  keystore.Status
		refusal string
	}{
		{"valid", ok, keystore.StatusValid, ""},
		{"expiring later", with(func(id *keystore.Identity) { id.ExpiresAt = now.Add(time.Second) }), keystore.StatusValid, ""},
		{"revoked", with(func(id *keystore.Identity) { id.Revoked = true }), keystore.StatusInvalid, "revoked"},
		{"owner deactivated", with(func(id *keystore.Identity) { id.UserActive = false }), keystore.StatusInvalid, "owner_inactive"},
		{"owner moved", with(func(id *keystore.Identity) { id.SameTeam = false }), keystore.StatusInvalid, "owner_moved"},
		{"expired at this instant", with(func(id *keystore.Identity) { id.ExpiresAt = now }), keystore.StatusInvalid, "expired"},
		{"team inactive", with(func(id *keystore.Identity) { id.TeamActive = false }), keystore.StatusTeamInactive, ""},
		{"revoked beats everything", with(func(id *keystore.Identity) {
			id.Revoked, id.UserActive, id.SameTeam, id.TeamActive, id.ExpiresAt = true, false, false, false, now.Add(-time.Hour)
		}), keystore.StatusInvalid, "revoked"},
		{"expired key of an inactive team is invalid", with(func(id *keystore.Identity) {
			id.TeamActive, id.ExpiresAt = false, now.Add(-time.Hour)
		}), keystore.StatusInvalid, "expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.id.Check(now); got != tt.status {
				t.Errorf("Check = %v, want %v", got, tt.status)
			}
			if got := tt.id.Refusal(now); got != tt.refusal {
				t.Errorf("Refusal = %q, want %q", got, tt.refusal)
			}
		})
	}
}
