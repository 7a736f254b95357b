package keystore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
)

// DefaultPostgresConnectTimeout bounds a new connection when neither the
// options nor the DSN's connect_timeout say otherwise: a store that does not
// answer must turn into ErrUnavailable (503), not a hung request.
const DefaultPostgresConnectTimeout = 5 * time.Second

// pgTxAttempts is how often a transaction that lost a deadlock or a
// serialisation race is run before the store reports ErrUnavailable.
const pgTxAttempts = 3

// PostgresOptions tune the connection pool. A zero field keeps the DSN's
// setting (pool_max_conns, pool_min_conns, pool_max_conn_lifetime,
// pool_max_conn_idle_time, pool_health_check_period, connect_timeout) or
// else pgxpool's default.
type PostgresOptions struct {
	// MaxConns bounds the pool (pgxpool's default: the greater of 4 and
	// the CPU count). Every replica holds up to this many connections.
	MaxConns int32
	// MinConns are kept open even when idle, so a burst after a quiet
	// spell does not pay for connection set-up.
	MinConns int32
	// MaxConnLifetime recycles connections (default 1h), so a failover
	// or a PgBouncer restart is followed within that time.
	MaxConnLifetime time.Duration
	// MaxConnIdleTime closes connections idle that long (default 30m).
	MaxConnIdleTime time.Duration
	// HealthCheckPeriod is how often idle connections are checked
	// (default 1m).
	HealthCheckPeriod time.Duration
	// ConnectTimeout bounds opening one connection (default
	// DefaultPostgresConnectTimeout).
	ConnectTimeout time.Duration
}

// Postgres is the Store of record for several replicas: one PostgreSQL
// database reached through a pgxpool. Concurrent creates for a team are
// serialised by a row lock on the team, so the active-key bound holds
// across replicas.
//
// Give keyproxy its own database or schema (search_path in the DSN): its
// tables are named teams, users, keys and schema_migrations. Times are
// timestamptz, kept to the microsecond. Behind PgBouncer in transaction
// mode add default_query_exec_mode=simple_protocol to the DSN.
type Postgres struct {
	pool   *pgxpool.Pool
	closed atomic.Bool

	dbOnce sync.Once
	db     *sql.DB
}

var _ Store = (*Postgres)(nil)

// OpenPostgres connects to the database named by dsn (a postgres:// URL or
// key=value string), checks that it answers and applies the migrations.
func OpenPostgres(ctx context.Context, dsn string, o PostgresOptions) (*Postgres, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's parse errors quote the DSN, password included.
		return nil, errors.New("keystore: postgres dsn cannot be parsed (check its syntax; it is not repeated here because it may hold a password)")
	}
	if o.MaxConns > 0 {
		cfg.MaxConns = o.MaxConns
	}
	if o.MinConns > 0 {
		cfg.MinConns = min(o.MinConns, cfg.MaxConns)
	}
	if o.MaxConnLifetime > 0 {
		cfg.MaxConnLifetime = o.MaxConnLifetime
	}
	if o.MaxConnIdleTime > 0 {
		cfg.MaxConnIdleTime = o.MaxConnIdleTime
	}
	if o.HealthCheckPeriod > 0 {
		cfg.HealthCheckPeriod = o.HealthCheckPeriod
	}
	switch {
	case o.ConnectTimeout > 0:
		cfg.ConnConfig.ConnectTimeout = o.ConnectTimeout
	case cfg.ConnConfig.ConnectTimeout == 0:
		cfg.ConnConfig.ConnectTimeout = DefaultPostgresConnectTimeout
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("keystore: opening postgres: %w", err)
	}
	p := &Postgres{pool: pool}
	if err := p.wrap("ping", pool.Ping(ctx)); err != nil { // before the schema exists
		pool.Close()
		return nil, fmt.Errorf("keystore: opening postgres %s@%s/%s: %w",
			cfg.ConnConfig.User, cfg.ConnConfig.Host, cfg.ConnConfig.Database, err)
	}
	if err := p.Migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("keystore: opening postgres: %w", err)
	}
	return p, nil
}

// Pool exposes the connection pool, for callers that speak pgx.
func (p *Postgres) Pool() *pgxpool.Pool { return p.pool }

// DB returns a database/sql view of the same pool, so the audit package
// can keep its own tables in this database without a second pool. The
// *sql.DB is made once; Close closes it.
func (p *Postgres) DB() *sql.DB {
	p.dbOnce.Do(func() { p.db = stdlib.OpenDBFromPool(p.pool) })
	return p.db
}

// Ping checks the database answers the query admission depends on: a
// lookup of a hash no key has, through the key index (a connection that
// opens says nothing of a table that cannot be read).
func (p *Postgres) Ping(ctx context.Context) error {
	if p.closed.Load() {
		return p.wrap("ping", errPostgresClosed)
	}
	rows, err := p.pool.Query(ctx, pgResolveQuery, make([]byte, len(Hash{})))
	if err != nil {
		return p.wrap("ping", err)
	}
	rows.Close()
	return p.wrap("ping", rows.Err())
}

// Close closes the pool, waiting for connections in use to come back;
// later calls fail with ErrUnavailable.
func (p *Postgres) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	var err error
	p.dbOnce.Do(func() {}) // no DB made after Close
	if p.db != nil {
		err = p.db.Close()
	}
	p.pool.Close()
	return err
}

var errPostgresClosed = errors.New("store closed")

// inTx runs fn in one read-committed transaction and retries it when
// PostgreSQL aborted it to break a deadlock or a serialisation conflict.
func (p *Postgres) inTx(ctx context.Context, op string, fn func(pgx.Tx) error) error {
	if p.closed.Load() {
		return p.wrap(op, errPostgresClosed)
	}
	var err error
	for range pgTxAttempts {
		err = pgx.BeginFunc(ctx, p.pool, fn)
		if !pgRetryable(err) || ctx.Err() != nil {
			break
		}
	}
	return p.wrap(op, err)
}

// pgRetryable reports aborts that running the same transaction again cures.
func pgRetryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

func pgUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// wrap passes the package's sentinel errors through and marks the failures
// a retry elsewhere or later could cure as ErrUnavailable: no connection,
// server shutting down or out of resources, timeouts, a closed pool.
func (p *Postgres) wrap(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrConflict), errors.Is(err, ErrKeyLimitReached),
		errors.Is(err, ErrTeamInactive), errors.Is(err, ErrUnavailable):
		return err
	case p.closed.Load(), pgUnavailable(err):
		return fmt.Errorf("keystore: postgres %s: %w: %w", op, ErrUnavailable, err)
	}
	return fmt.Errorf("keystore: postgres %s: %w", op, err)
}

func pgUnavailable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case strings.HasPrefix(pe.Code, "08"), // connection exception
			strings.HasPrefix(pe.Code, "53"), // insufficient resources
			strings.HasPrefix(pe.Code, "57"), // operator intervention: shutdown, cannot connect now
			strings.HasPrefix(pe.Code, "58"), // system error
			pe.Code == "40001", pe.Code == "40P01", pe.Code == "55P03":
			return true
		}
		return false
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	return errors.As(err, &ce) || errors.As(err, &ne) || pgconn.Timeout(err) || pgconn.SafeToRetry(err) ||
		errors.Is(err, context.DeadlineExceeded)
}

// pgTime normalises a time to what timestamptz keeps: UTC, microseconds.
// PostgreSQL rounds to the microsecond; truncating first means the value
// a write returns is the value a later read sees.
func pgTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

func pgNow(t time.Time) time.Time {
	if t.IsZero() {
		t = time.Now()
	}
	return pgTime(t)
}

func pgTimePtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := pgTime(*t)
	return &u
}

// pgUTC gives scanned times the UTC location; pgx returns them in Local.
func pgUTC(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

func pgHash(b []byte) (Hash, error) {
	var h Hash
	if len(b) != len(h) {
		return h, fmt.Errorf("keystore: stored hash has %d bytes", len(b))
	}
	copy(h[:], b)
	return h, nil
}

// pgHashes reads a one-column result of key hashes.
func pgHashes(ctx context.Context, q interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}, query string, args ...any) ([]Hash, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (Hash, error) {
		var b []byte
		if err := row.Scan(&b); err != nil {
			return Hash{}, err
		}
		return pgHash(b)
	})
}
