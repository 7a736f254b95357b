package keystore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgKeyColumns are read from a key row k joined with its owner u, so Role
// is the user's current role.
const pgKeyColumns = `k.id, k.hash, k.start, k.name, k.user_id, k.team_id, u.role,
	k.created_at, k.expires_at, k.revoked_at, k.last_used_at`

const pgKeySelect = `SELECT ` + pgKeyColumns + ` FROM keys k JOIN users u ON u.id = k.user_id`

// CreateKey upserts the team and the user and inserts the key in one
// transaction. The team row is locked (FOR NO KEY UPDATE) before the
// active keys are counted, so concurrent creates for one team, from any
// number of replicas, are serialised and the bound holds; the lock mode
// still lets other transactions insert rows that reference the team.
func (p *Postgres) CreateKey(ctx context.Context, k NewKey) (Key, error) {
	switch {
	case k.ID == "" || k.UserID == "" || k.TeamID == "":
		return Key{}, errors.New("keystore: a new key needs an id, a user id and a team id")
	case k.MaxActivePerTeam <= 0:
		return Key{}, fmt.Errorf("keystore: MaxActivePerTeam must be positive, got %d", k.MaxActivePerTeam)
	}
	k.CreatedAt = pgNow(k.CreatedAt)
	k.ExpiresAt = pgTimePtr(k.ExpiresAt)
	var (
		evict   []Hash
		revoked []Key
		changed bool
	)
	err := p.inTx(ctx, "create key", func(tx pgx.Tx) error {
		now := time.Now()
		if _, err := tx.Exec(ctx, `INSERT INTO teams (id, active, updated_at) VALUES ($1, true, $2)
			ON CONFLICT (id) DO NOTHING`, k.TeamID, now); err != nil {
			return err
		}
		var teamActive bool
		if err := tx.QueryRow(ctx, `SELECT active FROM teams WHERE id = $1 FOR NO KEY UPDATE`,
			k.TeamID).Scan(&teamActive); err != nil {
			return err
		}
		if !teamActive {
			return ErrTeamInactive
		}
		var err error
		if changed, evict, revoked, err = pgUpsertKeyOwner(ctx, tx, k, now); err != nil {
			return err
		}
		var active int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM keys
			WHERE team_id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)`,
			k.TeamID, now).Scan(&active); err != nil {
			return err
		}
		if active >= k.MaxActivePerTeam {
			return ErrKeyLimitReached
		}
		_, err = tx.Exec(ctx, `INSERT INTO keys (id, hash, start, name, user_id, team_id, created_at, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			k.ID, k.Hash[:], k.Start, k.Name, k.UserID, k.TeamID, k.CreatedAt, k.ExpiresAt)
		if pgUniqueViolation(err) {
			return fmt.Errorf("%w: key id or hash exists", ErrConflict)
		}
		return err
	})
	if err != nil {
		return Key{}, err
	}
	return Key{
		ID: k.ID, Hash: k.Hash, Start: k.Start, Name: k.Name, UserID: k.UserID, TeamID: k.TeamID,
		Role: k.Role, CreatedAt: k.CreatedAt, ExpiresAt: k.ExpiresAt, EvictHashes: evict, OwnerChanged: changed,
		RevokedByMove: revoked,
	}, nil
}

// pgUpsertKeyOwner creates the user (active) or moves it to the key's team
// and role. When an existing user changes, it says so and returns the
// hashes of the user's other unrevoked keys, whose identities just changed,
// and the keys a move revoked.
func pgUpsertKeyOwner(ctx context.Context, tx pgx.Tx, k NewKey, now time.Time) (changed bool, evict []Hash, revoked []Key, err error) {
	tag, err := tx.Exec(ctx, `INSERT INTO users (id, team_id, role, active, updated_at)
		VALUES ($1, $2, $3, true, $4) ON CONFLICT (id) DO NOTHING`, k.UserID, k.TeamID, k.Role, now)
	if err != nil || tag.RowsAffected() == 1 {
		return false, nil, nil, err
	}
	var (
		team, role string
		active     bool
	)
	if err := tx.QueryRow(ctx, `SELECT team_id, role, active FROM users WHERE id = $1 FOR NO KEY UPDATE`,
		k.UserID).Scan(&team, &role, &active); err != nil {
		return false, nil, nil, err
	}
	if !active {
		return false, nil, nil, ErrUserInactive
	}
	if team == k.TeamID && role == k.Role {
		return false, nil, nil, nil
	}
	if _, err := tx.Exec(ctx, `UPDATE users SET team_id = $1, role = $2, updated_at = $3 WHERE id = $4`,
		k.TeamID, k.Role, now, k.UserID); err != nil {
		return false, nil, nil, err
	}
	if evict, err = pgHashes(ctx, tx, `SELECT hash FROM keys WHERE user_id = $1 AND revoked_at IS NULL`, k.UserID); err != nil {
		return false, nil, nil, err
	}
	revoked, err = pgRevokeOwnerKeys(ctx, tx, k.UserID, k.TeamID, team != k.TeamID, now)
	return true, evict, revoked, err
}

// pgRevokeOwnerKeys revokes, at at, the user's unrevoked keys made in a
// team other than team (keys a move before this rule left behind), or all
// of them when moved, and returns them, newest first.
func pgRevokeOwnerKeys(ctx context.Context, tx pgx.Tx, userID, team string, moved bool, at time.Time) ([]Key, error) {
	rows, err := tx.Query(ctx, `WITH k AS (
			UPDATE keys SET revoked_at = $4
			WHERE user_id = $1 AND revoked_at IS NULL AND (team_id <> $2 OR $3) RETURNING *)
		SELECT `+pgKeyColumns+` FROM k JOIN users u ON u.id = k.user_id
		ORDER BY k.created_at DESC, k.id DESC`, userID, team, moved, pgTime(at))
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgScanKey)
}

// GetKey returns one key, ErrNotFound if the id is unknown.
func (p *Postgres) GetKey(ctx context.Context, id string) (Key, error) {
	if p.closed.Load() {
		return Key{}, p.wrap("get key", errPostgresClosed)
	}
	rows, err := p.pool.Query(ctx, pgKeySelect+` WHERE k.id = $1`, id)
	if err != nil {
		return Key{}, p.wrap("get key", err)
	}
	k, err := pgx.CollectExactlyOneRow(rows, pgScanKey)
	if errors.Is(err, pgx.ErrNoRows) {
		return Key{}, ErrNotFound
	}
	return k, p.wrap("get key", err)
}

// ListKeys returns a team's keys, newest first. TeamID is required.
func (p *Postgres) ListKeys(ctx context.Context, f KeyFilter) ([]Key, error) {
	if f.TeamID == "" {
		return nil, errors.New("keystore: listing keys needs a team id")
	}
	if p.closed.Load() {
		return nil, p.wrap("list keys", errPostgresClosed)
	}
	q := pgKeySelect + ` WHERE k.team_id = $1`
	args := []any{f.TeamID}
	if f.UserID != "" {
		q += ` AND k.user_id = $2`
		args = append(args, f.UserID)
	}
	if !f.IncludeRevoked {
		q += ` AND k.revoked_at IS NULL`
	}
	q += ` ORDER BY k.created_at DESC, k.id DESC`
	rows, err := p.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, p.wrap("list keys", err)
	}
	keys, err := pgx.CollectRows(rows, pgScanKey)
	if err != nil {
		return nil, p.wrap("list keys", err)
	}
	if keys == nil {
		keys = []Key{}
	}
	return keys, nil
}

// UpdateKey renames the key and/or sets or clears its end in one
// statement; ClearExpiry wins over ExpiresAt.
func (p *Postgres) UpdateKey(ctx context.Context, id string, u KeyUpdate) (Key, error) {
	if p.closed.Load() {
		return Key{}, p.wrap("update key", errPostgresClosed)
	}
	rows, err := p.pool.Query(ctx, `WITH k AS (
			UPDATE keys SET name = COALESCE($2, name),
				expires_at = CASE WHEN $3 THEN NULL WHEN $4::timestamptz IS NULL THEN expires_at ELSE $4 END
			WHERE id = $1 RETURNING *)
		SELECT `+pgKeyColumns+` FROM k JOIN users u ON u.id = k.user_id`,
		id, u.Name, u.ClearExpiry, pgTimePtr(u.ExpiresAt))
	if err != nil {
		return Key{}, p.wrap("update key", err)
	}
	k, err := pgx.CollectExactlyOneRow(rows, pgScanKey)
	if errors.Is(err, pgx.ErrNoRows) {
		return Key{}, ErrNotFound
	}
	return k, p.wrap("update key", err)
}

// RevokeKey sets revoked_at unless it is already set, and returns the key.
func (p *Postgres) RevokeKey(ctx context.Context, id string, at time.Time) (Key, error) {
	if p.closed.Load() {
		return Key{}, p.wrap("revoke key", errPostgresClosed)
	}
	rows, err := p.pool.Query(ctx, `WITH k AS (
			UPDATE keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 RETURNING *)
		SELECT `+pgKeyColumns+` FROM k JOIN users u ON u.id = k.user_id`, id, pgNow(at))
	if err != nil {
		return Key{}, p.wrap("revoke key", err)
	}
	k, err := pgx.CollectExactlyOneRow(rows, pgScanKey)
	if errors.Is(err, pgx.ErrNoRows) {
		return Key{}, ErrNotFound
	}
	return k, p.wrap("revoke key", err)
}

const pgResolveQuery = `SELECT id, user_id, team_id, owner_role, owner_active, team_active,
		owner_same_team, revoked_at IS NOT NULL, expires_at
	FROM keys WHERE hash = $1`

// Resolve returns what decides admission for a key hash: one indexed
// lookup of the key row, which carries its owner's and team's state
// (migration 2).
func (p *Postgres) Resolve(ctx context.Context, h Hash) (Identity, error) {
	if p.closed.Load() {
		return Identity{}, p.wrap("resolve", errPostgresClosed)
	}
	var (
		id        Identity
		expiresAt *time.Time
	)
	err := p.pool.QueryRow(ctx, pgResolveQuery, h[:]).Scan(&id.KeyID, &id.UserID, &id.TeamID, &id.Role, &id.UserActive,
		&id.TeamActive, &id.SameTeam, &id.Revoked, &expiresAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Identity{}, ErrNotFound
	}
	if err != nil {
		return Identity{}, p.wrap("resolve", err)
	}
	if expiresAt != nil {
		id.ExpiresAt = expiresAt.UTC()
	}
	return id, nil
}

// PutUser creates or replaces the user (creating its team, active, if the
// store has never seen it) and revokes its keys if it moved (UserChange).
// The user's row is locked first, so a concurrent create for the user
// waits for the move and its revocations.
func (p *Postgres) PutUser(ctx context.Context, u User) (UserChange, error) {
	if u.ID == "" || u.TeamID == "" {
		return UserChange{}, errors.New("keystore: user needs an id and a team id")
	}
	u.UpdatedAt = pgNow(u.UpdatedAt)
	change := UserChange{User: u}
	err := p.inTx(ctx, "put user", func(tx pgx.Tx) error {
		var old string
		err := tx.QueryRow(ctx, `SELECT team_id FROM users WHERE id = $1 FOR NO KEY UPDATE`, u.ID).Scan(&old)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO teams (id, active, updated_at) VALUES ($1, true, $2)
			ON CONFLICT (id) DO NOTHING`, u.TeamID, u.UpdatedAt); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO users (id, team_id, role, active, updated_at)
			VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (id) DO UPDATE SET team_id = excluded.team_id, role = excluded.role,
				active = excluded.active, updated_at = excluded.updated_at`,
			u.ID, u.TeamID, u.Role, u.Active, u.UpdatedAt); err != nil {
			return err
		}
		if change.Evict, err = pgHashes(ctx, tx, `SELECT hash FROM keys WHERE user_id = $1 AND revoked_at IS NULL`, u.ID); err != nil {
			return err
		}
		// A user created by a concurrent create after the lock found no
		// row has only keys of that create's team: "team_id <> $2" ends them.
		change.Revoked, err = pgRevokeOwnerKeys(ctx, tx, u.ID, u.TeamID, old != "" && old != u.TeamID, u.UpdatedAt)
		return err
	})
	if err != nil {
		return UserChange{}, err
	}
	return change, nil
}

// PutTeam creates or replaces the team and returns the hashes of its
// unrevoked keys. Its row lock orders it with CreateKey for the team.
func (p *Postgres) PutTeam(ctx context.Context, t Team) (Team, []Hash, error) {
	if t.ID == "" {
		return Team{}, nil, errors.New("keystore: team needs an id")
	}
	t.UpdatedAt = pgNow(t.UpdatedAt)
	var hashes []Hash
	err := p.inTx(ctx, "put team", func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO teams (id, active, updated_at) VALUES ($1, $2, $3)
			ON CONFLICT (id) DO UPDATE SET active = excluded.active, updated_at = excluded.updated_at`,
			t.ID, t.Active, t.UpdatedAt); err != nil {
			return err
		}
		var err error
		hashes, err = pgHashes(ctx, tx, `SELECT hash FROM keys WHERE team_id = $1 AND revoked_at IS NULL`, t.ID)
		return err
	})
	if err != nil {
		return Team{}, nil, err
	}
	return t, hashes, nil
}

// TouchKeys records last use times in one statement; an earlier time never
// overwrites a later one, and unknown ids are ignored.
func (p *Postgres) TouchKeys(ctx context.Context, used map[string]time.Time) error {
	if len(used) == 0 {
		return nil
	}
	if p.closed.Load() {
		return p.wrap("touch keys", errPostgresClosed)
	}
	ids := make([]string, 0, len(used))
	ats := make([]time.Time, 0, len(used))
	for id, at := range used {
		ids = append(ids, id)
		ats = append(ats, pgTime(at))
	}
	_, err := p.pool.Exec(ctx, `UPDATE keys k SET last_used_at = v.at
		FROM unnest($1::text[], $2::timestamptz[]) AS v(id, at)
		WHERE k.id = v.id AND (k.last_used_at IS NULL OR k.last_used_at < v.at)`, ids, ats)
	return p.wrap("touch keys", err)
}

// CountActiveKeys counts unrevoked, unexpired keys across all teams.
func (p *Postgres) CountActiveKeys(ctx context.Context) (int64, error) {
	if p.closed.Load() {
		return 0, p.wrap("count active keys", errPostgresClosed)
	}
	var n int64
	// The replica's clock decides expiry everywhere else too (Identity.Check).
	err := p.pool.QueryRow(ctx, `SELECT count(*) FROM keys
		WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $1)`, time.Now()).Scan(&n)
	if err != nil {
		return 0, p.wrap("count active keys", err)
	}
	return n, nil
}

func pgScanKey(row pgx.CollectableRow) (Key, error) {
	var (
		k                          Key
		hash                       []byte
		expires, revoked, lastUsed *time.Time
	)
	if err := row.Scan(&k.ID, &hash, &k.Start, &k.Name, &k.UserID, &k.TeamID, &k.Role,
		&k.CreatedAt, &expires, &revoked, &lastUsed); err != nil {
		return Key{}, err
	}
	h, err := pgHash(hash)
	if err != nil {
		return Key{}, err
	}
	k.Hash = h
	k.CreatedAt = k.CreatedAt.UTC()
	k.ExpiresAt = pgUTC(expires)
	k.RevokedAt = pgUTC(revoked)
	k.LastUsedAt = pgUTC(lastUsed)
	return k, nil
}
