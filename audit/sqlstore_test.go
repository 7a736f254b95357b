package audit

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/wevion/keyproxy/internal/testserver"
)

// storeFixture is a spread of events over three teams, keys and users,
// with many sharing a timestamp so that ordering must fall back to id.
func storeFixture(base time.Time) []Event {
	var events []Event
	for i := range 60 {
		e := fixedEvent(i, base.Add(time.Duration(i/4)*time.Second)) // 4 events per second
		e.TeamID = fmt.Sprintf("team_%d", i%3)
		e.KeyID = fmt.Sprintf("key_%d", i%5)
		e.UserID = fmt.Sprintf("usr_%d", i%2)
		events = append(events, e)
	}
	return events
}

// expect is the reference: filter in Go, sort newest first by (time, id).
func expect(events []Event, q Query) []string {
	var out []Event
	for _, e := range events {
		if (q.TeamID == "" || e.TeamID == q.TeamID) && (q.KeyID == "" || e.KeyID == q.KeyID) &&
			(q.UserID == "" || e.UserID == q.UserID) && (q.Since.IsZero() || !e.Time.Before(q.Since)) &&
			(q.Until.IsZero() || e.Time.Before(q.Until)) {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Time.Equal(out[j].Time) {
			return out[i].Time.After(out[j].Time)
		}
		return out[i].ID > out[j].ID
	})
	idsInOrder := make([]string, len(out))
	for i, e := range out {
		idsInOrder[i] = e.ID
	}
	return idsInOrder
}

// queryAll follows the cursors to the end and returns the ids in order.
func queryAll(t *testing.T, s *SQLStore, q Query) []string {
	t.Helper()
	var got []string
	for page := 0; ; page++ {
		if page > 1000 {
			t.Fatal("pagination does not end")
		}
		p, err := s.Query(context.Background(), q)
		if err != nil {
			t.Fatalf("Query(%+v): %v", q, err)
		}
		limit := q.Limit
		if limit == 0 {
			limit = DefaultQueryLimit
		}
		if len(p.Events) > limit {
			t.Fatalf("page of %d events with limit %d", len(p.Events), limit)
		}
		for _, e := range p.Events {
			got = append(got, e.ID)
		}
		if p.NextCursor == nil {
			return got
		}
		if len(p.Events) != limit {
			t.Fatalf("a page of %d events (limit %d) has a next cursor", len(p.Events), limit)
		}
		q.Cursor = *p.NextCursor
	}
}

func TestSQLStore(t *testing.T) {
	for _, tdb := range testDBs {
		t.Run(tdb.name, func(t *testing.T) {
			t.Parallel()
			testStoreQueries(t, tdb)
			testStoreRoundTrip(t, tdb)
			testStoreOrder(t, tdb)
			testStoreWrites(t, tdb)
			testStorePurge(t, tdb)
		})
	}
}

func testStoreQueries(t *testing.T, tdb testDB) {
	s := newTestStore(t, tdb, StoreOptions{})
	base := time.Date(2025, 5, 1, 10, 0, 0, 0, time.UTC)
	events := storeFixture(base)
	// Written out of order, in two batches: the order comes from the query.
	if err := s.Write(context.Background(), events[30:]); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(context.Background(), events[:30]); err != nil {
		t.Fatal(err)
	}

	t.Run("filters, newest first", func(t *testing.T) {
		tests := []struct {
			name string
			q    Query
		}{
			{"everything", Query{}},
			{"team", Query{TeamID: "team_1"}},
			{"key", Query{KeyID: "key_3"}},
			{"user", Query{UserID: "usr_0"}},
			{"team and user", Query{TeamID: "team_2", UserID: "usr_1"}},
			{"since is inclusive", Query{Since: base.Add(10 * time.Second)}},
			{"until is exclusive", Query{Until: base.Add(5 * time.Second)}},
			{"window", Query{Since: base.Add(3 * time.Second), Until: base.Add(7 * time.Second)}},
			{"sub-microsecond since rounds up", Query{Since: base.Add(10*time.Second - time.Nanosecond)}},
			{"sub-microsecond until rounds up", Query{Until: base.Add(5*time.Second + time.Nanosecond)}},
			{"unknown team", Query{TeamID: "team_9"}},
			{"key in a window", Query{KeyID: "key_1", Since: base.Add(2 * time.Second), Until: base.Add(12 * time.Second)}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				q := tt.q
				q.Limit = MaxQueryLimit
				p, err := s.Query(context.Background(), q)
				if err != nil {
					t.Fatal(err)
				}
				got := make([]string, len(p.Events))
				for i, e := range p.Events {
					got[i] = e.ID
				}
				if want := expect(events, tt.q); !reflect.DeepEqual(got, want) && (len(got) > 0 || len(want) > 0) {
					t.Fatalf("got  %v\nwant %v", got, want)
				}
				if p.NextCursor != nil {
					t.Fatal("a complete result has a next cursor")
				}
				if p.Events == nil {
					t.Fatal("events is null, want [] for JSON")
				}
			})
		}
	})

	t.Run("pagination visits every event once, in order", func(t *testing.T) {
		for _, q := range []Query{
			{Limit: 1}, {Limit: 7}, {Limit: 60}, {Limit: 59}, {},
			{Limit: 3, TeamID: "team_0"}, {Limit: 2, KeyID: "key_4", Since: base.Add(2 * time.Second)},
		} {
			got := queryAll(t, s, q)
			want := expect(events, q)
			if !reflect.DeepEqual(got, want) && (len(got) > 0 || len(want) > 0) {
				t.Fatalf("%+v:\ngot  %v\nwant %v", q, got, want)
			}
		}
	})

	t.Run("a cursor stays valid while newer events arrive", func(t *testing.T) {
		first, err := s.Query(context.Background(), Query{Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		newer := fixedEvent(1000, base.Add(time.Hour))
		if err := s.Write(context.Background(), []Event{newer}); err != nil {
			t.Fatal(err)
		}
		second, err := s.Query(context.Background(), Query{Limit: 10, Cursor: *first.NextCursor})
		if err != nil {
			t.Fatal(err)
		}
		got := make([]string, len(second.Events))
		for i, e := range second.Events {
			got[i] = e.ID
		}
		if want := expect(events, Query{})[10:20]; !reflect.DeepEqual(got, want) {
			t.Fatalf("second page %v, want %v", got, want)
		}
	})

	t.Run("invalid queries", func(t *testing.T) {
		valid := encodeCursor(base, "evt_x")
		tests := []struct {
			name string
			q    Query
		}{
			{"cursor not base64", Query{Cursor: "%%%"}},
			{"cursor too short", Query{Cursor: "AAAA"}},
			{"cursor with padding", Query{Cursor: valid + "="}},
			{"cursor id not UTF-8", Query{Cursor: encodeCursor(base, "\xff")}},
			{"cursor id with NUL", Query{Cursor: encodeCursor(base, "a\x00")}},
			{"cursor time out of range", Query{Cursor: encodeCursor(time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), "evt")}},
			{"negative limit", Query{Limit: -1}},
			{"limit over the maximum", Query{Limit: MaxQueryLimit + 1}},
			{"until before since", Query{Since: base, Until: base.Add(-time.Second)}},
			{"filter with NUL", Query{TeamID: "team\x00"}},
			{"filter not UTF-8", Query{UserID: "\xff"}},
			{"year out of range", Query{Since: time.Date(12000, 1, 1, 0, 0, 0, 0, time.UTC)}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if _, err := s.Query(context.Background(), tt.q); !errors.Is(err, ErrInvalidQuery) {
					t.Fatalf("Query = %v, want ErrInvalidQuery", err)
				}
			})
		}
	})
}

func testStoreRoundTrip(t *testing.T, tdb testDB) {
	t.Run("every field round-trips", func(t *testing.T) {
		s := newTestStore(t, tdb, StoreOptions{})
		e := fullEvent()
		e.UserAgent = "Zoë's client <1.0> & \"friends\""
		if err := s.Write(context.Background(), []Event{e}); err != nil {
			t.Fatal(err)
		}
		p, err := s.Query(context.Background(), Query{})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Events) != 1 {
			t.Fatalf("%d events", len(p.Events))
		}
		got := p.Events[0]
		if !got.Time.Equal(e.Time) || got.Time.Location() != time.UTC {
			t.Fatalf("time %v, want %v UTC", got.Time, e.Time)
		}
		got.Time = e.Time
		if got != e {
			t.Fatalf("got  %+v\nwant %+v", got, e)
		}
	})
}

func testStoreOrder(t *testing.T, tdb testDB) {
	t.Run("events sharing a time are ordered by id bytes, not the locale", func(t *testing.T) {
		s := newTestStore(t, tdb, StoreOptions{})
		at := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
		var events []Event
		for _, id := range []string{"evt_a", "evt_B", "evt__", "evtA", "evt_b", "Evt_c", "evt-1", "evt_é"} {
			events = append(events, Event{ID: id, Time: at, Type: TypeAPIRequest})
		}
		if err := s.Write(context.Background(), events); err != nil {
			t.Fatal(err)
		}
		if got, want := queryAll(t, s, Query{Limit: 3}), expect(events, Query{}); !reflect.DeepEqual(got, want) {
			t.Fatalf("got  %q\nwant %q", got, want)
		}
	})
}

func testStoreWrites(t *testing.T, tdb testDB) {
	t.Run("writing a batch again stores it once", func(t *testing.T) {
		s := newTestStore(t, tdb, StoreOptions{})
		batch := storeFixture(time.Now().UTC().Truncate(time.Microsecond))
		for range 2 {
			if err := s.Write(context.Background(), batch); err != nil {
				t.Fatal(err)
			}
		}
		if n := countRows(t, s); n != len(batch) {
			t.Fatalf("%d rows, want %d", n, len(batch))
		}
	})
	t.Run("a batch larger than one statement is stored whole", func(t *testing.T) {
		s := newTestStore(t, tdb, StoreOptions{})
		batch := make([]Event, 1300)
		for i := range batch {
			batch[i] = fixedEvent(i, time.Unix(1700000000, int64(i)*1000).UTC())
		}
		if err := s.Write(context.Background(), batch); err != nil {
			t.Fatal(err)
		}
		if n := countRows(t, s); n != len(batch) {
			t.Fatalf("%d rows, want %d", n, len(batch))
		}
	})
	t.Run("a batch stored in part, then again whole, is stored once", func(t *testing.T) {
		// SQLite stores a batch in chunks of segmentMaxEvents, one
		// transaction each: a failure can leave the first ones stored.
		s := newTestStore(t, tdb, StoreOptions{})
		batch := make([]Event, 2*segmentMaxEvents+276)
		for i := range batch {
			batch[i] = fixedEvent(i, time.Unix(1700000000, int64(i)*1000).UTC())
		}
		for _, b := range [][]Event{batch[:segmentMaxEvents], batch, batch} {
			if err := s.Write(context.Background(), b); err != nil {
				t.Fatal(err)
			}
		}
		if n := countRows(t, s); n != len(batch) {
			t.Fatalf("%d rows, want %d", n, len(batch))
		}
	})
	t.Run("migrating again, even concurrently, is harmless", func(t *testing.T) {
		db := tdb.open(t)
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := NewSQLStore(db, tdb.dialect, StoreOptions{})
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	})
	t.Run("N records through the pipeline are N rows", func(t *testing.T) {
		s := newTestStore(t, tdb, StoreOptions{})
		p := newTestPipeline(t, Options{}, s)
		const workers, each = 8, 1000
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					p.Record(Event{Type: TypeAPIRequest, TeamID: "team_1"})
				}
			}()
		}
		wg.Wait()
		closePipeline(t, p)
		if n := countRows(t, s); n != workers*each {
			t.Fatalf("%d rows, want %d", n, workers*each)
		}
		if got := counterValue(t, p.m.events, "store", "written"); got != workers*each {
			t.Fatalf("written = %d, want %d", got, workers*each)
		}
	})
}

func testStorePurge(t *testing.T, tdb testDB) {
	now := time.Date(2025, 5, 1, 0, 0, 0, 0, time.UTC)
	old := storeFixture(now.Add(-100 * 24 * time.Hour))
	recent := storeFixture(now.Add(-time.Hour))
	for i := range recent {
		recent[i].ID += "_recent"
	}
	t.Run("purge deletes only older events", func(t *testing.T) {
		s := newTestStore(t, tdb, StoreOptions{})
		if err := s.Write(context.Background(), append(append([]Event(nil), old...), recent...)); err != nil {
			t.Fatal(err)
		}
		n, err := s.Purge(context.Background(), now.Add(-90*24*time.Hour))
		if err != nil || n != int64(len(old)) {
			t.Fatalf("Purge = %d, %v; want %d", n, err, len(old))
		}
		if got := queryAll(t, s, Query{Limit: MaxQueryLimit}); !reflect.DeepEqual(got, expect(recent, Query{})) {
			t.Fatalf("left %v", got)
		}
	})
	t.Run("the purge loop applies the retention", func(t *testing.T) {
		s := newTestStore(t, tdb, StoreOptions{Retention: 90 * 24 * time.Hour, PurgeInterval: 10 * time.Millisecond,
			Now: func() time.Time { return now }})
		s.Start(testserver.Context(t))
		if err := s.Write(context.Background(), recent); err != nil {
			t.Fatal(err)
		}
		if err := s.Write(context.Background(), old); err != nil {
			t.Fatal(err)
		}
		eventually(t, "old events purged", func() bool { return countRows(t, s) == len(recent) })
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestNewSQLStore_RejectsAnUnknownDialect(t *testing.T) {
	if _, err := NewSQLStore(openSQLite(t), Dialect(9), StoreOptions{}); err == nil {
		t.Fatal("accepted dialect 9")
	}
}

func FuzzDecodeCursor(f *testing.F) {
	f.Add(encodeCursor(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), "evt_01HZY3J8Q4W7XK2N5B6C7D8E9F"))
	f.Add("")
	f.Add("AAAAAAAAAAA")
	f.Add("%%%")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := decodeCursor(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidQuery) {
				t.Fatalf("error %v does not wrap ErrInvalidQuery", err)
			}
			return
		}
		again, err := decodeCursor(encodeCursor(c.time, c.id))
		if err != nil || !again.time.Equal(c.time) || again.id != c.id {
			t.Fatalf("cursor %q does not round-trip: %+v, %v", s, again, err)
		}
	})
}
