package keystore

import (
	"context"
	"database/sql"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/wevion/keyproxy/internal/pace"
)

// SQLiteResolveQuery is the statement SQLite.Resolve runs.
const SQLiteResolveQuery = sqliteResolveQuery

// MigrateSQLiteUpTo gives db the schema of an earlier release: the steps
// up to version, no later.
func MigrateSQLiteUpTo(ctx context.Context, db *sql.DB, version int) error {
	return (&SQLite{db: db}).migrate(ctx, version)
}

// MigratePostgresUpTo gives the database that pool reaches the schema of
// an earlier release: the steps up to version, no later.
func MigratePostgresUpTo(ctx context.Context, pool *pgxpool.Pool, version int) error {
	return (&Postgres{pool: pool}).migrate(ctx, version)
}

// NewResolverPaced is NewResolver with the refresh loop's pacer given, so
// a test can count its pauses.
func NewResolverPaced(b Backend, o ResolverOptions, newPacer func() pace.Pacer) (*Resolver, error) {
	return newResolver(b, o, newPacer)
}
