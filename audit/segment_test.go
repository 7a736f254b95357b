package audit

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/wevion/keyproxy/internal/pace"
)

func decodeAll(t testing.TB, data []byte) []Event {
	t.Helper()
	r, err := readSegment(data)
	if err != nil {
		t.Fatalf("readSegment: %v", err)
	}
	out, err := r.events(nil)
	if err != nil {
		t.Fatalf("events: %v", err)
	}
	return out
}

func TestSegmentRoundTrip(t *testing.T) {
	full := fullEvent()
	odd := full
	odd.ID, odd.RequestID, odd.Status, odd.DurationMS = "x", "", -1, -0.0001
	odd.Time = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC).Add(-time.Hour) // negative delta
	empty := Event{ID: "evt_e", Time: time.Unix(1700000000, 123000).UTC(), Type: TypeKeyCreated}
	tests := []struct {
		name  string
		batch []Event
	}{
		{"one full event", []Event{full}},
		{"shared and distinct strings, ids sharing prefixes", storeFixture(time.Date(2025, 5, 1, 10, 0, 0, 0, time.UTC))},
		{"empty fields, negative status, time going back", []Event{full, odd, empty, full}},
		{"a value in two fields", []Event{{ID: "a", Time: full.Time, KeyID: "same", UserID: "same", Path: "same"}}},
	}
	enc := newSegmentEncoder()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := decodeAll(t, enc.encode(tt.batch, nil))
			if !reflect.DeepEqual(got, tt.batch) {
				t.Fatalf("got  %+v\nwant %+v", got, tt.batch)
			}
		})
	}
	t.Run("refs name every filterable id once, in any field it filters", func(t *testing.T) {
		enc.encode([]Event{
			{ID: "a", KeyID: "k1", UserID: "u1", TeamID: "t1", Path: "k2"},
			{ID: "b", KeyID: "k2", UserID: "u1", TeamID: "t1"},
			{ID: "c", KeyID: "u1", Actor: "t2"},
		}, nil)
		got := map[string]int{}
		enc.refs(func(kind int, v string) { got[fmt.Sprint(kind, v)]++ })
		want := map[string]int{
			fmt.Sprint(refKeyID, "k1"): 1, fmt.Sprint(refKeyID, "k2"): 1, fmt.Sprint(refKeyID, "u1"): 1,
			fmt.Sprint(refUserID, "u1"): 1, fmt.Sprint(refTeamID, "t1"): 1,
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("refs %v, want %v", got, want)
		}
	})
}

func TestReadSegment_RejectsDamage(t *testing.T) {
	data := newSegmentEncoder().encode(storeFixture(time.Unix(1700000000, 0)), nil)
	for _, bad := range [][]byte{nil, {}, {9}, data[:len(data)-1], append(append([]byte(nil), data...), 0)} {
		r, err := readSegment(bad)
		if err != nil {
			continue
		}
		if _, err := r.events(nil); err == nil {
			t.Fatalf("a damaged segment (%d bytes) read to the end without error", len(bad))
		}
	}
}

// FuzzReadSegment: a damaged blob gives an error, never a panic or a
// huge allocation; a blob that reads back encodes to itself.
func FuzzReadSegment(f *testing.F) {
	f.Add(newSegmentEncoder().encode(storeFixture(time.Unix(1700000000, 0)), nil))
	f.Add(newSegmentEncoder().encode([]Event{fullEvent()}, nil))
	f.Add([]byte{segmentVersion, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := readSegment(data)
		if err != nil {
			return
		}
		events, err := r.events(nil)
		if err != nil {
			return
		}
		again := decodeAll(t, newSegmentEncoder().encode(events, nil))
		if len(again) != len(events) || (len(events) > 0 && !reflect.DeepEqual(again, events)) {
			t.Fatalf("re-encoding changed the events:\n%+v\n%+v", events, again)
		}
	})
}

// Many small batches, out of order across batches, spanning several ref
// buckets: every query and every page matches the reference.
func TestSQLStore_ManySegments(t *testing.T) {
	s := newTestStore(t, testDBs[0], StoreOptions{})
	rng := rand.New(rand.NewPCG(1, 2))
	base := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	var all []Event
	for b := range 3*refBucketSegments + 5 {
		batch := make([]Event, 1+rng.IntN(8))
		for i := range batch {
			n := len(all) + i
			// Time mostly grows with the batch, but jitters back by up
			// to 3 batches, as concurrent requests end out of order.
			at := base.Add(time.Duration(b*10+rng.IntN(40)-30) * time.Millisecond)
			batch[i] = fixedEvent(n, at)
			batch[i].KeyID = fmt.Sprintf("key_%d", n%7)
			batch[i].UserID = fmt.Sprintf("usr_%d", n%3)
			batch[i].TeamID = fmt.Sprintf("team_%d", n%2)
		}
		if b == 100 { // a key seen in one batch only
			batch[0].KeyID = "key_rare"
		}
		if err := s.Write(context.Background(), batch); err != nil {
			t.Fatal(err)
		}
		all = append(all, batch...)
	}
	for _, q := range []Query{
		{Limit: 13}, {Limit: 1000}, {Limit: 50, KeyID: "key_3"}, {Limit: 1, KeyID: "key_rare"},
		{Limit: 9, TeamID: "team_1", UserID: "usr_2"}, {Limit: 7, KeyID: "key_1", TeamID: "team_0"},
		{Limit: 20, Since: base.Add(500 * time.Millisecond), Until: base.Add(1500 * time.Millisecond)},
		{Limit: 5, UserID: "usr_0", Until: base.Add(time.Second)}, {KeyID: "key_unknown"},
	} {
		got := queryAll(t, s, q)
		want := expect(all, q)
		if !reflect.DeepEqual(got, want) && (len(got) > 0 || len(want) > 0) {
			t.Fatalf("%+v:\ngot  %d %v\nwant %d %v", q, len(got), got, len(want), want)
		}
	}
}

func TestSQLStore_MigratesRowsToSegments(t *testing.T) {
	db := openSQLite(t)
	// The schema of the versions that kept a row per event.
	for _, stmt := range []string{
		`CREATE TABLE audit_events (id TEXT PRIMARY KEY, time INTEGER NOT NULL, type TEXT NOT NULL,
			request_id TEXT NOT NULL DEFAULT '', key_id TEXT NOT NULL DEFAULT '', key_start TEXT NOT NULL DEFAULT '',
			user_id TEXT NOT NULL DEFAULT '', team_id TEXT NOT NULL DEFAULT '', role TEXT NOT NULL DEFAULT '',
			actor TEXT NOT NULL DEFAULT '', method TEXT NOT NULL DEFAULT '', path TEXT NOT NULL DEFAULT '',
			status INTEGER NOT NULL DEFAULT 0, duration_ms REAL NOT NULL DEFAULT 0, client_ip TEXT NOT NULL DEFAULT '',
			user_agent TEXT NOT NULL DEFAULT '', outcome TEXT NOT NULL DEFAULT '')`,
		`CREATE INDEX audit_events_key ON audit_events (key_id, time, id)`,
	} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatal(err)
		}
	}
	var events []Event
	for i := range 5000 { // more than one migration batch
		e := fixedEvent(i, time.Unix(1700000000, int64(i%977)*1000).UTC())
		e.KeyID = fmt.Sprintf("key_%d", i%4)
		e.DurationMS = float64(i) / 8
		events = append(events, e)
		if _, err := db.Exec(`INSERT INTO audit_events (`+columns+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
			e.ID, e.Time.UnixMicro(), e.Type, e.RequestID, e.KeyID, e.KeyStart, e.UserID, e.TeamID, e.Role, e.Actor,
			e.Method, e.Path, e.Status, e.DurationMS, e.ClientIP, e.UserAgent, e.Outcome); err != nil {
			t.Fatal(err)
		}
	}
	s, err := NewSQLStore(db, SQLite, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	for _, q := range []Query{{Limit: 1000}, {Limit: 333, KeyID: "key_2"}} {
		if got, want := queryAll(t, s, q), expect(events, q); !reflect.DeepEqual(got, want) {
			t.Fatalf("%+v: %d events after migrating, want %d", q, len(got), len(want))
		}
	}
	p, err := s.Query(context.Background(), Query{Limit: 1000, Since: events[1].Time, Until: events[1].Time.Add(time.Microsecond)})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range p.Events {
		if e.ID == events[1].ID {
			found = true
			if e != events[1] {
				t.Fatalf("after migrating %+v, want %+v", e, events[1])
			}
		}
	}
	if !found {
		t.Fatalf("event %s missing after migrating", events[1].ID)
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_master WHERE name = 'audit_events'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("old table left behind: %d, %v", n, err)
	}
}

// A segment's write pauses between its statements, inside its
// transaction, not only while it encodes: with one P, statements run back
// to back held it for over a millisecond. At each pause a second
// connection tries to take the write lock, and finds it held.
func TestSQLStore_SegmentWritePausesInsideItsTransaction(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	open := func(dsn string) *sql.DB {
		db, err := sql.Open("sqlite", dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		return db
	}
	db := open(path + "?_txlock=immediate&_busy_timeout=5000&_journal_mode=WAL&_synchronous=NORMAL")
	s, err := NewSQLStore(db, SQLite, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	probe := open(path + "?_txlock=immediate&_busy_timeout=0")
	base := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	batch := make([]Event, 700)
	for i := range batch {
		batch[i] = fixedEvent(i, base.Add(time.Duration(i)*time.Millisecond))
		batch[i].UserID = fmt.Sprintf("usr_%d", i) // 700 refs: three inserts of them
	}
	var locked, free int
	clock := base
	now := func() time.Time { clock = clock.Add(pace.Budget); return clock } // every check finds the budget spent
	y := pace.WithClock(now, func(time.Duration) {
		tx, err := probe.Begin()
		if err != nil {
			if !strings.Contains(err.Error(), "SQLITE_BUSY") {
				t.Errorf("probe: %v", err)
			}
			locked++
			return
		}
		_ = tx.Rollback()
		free++
	})
	s.seg.mu.Lock()
	err = s.writeSegment(context.Background(), batch, &y)
	s.seg.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	// After the SELECT, after each of the segment's two inserts, between
	// the three inserts of refs, and before the commit.
	if locked != 6 {
		t.Errorf("%d pauses with the write lock held, want 6 (and %d without)", locked, free)
	}
	if free == 0 {
		t.Error("no pause while encoding")
	}
	if n := countRows(t, s); n != len(batch) {
		t.Errorf("%d events stored, want %d", n, len(batch))
	}
}

// The writer checkpoints the WAL itself, a few batches' worth at a time,
// so the WAL file stays small. Left to SQLite's automatic checkpoint it
// grows to 1000 pages (4 MiB) and is then copied in one long call: here it
// reached 1.6 MB.
func TestSQLStore_CheckpointsTheWALInSmallSteps(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	db, err := sql.Open("sqlite", path+"?_txlock=immediate&_busy_timeout=5000&_journal_mode=WAL&_synchronous=NORMAL")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	s, err := NewSQLStore(db, SQLite, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	rng := rand.New(rand.NewPCG(3, 4))
	batch := make([]Event, segmentMaxEvents)
	const batches = 24
	maxWAL := int64(0)
	for b := range batches {
		for i := range batch {
			n := b*len(batch) + i
			batch[i] = fixedEvent(n, base.Add(time.Duration(n)*time.Millisecond))
			// Random request ids and durations: segments that do not
			// compress to nothing, about 80 bytes an event.
			batch[i].RequestID = fmt.Sprintf("req-%016x", rng.Uint64())
			batch[i].DurationMS = rng.Float64() * 100
		}
		if err := s.Write(context.Background(), batch); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path + "-wal")
		if err != nil {
			t.Fatal(err)
		}
		maxWAL = max(maxWAL, fi.Size())
	}
	var segBytes int64
	if err := db.QueryRow(`SELECT sum(length(data)) FROM audit_segment_data`).Scan(&segBytes); err != nil {
		t.Fatal(err)
	}
	if segBytes < 1<<20 {
		t.Fatalf("only %d bytes of segments written: the test needs more than the WAL limit it checks", segBytes)
	}
	t.Logf("largest WAL file %d bytes, %d bytes of segments", maxWAL, segBytes)
	if maxWAL > 1<<20 {
		t.Errorf("WAL file grew to %d bytes while %d bytes of segments were written, want at most 1 MiB", maxWAL, segBytes)
	}
	if n := countRows(t, s); n != batches*len(batch) {
		t.Errorf("%d events stored, want %d", n, batches*len(batch))
	}
}
