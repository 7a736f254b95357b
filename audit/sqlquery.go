package audit

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// ErrInvalidQuery reports a query the caller must fix (a 400, not a 500):
// a malformed cursor, a limit out of range, since after until.
var ErrInvalidQuery = errors.New("audit: invalid query")

// DefaultQueryLimit is the page size when Query.Limit is zero.
const DefaultQueryLimit = 100

// maxCursorID bounds the id inside a cursor; ours are 30 bytes.
const maxCursorID = 128

// Bounds of a timestamp both databases and RFC 3339 can hold.
var (
	minQueryTime = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	maxQueryTime = time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC)
)

// Query returns one page of events, newest first by (time, id). The
// cursor of a page resumes strictly after its last event, so pages never
// overlap or skip, even when events share a timestamp or new ones arrive.
func (s *SQLStore) Query(ctx context.Context, q Query) (Page, error) {
	limit, after, err := q.validate()
	if err != nil {
		return Page{}, err
	}
	if s.dialect == SQLite {
		return s.querySegments(ctx, q, limit, after)
	}
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		if s.dialect == Postgres {
			return "$" + strconv.Itoa(len(args))
		}
		return "?"
	}
	for _, f := range []struct{ col, v string }{{"team_id", q.TeamID}, {"key_id", q.KeyID}, {"user_id", q.UserID}} {
		if f.v != "" {
			where = append(where, f.col+" = "+arg(f.v))
		}
	}
	// Times are stored to the microsecond; rounding the bounds up keeps
	// since inclusive and until exclusive exactly as given.
	if !q.Since.IsZero() {
		where = append(where, "time >= "+arg(s.timeArg(ceilMicro(q.Since))))
	}
	if !q.Until.IsZero() {
		where = append(where, "time < "+arg(s.timeArg(ceilMicro(q.Until))))
	}
	if after != nil {
		where = append(where, "(time, id) < ("+arg(s.timeArg(after.time))+", "+arg(after.id)+")")
	}
	query := "SELECT " + columns + " FROM audit_events"
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	// One row more than asked tells whether another page exists.
	query += " ORDER BY time DESC, id DESC LIMIT " + arg(limit+1)

	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return Page{}, fmt.Errorf("audit: store: querying: %w", err)
	}
	defer rows.Close()
	events := make([]Event, 0, min(limit+1, 128))
	for rows.Next() {
		e, err := s.scan(rows)
		if err != nil {
			return Page{}, fmt.Errorf("audit: store: querying: %w", err)
		}
		events = append(events, e)
	}
	if err := rows.Err(); err != nil {
		return Page{}, fmt.Errorf("audit: store: querying: %w", err)
	}
	page := Page{Events: events}
	if len(events) > limit {
		page.Events = events[:limit]
		last := page.Events[limit-1]
		next := encodeCursor(last.Time, last.ID)
		page.NextCursor = &next
	}
	return page, nil
}

func (s *SQLStore) timeArg(t time.Time) any {
	if s.dialect == SQLite {
		return t.UnixMicro()
	}
	return t
}

func (s *SQLStore) scan(rows *sql.Rows) (Event, error) {
	var e Event
	dest := []any{&e.ID, nil, &e.Type, &e.RequestID, &e.KeyID, &e.KeyStart, &e.UserID, &e.TeamID,
		&e.Role, &e.Actor, &e.Method, &e.Path, &e.Status, &e.DurationMS, &e.ClientIP, &e.UserAgent, &e.Outcome}
	var micros int64
	if s.dialect == SQLite {
		dest[1] = &micros
	} else {
		dest[1] = &e.Time
	}
	if err := rows.Scan(dest...); err != nil {
		return Event{}, err
	}
	if s.dialect == SQLite {
		e.Time = time.UnixMicro(micros)
	}
	e.Time = e.Time.UTC()
	return e, nil
}

type cursor struct {
	time time.Time
	id   string
}

// validate checks q and returns its effective limit and decoded cursor.
func (q Query) validate() (int, *cursor, error) {
	limit := q.Limit
	switch {
	case limit == 0:
		limit = DefaultQueryLimit
	case limit < 0 || limit > MaxQueryLimit:
		return 0, nil, fmt.Errorf("%w: limit must be 1-%d, got %d", ErrInvalidQuery, MaxQueryLimit, q.Limit)
	}
	for _, v := range []string{q.TeamID, q.KeyID, q.UserID} {
		if len(v) > maxFieldLen || !utf8.ValidString(v) || strings.IndexByte(v, 0) >= 0 {
			return 0, nil, fmt.Errorf("%w: filters must be valid UTF-8 of at most %d bytes", ErrInvalidQuery, maxFieldLen)
		}
	}
	for _, t := range []time.Time{q.Since, q.Until} {
		if !t.IsZero() && (t.Before(minQueryTime) || t.After(maxQueryTime)) {
			return 0, nil, fmt.Errorf("%w: time out of range", ErrInvalidQuery)
		}
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && q.Until.Before(q.Since) {
		return 0, nil, fmt.Errorf("%w: until is before since", ErrInvalidQuery)
	}
	if q.Cursor == "" {
		return limit, nil, nil
	}
	c, err := decodeCursor(q.Cursor)
	if err != nil {
		return 0, nil, err
	}
	return limit, &c, nil
}

// encodeCursor is opaque to clients: base64url of the last event's time
// (Unix microseconds, 8 bytes big-endian) and id.
func encodeCursor(t time.Time, id string) string {
	b := make([]byte, 8, 8+len(id))
	binary.BigEndian.PutUint64(b, uint64(t.UnixMicro()))
	return base64.RawURLEncoding.EncodeToString(append(b, id...))
}

func decodeCursor(s string) (cursor, error) {
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil {
		return cursor{}, fmt.Errorf("%w: malformed cursor", ErrInvalidQuery)
	}
	if len(b) < 9 || len(b) > 8+maxCursorID || !utf8.Valid(b[8:]) || bytes.IndexByte(b[8:], 0) >= 0 {
		return cursor{}, fmt.Errorf("%w: malformed cursor", ErrInvalidQuery)
	}
	t := time.UnixMicro(int64(binary.BigEndian.Uint64(b))).UTC()
	if t.Before(minQueryTime) || t.After(maxQueryTime) {
		return cursor{}, fmt.Errorf("%w: malformed cursor", ErrInvalidQuery)
	}
	return cursor{time: t, id: string(b[8:])}, nil
}

// ceilMicro rounds t up to the next whole microsecond.
func ceilMicro(t time.Time) time.Time {
	u := t.UTC()
	if tr := u.Truncate(time.Microsecond); !tr.Equal(u) {
		return tr.Add(time.Microsecond)
	}
	return u
}
