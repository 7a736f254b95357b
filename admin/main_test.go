package admin_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wevion/keyproxy/admin"
	"github.com/wevion/keyproxy/audit"
	"github.com/wevion/keyproxy/internal/testserver"
	"github.com/wevion/keyproxy/keystore"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	testToken  = "test-admin-token-0123456789"
	otherToken = "second-admin-token-abcdefghij"
)

// env is an admin handler over a real store (SQLite in a temp dir unless
// a test asks for PostgreSQL) and the real in-process resolver.
type env struct {
	t        testing.TB
	h        *admin.Handler
	store    storeUnderTest
	resolver *keystore.Resolver
	evictor  *recordingEvictor
	events   *recordingRecorder
	logs     *observer.ObservedLogs
	reg      *prometheus.Registry
	format   keystore.Format
	clock    *clock
}

func openStore(t testing.TB) *keystore.SQLite {
	t.Helper()
	s, err := keystore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "keys.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// storeUnderTest is a real store: what the handler uses, plus what the
// tests read back.
type storeUnderTest interface {
	admin.Store
	keystore.Backend
	Close() error
}

func openPostgres(t testing.TB) *keystore.Postgres {
	t.Helper()
	s, err := keystore.OpenPostgres(testserver.Context(t), testserver.NewPostgresDB(t), keystore.PostgresOptions{MaxConns: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newEnv(t testing.TB, opts ...func(*admin.Config)) *env {
	t.Helper()
	return newEnvOn(t, openStore(t), opts...)
}

func newEnvOn(t testing.TB, store storeUnderTest, opts ...func(*admin.Config)) *env {
	t.Helper()
	format, err := keystore.NewFormat("wev_")
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	resolver, err := keystore.NewResolver(store, keystore.ResolverOptions{TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(resolver.Close)
	e := &env{
		t: t, store: store, resolver: resolver, evictor: &recordingEvictor{next: resolver}, events: &recordingRecorder{},
		logs: logs, reg: prometheus.NewRegistry(), format: format, clock: &clock{now: time.Now().UTC()},
	}
	cfg := admin.Config{
		Store: e.store, Evictor: e.evictor, Recorder: e.events, Format: format,
		Tokens: []string{testToken, otherToken}, Logger: zap.New(core), Registerer: e.reg,
		Now: e.clock.Now, Metrics: promhttp.HandlerFor(e.reg, promhttp.HandlerOpts{}),
	}
	for _, o := range opts {
		o(&cfg)
	}
	e.h, err = admin.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// do serves one request with the admin token; hdr are name, value pairs
// ("Authorization", "" removes the token).
func (e *env) do(method, path, body string, hdr ...string) *httptest.ResponseRecorder {
	return serve(e.h, method, path, body, hdr...)
}

// serve calls no testing methods, so fuzz functions can use it.
func serve(h http.Handler, method, path, body string, hdr ...string) *httptest.ResponseRecorder {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r := httptest.NewRequest(method, path, rd)
	r.Header.Set("Authorization", "Bearer "+testToken)
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			r.Header.Del(hdr[i])
			continue
		}
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

type createdKey struct {
	ID        string     `json:"id"`
	Key       string     `json:"key"`
	Name      string     `json:"name"`
	Start     string     `json:"start"`
	UserID    string     `json:"user_id"`
	TeamID    string     `json:"team_id"`
	Role      string     `json:"role"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at"`
}

// create makes a key through the API and fails the test unless it is 201.
func (e *env) create(name, user, team, role string) createdKey {
	e.t.Helper()
	w := e.do("POST", "/admin/v1/keys", `{"name":"`+name+`","user_id":"`+user+`","team_id":"`+team+`","role":"`+role+`"}`)
	if w.Code != http.StatusCreated {
		e.t.Fatalf("create: status %d: %s", w.Code, w.Body)
	}
	var k createdKey
	decode(e.t, w, &k)
	return k
}

func decode(t testing.TB, w *httptest.ResponseRecorder, v any) {
	t.Helper()
	if err := json.Unmarshal(w.Body.Bytes(), v); err != nil {
		t.Fatalf("body is not JSON: %v: %s", err, w.Body)
	}
}

type problemBody struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail"`
	Code      string `json:"code"`
	RequestID string `json:"request_id"`
}

// wantProblem checks w is an RFC 9457 problem with status and code.
func wantProblem(t testing.TB, w *httptest.ResponseRecorder, status int, code string) problemBody {
	t.Helper()
	if w.Code != status {
		t.Fatalf("status %d, want %d: %s", w.Code, status, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q, want application/problem+json", ct)
	}
	var p problemBody
	decode(t, w, &p)
	if p.Code != code || p.Status != status {
		t.Fatalf("problem code %q status %d, want %q %d: %s", p.Code, p.Status, code, status, w.Body)
	}
	if p.RequestID == "" || p.RequestID != w.Header().Get("X-Request-Id") {
		t.Fatalf("problem request_id %q, X-Request-Id %q", p.RequestID, w.Header().Get("X-Request-Id"))
	}
	return p
}

// recordingEvictor records what the handler asked to evict and passes it
// on to the real resolver.
type recordingEvictor struct {
	next   admin.Evictor
	mu     sync.Mutex
	hashes []keystore.Hash
	calls  int
}

func (e *recordingEvictor) Evict(ctx context.Context, hashes []keystore.Hash) (int, int) {
	e.mu.Lock()
	e.calls++
	e.hashes = append(e.hashes, hashes...)
	e.mu.Unlock()
	if e.next == nil {
		return 1, 1
	}
	return e.next.Evict(ctx, hashes)
}

func (e *recordingEvictor) evicted() []keystore.Hash {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]keystore.Hash(nil), e.hashes...)
}

func (e *recordingEvictor) reset() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.hashes, e.calls = nil, 0
}

type recordingRecorder struct {
	mu     sync.Mutex
	events []audit.Event
}

func (r *recordingRecorder) Record(ev audit.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
}

func (r *recordingRecorder) all() []audit.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]audit.Event(nil), r.events...)
}

func (r *recordingRecorder) last(t testing.TB) audit.Event {
	t.Helper()
	all := r.all()
	if len(all) == 0 {
		t.Fatal("no audit event recorded")
	}
	return all[len(all)-1]
}

// clock is the handler's clock for validating expiry; tests move it.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
