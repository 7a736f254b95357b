package keystore

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// sqliteMigration is one schema step. Steps are append-only: a released
// step is never edited, a change is a new step.
type sqliteMigration struct {
	version int
	name    string
	stmts   []string
}

// Times are INTEGER unix nanoseconds in UTC: they sort and compare in SQL
// without parsing, and round-trip exactly.
var sqliteMigrations = []sqliteMigration{
	{1, "teams, users, keys", []string{
		`CREATE TABLE teams (
			id         TEXT PRIMARY KEY,
			active     INTEGER NOT NULL,
			updated_at INTEGER NOT NULL
		)`,
		`CREATE TABLE users (
			id         TEXT PRIMARY KEY,
			team_id    TEXT NOT NULL REFERENCES teams(id),
			role       TEXT NOT NULL,
			active     INTEGER NOT NULL,
			updated_at INTEGER NOT NULL
		)`,
		`CREATE TABLE keys (
			id           TEXT PRIMARY KEY,
			hash         BLOB NOT NULL UNIQUE,
			start        TEXT NOT NULL,
			name         TEXT NOT NULL,
			user_id      TEXT NOT NULL REFERENCES users(id),
			team_id      TEXT NOT NULL REFERENCES teams(id),
			created_at   INTEGER NOT NULL,
			expires_at   INTEGER,
			revoked_at   INTEGER,
			last_used_at INTEGER
		)`,
		// Team listing (newest first) and the per-team active count.
		`CREATE INDEX keys_team_created ON keys (team_id, created_at DESC)`,
		// PutUser returns the hashes of a user's keys.
		`CREATE INDEX keys_user ON keys (user_id)`,
		// Hash lookup is served by the UNIQUE constraint's index.
	}},
	// Resolve reads only these indexes, never a table row: one B-tree
	// descent per table instead of two (index, then row). With a million
	// keys the leaf pages no longer fit in the page cache, and each
	// descent saved is a page read saved on a cache miss.
	{2, "covering indexes for key resolution", []string{
		`CREATE INDEX keys_resolve ON keys (hash, id, user_id, team_id, revoked_at, expires_at)`,
		`CREATE INDEX users_resolve ON users (id, team_id, role, active)`,
		`CREATE INDEX teams_resolve ON teams (id, active)`,
	}},
	// Resolve reads one index instead of three: each key row carries a copy
	// of what its owner and team decide (owner_*, team_active), kept by
	// triggers in the transaction that changes the user or team, so a
	// demotion still applies at once. A cache miss at a million keys went
	// from 35 to 26 µs (bench/storebench): the joins' two extra B-tree
	// descents cost that much even with every page cached, in CPU cache
	// misses. The copies default to inactive: a row the triggers missed is
	// refused, not admitted.
	// Migration 2's indexes stay: a binary of the previous release, still
	// running during a rolling upgrade, names them in its query.
	{3, "owner and team state on each key", []string{
		`ALTER TABLE keys ADD COLUMN owner_role TEXT NOT NULL DEFAULT ''`,
		`ALTER TABLE keys ADD COLUMN owner_active INTEGER NOT NULL DEFAULT 0`,
		`ALTER TABLE keys ADD COLUMN owner_same_team INTEGER NOT NULL DEFAULT 0`,
		`ALTER TABLE keys ADD COLUMN team_active INTEGER NOT NULL DEFAULT 0`,
		`UPDATE keys SET owner_role = u.role, owner_active = u.active,
			owner_same_team = u.team_id = keys.team_id, team_active = t.active
			FROM users u, teams t WHERE u.id = keys.user_id AND t.id = keys.team_id`,
		`CREATE TRIGGER keys_owner_copy AFTER INSERT ON keys BEGIN
			UPDATE keys SET owner_role = u.role, owner_active = u.active,
				owner_same_team = u.team_id = NEW.team_id, team_active = t.active
				FROM users u, teams t
				WHERE keys.rowid = NEW.rowid AND u.id = NEW.user_id AND t.id = NEW.team_id;
		END`,
		// Keys never change owner today; the trigger keeps the copy right
		// if a later release lets them.
		`CREATE TRIGGER keys_owner_change AFTER UPDATE OF user_id, team_id ON keys BEGIN
			UPDATE keys SET owner_role = u.role, owner_active = u.active,
				owner_same_team = u.team_id = NEW.team_id, team_active = t.active
				FROM users u, teams t
				WHERE keys.rowid = NEW.rowid AND u.id = NEW.user_id AND t.id = NEW.team_id;
		END`,
		`CREATE TRIGGER users_copy_to_keys AFTER UPDATE OF team_id, role, active ON users BEGIN
			UPDATE keys SET owner_role = NEW.role, owner_active = NEW.active,
				owner_same_team = keys.team_id = NEW.team_id
				WHERE user_id = NEW.id;
		END`,
		`CREATE TRIGGER teams_copy_to_keys AFTER UPDATE OF active ON teams BEGIN
			UPDATE keys SET team_active = NEW.active WHERE team_id = NEW.id;
		END`,
		`CREATE INDEX keys_identity ON keys (hash, id, user_id, team_id, owner_role, owner_active,
			owner_same_team, team_active, revoked_at, expires_at)`,
	}},
}

// Migrate brings the schema up to date. It is idempotent and safe to run
// from several processes at once: each pass runs in one immediate
// transaction, so a second opener waits and then finds nothing to do.
// Versions this binary does not know (a newer binary migrated the file) are
// left alone, as steps are additive.
func (s *SQLite) Migrate(ctx context.Context) error {
	return s.migrate(ctx, len(sqliteMigrations))
}

// migrate applies the steps up to version upTo (tests build older schemas).
func (s *SQLite) migrate(ctx context.Context, upTo int) error {
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT NOT NULL,
		applied_at INTEGER NOT NULL
	)`); err != nil {
		return s.wrap("creating schema_migrations", err)
	}
	return s.inTx(ctx, "migrating", func(tx *sql.Tx) error {
		applied := make(map[int]bool)
		rows, err := tx.QueryContext(ctx, `SELECT version FROM schema_migrations`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var v int
			if err := rows.Scan(&v); err != nil {
				rows.Close()
				return err
			}
			applied[v] = true
		}
		if err := rows.Close(); err != nil {
			return err
		}
		for _, m := range sqliteMigrations {
			if applied[m.version] || m.version > upTo {
				continue
			}
			for _, stmt := range m.stmts {
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("migration %d (%s): %w", m.version, m.name, err)
				}
			}
			if _, err := tx.ExecContext(ctx,
				`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
				m.version, m.name, time.Now().UnixNano()); err != nil {
				return fmt.Errorf("recording migration %d: %w", m.version, err)
			}
		}
		return nil
	})
}
