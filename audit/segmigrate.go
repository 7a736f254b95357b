package audit

import (
	"context"
	"database/sql"
	"math"
)

// migrateRowsToSegments moves the events of a database written before
// segments (one audit_events row per event) into segments, oldest first,
// then drops the old table, inside the migration's transaction: a crash
// leaves the old table whole.
func (s *SQLStore) migrateRowsToSegments(ctx context.Context, tx *sql.Tx) error {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'audit_events'`).Scan(&n); err != nil || n == 0 {
		return err
	}
	enc := newSegmentEncoder()
	lastT, lastID := int64(math.MinInt64), ""
	for {
		rows, err := tx.QueryContext(ctx, `SELECT `+columns+` FROM audit_events WHERE (time, id) > (?, ?)
			ORDER BY time, id LIMIT 4096`, lastT, lastID)
		if err != nil {
			return err
		}
		var batch []Event
		for rows.Next() {
			e, err := s.scan(rows)
			if err != nil {
				rows.Close()
				return err
			}
			batch = append(batch, e)
		}
		if err := rows.Close(); err != nil {
			return err
		}
		if len(batch) == 0 {
			break
		}
		last := batch[len(batch)-1]
		lastT, lastID = last.Time.UnixMicro(), last.ID
		seq, err := appendSegment(ctx, tx, enc.encode(batch, nil), batch, false, nil)
		if err != nil {
			return err
		}
		if seq == 0 {
			continue
		}
		var refs []refKey
		enc.refs(func(kind int, v string) { refs = append(refs, refKey{kind, v, seq / refBucketSegments}) })
		if err := insertRefs(ctx, tx, refs, nil); err != nil {
			return err
		}
	}
	_, err := tx.ExecContext(ctx, `DROP TABLE audit_events`)
	return err
}
