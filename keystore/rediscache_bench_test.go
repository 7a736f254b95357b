package keystore_test

import (
	"context"
	"testing"

	"github.com/wevion/keyproxy/internal/testserver"
	"github.com/wevion/keyproxy/keystore"
)

// BenchmarkRedisCacheHit is a local-cache miss served by Redis: one GET
// and a JSON decode.
func BenchmarkRedisCacheHit(b *testing.B) {
	srv := testserver.StartRedis(b)
	store := clStore(b)
	rc, err := keystore.NewRedisCache(clRedisClient(b, srv.Addr), store, keystore.RedisCacheOptions{})
	if err != nil {
		b.Fatal(err)
	}
	k := clKey(b, store, "team_a", "user_a")
	ctx := context.Background()
	if _, err := rc.Resolve(ctx, k.Hash); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := rc.Resolve(ctx, k.Hash); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkClusterEvict is one acknowledged eviction between two replicas.
func BenchmarkClusterEvict(b *testing.B) {
	srv := testserver.StartRedis(b)
	store := clStore(b)
	a := startReplica(b, srv.Addr, store, replicaOpts{})
	startReplica(b, srv.Addr, store, replicaOpts{})
	h := []keystore.Hash{keystore.HashKey("wev_bench")}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if c, n := a.cl.Evict(ctx, h); c != 2 || n != 2 {
			b.Fatalf("Evict = %d of %d", c, n)
		}
	}
}
