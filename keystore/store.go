package keystore

import (
	"context"
	"errors"
	"time"
)

// Errors a Store returns; callers match them with errors.Is.
var (
	ErrNotFound        = errors.New("keystore: not found")
	ErrKeyLimitReached = errors.New("keystore: active key limit reached for team")
	ErrTeamInactive    = errors.New("keystore: team subscription inactive")
	// ErrUserInactive refuses a key for a deactivated user: it could never
	// be used, and it would hold one of the team's active-key places.
	ErrUserInactive = errors.New("keystore: user deactivated")
	// ErrUnavailable marks failures another try could cure (locked, busy,
	// closed or unreachable store); callers fail closed on it.
	ErrUnavailable = errors.New("keystore: store unavailable")
	ErrConflict    = errors.New("keystore: conflict")
)

// User is a Wevion user as keyproxy knows it. A user belongs to one team.
type User struct {
	ID        string    `json:"id"`
	TeamID    string    `json:"team_id"`
	Role      string    `json:"role"`
	Active    bool      `json:"active"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Team carries the subscription state.
type Team struct {
	ID        string    `json:"id"`
	Active    bool      `json:"active"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Key is a stored key: never the key itself, only its hash and display start.
// Role is the owner's current role, joined from the user at read time.
type Key struct {
	ID         string
	Hash       Hash
	Start      string
	Name       string
	UserID     string
	TeamID     string
	Role       string
	CreatedAt  time.Time
	ExpiresAt  *time.Time
	RevokedAt  *time.Time
	LastUsedAt *time.Time
	// EvictHashes is set only by CreateKey: the hashes of the owner's other
	// unrevoked keys when this create moved the owner to another team or
	// changed their role. Their cached identities are stale; evict them as
	// PutUser's hashes.
	EvictHashes []Hash
	// OwnerChanged is set only by CreateKey: this create changed an
	// existing owner's team or role (the admin API records user.updated
	// for it, as PutUser's change would be).
	OwnerChanged bool
	// RevokedByMove is set only by CreateKey: the owner's keys this create
	// revoked by moving the owner to another team (UserChange.Revoked).
	RevokedByMove []Key
}

// UserChange is what PutUser did.
type UserChange struct {
	User User
	// Evict holds the hashes of every key the user had unrevoked before the
	// change: their cached identities are stale (revoked keys are refused
	// whatever a cache says).
	Evict []Hash
	// Revoked holds the keys the change revoked. A key never follows its
	// owner: a move to another team revokes every unrevoked key the user
	// has, so that the old team's keys stay dead if the user comes back and
	// no longer hold its active-key places.
	Revoked []Key
}

// NewKey is what CreateKey stores. The caller generates ID and Hash.
type NewKey struct {
	ID        string
	Hash      Hash
	Start     string
	Name      string
	UserID    string
	TeamID    string
	Role      string // the creating user's current role; upserted onto the user
	CreatedAt time.Time
	ExpiresAt *time.Time
	// MaxActivePerTeam bounds the team's active (unrevoked, unexpired) keys.
	// It must be positive: a forgotten bound is an error, not "unlimited".
	MaxActivePerTeam int
}

// KeyUpdate changes a key's name and/or end. A nil field is left alone;
// ClearExpiry removes expires_at.
type KeyUpdate struct {
	Name        *string
	ExpiresAt   *time.Time
	ClearExpiry bool
}

// KeyFilter selects keys of one team. TeamID is required; UserID narrows
// to one owner; revoked keys are left out unless IncludeRevoked.
type KeyFilter struct {
	TeamID         string
	UserID         string
	IncludeRevoked bool
}

// Identity is what a key resolves to at request time: the key plus its
// owner's current role and the states that decide admission.
type Identity struct {
	KeyID      string
	UserID     string
	TeamID     string
	Role       string
	UserActive bool
	TeamActive bool
	// SameTeam is false when the owner moved to another team after the key
	// was made: such a key never follows its owner. A move revokes the
	// owner's keys (PutUser), so only a key an earlier release left behind
	// a move is refused for this alone.
	SameTeam  bool
	Revoked   bool
	ExpiresAt time.Time // zero: never
}

// Status is the admission verdict of an identity at instant now.
type Status int

const (
	StatusValid        Status = iota
	StatusInvalid             // revoked, expired, owner deactivated or moved: 401
	StatusTeamInactive        // 403 subscription_inactive
)

// Check decides admission. Revocation, expiry, owner state and team moves
// all answer the same StatusInvalid so clients cannot enumerate.
func (id Identity) Check(now time.Time) Status {
	switch {
	case id.Refusal(now) != "":
		return StatusInvalid
	case !id.TeamActive:
		return StatusTeamInactive
	}
	return StatusValid
}

// Refusal names why Check answers StatusInvalid, for operators' counts
// (never for the client, which gets one answer for all): "revoked",
// "owner_inactive", "owner_moved" or "expired"; "" for a key Check does
// not refuse as invalid.
func (id Identity) Refusal(now time.Time) string {
	switch {
	case id.Revoked:
		return "revoked"
	case !id.UserActive:
		return "owner_inactive"
	case !id.SameTeam:
		return "owner_moved"
	case !id.ExpiresAt.IsZero() && !now.Before(id.ExpiresAt):
		return "expired"
	}
	return ""
}

// Store is the store of record. SQLite and PostgreSQL implement it and pass
// the same contract suite (storetest).
type Store interface {
	// CreateKey upserts the user (team, role; true for a new one; an
	// existing deactivated user is refused and left as it is) and the team
	// (active if new), then inserts the key, in one transaction that
	// enforces MaxActivePerTeam. A create that moves its owner to another
	// team revokes the owner's other keys, as PutUser does. Errors:
	// ErrTeamInactive, ErrUserInactive, ErrKeyLimitReached, ErrConflict
	// (id or hash). A zero CreatedAt means now. The returned key carries
	// EvictHashes and RevokedByMove.
	CreateKey(ctx context.Context, k NewKey) (Key, error)
	// GetKey returns one key, ErrNotFound if the id is unknown.
	GetKey(ctx context.Context, id string) (Key, error)
	// ListKeys returns keys newest first.
	ListKeys(ctx context.Context, f KeyFilter) ([]Key, error)
	// UpdateKey applies u and returns the key, ErrNotFound if unknown.
	UpdateKey(ctx context.Context, id string, u KeyUpdate) (Key, error)
	// RevokeKey sets revoked_at once; revoking again returns the key as is.
	// ErrNotFound if the id is unknown; a zero at means now.
	RevokeKey(ctx context.Context, id string, at time.Time) (Key, error)
	// PutUser creates or replaces a user, in one transaction with the
	// revocation of its keys when it moves to another team (UserChange). A
	// team the store has not seen is created active. A zero UpdatedAt
	// means now, and is the revocation time.
	PutUser(ctx context.Context, u User) (UserChange, error)
	// PutTeam creates or replaces a team and returns the hashes of its
	// unrevoked keys. A zero UpdatedAt means now.
	PutTeam(ctx context.Context, t Team) (Team, []Hash, error)
	// Resolve returns the identity of a key hash, ErrNotFound if unknown.
	Resolve(ctx context.Context, h Hash) (Identity, error)
	// TouchKeys records last use times in one batch; later times win and
	// unknown ids are ignored.
	TouchKeys(ctx context.Context, used map[string]time.Time) error
	// CountActiveKeys counts unrevoked, unexpired keys (for metrics).
	CountActiveKeys(ctx context.Context) (int64, error)
	// Ping checks the store answers.
	Ping(ctx context.Context) error
	// Close releases the store; later calls fail with ErrUnavailable.
	Close() error
}
