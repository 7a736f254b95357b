package keystore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wevion/keyproxy/internal/pace"
	"github.com/wevion/keyproxy/keystore"
)

// testBackend passes reads to a real store, counts them and, when armed,
// holds the first read after it has read the store until released.
type testBackend struct {
	store atomic.Pointer[keystore.SQLite]
	calls atomic.Int64

	once    sync.Once
	read    chan struct{} // closed when the held read has read the store
	release chan struct{} // closing it lets the held read return
}

func newTestBackend(s *keystore.SQLite) *testBackend {
	b := &testBackend{}
	b.store.Store(s)
	return b
}

// hold arms the backend: the next read blocks after reading the store.
func (b *testBackend) hold() *testBackend {
	b.read, b.release = make(chan struct{}), make(chan struct{})
	return b
}

func (b *testBackend) Resolve(ctx context.Context, h keystore.Hash) (keystore.Identity, error) {
	b.calls.Add(1)
	id, err := b.store.Load().Resolve(ctx, h)
	if b.read != nil {
		b.once.Do(func() {
			close(b.read)
			<-b.release
		})
	}
	return id, err
}

type fakeClock struct{ nanos atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.nanos.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.nanos.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.nanos.Add(int64(d)) }

func newResolver(t *testing.T, b keystore.Backend, o keystore.ResolverOptions) *keystore.Resolver {
	t.Helper()
	r, err := keystore.NewResolver(b, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

var testKeyCounter atomic.Int64

// createKey stores a new key for user/team and returns its hash and id.
func createKey(t *testing.T, s keystore.Store, team, user string) keystore.Key {
	t.Helper()
	f, _ := keystore.NewFormat("wev_")
	raw, err := f.Generate()
	if err != nil {
		t.Fatal(err)
	}
	id, err := keystore.NewID()
	if err != nil {
		t.Fatal(err)
	}
	k, err := s.CreateKey(context.Background(), keystore.NewKey{
		ID: id, Hash: keystore.HashKey(raw), Start: f.Start(raw),
		Name: fmt.Sprintf("key %d", testKeyCounter.Add(1)), UserID: user, TeamID: team, Role: "owner",
		MaxActivePerTeam: 1 << 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestResolver_MissThenHit(t *testing.T) {
	store := openTemp(t)
	k := createKey(t, store, "team_a", "user_a")
	b := newTestBackend(store)
	reg := prometheus.NewPedanticRegistry()
	r := newResolver(t, b, keystore.ResolverOptions{Registerer: reg})

	for i := range 3 {
		id, err := r.Resolve(context.Background(), k.Hash)
		if err != nil {
			t.Fatal(err)
		}
		if id.KeyID != k.ID || id.Role != "owner" || id.Check(time.Now()) != keystore.StatusValid {
			t.Fatalf("resolve %d: %+v", i, id)
		}
	}
	if _, err := r.Resolve(context.Background(), keystore.HashKey("wev_unknown")); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("unknown: %v", err)
	}
	if _, err := r.Resolve(context.Background(), keystore.HashKey("wev_unknown")); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("unknown again: %v", err)
	}
	if n := b.calls.Load(); n != 2 {
		t.Fatalf("backend reads = %d, want 2 (one per hash)", n)
	}
	want := `
# HELP keyproxy_auth_cache_entries Key identities held by a cache layer.
# TYPE keyproxy_auth_cache_entries gauge
keyproxy_auth_cache_entries{layer="local"} 1
# HELP keyproxy_auth_cache_requests_total Key identity lookups by cache layer and result (hit, negative_hit, miss).
# TYPE keyproxy_auth_cache_requests_total counter
keyproxy_auth_cache_requests_total{layer="local",result="hit"} 2
keyproxy_auth_cache_requests_total{layer="local",result="miss"} 2
keyproxy_auth_cache_requests_total{layer="local",result="negative_hit"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}

func TestNewResolver_RefusesSecondRegistrationOnOneRegistry(t *testing.T) {
	store := openTemp(t)
	reg := prometheus.NewRegistry()
	newResolver(t, store, keystore.ResolverOptions{Registerer: reg})
	if r, err := keystore.NewResolver(store, keystore.ResolverOptions{Registerer: reg}); err == nil {
		r.Close()
		t.Fatal("second resolver on one registry succeeded")
	}
}

// cachedKey is a key in a real store, read once through a resolver with a
// 10 s TTL on a fake clock: its entry is cached, fresh.
func cachedKey(t *testing.T) (*keystore.SQLite, keystore.Key, *testBackend, *fakeClock, *keystore.Resolver) {
	t.Helper()
	store := openTemp(t)
	k := createKey(t, store, "team_a", "user_a")
	b := newTestBackend(store)
	clock := newFakeClock()
	r := newResolver(t, b, keystore.ResolverOptions{TTL: 10 * time.Second, Now: clock.Now})
	if _, err := r.Resolve(context.Background(), k.Hash); err != nil {
		t.Fatal(err)
	}
	return store, k, b, clock, r
}

func TestResolver_EntryExpiresAfterTTL(t *testing.T) {
	store, k, b, clock, r := cachedKey(t)
	ctx := context.Background()
	// Revoked behind the resolver's back (an invalidation was missed): the
	// cached identity is served until the TTL, never after.
	if _, err := store.RevokeKey(ctx, k.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	clock.Advance(10*time.Second - time.Nanosecond)
	if id, _ := r.Resolve(ctx, k.Hash); id.Revoked {
		t.Fatalf("before TTL: revoked=%v, want the cached identity", id.Revoked)
	}
	// That hit was past the refresh point: a re-read may be running. At
	// the TTL, the answer is a fresh read either way.
	clock.Advance(time.Nanosecond)
	if id, _ := r.Resolve(ctx, k.Hash); !id.Revoked || b.calls.Load() < 2 {
		t.Fatalf("at TTL: revoked=%v reads=%d, want fresh read", id.Revoked, b.calls.Load())
	}
}

// A key in use is read again in the background before it expires: no
// request waits on the store when its entry would have expired.
func TestResolver_RefreshesAheadOfExpiry(t *testing.T) {
	_, k, b, clock, r := cachedKey(t)
	ctx := context.Background()
	clock.Advance(7 * time.Second) // before the earliest refresh point (70%)
	if _, err := r.Resolve(ctx, k.Hash); err != nil || b.calls.Load() != 1 {
		t.Fatalf("before the refresh point: %v, %d reads, want 1", err, b.calls.Load())
	}
	clock.Advance(1600 * time.Millisecond) // past the latest (85%)
	if _, err := r.Resolve(ctx, k.Hash); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return b.calls.Load() == 2 })
	// The re-read stores its result just after reading: a generous pause
	// (nothing observable marks the store) before the clock moves on.
	time.Sleep(200 * time.Millisecond)
	clock.Advance(2 * time.Second) // past the first read's TTL, within the re-read's
	for range 10 {
		if _, err := r.Resolve(ctx, k.Hash); err != nil || b.calls.Load() != 2 {
			t.Fatalf("after the first TTL: %v, %d reads, want the re-read served", err, b.calls.Load())
		}
	}
}

func TestResolver_RefreshFindingTheKeyGoneStopsServingIt(t *testing.T) {
	_, k, b, clock, r := cachedKey(t)
	ctx := context.Background()
	b.store.Store(openTemp(t)) // the key is gone from the store
	clock.Advance(9 * time.Second)
	if _, err := r.Resolve(ctx, k.Hash); err != nil {
		t.Fatalf("the hit that starts the re-read: %v", err)
	}
	waitFor(t, func() bool {
		_, err := r.Resolve(ctx, k.Hash)
		return errors.Is(err, keystore.ErrNotFound)
	})
}

// A backlog of re-reads is paced: keys filled together come due together,
// and the loop pauses as its budget says rather than holding the P
// through the whole backlog.
func TestResolver_RefreshBacklogIsPaced(t *testing.T) {
	store := openTemp(t)
	const n = 20
	keys := make([]keystore.Key, n)
	for i := range keys {
		keys[i] = createKey(t, store, "team_a", fmt.Sprintf("user_%d", i))
	}
	b := newTestBackend(store)
	clock := newFakeClock()
	var pauses atomic.Int64
	newPacer := func() pace.Pacer {
		// The pacer's clock: each store read takes half the budget.
		return pace.WithClock(func() time.Time {
			return time.Unix(0, 0).Add(time.Duration(b.calls.Load()) * pace.Budget / 2)
		}, func(time.Duration) { pauses.Add(1) })
	}
	r, err := keystore.NewResolverPaced(b, keystore.ResolverOptions{TTL: 10 * time.Second, Now: clock.Now}, newPacer)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	ctx := context.Background()
	for _, k := range keys {
		if _, err := r.Resolve(ctx, k.Hash); err != nil {
			t.Fatal(err)
		}
	}
	b.hold() // the first re-read waits until all are queued
	clock.Advance(9 * time.Second)
	for _, k := range keys {
		if _, err := r.Resolve(ctx, k.Hash); err != nil {
			t.Fatal(err)
		}
	}
	<-b.read
	if p := pauses.Load(); p != 0 {
		t.Fatalf("%d pauses before the backlog ran, want 0 (the wait for the first job is not work)", p)
	}
	close(b.release)
	waitFor(t, func() bool { return b.calls.Load() == 2*n })
	// The first re-read starts a run; then a pause after every second one.
	waitFor(t, func() bool { return pauses.Load() >= n/2 })
	time.Sleep(10 * time.Millisecond) // a stray pause would come now
	if p := pauses.Load(); p != n/2 {
		t.Errorf("%d pauses over %d re-reads of half a budget each, want %d", p, n, n/2)
	}
}

// A re-read that began before an invalidation never brings the key back.
func TestResolver_RefreshRacingInvalidationNeverResurrects(t *testing.T) {
	store, k, b, clock, r := cachedKey(t)
	ctx := context.Background()
	b.hold()
	clock.Advance(9 * time.Second)
	if id, err := r.Resolve(ctx, k.Hash); err != nil || id.Revoked {
		t.Fatalf("the hit that starts the re-read: %+v, %v", id, err)
	}
	<-b.read // the re-read has read the key, still active
	if _, err := store.RevokeKey(ctx, k.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	r.Invalidate(k.Hash)
	close(b.release)
	for range 200 { // before, while and after the re-read stores what it read
		if id, err := r.Resolve(ctx, k.Hash); err != nil || !id.Revoked {
			t.Fatalf("after the revocation: %+v, %v; want revoked", id, err)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// The real (coarse) clock lags behind time; the TTL must hold anyway.
func TestResolver_RealClockNeverServesPastTTL(t *testing.T) {
	store := openTemp(t)
	k := createKey(t, store, "team_a", "user_a")
	r := newResolver(t, newTestBackend(store), keystore.ResolverOptions{TTL: time.Second})
	ctx := context.Background()
	filled := time.Now()
	if _, err := r.Resolve(ctx, k.Hash); err != nil {
		t.Fatal(err)
	}
	if _, err := store.RevokeKey(ctx, k.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(filled.Add(time.Second)))
	if id, err := r.Resolve(ctx, k.Hash); err != nil || !id.Revoked {
		t.Fatalf("one TTL after the fill: revoked=%v, %v; want a fresh read", id.Revoked, err)
	}
}

func TestResolver_NegativeCache(t *testing.T) {
	store := openTemp(t)
	b := newTestBackend(store)
	clock := newFakeClock()
	r := newResolver(t, b, keystore.ResolverOptions{NegativeTTL: 2 * time.Second, Now: clock.Now})
	ctx := context.Background()
	h := keystore.HashKey("wev_never_stored")

	steps := []struct {
		name      string
		before    func()
		wantReads int64
	}{
		{"first lookup reads", func() {}, 1},
		{"within negative TTL is cached", func() { clock.Advance(2*time.Second - time.Nanosecond) }, 1},
		{"after negative TTL reads again", func() { clock.Advance(time.Nanosecond) }, 2},
		{"invalidate drops the negative entry", func() { r.Invalidate(h) }, 3},
		{"flush drops it too", r.Flush, 4},
	}
	for _, st := range steps {
		st.before()
		if _, err := r.Resolve(ctx, h); !errors.Is(err, keystore.ErrNotFound) {
			t.Fatalf("%s: %v, want ErrNotFound", st.name, err)
		}
		if n := b.calls.Load(); n != st.wantReads {
			t.Fatalf("%s: reads = %d, want %d", st.name, n, st.wantReads)
		}
	}
}

func TestResolver_ConcurrentMissesShareOneRead(t *testing.T) {
	store := openTemp(t)
	k := createKey(t, store, "team_a", "user_a")
	b := newTestBackend(store).hold()
	reg := prometheus.NewRegistry()
	r := newResolver(t, b, keystore.ResolverOptions{Registerer: reg})

	const n = 50
	errs := make(chan error, n)
	for range n {
		go func() {
			id, err := r.Resolve(context.Background(), k.Hash)
			if err == nil && id.KeyID != k.ID {
				err = fmt.Errorf("got key %s", id.KeyID)
			}
			errs <- err
		}()
	}
	<-b.read
	// Every caller has missed while the one read is held.
	waitFor(t, func() bool {
		return counterValue(t, reg, "miss") == n
	})
	close(b.release)
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := b.calls.Load(); got != 1 {
		t.Fatalf("%d concurrent misses made %d backend reads, want 1", n, got)
	}
}

func TestResolver_BackendErrorIsUnavailableAndNotCached(t *testing.T) {
	good := openTemp(t)
	k := createKey(t, good, "team_a", "user_a")
	down := openTemp(t)
	down.Close()
	b := newTestBackend(down)
	r := newResolver(t, b, keystore.ResolverOptions{})
	ctx := context.Background()

	for i := range 2 {
		_, err := r.Resolve(ctx, k.Hash)
		if !errors.Is(err, keystore.ErrUnavailable) || errors.Is(err, keystore.ErrNotFound) {
			t.Fatalf("attempt %d with the store down: %v, want ErrUnavailable", i, err)
		}
	}
	if n := b.calls.Load(); n != 2 {
		t.Fatalf("reads = %d, want 2: an error must not be cached", n)
	}
	b.store.Store(good)
	if id, err := r.Resolve(ctx, k.Hash); err != nil || id.KeyID != k.ID {
		t.Fatalf("after recovery: %+v, %v", id, err)
	}
}

func TestResolver_ServesCachedEntryWhileBackendDown(t *testing.T) {
	store := openTemp(t)
	k := createKey(t, store, "team_a", "user_a")
	r := newResolver(t, newTestBackend(store), keystore.ResolverOptions{})
	ctx := context.Background()
	if _, err := r.Resolve(ctx, k.Hash); err != nil {
		t.Fatal(err)
	}
	store.Close()
	if id, err := r.Resolve(ctx, k.Hash); err != nil || id.KeyID != k.ID {
		t.Fatalf("cached entry with the store down: %+v, %v", id, err)
	}
	// Once evicted, a key that cannot be verified is refused (fail closed).
	r.Invalidate(k.Hash)
	if _, err := r.Resolve(ctx, k.Hash); !errors.Is(err, keystore.ErrUnavailable) {
		t.Fatalf("evicted entry with the store down: %v, want ErrUnavailable", err)
	}
}

func TestResolver_CallerGivingUpDoesNotFailOthers(t *testing.T) {
	store := openTemp(t)
	k := createKey(t, store, "team_a", "user_a")
	b := newTestBackend(store).hold()
	r := newResolver(t, b, keystore.ResolverOptions{})

	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := r.Resolve(ctx, k.Hash)
		first <- err
	}()
	<-b.read
	second := make(chan error, 1)
	go func() {
		_, err := r.Resolve(context.Background(), k.Hash)
		second <- err
	}()
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) || !errors.Is(err, keystore.ErrUnavailable) {
		t.Fatalf("cancelled caller: %v, want ErrUnavailable wrapping context.Canceled", err)
	}
	close(b.release)
	if err := <-second; err != nil {
		t.Fatalf("other caller failed with the first one's context: %v", err)
	}
}

func TestResolver_FlushAndEvict(t *testing.T) {
	store := openTemp(t)
	k1 := createKey(t, store, "team_a", "user_a")
	k2 := createKey(t, store, "team_a", "user_a")
	b := newTestBackend(store)
	r := newResolver(t, b, keystore.ResolverOptions{})
	ctx := context.Background()
	resolveAll := func() {
		for _, k := range []keystore.Key{k1, k2} {
			if _, err := r.Resolve(ctx, k.Hash); err != nil {
				t.Fatal(err)
			}
		}
	}
	resolveAll()
	resolveAll()
	if n := b.calls.Load(); n != 2 {
		t.Fatalf("reads = %d, want 2", n)
	}
	r.Flush()
	resolveAll()
	if n := b.calls.Load(); n != 4 {
		t.Fatalf("after Flush reads = %d, want 4", n)
	}
	if confirmed, replicas := r.Evict(ctx, []keystore.Hash{k1.Hash}); confirmed != 1 || replicas != 1 {
		t.Fatalf("Evict = %d/%d, want 1/1", confirmed, replicas)
	}
	resolveAll()
	if n := b.calls.Load(); n != 5 {
		t.Fatalf("after Evict of one key reads = %d, want 5", n)
	}
}

// The guarantee behind "revocation is immediate": a read that began before a
// revocation and finishes after the invalidation must never put the key back,
// neither for callers that join that read nor for later ones.
func TestResolver_FillRacingInvalidationNeverResurrects(t *testing.T) {
	store := openTemp(t)
	ctx := context.Background()
	for i := range 100 {
		k := createKey(t, store, "team_a", "user_a")
		b := newTestBackend(store).hold()
		r := newResolver(t, b, keystore.ResolverOptions{})

		early := make(chan keystore.Identity, 1)
		go func() {
			id, _ := r.Resolve(ctx, k.Hash)
			early <- id
		}()
		<-b.read // the read saw the key unrevoked and is held
		if _, err := store.RevokeKey(ctx, k.ID, time.Now()); err != nil {
			t.Fatal(err)
		}
		r.Invalidate(k.Hash)

		// Callers that start after the invalidation: one joins the held
		// read (on odd rounds, before it is released), one comes after.
		late := make(chan keystore.Identity, 1)
		start := func() {
			go func() {
				id, err := r.Resolve(ctx, k.Hash)
				if err != nil {
					t.Errorf("round %d: late caller: %v", i, err)
				}
				late <- id
			}()
		}
		if i%2 == 1 {
			start()
		}
		close(b.release)
		if i%2 == 0 {
			start()
		}
		if id := <-late; !id.Revoked {
			t.Fatalf("round %d: a caller that started after the invalidation got the key unrevoked", i)
		}
		<-early
		for range 3 {
			if id, err := r.Resolve(ctx, k.Hash); err != nil || !id.Revoked {
				t.Fatalf("round %d: key came back after invalidation: %+v, %v", i, id, err)
			}
		}
	}
}

// Many readers against revocations: once Invalidate has returned, every
// Resolve that starts afterwards sees the key revoked.
func TestResolver_NoStaleReadAfterInvalidateUnderLoad(t *testing.T) {
	store := openTemp(t)
	ctx := context.Background()
	r := newResolver(t, store, keystore.ResolverOptions{})
	for round := range 20 {
		k := createKey(t, store, "team_a", "user_a")
		var invalidated atomic.Bool
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					after := invalidated.Load()
					id, err := r.Resolve(ctx, k.Hash)
					if err != nil {
						t.Errorf("round %d: %v", round, err)
						return
					}
					if after && !id.Revoked {
						t.Errorf("round %d: stale identity served after Invalidate returned", round)
						return
					}
				}
			})
		}
		time.Sleep(time.Millisecond) // let the readers fill and hit the cache
		if _, err := store.RevokeKey(ctx, k.ID, time.Now()); err != nil {
			t.Fatal(err)
		}
		r.Invalidate(k.Hash)
		invalidated.Store(true)
		time.Sleep(2 * time.Millisecond)
		close(stop)
		wg.Wait()
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// counterValue reads keyproxy_auth_cache_requests_total{result=...}.
func counterValue(t *testing.T, g prometheus.Gatherer, result string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "keyproxy_auth_cache_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
