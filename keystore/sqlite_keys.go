package keystore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Key reads join the owner so Role is the user's current role.
const sqliteKeySelect = `SELECT k.id, k.hash, k.start, k.name, k.user_id, k.team_id, u.role,
	k.created_at, k.expires_at, k.revoked_at, k.last_used_at
	FROM keys k JOIN users u ON u.id = k.user_id`

// Times as unix nanoseconds reach from 1677 to 2262; refuse what would
// silently wrap rather than store a wrong date.
var (
	minStorableTime = time.Unix(0, 0)
	maxStorableTime = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
)

func checkStorable(name string, t *time.Time) error {
	if t != nil && (t.Before(minStorableTime) || t.After(maxStorableTime)) {
		return fmt.Errorf("keystore: %s %s is outside 1970-2200", name, t.Format(time.RFC3339))
	}
	return nil
}

// CreateKey upserts the team and the user and inserts the key in one
// immediate transaction, so concurrent creates for a team are serialised
// and the active-key bound holds.
func (s *SQLite) CreateKey(ctx context.Context, k NewKey) (Key, error) {
	if err := validateNewKey(k); err != nil {
		return Key{}, err
	}
	now := time.Now().UTC()
	k.CreatedAt = stamp(k.CreatedAt)
	var (
		evict   []Hash
		revoked []Key
		changed bool
	)
	err := s.inTx(ctx, "create key", func(tx *sql.Tx) error {
		if err := ensureTeam(ctx, tx, k.TeamID, now); err != nil {
			return err
		}
		var teamActive bool
		if err := tx.QueryRowContext(ctx, `SELECT active FROM teams WHERE id = ?`, k.TeamID).Scan(&teamActive); err != nil {
			return err
		}
		if !teamActive {
			return ErrTeamInactive
		}
		var err error
		if changed, evict, revoked, err = upsertKeyOwner(ctx, tx, k, now); err != nil {
			return err
		}
		var active int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM keys
			WHERE team_id = ? AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)`,
			k.TeamID, now.UnixNano()).Scan(&active); err != nil {
			return err
		}
		if active >= k.MaxActivePerTeam {
			return ErrKeyLimitReached
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO keys (id, hash, start, name, user_id, team_id, created_at, expires_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			k.ID, k.Hash[:], k.Start, k.Name, k.UserID, k.TeamID, nanos(k.CreatedAt), nullNanos(k.ExpiresAt))
		if isUniqueViolation(err) {
			return fmt.Errorf("%w: key id or hash exists", ErrConflict)
		}
		return err
	})
	if err != nil {
		return Key{}, err
	}
	key := Key{
		ID: k.ID, Hash: k.Hash, Start: k.Start, Name: k.Name, UserID: k.UserID, TeamID: k.TeamID,
		Role: k.Role, CreatedAt: k.CreatedAt, EvictHashes: evict, OwnerChanged: changed, RevokedByMove: revoked,
	}
	if k.ExpiresAt != nil {
		t := k.ExpiresAt.UTC()
		key.ExpiresAt = &t
	}
	return key, nil
}

func validateNewKey(k NewKey) error {
	switch {
	case k.ID == "" || k.UserID == "" || k.TeamID == "":
		return errors.New("keystore: a new key needs an id, a user id and a team id")
	case k.MaxActivePerTeam <= 0:
		return fmt.Errorf("keystore: MaxActivePerTeam must be positive, got %d", k.MaxActivePerTeam)
	}
	if !k.CreatedAt.IsZero() {
		if err := checkStorable("created_at", &k.CreatedAt); err != nil {
			return err
		}
	}
	return checkStorable("expires_at", k.ExpiresAt)
}

// upsertKeyOwner creates the user (active) or moves it to the key's team
// and role. When an existing user changes, it says so and returns the
// hashes of the user's other unrevoked keys, whose identities just changed,
// and the keys a move revoked.
func upsertKeyOwner(ctx context.Context, tx *sql.Tx, k NewKey, now time.Time) (changed bool, evict []Hash, revoked []Key, err error) {
	var (
		team, role string
		active     bool
	)
	err = tx.QueryRowContext(ctx, `SELECT team_id, role, active FROM users WHERE id = ?`, k.UserID).Scan(&team, &role, &active)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		_, err = tx.ExecContext(ctx, `INSERT INTO users (id, team_id, role, active, updated_at) VALUES (?, ?, ?, 1, ?)`,
			k.UserID, k.TeamID, k.Role, nanos(now))
		return false, nil, nil, err
	case err != nil:
		return false, nil, nil, err
	case !active:
		return false, nil, nil, ErrUserInactive
	case team == k.TeamID && role == k.Role:
		return false, nil, nil, nil
	}
	if _, err := tx.ExecContext(ctx, `UPDATE users SET team_id = ?, role = ?, updated_at = ? WHERE id = ?`,
		k.TeamID, k.Role, nanos(now), k.UserID); err != nil {
		return false, nil, nil, err
	}
	if evict, err = queryHashes(ctx, tx, `SELECT hash FROM keys WHERE user_id = ? AND revoked_at IS NULL`, k.UserID); err != nil {
		return false, nil, nil, err
	}
	revoked, err = revokeOwnerKeys(ctx, tx, k.UserID, k.TeamID, team != k.TeamID, now)
	return true, evict, revoked, err
}

// revokeOwnerKeys revokes, at at, the user's unrevoked keys made in a team
// other than team (keys a move before this rule left behind), or all of
// them when moved, and returns them, newest first.
func revokeOwnerKeys(ctx context.Context, tx *sql.Tx, userID, team string, moved bool, at time.Time) ([]Key, error) {
	const which = ` WHERE user_id = ? AND revoked_at IS NULL AND (team_id <> ? OR ?)`
	rows, err := tx.QueryContext(ctx, sqliteKeySelect+` WHERE k.id IN (SELECT id FROM keys`+which+`)
		ORDER BY k.created_at DESC, k.id DESC`, userID, team, moved)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var keys []Key
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, err
		}
		t := at.UTC()
		k.RevokedAt = &t
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil || len(keys) == 0 {
		return nil, err
	}
	_, err = tx.ExecContext(ctx, `UPDATE keys SET revoked_at = ?`+which, nanos(at), userID, team, moved)
	return keys, err
}

// GetKey returns one key, ErrNotFound if the id is unknown.
func (s *SQLite) GetKey(ctx context.Context, id string) (Key, error) {
	k, err := getKey(ctx, s.db, id)
	return k, s.wrap("get key", err)
}

type queryRower interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func getKey(ctx context.Context, q queryRower, id string) (Key, error) {
	k, err := scanKey(q.QueryRowContext(ctx, sqliteKeySelect+` WHERE k.id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Key{}, ErrNotFound
	}
	return k, err
}

// ListKeys returns a team's keys, newest first. TeamID is required.
func (s *SQLite) ListKeys(ctx context.Context, f KeyFilter) ([]Key, error) {
	if f.TeamID == "" {
		return nil, errors.New("keystore: listing keys needs a team id")
	}
	q := sqliteKeySelect + ` WHERE k.team_id = ?`
	args := []any{f.TeamID}
	if f.UserID != "" {
		q += ` AND k.user_id = ?`
		args = append(args, f.UserID)
	}
	if !f.IncludeRevoked {
		q += ` AND k.revoked_at IS NULL`
	}
	q += ` ORDER BY k.created_at DESC, k.id DESC`
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, s.wrap("list keys", err)
	}
	defer rows.Close()
	keys := []Key{}
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, s.wrap("list keys", err)
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap("list keys", err)
	}
	return keys, nil
}

// UpdateKey renames the key and/or sets or clears its end.
func (s *SQLite) UpdateKey(ctx context.Context, id string, u KeyUpdate) (Key, error) {
	if err := checkStorable("expires_at", u.ExpiresAt); err != nil {
		return Key{}, err
	}
	var k Key
	err := s.inTx(ctx, "update key", func(tx *sql.Tx) error {
		if u.Name != nil {
			if err := execOne(ctx, tx, `UPDATE keys SET name = ? WHERE id = ?`, *u.Name, id); err != nil {
				return err
			}
		}
		switch {
		case u.ClearExpiry:
			if err := execOne(ctx, tx, `UPDATE keys SET expires_at = NULL WHERE id = ?`, id); err != nil {
				return err
			}
		case u.ExpiresAt != nil:
			if err := execOne(ctx, tx, `UPDATE keys SET expires_at = ? WHERE id = ?`, nanos(*u.ExpiresAt), id); err != nil {
				return err
			}
		}
		var err error
		k, err = getKey(ctx, tx, id)
		return err
	})
	return k, err
}

// RevokeKey sets revoked_at unless it is already set.
func (s *SQLite) RevokeKey(ctx context.Context, id string, at time.Time) (Key, error) {
	at = stamp(at)
	var k Key
	err := s.inTx(ctx, "revoke key", func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL`,
			nanos(at), id); err != nil {
			return err
		}
		var err error
		k, err = getKey(ctx, tx, id)
		return err
	})
	return k, err
}

// sqliteResolveQuery is answered from one covering index (migration 3).
// INDEXED BY is needed: the planner would pick the UNIQUE constraint's
// index (one row known) and then read the row.
const sqliteResolveQuery = `SELECT id, user_id, team_id, owner_role, owner_active, team_active,
		owner_same_team, revoked_at, expires_at
	FROM keys INDEXED BY keys_identity
	WHERE hash = ?`

// Resolve returns what decides admission for a key hash.
func (s *SQLite) Resolve(ctx context.Context, h Hash) (Identity, error) {
	var (
		id        Identity
		revokedAt sql.NullInt64
		expiresAt sql.NullInt64
	)
	err := s.resolve.QueryRowContext(ctx, h[:]).Scan(&id.KeyID, &id.UserID, &id.TeamID, &id.Role, &id.UserActive,
		&id.TeamActive, &id.SameTeam, &revokedAt, &expiresAt)
	if errors.Is(err, sql.ErrNoRows) {
		return Identity{}, ErrNotFound
	}
	if err != nil {
		return Identity{}, s.wrap("resolve", err)
	}
	id.Revoked = revokedAt.Valid
	if expiresAt.Valid {
		id.ExpiresAt = fromNanos(expiresAt.Int64)
	}
	return id, nil
}

// execOne runs an update of one row by id and reports ErrNotFound if no
// row matched.
func execOne(ctx context.Context, tx *sql.Tx, query string, args ...any) error {
	res, err := tx.ExecContext(ctx, query, args...)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

type rowScanner interface{ Scan(dest ...any) error }

func scanKey(sc rowScanner) (Key, error) {
	var (
		k                          Key
		hash                       []byte
		created                    int64
		expires, revoked, lastUsed sql.NullInt64
	)
	if err := sc.Scan(&k.ID, &hash, &k.Start, &k.Name, &k.UserID, &k.TeamID, &k.Role,
		&created, &expires, &revoked, &lastUsed); err != nil {
		return Key{}, err
	}
	h, err := hashFromBytes(hash)
	if err != nil {
		return Key{}, err
	}
	k.Hash = h
	k.CreatedAt = fromNanos(created)
	k.ExpiresAt = fromNullNanos(expires)
	k.RevokedAt = fromNullNanos(revoked)
	k.LastUsedAt = fromNullNanos(lastUsed)
	return k, nil
}
