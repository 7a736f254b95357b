package keystore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wevion/keyproxy/keystore"
)

// A replica's key path for a cluster: the in-process Resolver in front of
// the shared RedisCache in front of the store, and the Cluster fan-out the
// admin API evicts through. Here Redis is unreachable (nothing listens on
// port 1), which shows the fallback: keys resolve from the store, and an
// eviction holds on this replica and reports that only it confirmed.
func ExampleNewCluster() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "keyproxy-example")
	defer os.RemoveAll(dir)
	store, err := keystore.OpenSQLite(ctx, filepath.Join(dir, "keys.db")) // or keystore.OpenPostgres
	if err != nil {
		panic(err)
	}
	defer store.Close()

	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", ContextTimeoutEnabled: true, MaxRetries: -1})
	defer rdb.Close()
	rc, err := keystore.NewRedisCache(rdb, store, keystore.RedisCacheOptions{TTL: 10 * time.Second})
	if err != nil {
		panic(err)
	}
	local, err := keystore.NewResolver(rc, keystore.ResolverOptions{TTL: 10 * time.Second})
	if err != nil {
		panic(err)
	}
	defer local.Close()
	cluster, err := keystore.NewCluster(rdb, local, rc, keystore.ClusterOptions{AckTimeout: 2 * time.Second})
	if err != nil {
		panic(err)
	}
	startCtx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_ = cluster.Start(startCtx) // joins when Redis answers
	defer cluster.Close()

	key, _ := store.CreateKey(ctx, keystore.NewKey{ID: "key_AAAAAAAAAAAAAAAAAAAA", Hash: keystore.HashKey("wev_example"),
		Start: "wev_exam", Name: "ci", UserID: "user_1", TeamID: "team_1", Role: "admin", MaxActivePerTeam: 10})
	id, _ := local.Resolve(ctx, key.Hash)
	fmt.Println("before:", id.Check(time.Now()) == keystore.StatusValid)

	// What DELETE /admin/v1/keys/{id} does.
	_, _ = store.RevokeKey(ctx, key.ID, time.Now())
	confirmed, replicas := cluster.Evict(ctx, []keystore.Hash{key.Hash})
	id, _ = local.Resolve(ctx, key.Hash)
	fmt.Println("after:", id.Check(time.Now()) == keystore.StatusValid, confirmed, "of", replicas, "confirmed")
	// Output:
	// before: true
	// after: false 1 of 1 confirmed
}
