package keystore

import (
	"encoding/json"
	"time"
)

// redisIdentity is an Identity as the Redis cache stores it: JSON, so an
// operator can read an entry with redis-cli. V is the format version; a
// value of another version is treated as a miss and overwritten by the
// next fill, which lets a newer binary change the format during a rolling
// upgrade without reading what it does not understand.
type redisIdentity struct {
	V      int    `json:"v"`
	KeyID  string `json:"key_id"`
	UserID string `json:"user_id"`
	TeamID string `json:"team_id"`
	Role   string `json:"role"`
	// The verdicts are pointers so a value missing one is refused rather
	// than read as false: a missing "revoked" must not admit a key.
	UserActive *bool      `json:"user_active"`
	TeamActive *bool      `json:"team_active"`
	SameTeam   *bool      `json:"same_team"`
	Revoked    *bool      `json:"revoked"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
}

const redisIdentityVersion = 1

func encodeRedisIdentity(id Identity) (string, error) {
	r := redisIdentity{
		V: redisIdentityVersion, KeyID: id.KeyID, UserID: id.UserID, TeamID: id.TeamID, Role: id.Role,
		UserActive: &id.UserActive, TeamActive: &id.TeamActive, SameTeam: &id.SameTeam, Revoked: &id.Revoked,
	}
	if !id.ExpiresAt.IsZero() {
		t := id.ExpiresAt.UTC()
		r.ExpiresAt = &t
	}
	b, err := json.Marshal(r) // fails only for a year outside 0-9999
	return string(b), err
}

// decodeRedisIdentity reads a cached identity. Anything else (a
// tombstone, another version, a damaged value, an entry without a key id)
// is not an identity: the caller treats it as a miss, so a bad value can
// cost a store read but never admit a key.
func decodeRedisIdentity(v string) (Identity, bool) {
	if len(v) == 0 || v[0] != '{' {
		return Identity{}, false
	}
	var r redisIdentity
	if err := json.Unmarshal([]byte(v), &r); err != nil || r.V != redisIdentityVersion ||
		r.KeyID == "" || r.UserID == "" || r.TeamID == "" ||
		r.UserActive == nil || r.TeamActive == nil || r.SameTeam == nil || r.Revoked == nil {
		return Identity{}, false
	}
	id := Identity{
		KeyID: r.KeyID, UserID: r.UserID, TeamID: r.TeamID, Role: r.Role,
		UserActive: *r.UserActive, TeamActive: *r.TeamActive, SameTeam: *r.SameTeam, Revoked: *r.Revoked,
	}
	if r.ExpiresAt != nil {
		id.ExpiresAt = r.ExpiresAt.UTC()
		if y := id.ExpiresAt.Year(); y < 1 || y > 9999 {
			return Identity{}, false
		}
	}
	return id, true
}
