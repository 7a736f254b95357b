package keystore_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/wevion/keyproxy/internal/testserver"
	"github.com/wevion/keyproxy/keystore"
)

type rcFixture struct {
	srv     *testserver.Redis
	rdb     *redis.Client
	store   *keystore.SQLite
	backend *switchBackend
	rc      *keystore.RedisCache
	reg     *prometheus.Registry
	ttl     time.Duration
}

func newRCFixture(t *testing.T, next func(keystore.Backend) keystore.Backend) *rcFixture {
	t.Helper()
	f := &rcFixture{srv: testserver.StartRedis(t), store: clStore(t), reg: prometheus.NewRegistry(), ttl: 5 * time.Second}
	f.rdb = clRedisClient(t, f.srv.Addr)
	f.backend = &switchBackend{next: f.store}
	var b keystore.Backend = f.backend
	if next != nil {
		b = next(b)
	}
	var err error
	f.rc, err = keystore.NewRedisCache(f.rdb, b, keystore.RedisCacheOptions{TTL: f.ttl, Registerer: f.reg})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *rcFixture) raw(t *testing.T, h keystore.Hash) string {
	t.Helper()
	v, err := f.rdb.Get(redisCtx(t), keystore.DefaultRedisKeyPrefix+h.String()).Result()
	if errors.Is(err, redis.Nil) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func (f *rcFixture) requests(t *testing.T, result string) float64 {
	return (&replica{reg: f.reg}).counter(t, "keyproxy_auth_cache_requests_total", "layer", "redis", "result", result)
}

func TestRedisCache_MissFillsThenHits(t *testing.T) {
	f := newRCFixture(t, nil)
	ctx := redisCtx(t)
	k := clKey(t, f.store, "team_a", "user_a")
	for range 3 {
		id, err := f.rc.Resolve(ctx, k.Hash)
		if err != nil || id.KeyID != k.ID || id.Check(time.Now()) != keystore.StatusValid {
			t.Fatalf("Resolve = %+v, %v", id, err)
		}
	}
	if n := f.backend.calls.Load(); n != 1 {
		t.Fatalf("store read %d times for 3 lookups, want 1", n)
	}
	if v := f.raw(t, k.Hash); !strings.Contains(v, `"key_id":"`+k.ID+`"`) {
		t.Fatalf("redis entry = %q, want the identity as JSON", v)
	}
	ttl, err := f.rdb.PTTL(ctx, keystore.DefaultRedisKeyPrefix+k.Hash.String()).Result()
	if err != nil || ttl <= 0 || ttl > f.ttl {
		t.Fatalf("entry TTL = %v (%v), want within (0, %v]", ttl, err, f.ttl)
	}
	if hits, misses := f.requests(t, "hit"), f.requests(t, "miss"); hits != 2 || misses != 1 {
		t.Fatalf("hits %v misses %v, want 2 and 1", hits, misses)
	}
}

func TestRedisCache_UnknownHashIsNotCached(t *testing.T) {
	f := newRCFixture(t, nil)
	h := keystore.HashKey("wev_unknown")
	for range 2 {
		if _, err := f.rc.Resolve(redisCtx(t), h); !errors.Is(err, keystore.ErrNotFound) {
			t.Fatalf("Resolve unknown = %v, want ErrNotFound", err)
		}
	}
	if n := f.backend.calls.Load(); n != 2 {
		t.Fatalf("store read %d times, want 2 (no negative entry in redis)", n)
	}
	if v := f.raw(t, h); v != "" {
		t.Fatalf("redis holds %q for an unknown hash", v)
	}
}

// Redis keeps serving what it holds while the store is down; what it does
// not hold fails closed.
func TestRedisCache_StoreDown(t *testing.T) {
	f := newRCFixture(t, nil)
	ctx := redisCtx(t)
	cached := clKey(t, f.store, "team_a", "user_a")
	uncached := clKey(t, f.store, "team_a", "user_a")
	if _, err := f.rc.Resolve(ctx, cached.Hash); err != nil {
		t.Fatal(err)
	}
	f.backend.down.Store(true)
	if id, err := f.rc.Resolve(ctx, cached.Hash); err != nil || id.KeyID != cached.ID {
		t.Fatalf("cached key with the store down: %+v, %v", id, err)
	}
	if _, err := f.rc.Resolve(ctx, uncached.Hash); err == nil {
		t.Fatal("uncached key resolved with the store down")
	}
}

func TestRedisCache_RedisDownFallsThroughToStore(t *testing.T) {
	f := newRCFixture(t, nil)
	ctx := redisCtx(t)
	k := clKey(t, f.store, "team_a", "user_a")
	f.srv.Kill()
	for range 5 {
		start := time.Now()
		id, err := f.rc.Resolve(ctx, k.Hash)
		if err != nil || id.KeyID != k.ID {
			t.Fatalf("Resolve with redis down = %+v, %v; want the store's answer", id, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("Resolve with redis down took %v", d)
		}
	}
	if errs, skipped := f.requests(t, "error"), f.requests(t, "skipped"); errs != 1 || skipped != 4 {
		t.Fatalf("errors %v skipped %v: want one failed call, then lookups skip redis for the probe interval", errs, skipped)
	}
	if err := f.rc.Invalidate(ctx, []keystore.Hash{k.Hash}); err == nil {
		t.Fatal("Invalidate with redis down reported success")
	}
	pending := func() float64 {
		return (&replica{reg: f.reg}).counter(t, "keyproxy_redis_cache_pending_invalidations")
	}
	if p := pending(); p != 1 {
		t.Fatalf("pending invalidations = %v, want 1", p)
	}
	f.srv.Start()
	if err := f.rc.RetryPending(ctx); err != nil {
		t.Fatalf("RetryPending after redis returned: %v", err)
	}
	if p := pending(); p != 0 {
		t.Fatalf("pending invalidations after retry = %v, want 0", p)
	}
	if v := f.raw(t, k.Hash); !strings.HasPrefix(v, "tombstone:") {
		t.Fatalf("after the replayed invalidation redis holds %q, want a tombstone", v)
	}
}

// An invalidation Redis did not take (writes paused) is replayed, and
// until then no fill of that hash is written back.
func TestRedisCache_FailedInvalidationIsReplayedAndBlocksWriteBack(t *testing.T) {
	f := newRCFixture(t, nil)
	ctx := redisCtx(t)
	stale := clKey(t, f.store, "team_a", "user_a") // cached in redis, then revoked
	fresh := clKey(t, f.store, "team_a", "user_a") // not in redis
	if _, err := f.rc.Resolve(ctx, stale.Hash); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.RevokeKey(ctx, stale.ID, time.Time{}); err != nil {
		t.Fatal(err)
	}
	pause := 400 * time.Millisecond
	if _, err := f.srv.Do("CLIENT", "PAUSE", "400", "WRITE"); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	if err := f.rc.Invalidate(ctx, []keystore.Hash{stale.Hash, fresh.Hash}); err == nil {
		t.Fatal("Invalidate while redis refuses writes reported success")
	}
	time.Sleep(pause - time.Since(paused) + 50*time.Millisecond)
	// Redis takes writes again, but the invalidation has not been replayed:
	// a fill of a pending hash must not be written back.
	if _, err := f.rc.Resolve(ctx, fresh.Hash); err != nil {
		t.Fatal(err)
	}
	if v := f.raw(t, fresh.Hash); v != "" {
		t.Fatalf("a fill of a hash with a pending invalidation was written back: %q", v)
	}
	if err := f.rc.RetryPending(ctx); err != nil {
		t.Fatalf("replay: %v", err)
	}
	for _, k := range []keystore.Key{stale, fresh} {
		if v := f.raw(t, k.Hash); !strings.HasPrefix(v, "tombstone:") {
			t.Fatalf("after the replay redis holds %q, want a tombstone", v)
		}
	}
	if id, err := f.rc.Resolve(ctx, stale.Hash); err != nil || !id.Revoked {
		t.Fatalf("after the replay Resolve = %+v, %v; want revoked", id, err)
	}
}

// The heart of the resurrection guard: a fill that read the store before a
// revocation and tries to write back after the invalidation loses.
func TestRedisCache_FillRacingInvalidationNeverResurrects(t *testing.T) {
	var gate *gateBackend
	f := newRCFixture(t, func(b keystore.Backend) keystore.Backend { gate = newGate(b); return gate })
	ctx := redisCtx(t)
	for i := range 30 {
		k := clKey(t, f.store, "team_a", "user_a")
		gate.armed.Store(true)
		done := make(chan keystore.Identity, 1)
		go func() {
			id, _ := f.rc.Resolve(ctx, k.Hash)
			done <- id
		}()
		<-gate.read // the fill has read the key as valid
		if _, err := f.store.RevokeKey(ctx, k.ID, time.Time{}); err != nil {
			t.Fatal(err)
		}
		if err := f.rc.Invalidate(ctx, []keystore.Hash{k.Hash}); err != nil {
			t.Fatal(err)
		}
		gate.release <- struct{}{}
		<-done
		if v := f.raw(t, k.Hash); !strings.HasPrefix(v, "tombstone:") {
			t.Fatalf("round %d: after the racing fill redis holds %q, want the tombstone", i, v)
		}
		id, err := f.rc.Resolve(ctx, k.Hash)
		if err != nil || !id.Revoked {
			t.Fatalf("round %d: Resolve after the race = %+v, %v; want revoked", i, id, err)
		}
	}
	superseded := (&replica{reg: f.reg}).counter(t, "keyproxy_redis_cache_writebacks_total", "result", "superseded")
	if superseded != 30 {
		t.Fatalf("superseded write-backs = %v, want 30", superseded)
	}
}

// A slow Redis costs a bounded delay, not a stalled lookup.
func TestRedisCache_SlowRedisIsBounded(t *testing.T) {
	f := newRCFixture(t, nil)
	ctx := redisCtx(t)
	k := clKey(t, f.store, "team_a", "user_a")
	if _, err := f.srv.Do("CLIENT", "PAUSE", "2000", "ALL"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	id, err := f.rc.Resolve(ctx, k.Hash)
	took := time.Since(start)
	if err != nil || id.KeyID != k.ID {
		t.Fatalf("Resolve with redis paused = %+v, %v", id, err)
	}
	t.Logf("lookup with redis paused took %v (timeout 100ms)", took)
	if took > time.Second {
		t.Fatalf("lookup took %v with redis paused; the per-call timeout should bound it", took)
	}
}

// A value that is not a whole identity of this version is a miss; the
// fill replaces it.
func TestRedisCache_DamagedEntryIsAMissAndReplaced(t *testing.T) {
	f := newRCFixture(t, nil)
	ctx := redisCtx(t)
	k := clKey(t, f.store, "team_a", "user_a")
	key := keystore.DefaultRedisKeyPrefix + k.Hash.String()
	for _, bad := range []string{
		"garbage",
		`{"v":1,"key_id":"x","user_id":"u","team_id":"t","role":"owner","user_active":true,"team_active":true,"same_team":true}`,
		`{"v":99,"key_id":"x","user_id":"u","team_id":"t","user_active":true,"team_active":true,"same_team":true,"revoked":false}`,
	} {
		if err := f.rdb.Set(ctx, key, bad, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		id, err := f.rc.Resolve(ctx, k.Hash)
		if err != nil || id.KeyID != k.ID {
			t.Fatalf("Resolve over %q = %+v, %v; want the store's identity", bad, id, err)
		}
		if v := f.raw(t, k.Hash); !strings.Contains(v, k.ID) {
			t.Fatalf("entry %q was not replaced: %q", bad, v)
		}
	}
}

func FuzzDecodeRedisIdentity(f *testing.F) {
	f.Add(`{"v":1,"key_id":"key_a","user_id":"u","team_id":"t","role":"owner","user_active":true,"team_active":true,"same_team":true,"revoked":false}`)
	f.Add(`{"v":1,"key_id":"key_a","user_id":"u","team_id":"t","role":"","user_active":false,"team_active":true,"same_team":true,"revoked":true,"expires_at":"2030-01-02T03:04:05.123456Z"}`)
	f.Add(`tombstone:00ff`)
	f.Add(`{"v":1}`)
	f.Add(`{"revoked":null}`)
	f.Fuzz(func(t *testing.T, v string) {
		id, ok := keystore.DecodeRedisIdentity(v)
		if !ok {
			return
		}
		if id.KeyID == "" || id.UserID == "" || id.TeamID == "" {
			t.Fatalf("accepted an identity without ids: %+v", id)
		}
		enc, err := keystore.EncodeRedisIdentity(id)
		if err != nil {
			t.Fatalf("accepted identity %+v does not encode: %v", id, err)
		}
		again, ok := keystore.DecodeRedisIdentity(enc)
		if !ok || again != id {
			t.Fatalf("round trip changed %+v into %+v (%v)", id, again, ok)
		}
	})
}
