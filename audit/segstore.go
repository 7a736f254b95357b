package audit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"

	"github.com/wevion/keyproxy/internal/pace"
)

// SQLite keeps events in segments (segcodec.go): one row per written chunk
// of up to segmentMaxEvents, so an insert costs a blob instead of six
// B-trees per event. Three
// tables:
//
//   - audit_segments: one small row per segment, for the scans: its time
//     range and run_max, the largest max_time of it and of every earlier
//     segment. run_max only grows with seq, so a scan newest-first stops as
//     soon as run_max falls below what it still needs.
//   - audit_segment_data: the blobs, apart, so scans of headers stay small.
//   - audit_refs: which team, key and user ids appear in each bucket of
//     refBucketSegments consecutive segments. A filtered query reads only
//     those buckets. One row per id and bucket (not per event) keeps the
//     index out of the insert cost: within a bucket an id is written once.
var sqliteSegmentSchema = []string{
	`CREATE TABLE IF NOT EXISTS audit_segments (
		seq      INTEGER PRIMARY KEY AUTOINCREMENT,
		min_time INTEGER NOT NULL, -- Unix microseconds, UTC
		max_time INTEGER NOT NULL,
		run_max  INTEGER NOT NULL,
		events   INTEGER NOT NULL,
		first_id TEXT NOT NULL,
		last_id  TEXT NOT NULL
	)`,
	`CREATE INDEX IF NOT EXISTS audit_segments_min_time ON audit_segments (min_time)`,
	`CREATE TABLE IF NOT EXISTS audit_segment_data (
		seq  INTEGER PRIMARY KEY,
		data BLOB NOT NULL
	)`,
	`CREATE TABLE IF NOT EXISTS audit_refs (
		kind   INTEGER NOT NULL, -- refTeamID, refKeyID or refUserID
		value  TEXT NOT NULL,
		bucket INTEGER NOT NULL, -- seq / refBucketSegments
		PRIMARY KEY (kind, value, bucket)
	) WITHOUT ROWID`,
}

// refBucketSegments segments share one audit_refs bucket: under load a
// segment holds up to 1024 events, so a bucket is up to 262 k events and
// the refs cost well under one row per segment.
const refBucketSegments = 256

// refKinds are the fields GET /admin/v1/audit filters on.
var refKinds = [...]int{refTeamID, refKeyID, refUserID}

// segmentMaxEvents bounds a segment, and so one write transaction, to a
// couple of milliseconds of CPU: with GOMAXPROCS=1 the writer holds the
// only core while it runs, and requests wait behind it.
const segmentMaxEvents = 1024

// retryWindow segments are checked for a chunk written again: the pipeline
// retries a failed write at once, so a stored copy is recent.
const retryWindow = 16

type refKey struct {
	kind   int
	value  string
	bucket int64
}

// segmentWriter is the SQLite half of SQLStore.Write.
type segmentWriter struct {
	mu     sync.Mutex // one batch at a time: the encoder and seen are reused
	enc    *segmentEncoder
	bucket int64
	seen   [numRefs]map[string]struct{} // by kind: ids whose refs in bucket are committed
	// unchecked is how many bytes of segments were committed since the
	// writer's last checkpoint.
	unchecked int
}

// checkpointBytes of segments committed make the writer checkpoint the
// WAL itself. Left to SQLite, the checkpoint runs inside the commit that
// takes the WAL past 1000 pages, and copies all of them in one call: in a
// runtime trace at half load that held the only P (GOMAXPROCS=1) for
// 4-9 ms every 4 s, far beyond any pause the writer can make inside a
// call. A checkpoint every 256 KiB copies about three batches' pages, after
// a pause. SQLite's own checkpoint stays as the backstop. Each checkpoint
// costs three fsyncs (synchronous=NORMAL: the WAL's and the file's, then
// the WAL header's when the next commit starts the WAL over), 0.3-2 ms
// each under load on the benchmark VM's disk (strace -T), and a blocked
// call keeps the only P: the runtime's monitor, asleep for up to 10 ms,
// rarely takes it back in time. So checkpoints are not made smaller still:
// every 64 KiB, the CPU of BenchmarkSQLStoreWrite's process (user+sys,
// 1000 batches) rose by half; every 256 KiB, by an eighth.
const checkpointBytes = 256 << 10

func newSegmentWriter() *segmentWriter {
	w := &segmentWriter{enc: newSegmentEncoder()}
	for _, k := range refKinds {
		w.seen[k] = make(map[string]struct{})
	}
	return w
}

// writeSegments stores batch in segments of up to segmentMaxEvents, one
// transaction each, yielding between them, and checkpoints the WAL every
// checkpointBytes. A batch that fails halfway is whole after its retry:
// the chunks already stored are recognised (appendSegment) and skipped.
func (s *SQLStore) writeSegments(ctx context.Context, batch []Event) error {
	w := s.seg
	w.mu.Lock()
	defer w.mu.Unlock()
	y := pace.New()
	for len(batch) > 0 {
		chunk := batch[:min(len(batch), segmentMaxEvents)]
		batch = batch[len(chunk):]
		if err := s.writeSegment(ctx, chunk, &y); err != nil {
			return err
		}
		y.PauseIfDue()
		if w.unchecked >= checkpointBytes {
			// PASSIVE never waits for readers: what they still use is
			// copied by a later checkpoint. A failure loses nothing (the
			// WAL keeps the pages) and SQLite's own checkpoint still runs.
			if _, err := s.db.ExecContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`); err == nil {
				w.unchecked = 0
			}
			y.PauseIfDue()
		}
	}
	return nil
}

// writeSegment encodes batch, pacing itself, before its transaction
// begins: the write lock is then held only for the inserts.
func (s *SQLStore) writeSegment(ctx context.Context, batch []Event, y *pace.Pacer) error {
	w := s.seg
	data := w.enc.encode(batch, y)
	y.PauseIfDue()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	seq, err := appendSegment(ctx, tx, data, batch, true, y)
	if err != nil || seq == 0 {
		return err
	}
	bucket := seq / refBucketSegments
	if bucket != w.bucket {
		for _, k := range refKinds {
			clear(w.seen[k])
		}
		w.bucket = bucket
	}
	// Another process writing the same file only makes some of these
	// inserts redundant, never missing: each writes the refs it has not.
	var fresh []refKey
	w.enc.refs(func(kind int, v string) {
		if _, ok := w.seen[kind][v]; !ok {
			w.seen[kind][v] = struct{}{}
			fresh = append(fresh, refKey{kind, v, bucket})
		}
	})
	y.PauseIfDue()
	err = insertRefs(ctx, tx, fresh, y)
	if err == nil {
		y.PauseIfDue()
		err = tx.Commit()
	}
	if err == nil {
		w.unchecked += len(data)
	}
	if err != nil {
		for _, k := range fresh { // not stored: the next batch writes them
			delete(w.seen[k.kind], k.value)
		}
	}
	return err
}

// appendSegment stores batch, encoded as data, as the newest segment and
// returns its seq.
// With retry, it first looks for batch among the newest segments (the
// pipeline writing again a batch some or all of whose chunks did commit)
// and returns 0 when it is there.
// y, when not nil, may pause between the statements. Run back to back,
// a segment's statements and commit held the only P (GOMAXPROCS=1) for
// 1.0–1.6 ms in a runtime trace at half load, ten times a second at 10 k
// requests/s, and every request that arrived meanwhile waited that long.
// A pause holds the write lock longer, which delays only other writers.
func appendSegment(ctx context.Context, tx *sql.Tx, data []byte, batch []Event, retry bool, y *pace.Pacer) (int64, error) {
	minT, maxT := int64(math.MaxInt64), int64(math.MinInt64)
	for i := range batch {
		t := batch[i].Time.UnixMicro()
		minT, maxT = min(minT, t), max(maxT, t)
	}
	first, last := batch[0].ID, batch[len(batch)-1].ID

	runMax, window := maxT, 1
	if retry {
		window = retryWindow
	}
	rows, err := tx.QueryContext(ctx, `SELECT run_max, events, first_id, last_id, min_time, max_time
		FROM audit_segments ORDER BY seq DESC LIMIT `+strconv.Itoa(window))
	if err != nil {
		return 0, err
	}
	for i := 0; rows.Next(); i++ {
		var (
			rm, n, lo, hi int64
			f, l          string
		)
		if err := rows.Scan(&rm, &n, &f, &l, &lo, &hi); err != nil {
			rows.Close()
			return 0, err
		}
		if i == 0 {
			runMax = max(runMax, rm)
		}
		if retry && n == int64(len(batch)) && f == first && l == last && lo == minT && hi == maxT {
			rows.Close()
			return 0, nil
		}
	}
	if err := rows.Close(); err != nil {
		return 0, err
	}
	y.PauseIfDue()
	res, err := tx.ExecContext(ctx, `INSERT INTO audit_segments (min_time, max_time, run_max, events, first_id, last_id)
		VALUES (?, ?, ?, ?, ?, ?)`, minT, maxT, runMax, len(batch), first, last)
	if err != nil {
		return 0, err
	}
	seq, err := res.LastInsertId()
	if err != nil {
		return 0, err
	}
	y.PauseIfDue()
	if _, err := tx.ExecContext(ctx, `INSERT INTO audit_segment_data (seq, data) VALUES (?, ?)`, seq, data); err != nil {
		return 0, err
	}
	return seq, nil
}

func insertRefs(ctx context.Context, tx *sql.Tx, refs []refKey, y *pace.Pacer) error {
	const chunk = 300 // 3 parameters each, well under SQLite's limit
	args := make([]any, 0, 3*min(len(refs), chunk))
	for first := true; len(refs) > 0; first = false {
		if !first {
			y.PauseIfDue()
		}
		c := refs[:min(len(refs), chunk)]
		refs = refs[len(c):]
		args = args[:0]
		q := make([]byte, 0, 64+8*len(c))
		q = append(q, "INSERT OR IGNORE INTO audit_refs (kind, value, bucket) VALUES "...)
		for i, r := range c {
			if i > 0 {
				q = append(q, ',')
			}
			q = append(q, "(?,?,?)"...)
			args = append(args, r.kind, r.value, r.bucket)
		}
		if _, err := tx.ExecContext(ctx, string(q), args...); err != nil {
			return err
		}
	}
	return nil
}

// purgeSegments deletes the events before cutoff (Unix µs): segments
// wholly older go at once; a segment straddling the cutoff is written
// again with its recent events only.
func (s *SQLStore) purgeSegments(ctx context.Context, cutoff int64) (int64, error) {
	var total int64
	for {
		n, more, err := s.purgeSegmentChunk(ctx, cutoff)
		total += n
		if err != nil || !more {
			return total, err
		}
	}
}

func (s *SQLStore) purgeSegmentChunk(ctx context.Context, cutoff int64) (deleted int64, more bool, err error) {
	const chunk = 100 // segments per transaction: short write locks
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, false, err
	}
	defer func() { _ = tx.Rollback() }()
	rows, err := tx.QueryContext(ctx, `SELECT s.seq, s.max_time, s.events, d.data FROM audit_segments s
		JOIN audit_segment_data d ON d.seq = s.seq WHERE s.min_time < ? ORDER BY s.min_time LIMIT ?`, cutoff, chunk)
	if err != nil {
		return 0, false, err
	}
	type keep struct {
		seq    int64
		events []Event
	}
	var (
		drop    []int64
		rewrite []keep
		n       int
	)
	for rows.Next() {
		n++
		var (
			seq, maxT, events int64
			data              []byte
		)
		if err := rows.Scan(&seq, &maxT, &events, &data); err != nil {
			rows.Close()
			return 0, false, err
		}
		if maxT < cutoff {
			drop = append(drop, seq)
			deleted += events
			continue
		}
		kept, err := eventsSince(data, cutoff)
		if err != nil {
			rows.Close()
			return 0, false, fmt.Errorf("segment %d: %w", seq, err)
		}
		deleted += events - int64(len(kept))
		rewrite = append(rewrite, keep{seq, kept})
	}
	if err := rows.Close(); err != nil {
		return 0, false, err
	}
	for _, seq := range drop {
		if _, err := tx.ExecContext(ctx, `DELETE FROM audit_segments WHERE seq = ?`, seq); err != nil {
			return 0, false, err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM audit_segment_data WHERE seq = ?`, seq); err != nil {
			return 0, false, err
		}
	}
	enc := newSegmentEncoder()
	for _, k := range rewrite {
		minT, maxT := int64(math.MaxInt64), int64(math.MinInt64)
		for i := range k.events {
			t := k.events[i].Time.UnixMicro()
			minT, maxT = min(minT, t), max(maxT, t)
		}
		// run_max stays: an upper bound that is too high only makes a scan go on.
		if _, err := tx.ExecContext(ctx, `UPDATE audit_segments SET min_time = ?, max_time = ?, events = ?, first_id = ?, last_id = ? WHERE seq = ?`,
			minT, maxT, len(k.events), k.events[0].ID, k.events[len(k.events)-1].ID, k.seq); err != nil {
			return 0, false, err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE audit_segment_data SET data = ? WHERE seq = ?`, enc.encode(k.events, nil), k.seq); err != nil {
			return 0, false, err
		}
	}
	// Refs of buckets before the oldest remaining segment point at nothing.
	if _, err := tx.ExecContext(ctx, `DELETE FROM audit_refs WHERE bucket < COALESCE(
		(SELECT min(seq) FROM audit_segments), (SELECT seq + 1 FROM sqlite_sequence WHERE name = 'audit_segments'), 0) / ?`, refBucketSegments); err != nil {
		return 0, false, err
	}
	if err := tx.Commit(); err != nil {
		return 0, false, err
	}
	return deleted, n == chunk, nil
}

// eventsSince decodes a segment and keeps its events at or after cutoff;
// a segment straddles the cutoff, so at least one is kept.
func eventsSince(data []byte, cutoff int64) ([]Event, error) {
	r, err := readSegment(data)
	if err != nil {
		return nil, err
	}
	out, err := r.events(func(ev *rawEvent) bool { return ev.micros >= cutoff })
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("no event after its max_time")
	}
	return out, nil
}
