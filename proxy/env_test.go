package proxy_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wevion/keyproxy/audit"
	"github.com/wevion/keyproxy/keystore"
	"github.com/wevion/keyproxy/proxy"
	"github.com/wevion/keyproxy/ratelimit"
)

// countingResolver counts the lookups that reach the resolver it wraps,
// to show junk is refused before any lookup.
type countingResolver struct {
	proxy.Resolver
	calls atomic.Int64
}

func (c *countingResolver) Resolve(ctx context.Context, h keystore.Hash) (keystore.Identity, error) {
	c.calls.Add(1)
	return c.Resolver.Resolve(ctx, h)
}

// Cached passes the in-process lookup through (not counted: no I/O).
func (c *countingResolver) Cached(h keystore.Hash) (keystore.Identity, bool) {
	if r, ok := c.Resolver.(interface {
		Cached(keystore.Hash) (keystore.Identity, bool)
	}); ok {
		return r.Cached(h)
	}
	return keystore.Identity{}, false
}

// errResolver fails every lookup with err: for resolver errors the real
// store does not produce.
type errResolver struct{ err error }

func (r errResolver) Resolve(context.Context, keystore.Hash) (keystore.Identity, error) {
	return keystore.Identity{}, r.err
}

// blockingResolver never answers before the caller gives up.
type blockingResolver struct{}

func (blockingResolver) Resolve(ctx context.Context, _ keystore.Hash) (keystore.Identity, error) {
	<-ctx.Done()
	return keystore.Identity{}, ctx.Err()
}

// recorder collects audit events.
type recorder struct {
	mu     sync.Mutex
	events []audit.Event
	added  chan struct{}
}

func newRecorder() *recorder { return &recorder{added: make(chan struct{}, 1024)} }

func (r *recorder) Record(e audit.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	select {
	case r.added <- struct{}{}:
	default:
	}
}

func (r *recorder) all() []audit.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]audit.Event(nil), r.events...)
}

// wait returns the events once there are n, failing after a generous bound:
// the event is recorded when the handler returns, which can trail the
// client's view of the response.
func (r *recorder) wait(t *testing.T, n int) []audit.Event {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		if ev := r.all(); len(ev) >= n {
			return ev
		}
		select {
		case <-r.added:
		case <-deadline:
			t.Fatalf("want %d audit events, have %d", n, len(r.all()))
		}
	}
}

type usage struct {
	mu      sync.Mutex
	touched map[string]int
}

func (u *usage) Touch(keyID string, _ time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.touched == nil {
		u.touched = make(map[string]int)
	}
	u.touched[keyID]++
}

func (u *usage) count(keyID string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.touched[keyID]
}

// fixedLimiter answers every request with one result.
type fixedLimiter struct {
	res   ratelimit.Result
	calls atomic.Int64
}

func (l *fixedLimiter) Allow(context.Context, string, string) ratelimit.Result {
	l.calls.Add(1)
	return l.res
}

// testRateLimitHeaders stands in for ratelimit.WriteHeaders: the proxy's
// job is only to call it on the right responses.
func testRateLimitHeaders(_ *ratelimit.HeaderValues, h http.Header, r ratelimit.Result) {
	h.Set("RateLimit-Remaining", strconv.Itoa(r.Remaining))
	h.Set("RateLimit-Limit", strconv.Itoa(r.Limit.Burst))
}

// received is what the upstream saw of one request.
type received struct {
	Method     string
	RequestURI string
	Host       string
	Header     http.Header
	// RemoteAddr tells the proxy's backend connections apart.
	RemoteAddr string
	Body       string
}

// upstream is a real HTTP backend that records what reached it.
type upstream struct {
	srv  *httptest.Server
	mu   sync.Mutex
	got  []received
	next http.HandlerFunc // optional: answers instead of the default 200
}

func startUpstream(t *testing.T) *upstream {
	u := &upstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(b))
		u.mu.Lock()
		u.got = append(u.got, received{Method: r.Method, RequestURI: r.RequestURI, Host: r.Host, Header: r.Header.Clone(), RemoteAddr: r.RemoteAddr, Body: string(b)})
		next := u.next
		u.mu.Unlock()
		if next != nil {
			next(w, r)
			return
		}
		w.Header().Set("X-Request-Id", "set-by-upstream")
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "hello from upstream")
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) handle(f http.HandlerFunc) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.next = f
}

func (u *upstream) requests() []received {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]received(nil), u.got...)
}

// last returns the only request the upstream received, failing otherwise.
func (u *upstream) only(t *testing.T) received {
	t.Helper()
	got := u.requests()
	if len(got) != 1 {
		t.Fatalf("upstream received %d requests, want 1", len(got))
	}
	return got[0]
}

// env is a proxy in front of a recording upstream, served over real HTTP,
// resolving keys through keystore's Resolver over a real SQLite store.
type env struct {
	format   keystore.Format
	store    *keystore.SQLite
	resolver *countingResolver
	up       *upstream
	rec      *recorder
	usage    *usage
	logs     *observer.ObservedLogs
	reg      *prometheus.Registry
	handler  *proxy.Handler
	srv      *httptest.Server
	client   *http.Client

	owners   int // makes each special key's owner and team unique
	validKey string
	identity keystore.Identity // validKey's
}

type option func(*proxy.Config)

func withResolver(r proxy.Resolver) option { return func(c *proxy.Config) { c.Resolver = r } }

func newEnv(t *testing.T, opts ...option) *env {
	t.Helper()
	format, err := keystore.NewFormat("wev_")
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	store, err := keystore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "keys.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	resolver, err := keystore.NewResolver(store, keystore.ResolverOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(resolver.Close)
	core, logs := observer.New(zap.DebugLevel)
	e := &env{
		format:   format,
		store:    store,
		resolver: &countingResolver{Resolver: resolver},
		up:       startUpstream(t),
		rec:      newRecorder(),
		usage:    &usage{},
		logs:     logs,
		reg:      prometheus.NewRegistry(),
	}
	// Transport stays nil: the tests go through the transport production
	// builds (internal/h1 in front of NewTransport).
	cfg := proxy.Config{
		Upstream:        mustURL(t, e.up.srv.URL+"/api"),
		UpstreamTimeout: 2 * time.Second,
		Format:          format,
		Resolver:        e.resolver,
		Recorder:        e.rec,
		Usage:           e.usage,
		Logger:          zap.New(core),
		AccessLog:       true,
		Registerer:      e.reg,
	}
	for _, o := range opts {
		o(&cfg)
	}
	if e.handler, err = proxy.New(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.handler.CloseIdleConnections)
	e.srv = httptest.NewServer(e.handler)
	t.Cleanup(e.srv.Close)
	e.client = e.srv.Client()
	e.validKey, e.identity = e.newKey(t, keySpec{})
	return e
}

// keySpec says what has happened to a key or its owner since it was made.
// ownerMoved moves the owner through the store, which revokes the key;
// ownerLeft moves it as an earlier release did, leaving the key unrevoked
// in its team (refused as owner_moved).
type keySpec struct {
	revoked, expired, ownerInactive, ownerMoved, ownerLeft, teamInactive bool
}

// newKey creates a key in the store, brings it into the state spec names,
// and returns it with the identity it was created with. Each key gets its
// own owner and team, so changing them leaves every other key alone.
func (e *env) newKey(t *testing.T, spec keySpec) (string, keystore.Identity) {
	t.Helper()
	ctx := t.Context()
	key, err := e.format.Generate()
	if err != nil {
		t.Fatal(err)
	}
	id, err := keystore.NewID()
	if err != nil {
		t.Fatal(err)
	}
	e.owners++
	nk := keystore.NewKey{
		ID: id, Hash: keystore.HashKey(key), Start: e.format.Start(key), Name: "test",
		UserID: fmt.Sprintf("usr_%d", e.owners), TeamID: fmt.Sprintf("team_%d", e.owners), Role: "admin",
		MaxActivePerTeam: 10,
	}
	if spec.expired {
		past := time.Now().Add(-time.Minute)
		nk.ExpiresAt = &past
	}
	if _, err := e.store.CreateKey(ctx, nk); err != nil {
		t.Fatal(err)
	}
	if spec.revoked {
		if _, err := e.store.RevokeKey(ctx, id, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	if spec.ownerInactive || spec.ownerMoved {
		u := keystore.User{ID: nk.UserID, TeamID: nk.TeamID, Role: nk.Role, Active: !spec.ownerInactive}
		if spec.ownerMoved {
			u.TeamID = nk.TeamID + "_elsewhere"
		}
		if _, err := e.store.PutUser(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	if spec.ownerLeft {
		elsewhere := nk.TeamID + "_elsewhere"
		if _, _, err := e.store.PutTeam(ctx, keystore.Team{ID: elsewhere, Active: true}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.DB().ExecContext(ctx, `UPDATE users SET team_id = ? WHERE id = ?`, elsewhere, nk.UserID); err != nil {
			t.Fatal(err)
		}
	}
	if spec.teamInactive {
		if _, _, err := e.store.PutTeam(ctx, keystore.Team{ID: nk.TeamID, Active: false}); err != nil {
			t.Fatal(err)
		}
	}
	return key, keystore.Identity{KeyID: id, UserID: nk.UserID, TeamID: nk.TeamID, Role: nk.Role}
}

// do sends a request through the proxy; header lines are added in order,
// so a name given twice is sent twice.
func (e *env) do(t *testing.T, method, path string, header [][2]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range header {
		req.Header[kv[0]] = append(req.Header[kv[0]], kv[1])
	}
	res, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(body)
}

func bearer(key string) [2]string { return [2]string{"Authorization", "Bearer " + key} }

// leaks reports whether any log line, field or audit event holds s.
func (e *env) leaks(s string) bool {
	for _, entry := range e.logs.All() {
		if strings.Contains(entry.Message, s) {
			return true
		}
		for k, v := range entry.ContextMap() {
			if strings.Contains(k, s) || strings.Contains(toString(v), s) {
				return true
			}
		}
	}
	for _, ev := range e.rec.all() {
		if strings.Contains(toString(ev), s) {
			return true
		}
	}
	return false
}

func toString(v any) string { return fmt.Sprintf("%+v", v) }

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
