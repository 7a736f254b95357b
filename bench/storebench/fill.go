// Package storebench fills a key store with many keys quickly, for the
// benchmarks that compare key resolution at 1 k and 1 M keys and measure
// what a cached key costs in memory.
//
// Fill writes the keystore schema's tables directly (teams, users, keys) in
// one transaction of multi-row INSERTs: creating a million keys through
// Store.CreateKey would take a transaction each.
package storebench

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/wevion/keyproxy/keystore"
)

// Dialect selects the placeholder style and time encoding of the store.
type Dialect int

const (
	SQLite   Dialect = iota + 1 // INTEGER Unix nanoseconds, ? placeholders
	Postgres                    // timestamptz, $n placeholders
)

// Key i belongs to user i/KeysPerUser, who belongs to team i/KeysPerTeam:
// ten keys per team, the product's limit of active keys.
const (
	KeysPerUser = 2
	KeysPerTeam = 10
)

// rowsPerInsert keeps a statement's parameters (at most 9 per row) far
// under SQLite's limit of 32766 and PostgreSQL's of 65535.
const rowsPerInsert = 500

// Hash is the stored hash of key i. The key text never matters to a
// lookup, so the benchmark names keys by index.
func Hash(i int) keystore.Hash { return keystore.HashKey("wev_storebench_" + strconv.Itoa(i)) }

// KeyID is the id of key i.
func KeyID(i int) string { return fmt.Sprintf("key_%020d", i) }

// UserID is the owner of key i.
func UserID(i int) string { return fmt.Sprintf("usr_%012d", i/KeysPerUser) }

// TeamID is the team of key i.
func TeamID(i int) string { return fmt.Sprintf("team_%09d", i/KeysPerTeam) }

// Fill inserts keys [from, to), their users and teams into db, whose schema
// the keystore has migrated. from must be a multiple of KeysPerTeam so
// that no team or user is inserted twice across calls.
func Fill(ctx context.Context, db *sql.DB, d Dialect, from, to int) error {
	if from%KeysPerTeam != 0 || to < from {
		return fmt.Errorf("storebench: Fill(%d, %d): from must be a multiple of %d and to ≥ from", from, to, KeysPerTeam)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("storebench: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	var now any = time.Now().UTC()
	if d == SQLite {
		now = time.Now().UnixNano()
	}
	teams := func(i int) []any { return []any{TeamID(i), true, now} }
	users := func(i int) []any { return []any{UserID(i), TeamID(i), "admin", true, now} }
	keys := func(i int) []any {
		h := Hash(i)
		return []any{KeyID(i), h[:], "wev_" + strconv.Itoa(i%10000), "bench", UserID(i), TeamID(i), now}
	}
	steps := []struct {
		table, cols string
		every       int
		row         func(int) []any
	}{
		{"teams", "id, active, updated_at", KeysPerTeam, teams},
		{"users", "id, team_id, role, active, updated_at", KeysPerUser, users},
		{"keys", "id, hash, start, name, user_id, team_id, created_at", 1, keys},
	}
	for _, s := range steps {
		if err := insertRows(ctx, tx, d, s.table, s.cols, from, to, s.every, s.row); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("storebench: commit: %w", err)
	}
	if d == SQLite {
		// Settle the file as a running store's is: the commit left every
		// page in the write-ahead log, where each read would look it up
		// (and pread it) until the next write restarts the log.
		if _, err := db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
			return fmt.Errorf("storebench: checkpoint: %w", err)
		}
	} else {
		// As autovacuum would: statistics and a visibility map.
		if _, err := db.ExecContext(ctx, `VACUUM ANALYZE teams, users, keys`); err != nil {
			return fmt.Errorf("storebench: vacuum: %w", err)
		}
	}
	return nil
}

// insertRows inserts row(i) for every i in [from, to) that is a multiple
// of every, rowsPerInsert rows per statement.
func insertRows(ctx context.Context, tx *sql.Tx, d Dialect, table, cols string, from, to, every int, row func(int) []any) error {
	ncols := strings.Count(cols, ",") + 1
	var (
		args []any
		n    int
	)
	flush := func() error {
		if n == 0 {
			return nil
		}
		if _, err := tx.ExecContext(ctx, insertSQL(d, table, cols, ncols, n), args...); err != nil {
			return fmt.Errorf("storebench: inserting %s: %w", table, err)
		}
		args, n = args[:0], 0
		return nil
	}
	for i := from; i < to; i++ {
		if i%every != 0 {
			continue
		}
		args = append(args, row(i)...)
		if n++; n == rowsPerInsert {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

func insertSQL(d Dialect, table, cols string, ncols, rows int) string {
	var b strings.Builder
	b.WriteString("INSERT INTO " + table + " (" + cols + ") VALUES ")
	p := 0
	for r := range rows {
		if r > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('(')
		for c := range ncols {
			if c > 0 {
				b.WriteByte(',')
			}
			p++
			if d == Postgres {
				b.WriteString("$" + strconv.Itoa(p))
			} else {
				b.WriteByte('?')
			}
		}
		b.WriteByte(')')
	}
	return b.String()
}
