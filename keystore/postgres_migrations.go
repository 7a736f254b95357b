package keystore

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// pgMigration is one schema step. Steps are append-only: a released step
// is never edited, a change is a new step.
type pgMigration struct {
	version int
	name    string
	stmts   []string
}

// pgMigrateLock is the advisory lock id (an arbitrary constant, "kprx"
// in ASCII) that serialises replicas migrating the same database at start.
const pgMigrateLock = 0x6b707278

var pgMigrations = []pgMigration{
	{1, "teams, users, keys", []string{
		`CREATE TABLE teams (
			id         text PRIMARY KEY,
			active     boolean NOT NULL,
			updated_at timestamptz NOT NULL
		)`,
		`CREATE TABLE users (
			id         text PRIMARY KEY,
			team_id    text NOT NULL REFERENCES teams(id),
			role       text NOT NULL,
			active     boolean NOT NULL,
			updated_at timestamptz NOT NULL
		)`,
		`CREATE TABLE keys (
			id           text PRIMARY KEY,
			hash         bytea NOT NULL UNIQUE CHECK (octet_length(hash) = 32),
			start        text NOT NULL,
			name         text NOT NULL,
			user_id      text NOT NULL REFERENCES users(id),
			team_id      text NOT NULL REFERENCES teams(id),
			created_at   timestamptz NOT NULL,
			expires_at   timestamptz,
			revoked_at   timestamptz,
			last_used_at timestamptz
		)`,
		// Team listing, newest first.
		`CREATE INDEX keys_team_created ON keys (team_id, created_at DESC, id DESC)`,
		// CreateKey's count of a team's active keys touches only those.
		`CREATE INDEX keys_team_active ON keys (team_id) WHERE revoked_at IS NULL`,
		// PutUser and owner moves return the hashes of a user's keys.
		`CREATE INDEX keys_user ON keys (user_id)`,
		// Hash lookup is served by the UNIQUE constraint's index.
	}},
}

// Migrate brings the schema up to date. It is idempotent and safe to run
// from several replicas at once: each pass holds a transaction-scoped
// advisory lock, and PostgreSQL's DDL is transactional, so a step is
// applied whole or not at all. Versions this binary does not know (a newer
// binary migrated the database) are left alone, as steps are additive.
func (p *Postgres) Migrate(ctx context.Context) error {
	return p.inTx(ctx, "migrating", func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(pgMigrateLock)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    integer PRIMARY KEY,
			name       text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now()
		)`); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT version FROM schema_migrations`)
		if err != nil {
			return err
		}
		versions, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			return err
		}
		applied := make(map[int]bool, len(versions))
		for _, v := range versions {
			applied[int(v)] = true
		}
		for _, m := range pgMigrations {
			if applied[m.version] {
				continue
			}
			for _, stmt := range m.stmts {
				if _, err := tx.Exec(ctx, stmt); err != nil {
					return fmt.Errorf("migration %d (%s): %w", m.version, m.name, err)
				}
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`,
				m.version, m.name); err != nil {
				return fmt.Errorf("recording migration %d: %w", m.version, err)
			}
		}
		return nil
	})
}
