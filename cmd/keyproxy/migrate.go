package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/wevion/keyproxy/audit"
	"github.com/wevion/keyproxy/keystore"
)

// migrateTimeout bounds the whole run: migrations are small, and a store
// that does not answer should fail the deploy step, not hang it.
const migrateTimeout = 2 * time.Minute

func newMigrateCmd(environ []string, stdout io.Writer) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply the store's schema migrations and create the audit table, then exit",
		Long: `Apply the schema migrations of the configured store (store.driver,
store.dsn) and create the audit table, then exit. serve applies them at start
too; run migrate explicitly before rolling out a new version, or as an init
step, so that replicas never start against an old schema. It is idempotent
and safe to run from several places at once.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := LoadConfig(file, environ)
			if err != nil {
				return usageError{err}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), migrateTimeout)
			defer cancel()
			if err := migrate(ctx, cfg, stdout); err != nil {
				return oneLineError{err}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "", "YAML configuration file (default: built-in defaults)")
	return cmd
}

// schemaStore is what migrate needs of a store of record.
type schemaStore interface {
	Migrate(ctx context.Context) error
	DB() *sql.DB
	Close() error
}

// schemaState is what a database holds of keyproxy's schema.
type schemaState struct {
	migrations map[int]string // applied version → name
	auditTable bool
}

// migrate reads the schema before and after migrating, so that it can say
// exactly what it applied. Opening a store already migrates it; the
// explicit Migrate call keeps this command correct should that change.
func migrate(ctx context.Context, cfg *Config, out io.Writer) error {
	dialect, where, err := describeStore(cfg)
	if err != nil {
		return usageError{err}
	}
	before, err := schemaBefore(ctx, cfg, dialect)
	if err != nil {
		return fmt.Errorf("reading the schema of %s: %w", where, err)
	}
	var s schemaStore
	switch dialect {
	case audit.Postgres:
		s, err = keystore.OpenPostgres(ctx, cfg.Store.DSN, keystore.PostgresOptions{MaxConns: 2})
	default:
		s, err = keystore.OpenSQLite(ctx, cfg.Store.DSN)
	}
	if err != nil {
		return fmt.Errorf("opening %s: %w", where, err)
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil {
		return fmt.Errorf("migrating %s: %w", where, err)
	}
	as, err := audit.NewSQLStore(s.DB(), dialect, audit.StoreOptions{Logger: zap.NewNop()})
	if err != nil {
		return fmt.Errorf("creating the audit table in %s: %w", where, err)
	}
	_ = as.Close() // it does not own the database; this only releases its statements
	after, err := readSchema(ctx, s.DB(), dialect)
	if err != nil {
		return fmt.Errorf("reading the schema of %s: %w", where, err)
	}
	printMigration(out, where, before, after)
	return nil
}

// describeStore names the store for the operator without its secrets.
func describeStore(cfg *Config) (audit.Dialect, string, error) {
	if cfg.Store.Driver != "postgres" {
		return audit.SQLite, "sqlite store " + cfg.Store.DSN, nil
	}
	pc, err := pgx.ParseConfig(cfg.Store.DSN)
	if err != nil {
		// pgx's message quotes the DSN, password included.
		return 0, "", errors.New("store.dsn: not a PostgreSQL connection string (not repeated here: it may hold a password)")
	}
	return audit.Postgres, fmt.Sprintf("postgres store %s@%s:%d/%s", pc.User, pc.Host, pc.Port, pc.Database), nil
}

// schemaBefore reads the schema without creating anything: a SQLite file
// that does not exist yet is an empty schema.
func schemaBefore(ctx context.Context, cfg *Config, dialect audit.Dialect) (schemaState, error) {
	driver := "pgx"
	if dialect == audit.SQLite {
		if _, err := os.Stat(cfg.Store.DSN); errors.Is(err, fs.ErrNotExist) {
			return schemaState{migrations: map[int]string{}}, nil
		}
		driver = "sqlite"
	}
	db, err := sql.Open(driver, cfg.Store.DSN)
	if err != nil {
		return schemaState{}, err
	}
	defer db.Close()
	return readSchema(ctx, db, dialect)
}

func readSchema(ctx context.Context, db *sql.DB, dialect audit.Dialect) (schemaState, error) {
	st := schemaState{migrations: map[int]string{}}
	exists := func(table string) (bool, error) {
		q := `SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?`
		if dialect == audit.Postgres {
			q = `SELECT to_regclass($1) IS NOT NULL`
		}
		var ok bool
		err := db.QueryRowContext(ctx, q, table).Scan(&ok)
		return ok, err
	}
	var err error
	auditTable := "audit_events"
	if dialect == audit.SQLite {
		auditTable = "audit_segments" // SQLite keeps events in segments
	}
	if st.auditTable, err = exists(auditTable); err != nil {
		return st, err
	}
	ok, err := exists("schema_migrations")
	if err != nil || !ok {
		return st, err
	}
	rows, err := db.QueryContext(ctx, `SELECT version, name FROM schema_migrations`)
	if err != nil {
		return st, err
	}
	defer rows.Close()
	for rows.Next() {
		var v int
		var name string
		if err := rows.Scan(&v, &name); err != nil {
			return st, err
		}
		st.migrations[v] = name
	}
	return st, rows.Err()
}

func printMigration(w io.Writer, where string, before, after schemaState) {
	fmt.Fprintf(w, "%s\n", where)
	versions := make([]int, 0, len(after.migrations))
	for v := range after.migrations {
		versions = append(versions, v)
	}
	sort.Ints(versions)
	changed := false
	for _, v := range versions {
		state := "already applied"
		if _, had := before.migrations[v]; !had {
			state, changed = "applied", true
		}
		fmt.Fprintf(w, "  migration %d (%s): %s\n", v, after.migrations[v], state)
	}
	state := "already present"
	if !before.auditTable {
		state, changed = "created", true
	}
	fmt.Fprintf(w, "  audit tables: %s\n", state)
	latest := 0
	if len(versions) > 0 {
		latest = versions[len(versions)-1]
	}
	if changed {
		fmt.Fprintf(w, "schema migrated to version %d\n", latest)
		return
	}
	fmt.Fprintf(w, "nothing to do: schema already at version %d\n", latest)
}

// oneLineError keeps the exit message on one line: pgx lists every address
// it tried on a line of its own.
type oneLineError struct{ err error }

func (e oneLineError) Error() string {
	var parts []string
	for _, line := range strings.Split(e.err.Error(), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			parts = append(parts, line)
		}
	}
	return strings.ReplaceAll(strings.Join(parts, "; "), ":; ", ": ")
}

func (e oneLineError) Unwrap() error { return e.err }
