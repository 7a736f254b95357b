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
	// Resolve reads one row instead of joining three: each key row carries
	// a copy of what its owner and team decide (owner_*, team_active),
	// kept by triggers in the transaction that changes the user or team,
	// so a demotion still applies at once. The copy of a new key locks the
	// owner's and team's rows (FOR SHARE) so that a concurrent change of
	// either waits for the key and then updates it too. The copies default
	// to inactive: a row the triggers missed is refused, not admitted. The
	// functions keep the search_path they were created with, so they find
	// this schema's tables whatever the caller's path. A user or team
	// written unchanged (PutUser rewrites every column) leaves its keys'
	// rows alone, rather than leaving dead row versions for vacuum.
	{2, "owner and team state on each key", []string{
		`ALTER TABLE keys
			ADD COLUMN owner_role text NOT NULL DEFAULT '',
			ADD COLUMN owner_active boolean NOT NULL DEFAULT false,
			ADD COLUMN owner_same_team boolean NOT NULL DEFAULT false,
			ADD COLUMN team_active boolean NOT NULL DEFAULT false`,
		`UPDATE keys k SET owner_role = u.role, owner_active = u.active,
			owner_same_team = u.team_id = k.team_id, team_active = t.active
			FROM users u, teams t WHERE u.id = k.user_id AND t.id = k.team_id`,
		`CREATE FUNCTION keyproxy_key_owner_copy() RETURNS trigger
			LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
		DECLARE
			o record;
		BEGIN
			SELECT u.role, u.active, u.team_id = NEW.team_id AS same_team, t.active AS team_active INTO o
				FROM users u, teams t WHERE u.id = NEW.user_id AND t.id = NEW.team_id
				FOR SHARE;
			-- Not found: the foreign keys refuse the row after this.
			IF FOUND THEN
				NEW.owner_role := o.role;
				NEW.owner_active := o.active;
				NEW.owner_same_team := o.same_team;
				NEW.team_active := o.team_active;
			END IF;
			RETURN NEW;
		END $$`,
		// Keys never change owner today; the trigger keeps the copy right
		// if a later release lets them.
		`CREATE TRIGGER keys_owner_copy BEFORE INSERT OR UPDATE OF user_id, team_id ON keys
			FOR EACH ROW EXECUTE FUNCTION keyproxy_key_owner_copy()`,
		`CREATE FUNCTION keyproxy_user_copy_to_keys() RETURNS trigger
			LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
		BEGIN
			UPDATE keys SET owner_role = NEW.role, owner_active = NEW.active,
				owner_same_team = team_id = NEW.team_id
				WHERE user_id = NEW.id;
			RETURN NULL;
		END $$`,
		`CREATE TRIGGER users_copy_to_keys AFTER UPDATE OF team_id, role, active ON users
			FOR EACH ROW WHEN ((OLD.team_id, OLD.role, OLD.active) IS DISTINCT FROM (NEW.team_id, NEW.role, NEW.active))
			EXECUTE FUNCTION keyproxy_user_copy_to_keys()`,
		`CREATE FUNCTION keyproxy_team_copy_to_keys() RETURNS trigger
			LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
		BEGIN
			UPDATE keys SET team_active = NEW.active WHERE team_id = NEW.id;
			RETURN NULL;
		END $$`,
		`CREATE TRIGGER teams_copy_to_keys AFTER UPDATE OF active ON teams
			FOR EACH ROW WHEN (OLD.active IS DISTINCT FROM NEW.active) EXECUTE FUNCTION keyproxy_team_copy_to_keys()`,
	}},
}

// Migrate brings the schema up to date. It is idempotent and safe to run
// from several replicas at once: each pass holds a transaction-scoped
// advisory lock, and PostgreSQL's DDL is transactional, so a step is
// applied whole or not at all. Versions this binary does not know (a newer
// binary migrated the database) are left alone, as steps are additive.
func (p *Postgres) Migrate(ctx context.Context) error {
	return p.migrate(ctx, len(pgMigrations))
}

// migrate applies the steps up to version upTo (tests build older schemas).
func (p *Postgres) migrate(ctx context.Context, upTo int) error {
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
			if applied[m.version] || m.version > upTo {
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
