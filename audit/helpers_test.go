package audit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	_ "modernc.org/sqlite"

	"github.com/wevion/keyproxy/internal/testserver"
)

// memSink keeps what it is given. fail decides an attempt's error (nil:
// succeed); gate, when set, holds every Write until it is closed or the
// write's context ends, as a stalled backend would.
type memSink struct {
	name string
	fail func(attempt int) error
	gate chan struct{}

	mu       sync.Mutex
	events   []Event
	batches  []int
	attempts int
}

func newMemSink(name string) *memSink { return &memSink{name: name} }

func (s *memSink) Name() string { return s.name }

func (s *memSink) Write(ctx context.Context, batch []Event) error {
	s.mu.Lock()
	s.attempts++
	attempt := s.attempts
	s.mu.Unlock()
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if s.fail != nil {
		if err := s.fail(attempt); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, batch...)
	s.batches = append(s.batches, len(batch))
	return nil
}

func (s *memSink) snapshot() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Event(nil), s.events...)
}

func (s *memSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.events)
}

var errBackendDown = errors.New("backend down")

func alwaysFail(int) error { return errBackendDown }

// ids returns the events' ids, sorted.
func ids(events []Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.ID
	}
	sort.Strings(out)
	return out
}

// assertSameIDs fails unless got holds exactly the ids of want, each once.
func assertSameIDs(t *testing.T, what string, got []Event, want []string) {
	t.Helper()
	g := ids(got)
	w := append([]string(nil), want...)
	sort.Strings(w)
	if len(g) != len(w) {
		t.Fatalf("%s: %d events, want %d", what, len(g), len(w))
	}
	for i := range g {
		if g[i] != w[i] {
			t.Fatalf("%s: event %q where %q was expected (duplicate or missing)", what, g[i], w[i])
		}
	}
}

// eventually polls cond until it holds or a generous deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func counterValue(t *testing.T, c *prometheus.CounterVec, labels ...string) int {
	t.Helper()
	return int(testutil.ToFloat64(c.WithLabelValues(labels...)))
}

// recordEvents records n api.request events, evt_0 to evt_n-1, and
// returns their ids.
func recordEvents(p *Pipeline, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("evt_%d", i)
		p.Record(Event{ID: ids[i], Type: TypeAPIRequest})
	}
	return ids
}

// assertEventCounts checks keyproxy_audit_events_total, want keyed by
// "sink/result".
func assertEventCounts(t *testing.T, p *Pipeline, want map[string]int) {
	t.Helper()
	for k, n := range want {
		sink, result, _ := strings.Cut(k, "/")
		if got := counterValue(t, p.m.events, sink, result); got != n {
			t.Errorf("events_total{sink=%s,result=%s} = %d, want %d", sink, result, got, n)
		}
	}
}

func newTestPipeline(t *testing.T, o Options, sinks ...Sink) *Pipeline {
	t.Helper()
	p, err := NewPipeline(o, sinks...)
	if err != nil {
		t.Fatalf("NewPipeline: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = p.Close(ctx)
	})
	return p
}

func closePipeline(t *testing.T, p *Pipeline) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// testDB is one of the databases the store suite runs on.
type testDB struct {
	name    string
	dialect Dialect
	open    func(t testing.TB) *sql.DB
}

var testDBs = []testDB{
	{"sqlite", SQLite, openSQLite},
	{"postgres", Postgres, openPostgres},
}

// openSQLite opens a fresh database file the way the keystore opens its
// own: WAL, immediate transactions, a busy timeout, and one connection
// first (the keystore's Ping). That one turns the new file to WAL; several
// connections doing it at once get SQLITE_BUSY without the busy handler,
// which once failed the concurrent-migration test.
func openSQLite(t testing.TB) *sql.DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.db")
	db, err := sql.Open("sqlite", path+"?_txlock=immediate&_busy_timeout=5000&_journal_mode=WAL&_synchronous=NORMAL")
	if err != nil {
		t.Fatalf("opening sqlite: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := db.Ping(); err != nil {
		t.Fatalf("opening sqlite: %v", err)
	}
	return db
}

func openPostgres(t testing.TB) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", testserver.NewPostgresDB(t))
	if err != nil {
		t.Fatalf("opening postgres: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func newTestStore(t testing.TB, tdb testDB, o StoreOptions) *SQLStore {
	t.Helper()
	s, err := NewSQLStore(tdb.open(t), tdb.dialect, o)
	if err != nil {
		t.Fatalf("NewSQLStore(%s): %v", tdb.name, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func countRows(t testing.TB, s *SQLStore) int {
	t.Helper()
	var n int
	query := "SELECT count(*) FROM audit_events"
	if s.dialect == SQLite {
		query = "SELECT coalesce(sum(events), 0) FROM audit_segments"
	}
	if err := s.db.QueryRow(query).Scan(&n); err != nil {
		t.Fatalf("counting rows: %v", err)
	}
	return n
}

// fixedEvent builds a distinct event; i makes its id and request id.
func fixedEvent(i int, at time.Time) Event {
	return Event{
		ID:        fmt.Sprintf("evt_%026d", i),
		Time:      at,
		Type:      TypeAPIRequest,
		RequestID: fmt.Sprintf("req-%d", i),
		KeyID:     "key_A",
		UserID:    "usr_1",
		TeamID:    "team_1",
		Method:    "GET",
		Path:      "/v1/things",
		Status:    200,
		Outcome:   OutcomeAllowed,
	}
}
