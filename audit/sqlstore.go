package audit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Dialect is the SQL flavour of the store's database.
type Dialect int

// Supported dialects.
const (
	SQLite   Dialect = iota + 1 // modernc.org/sqlite, driver "sqlite"
	Postgres                    // jackc/pgx/v5/stdlib, driver "pgx"
)

func (d Dialect) String() string {
	switch d {
	case SQLite:
		return "sqlite"
	case Postgres:
		return "postgres"
	}
	return "Dialect(" + strconv.Itoa(int(d)) + ")"
}

// StoreOptions tune a SQLStore. Zero values mean the defaults.
type StoreOptions struct {
	// Retention is how long events are kept (audit.retention); zero keeps
	// them forever.
	Retention time.Duration
	// PurgeInterval is how often Start's loop purges (default 1h).
	PurgeInterval time.Duration
	// Logger reports purges and purge failures. Default: none.
	Logger *zap.Logger
	// Now is the purge loop's clock (default time.Now).
	Now func() time.Time
}

// SQLStore keeps events in the audit_events table of the key store's
// database: a Sink (batched inserts, one transaction per batch) and the
// querier behind GET /admin/v1/audit.
type SQLStore struct {
	db      *sql.DB
	dialect Dialect
	o       StoreOptions
	log     *zap.Logger

	seg *segmentWriter // SQLite only

	mu   sync.Mutex
	stop context.CancelFunc // set while the purge loop runs
	wg   sync.WaitGroup
}

// Columns in the order of Event's fields; every statement uses this list.
const columns = "id, time, type, request_id, key_id, key_start, user_id, team_id, role, actor, method, path, status, duration_ms, client_ip, user_agent, outcome"

// purgeChunk rows per DELETE keep each PostgreSQL purge transaction short.
const purgeChunk = 5000

// pgMigrationLock serialises migrations of replicas starting together:
// concurrent CREATE ... IF NOT EXISTS can still collide in PostgreSQL.
const pgMigrationLock = 0x6b70_6175_6469_74 // "kpaudit"

var postgresSchema = []string{
	`CREATE TABLE IF NOT EXISTS audit_events (
		id          TEXT COLLATE "C" PRIMARY KEY, -- byte order, as in SQLite and the cursor
		time        TIMESTAMPTZ NOT NULL,
		type        TEXT NOT NULL,
		request_id  TEXT NOT NULL DEFAULT '',
		key_id      TEXT NOT NULL DEFAULT '',
		key_start   TEXT NOT NULL DEFAULT '',
		user_id     TEXT NOT NULL DEFAULT '',
		team_id     TEXT NOT NULL DEFAULT '',
		role        TEXT NOT NULL DEFAULT '',
		actor       TEXT NOT NULL DEFAULT '',
		method      TEXT NOT NULL DEFAULT '',
		path        TEXT NOT NULL DEFAULT '',
		status      INTEGER NOT NULL DEFAULT 0,
		duration_ms DOUBLE PRECISION NOT NULL DEFAULT 0,
		client_ip   TEXT NOT NULL DEFAULT '',
		user_agent  TEXT NOT NULL DEFAULT '',
		outcome     TEXT NOT NULL DEFAULT ''
	)`,
	`CREATE INDEX IF NOT EXISTS audit_events_time ON audit_events (time, id)`,
	`CREATE INDEX IF NOT EXISTS audit_events_team ON audit_events (team_id, time, id)`,
	`CREATE INDEX IF NOT EXISTS audit_events_key ON audit_events (key_id, time, id)`,
	`CREATE INDEX IF NOT EXISTS audit_events_user ON audit_events (user_id, time, id)`,
}

// pgInsert sends a whole batch as 17 arrays: one statement, no per-value
// parameters, no limit on rows. ON CONFLICT makes a retried batch
// idempotent when its first commit succeeded but the reply was lost.
const pgInsert = `INSERT INTO audit_events (` + columns + `)
SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[],
	$7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::int4[],
	$14::float8[], $15::text[], $16::text[], $17::text[])
ON CONFLICT (id) DO NOTHING`

// NewSQLStore creates the audit table and its indexes if missing. The
// store does not own db; closing the store leaves it open.
func NewSQLStore(db *sql.DB, dialect Dialect, o StoreOptions) (*SQLStore, error) {
	if db == nil {
		return nil, errors.New("audit: store: nil *sql.DB")
	}
	if dialect != SQLite && dialect != Postgres {
		return nil, fmt.Errorf("audit: store: unsupported dialect %v", dialect)
	}
	if o.PurgeInterval <= 0 {
		o.PurgeInterval = time.Hour
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &SQLStore{db: db, dialect: dialect, o: o, log: o.Logger}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.migrate(ctx); err != nil {
		return nil, err
	}
	if dialect == SQLite {
		s.seg = newSegmentWriter()
	}
	return s, nil
}

func (s *SQLStore) migrate(ctx context.Context) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("audit: store: migrating: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	schema := sqliteSegmentSchema
	if s.dialect == Postgres {
		schema = postgresSchema
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(pgMigrationLock)); err != nil {
			return fmt.Errorf("audit: store: migrating: %w", err)
		}
	}
	for _, stmt := range schema {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("audit: store: migrating: %w", err)
		}
	}
	if s.dialect == SQLite {
		if err := s.migrateRowsToSegments(ctx, tx); err != nil {
			return fmt.Errorf("audit: store: migrating: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("audit: store: migrating: %w", err)
	}
	return nil
}

// Name implements Sink.
func (s *SQLStore) Name() string { return "store" }

// Write implements Sink. PostgreSQL stores the batch in one statement,
// whole or not at all; SQLite in segments of up to segmentMaxEvents, each whole.
// Writing a batch again, as the pipeline does after an error, stores
// nothing twice in either.
func (s *SQLStore) Write(ctx context.Context, batch []Event) error {
	if len(batch) == 0 {
		return nil
	}
	var err error
	if s.dialect == Postgres {
		err = s.writePostgres(ctx, batch)
	} else {
		err = s.writeSegments(ctx, batch)
	}
	if err != nil {
		return fmt.Errorf("audit: store: writing %d events: %w", len(batch), err)
	}
	return nil
}

func (s *SQLStore) writePostgres(ctx context.Context, batch []Event) error {
	n := len(batch)
	var (
		ids, types, requestIDs, keyIDs, keyStarts, userIDs, teamIDs    = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		roles, actors, methods, paths, clientIPs, userAgents, outcomes = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		times                                                          = make([]time.Time, n)
		statuses                                                       = make([]int32, n)
		durations                                                      = make([]float64, n)
	)
	for i := range batch {
		e := &batch[i]
		ids[i], times[i], types[i], requestIDs[i], keyIDs[i], keyStarts[i] = e.ID, e.Time, e.Type, e.RequestID, e.KeyID, e.KeyStart
		userIDs[i], teamIDs[i], roles[i], actors[i], methods[i], paths[i] = e.UserID, e.TeamID, e.Role, e.Actor, e.Method, e.Path
		statuses[i], durations[i], clientIPs[i], userAgents[i], outcomes[i] = int32(e.Status), e.DurationMS, e.ClientIP, e.UserAgent, e.Outcome
	}
	// One statement is atomic on its own: no transaction needed.
	_, err := s.db.ExecContext(ctx, pgInsert, ids, times, types, requestIDs, keyIDs, keyStarts,
		userIDs, teamIDs, roles, actors, methods, paths, statuses, durations, clientIPs, userAgents, outcomes)
	return err
}

// Purge deletes the events older than before, in short transactions, and
// returns how many it deleted.
func (s *SQLStore) Purge(ctx context.Context, before time.Time) (int64, error) {
	if s.dialect == SQLite {
		n, err := s.purgeSegments(ctx, ceilMicro(before).UnixMicro())
		if err != nil {
			return n, fmt.Errorf("audit: store: purging: %w", err)
		}
		return n, nil
	}
	query := `DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events WHERE time < $1 LIMIT ` + strconv.Itoa(purgeChunk) + `)`
	var total int64
	for {
		res, err := s.db.ExecContext(ctx, query, before.UTC())
		if err != nil {
			return total, fmt.Errorf("audit: store: purging: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, fmt.Errorf("audit: store: purging: %w", err)
		}
		total += n
		if n < purgeChunk {
			return total, nil
		}
	}
}

// Start runs the retention purge in the background, once at once and then
// every PurgeInterval, until ctx ends or Close. Without a Retention it does
// nothing.
func (s *SQLStore) Start(ctx context.Context) {
	if s.o.Retention <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stop != nil {
		return
	}
	ctx, s.stop = context.WithCancel(ctx)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.purgeLoop(ctx)
	}()
}

func (s *SQLStore) purgeLoop(ctx context.Context) {
	t := time.NewTicker(s.o.PurgeInterval)
	defer t.Stop()
	for {
		before := s.o.Now().Add(-s.o.Retention)
		n, err := s.Purge(ctx, before)
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Warn("audit: purge failed", zap.Error(err))
		case n > 0:
			s.log.Info("audit: purged old events", zap.Int64("events", n), zap.Time("before", before))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Close stops the purge loop and waits for it; close the pipeline writing
// to the store first. It does not close the database.
func (s *SQLStore) Close() error {
	s.mu.Lock()
	if s.stop != nil {
		s.stop()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}
