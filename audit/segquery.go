package audit

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
)

// headerPage segment headers are read per query round trip.
const headerPage = 256

type segmentHeader struct {
	seq, minTime, maxTime, runMax int64
}

type refFilter struct {
	kind  int
	value string
}

// querySegments is Query on SQLite: segments newest first, filtered and
// merged in Go. Segments overlap in time a little (batches are not
// strictly ordered), so it keeps reading until run_max, the latest time
// any older segment can hold, falls below the page it has.
func (s *SQLStore) querySegments(ctx context.Context, q Query, limit int, after *cursor) (Page, error) {
	lo, top := int64(math.MinInt64), int64(math.MaxInt64) // both inclusive
	if !q.Since.IsZero() {
		lo = ceilMicro(q.Since).UnixMicro()
	}
	if !q.Until.IsZero() {
		top = ceilMicro(q.Until).UnixMicro() - 1
	}
	if after != nil {
		top = min(top, after.time.UnixMicro())
	}
	var filters []refFilter
	for _, f := range []refFilter{{refTeamID, q.TeamID}, {refKeyID, q.KeyID}, {refUserID, q.UserID}} {
		if f.value != "" {
			filters = append(filters, f)
		}
	}
	page := Page{Events: []Event{}}
	if top < lo {
		return page, nil
	}
	m := merger{limit: limit, lo: lo, top: top, after: after, filters: filters}

	err := s.scanHeaders(ctx, filters, func(h segmentHeader) (bool, error) {
		if h.runMax < lo || m.full() && h.runMax < m.threshold() {
			return false, nil
		}
		if h.maxTime < lo || h.minTime > top || m.full() && h.maxTime < m.threshold() {
			return true, nil
		}
		var data []byte
		err := s.db.QueryRowContext(ctx, `SELECT data FROM audit_segment_data WHERE seq = ?`, h.seq).Scan(&data)
		if errors.Is(err, sql.ErrNoRows) {
			return true, nil // purged since the header was read
		}
		if err != nil {
			return false, err
		}
		if err := m.add(data); err != nil {
			return false, fmt.Errorf("segment %d: %w", h.seq, err)
		}
		return true, nil
	})
	if err != nil {
		return Page{}, fmt.Errorf("audit: store: querying: %w", err)
	}
	m.trim()
	if len(m.out) > 0 {
		page.Events = m.out
	}
	if len(m.out) > limit {
		page.Events = m.out[:limit]
		last := page.Events[limit-1]
		next := encodeCursor(last.Time, last.ID)
		page.NextCursor = &next
	}
	return page, nil
}

// scanHeaders calls fn with segment headers, newest first, while it
// returns true. With filters it reads only the buckets where every
// filtered id appears.
func (s *SQLStore) scanHeaders(ctx context.Context, filters []refFilter, fn func(segmentHeader) (bool, error)) error {
	if len(filters) == 0 {
		before := int64(math.MaxInt64)
		for {
			hs, err := s.headers(ctx, `WHERE seq < ?`, before)
			if err != nil || len(hs) == 0 {
				return err
			}
			for _, h := range hs {
				if goOn, err := fn(h); err != nil || !goOn {
					return err
				}
			}
			before = hs[len(hs)-1].seq
		}
	}
	buckets, err := s.buckets(ctx, filters)
	if err != nil {
		return err
	}
	for _, b := range buckets {
		hs, err := s.headers(ctx, `WHERE seq >= ? AND seq < ?`, b*refBucketSegments, (b+1)*refBucketSegments)
		if err != nil {
			return err
		}
		for _, h := range hs {
			if goOn, err := fn(h); err != nil || !goOn {
				return err
			}
		}
	}
	return nil
}

func (s *SQLStore) headers(ctx context.Context, where string, args ...any) ([]segmentHeader, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT seq, min_time, max_time, run_max FROM audit_segments `+where+
		` ORDER BY seq DESC LIMIT `+fmt.Sprint(headerPage), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var hs []segmentHeader
	for rows.Next() {
		var h segmentHeader
		if err := rows.Scan(&h.seq, &h.minTime, &h.maxTime, &h.runMax); err != nil {
			return nil, err
		}
		hs = append(hs, h)
	}
	return hs, rows.Err()
}

// buckets returns, newest first, the buckets holding every filter's id.
func (s *SQLStore) buckets(ctx context.Context, filters []refFilter) ([]int64, error) {
	var out []int64
	for i, f := range filters {
		prev := make(map[int64]bool, len(out))
		for _, b := range out {
			prev[b] = true
		}
		rows, err := s.db.QueryContext(ctx, `SELECT bucket FROM audit_refs WHERE kind = ? AND value = ? ORDER BY bucket DESC`, f.kind, f.value)
		if err != nil {
			return nil, err
		}
		var bs []int64
		for rows.Next() {
			var b int64
			if err := rows.Scan(&b); err != nil {
				rows.Close()
				return nil, err
			}
			if i == 0 || prev[b] {
				bs = append(bs, b)
			}
		}
		if err := rows.Close(); err != nil {
			return nil, err
		}
		out = bs
		if len(out) == 0 {
			return nil, nil
		}
	}
	return out, nil
}

// merger keeps the newest limit+1 matching events seen so far.
type merger struct {
	limit   int
	lo, top int64
	after   *cursor
	filters []refFilter
	out     []Event
	sorted  bool
}

func (m *merger) full() bool {
	if len(m.out) > m.limit && !m.sorted {
		m.trim()
	}
	return len(m.out) > m.limit
}

// threshold is the time of the last event the page can hold; call after full.
func (m *merger) threshold() int64 { return m.out[m.limit].Time.UnixMicro() }

func (m *merger) add(data []byte) error {
	r, err := readSegment(data)
	if err != nil {
		return err
	}
	var want [numRefs]uint64
	check := make([]int, 0, len(m.filters))
	for _, f := range m.filters {
		i := r.lookup(f.value)
		if i < 0 {
			return nil // no event of this segment has it
		}
		want[f.kind] = uint64(i)
		check = append(check, f.kind)
	}
	at := int64(math.MinInt64)
	if m.after != nil {
		at = m.after.time.UnixMicro()
	}
	found, err := r.events(func(ev *rawEvent) bool {
		if ev.micros < m.lo || ev.micros > m.top || m.after != nil && ev.micros == at && string(ev.id) >= m.after.id {
			return false
		}
		for _, k := range check {
			if ev.refs[k] != want[k] {
				return false
			}
		}
		return true
	})
	if len(found) > 0 {
		m.out = append(m.out, found...)
		m.sorted = false
	}
	return err
}

// trim sorts newest first by (time, id), drops copies of an event written
// twice, and keeps limit+1.
func (m *merger) trim() {
	slices.SortFunc(m.out, func(a, b Event) int {
		if c := b.Time.Compare(a.Time); c != 0 {
			return c
		}
		return cmp.Compare(b.ID, a.ID)
	})
	m.out = slices.CompactFunc(m.out, func(a, b Event) bool { return a.ID == b.ID && a.Time.Equal(b.Time) })
	if len(m.out) > m.limit+1 {
		clear(m.out[m.limit+1:])
		m.out = m.out[:m.limit+1]
	}
	m.sorted = true
}
