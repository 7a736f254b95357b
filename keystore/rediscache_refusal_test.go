package keystore_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wevion/keyproxy/internal/testserver"
	"github.com/wevion/keyproxy/keystore"
)

// newRefusalFixture is newRCFixture with a short probe interval and the
// cache's log lines kept.
func newRefusalFixture(t *testing.T) (*rcFixture, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	f := &rcFixture{srv: testserver.StartRedis(t), store: clStore(t), reg: prometheus.NewRegistry(), ttl: 5 * time.Second}
	f.rdb = clRedisClient(t, f.srv.Addr)
	f.backend = &switchBackend{next: f.store}
	var err error
	f.rc, err = keystore.NewRedisCache(f.rdb, f.backend, keystore.RedisCacheOptions{
		TTL: f.ttl, ProbeInterval: 50 * time.Millisecond, Registerer: f.reg, Logger: zap.New(core),
	})
	if err != nil {
		t.Fatal(err)
	}
	return f, logs
}

// TestRedisCache_RevokedWhileRedisRefusesWrites: the revocation's
// tombstone cannot be written, so Redis still holds the key's identity.
// Until the invalidation reaches Redis, this cache must not answer for
// that key from Redis: revocation holds at once on the revoking replica.
func TestRedisCache_RevokedWhileRedisRefusesWrites(t *testing.T) {
	f, logs := newRefusalFixture(t)
	ctx := redisCtx(t)
	k := clKey(t, f.store, "team_a", "user_a")
	if _, err := f.rc.Resolve(ctx, k.Hash); err != nil {
		t.Fatal(err)
	}
	f.srv.Fill(t, true)
	if _, err := f.store.RevokeKey(ctx, k.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := f.rc.Invalidate(ctx, []keystore.Hash{k.Hash}); err == nil {
		t.Fatal("Invalidate succeeded while Redis refuses writes")
	}
	// Past the probe interval, when lookups use Redis again.
	for range 5 {
		time.Sleep(60 * time.Millisecond)
		id, err := f.rc.Resolve(ctx, k.Hash)
		if err == nil && id.Check(time.Now()) == keystore.StatusValid {
			t.Fatalf("a revoked key resolved as valid from the identity Redis still holds: %+v", id)
		}
	}
	if err := f.rc.RetryPending(ctx); err == nil {
		t.Fatal("RetryPending succeeded while Redis refuses writes")
	}
	if n := logs.FilterMessageSnippet("refuses writes").Len(); n != 1 {
		t.Errorf("%d refusal log lines, want 1", n)
	}
	if n := logs.FilterMessageSnippet("unavailable").Len(); n != 0 {
		t.Errorf("%d outage log lines while Redis answered, want 0", n)
	}
	f.srv.Fill(t, false)
	if err := f.rc.RetryPending(ctx); err != nil {
		t.Fatalf("RetryPending once Redis takes writes: %v", err)
	}
	if id, err := f.rc.Resolve(ctx, k.Hash); err == nil && id.Check(time.Now()) == keystore.StatusValid {
		t.Fatalf("revoked key valid after the invalidation reached Redis: %+v", id)
	}
	if n := logs.FilterMessageSnippet("takes writes again").Len(); n != 1 {
		t.Errorf("%d log lines for writes taken again, want 1", n)
	}
}

// TestRedisCache_RefusedWritesAreNotAnOutage: while Redis answers lookups
// but refuses fills, hits are still served from Redis and the cache logs
// one line, not an outage and a recovery at every hit and miss.
func TestRedisCache_RefusedWritesAreNotAnOutage(t *testing.T) {
	f, logs := newRefusalFixture(t)
	ctx := redisCtx(t)
	cached := clKey(t, f.store, "team_a", "user_a")
	if _, err := f.rc.Resolve(ctx, cached.Hash); err != nil {
		t.Fatal(err)
	}
	f.srv.Fill(t, true)
	hits := f.requests(t, "hit")
	for i := range 20 {
		fresh := clKey(t, f.store, "team_a", fmt.Sprintf("user_%d", i))
		for _, k := range []keystore.Key{fresh, cached} {
			if id, err := f.rc.Resolve(ctx, k.Hash); err != nil || id.KeyID != k.ID {
				t.Fatalf("Resolve while Redis refuses writes = %+v, %v; want the key", id, err)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := f.requests(t, "hit") - hits; got != 20 {
		t.Errorf("%v of 20 lookups of a cached key were Redis hits while it refused writes, want all", got)
	}
	if n := logs.FilterMessageSnippet("refuses writes").Len(); n != 1 {
		t.Errorf("%d refusal log lines, want 1", n)
	}
	for _, msg := range []string{"unavailable", "available again"} {
		if n := logs.FilterMessageSnippet(msg).Len(); n != 0 {
			t.Errorf("%d %q log lines while Redis answered every lookup, want 0", n, msg)
		}
	}
	f.srv.Fill(t, false)
	eventually(t, 5*time.Second, "a fill stored once Redis takes writes", func() bool {
		k := clKey(t, f.store, "team_a", "user_later")
		_, err := f.rc.Resolve(ctx, k.Hash)
		return err == nil && f.raw(t, k.Hash) != ""
	})
	if n := logs.FilterMessageSnippet("takes writes again").Len(); n != 1 {
		t.Errorf("%d log lines for writes taken again, want 1", n)
	}
}
