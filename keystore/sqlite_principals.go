package keystore

import (
	"context"
	"database/sql"
	"errors"
)

// PutUser creates or replaces the user (creating its team, active, if the
// store has never seen it) and revokes its keys if it moved (UserChange).
func (s *SQLite) PutUser(ctx context.Context, u User) (UserChange, error) {
	if u.ID == "" || u.TeamID == "" {
		return UserChange{}, errors.New("keystore: user needs an id and a team id")
	}
	u.UpdatedAt = stamp(u.UpdatedAt)
	change := UserChange{User: u}
	err := s.inTx(ctx, "put user", func(tx *sql.Tx) error {
		var old string
		err := tx.QueryRowContext(ctx, `SELECT team_id FROM users WHERE id = ?`, u.ID).Scan(&old)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if err := ensureTeam(ctx, tx, u.TeamID, u.UpdatedAt); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO users (id, team_id, role, active, updated_at)
			VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET team_id = excluded.team_id, role = excluded.role,
				active = excluded.active, updated_at = excluded.updated_at`,
			u.ID, u.TeamID, u.Role, u.Active, nanos(u.UpdatedAt)); err != nil {
			return err
		}
		if change.Evict, err = queryHashes(ctx, tx, `SELECT hash FROM keys WHERE user_id = ? AND revoked_at IS NULL`, u.ID); err != nil {
			return err
		}
		change.Revoked, err = revokeOwnerKeys(ctx, tx, u.ID, u.TeamID, old != "" && old != u.TeamID, u.UpdatedAt)
		return err
	})
	if err != nil {
		return UserChange{}, err
	}
	return change, nil
}

// PutTeam creates or replaces the team and returns the hashes of its
// unrevoked keys.
func (s *SQLite) PutTeam(ctx context.Context, t Team) (Team, []Hash, error) {
	if t.ID == "" {
		return Team{}, nil, errors.New("keystore: team needs an id")
	}
	t.UpdatedAt = stamp(t.UpdatedAt)
	var hashes []Hash
	err := s.inTx(ctx, "put team", func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO teams (id, active, updated_at) VALUES (?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET active = excluded.active, updated_at = excluded.updated_at`,
			t.ID, t.Active, nanos(t.UpdatedAt)); err != nil {
			return err
		}
		var err error
		hashes, err = queryHashes(ctx, tx, `SELECT hash FROM keys WHERE team_id = ? AND revoked_at IS NULL`, t.ID)
		return err
	})
	if err != nil {
		return Team{}, nil, err
	}
	return t, hashes, nil
}
