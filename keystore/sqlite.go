package keystore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// DefaultSQLiteBusyTimeout is how long a write waits for another writer
// (this process or another) before the store reports ErrUnavailable.
const DefaultSQLiteBusyTimeout = 5 * time.Second

// MaxSQLiteMmapSize is the largest map SQLite makes (its compiled
// SQLITE_MAX_MMAP_SIZE, 2 GiB less 64 KiB); it quietly lowers a larger
// PRAGMA mmap_size to this, so OpenSQLiteWith refuses one instead.
const MaxSQLiteMmapSize = 0x7fff0000

// DefaultSQLiteMmapSize is keyproxy's store.mmap_bytes: as much as SQLite
// maps. A map only spans the file as it is, so a small file costs no
// more. Through pread(2), a key lookup in a store of 1 M keys (600 MB)
// took 1.3x to 1.5x as long as in one of 1 k, most of the difference
// the system calls that copy pages the 16 MiB page cache no longer
// holds; mapped, 1.1x to 1.2x.
const DefaultSQLiteMmapSize = MaxSQLiteMmapSize

// SQLitePageSize is the page size of a file OpenSQLite creates; a file
// created before keeps its own (SQLite cannot change it in WAL mode). A
// page of 16 KiB holds four times the index entries of SQLite's default
// 4 KiB, so a store of 1 M keys is 3 levels deep instead of 4, and a key
// lookup on a cache miss touches one cold page fewer: 1.18-1.22x the
// time of a store of 1 k keys against 1.27-1.30x (bench/storebench).
const SQLitePageSize = 16384

// SQLite is the embedded single-node Store: one database file in WAL mode.
type SQLite struct {
	db     *sql.DB
	closed atomic.Bool
	// resolve is prepared once: parsing and planning the join cost a
	// third of a cache miss when done per call.
	resolve *sql.Stmt
}

var _ Store = (*SQLite)(nil)

// SQLiteOptions tune OpenSQLiteWith. The zero value is OpenSQLite's.
type SQLiteOptions struct {
	// MmapSize is how many bytes of the file SQLite reads through a
	// shared memory map rather than with pread(2) into each connection's
	// page cache (PRAGMA mmap_size; 0 turns it off). SQLite's documented
	// cost: an I/O error while reading a mapped page is a SIGBUS, which
	// ends the process, where pread(2) would have returned an error.
	MmapSize int64
	// BusyTimeout is how long a write waits for another writer (default
	// DefaultSQLiteBusyTimeout).
	BusyTimeout time.Duration
}

// OpenSQLite opens (creating if needed) the database file at path and
// applies the schema migrations. It reads the file without a memory map,
// the cautious choice for a one-off command; keyproxy serve maps it
// (OpenSQLiteWith, store.mmap_bytes).
func OpenSQLite(ctx context.Context, path string) (*SQLite, error) {
	return OpenSQLiteWith(ctx, path, SQLiteOptions{})
}

// OpenSQLiteWith is OpenSQLite with options.
func OpenSQLiteWith(ctx context.Context, path string, o SQLiteOptions) (*SQLite, error) {
	if o.MmapSize < 0 || o.MmapSize > MaxSQLiteMmapSize {
		return nil, fmt.Errorf("keystore: sqlite mmap size %d is outside [0, %d]", o.MmapSize, MaxSQLiteMmapSize)
	}
	busyTimeout := o.BusyTimeout
	if busyTimeout <= 0 {
		busyTimeout = DefaultSQLiteBusyTimeout
	}
	// The driver reads parameters after the first '?', and SQLite's URI
	// parser gives meaning to '#' and ":memory:" (a private database per
	// pooled connection): refuse them rather than open the wrong file.
	if path == "" || strings.ContainsAny(path, "?#") || strings.HasPrefix(path, "file:") || path == ":memory:" {
		return nil, fmt.Errorf("keystore: sqlite path %q must be a plain file path", path)
	}
	// _txlock=immediate makes every transaction take the write lock at BEGIN:
	// CreateKey's count and insert are then serialised across connections and
	// processes, and a deferred read lock can never fail to upgrade.
	dsn := path + "?_txlock=immediate" +
		"&_busy_timeout=" + strconv.FormatInt(busyTimeout.Milliseconds(), 10) +
		"&_journal_mode=WAL&_synchronous=NORMAL&_foreign_keys=1" +
		// 16 MiB of page cache per connection (the default is 2 MiB): the key
		// tables and the audit segments' headers and id index stay in memory.
		"&_pragma=cache_size(-16384)" +
		// The driver runs _pragma before it switches to WAL, while a new
		// file can still take a page size.
		"&_pragma=page_size(" + strconv.Itoa(SQLitePageSize) + ")" +
		"&_pragma=mmap_size(" + strconv.FormatInt(o.MmapSize, 10) + ")"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("keystore: opening sqlite %s: %w", path, err)
	}
	// Writers queue in database/sql rather than spin in SQLite's busy
	// handler; readers still run concurrently under WAL.
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(8)
	s := &SQLite{db: db}
	if err := s.pingWhileBusy(ctx, busyTimeout); err != nil {
		db.Close()
		return nil, fmt.Errorf("keystore: opening sqlite %s: %w", path, err)
	}
	if err := s.Migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("keystore: opening sqlite %s: %w", path, err)
	}
	if s.resolve, err = db.PrepareContext(ctx, sqliteResolveQuery); err != nil {
		db.Close()
		return nil, fmt.Errorf("keystore: opening sqlite %s: %w", path, err)
	}
	return s, nil
}

// DB exposes the connection pool so another package (audit) can keep its
// own tables in the same file. Its transactions are immediate too.
func (s *SQLite) DB() *sql.DB { return s.db }

// PageSize is the file's page size: SQLitePageSize for a file this
// release created, SQLite's default 4096 for one created before.
func (s *SQLite) PageSize(ctx context.Context) (int, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `PRAGMA page_size`).Scan(&n); err != nil {
		return 0, s.wrap("page size", err)
	}
	return n, nil
}

// Ping checks the store answers the query admission depends on: a
// lookup of a hash no key has, through the key index. A bare SELECT 1
// would not read the file at all, so /readyz would stay ok while no key
// can be verified (the file unreadable, or not a database any more).
func (s *SQLite) Ping(ctx context.Context) error {
	if s.resolve == nil { // while opening: the schema may not exist yet
		return s.ping(ctx)
	}
	rows, err := s.resolve.QueryContext(ctx, make([]byte, len(Hash{})))
	if err != nil {
		return s.wrap("ping", err)
	}
	for rows.Next() {
	}
	return s.wrap("ping", errors.Join(rows.Err(), rows.Close()))
}

// ping checks a connection opens.
func (s *SQLite) ping(ctx context.Context) error {
	var one int
	if err := s.db.QueryRowContext(ctx, `SELECT 1`).Scan(&one); err != nil {
		return s.wrap("ping", err)
	}
	return nil
}

// pingWhileBusy pings until a connection opens, for up to timeout while
// SQLite answers busy. The first connections to a new file race to switch
// it to WAL, which takes an exclusive lock that SQLite refuses at once
// with SQLITE_BUSY rather than waiting in the busy handler: 4 stores
// opening one new file at once (each with its own pool, as processes
// would) failed this way 15 times in 300. The connection that lost is
// discarded, and the next ping opens another.
func (s *SQLite) pingWhileBusy(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := s.ping(ctx)
		if err == nil || !isBusy(err) || time.Now().After(deadline) {
			return err
		}
		t := time.NewTimer(10 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

func isBusy(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_BUSY
}

// Close closes the pool; later calls fail with ErrUnavailable.
func (s *SQLite) Close() error {
	s.closed.Store(true)
	s.resolve.Close()
	return s.db.Close()
}

// TouchKeys records last use times in one transaction; an earlier time
// never overwrites a later one, and unknown ids are ignored.
func (s *SQLite) TouchKeys(ctx context.Context, used map[string]time.Time) error {
	if len(used) == 0 {
		return nil
	}
	return s.inTx(ctx, "touch keys", func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, `UPDATE keys SET last_used_at = ?1
			WHERE id = ?2 AND (last_used_at IS NULL OR last_used_at < ?1)`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for id, at := range used {
			if _, err := stmt.ExecContext(ctx, nanos(at), id); err != nil {
				return err
			}
		}
		return nil
	})
}

// CountActiveKeys counts unrevoked, unexpired keys across all teams.
func (s *SQLite) CountActiveKeys(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM keys
		WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)`,
		time.Now().UnixNano()).Scan(&n)
	if err != nil {
		return 0, s.wrap("count active keys", err)
	}
	return n, nil
}

// inTx runs fn in one immediate transaction and maps its error.
func (s *SQLite) inTx(ctx context.Context, op string, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return s.wrap(op, err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return s.wrap(op, err)
	}
	if err := tx.Commit(); err != nil {
		return s.wrap(op, err)
	}
	return nil
}

// wrap passes the package's sentinel errors through and marks the failures
// a retry elsewhere or later could cure as ErrUnavailable.
func (s *SQLite) wrap(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrConflict), errors.Is(err, ErrKeyLimitReached),
		errors.Is(err, ErrTeamInactive), errors.Is(err, ErrUnavailable):
		return err
	case s.closed.Load(), errors.Is(err, driver.ErrBadConn), errors.Is(err, sql.ErrConnDone):
		return fmt.Errorf("keystore: sqlite %s: %w: %w", op, ErrUnavailable, err)
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN,
			sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_PROTOCOL:
			return fmt.Errorf("keystore: sqlite %s: %w: %w", op, ErrUnavailable, err)
		}
	}
	return fmt.Errorf("keystore: sqlite %s: %w", op, err)
}

func isUniqueViolation(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) &&
		(se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY)
}

// ensureTeam creates a team the store has never seen, active: a team
// exists in Wevion before anyone can act for it.
func ensureTeam(ctx context.Context, tx *sql.Tx, id string, now time.Time) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO teams (id, active, updated_at) VALUES (?, 1, ?)
		ON CONFLICT (id) DO NOTHING`, id, nanos(now))
	return err
}

func queryHashes(ctx context.Context, tx *sql.Tx, query string, arg string) ([]Hash, error) {
	rows, err := tx.QueryContext(ctx, query, arg)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var hashes []Hash
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			return nil, err
		}
		h, err := hashFromBytes(b)
		if err != nil {
			return nil, err
		}
		hashes = append(hashes, h)
	}
	return hashes, rows.Err()
}

func hashFromBytes(b []byte) (Hash, error) {
	var h Hash
	if len(b) != len(h) {
		return h, fmt.Errorf("keystore: stored hash has %d bytes", len(b))
	}
	copy(h[:], b)
	return h, nil
}

// stamp defaults a caller's time to now and normalises it to UTC.
func stamp(t time.Time) time.Time {
	if t.IsZero() {
		t = time.Now()
	}
	return t.UTC()
}

func nanos(t time.Time) int64 { return t.UnixNano() }

func nullNanos(t *time.Time) sql.NullInt64 {
	if t == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixNano(), Valid: true}
}

func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

func fromNullNanos(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := fromNanos(n.Int64)
	return &t
}
