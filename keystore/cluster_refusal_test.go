package keystore_test

import (
	"strings"
	"testing"
	"time"

	"github.com/wevion/keyproxy/internal/testserver"
	"github.com/wevion/keyproxy/keystore"
)

// TestCluster_EvictWhileRedisRefusesWrites: out of memory (or read-only
// after a failover), Redis carries the eviction and the acks, which are
// PUBLISHes, but refuses the tombstones, so it still holds the key's
// identity. A replica that confirmed the eviction must not admit the key
// from there: the confirmation is what DELETE reports.
func TestCluster_EvictWhileRedisRefusesWrites(t *testing.T) {
	srv := testserver.StartRedis(t)
	store := clStore(t)
	a := startReplica(t, srv.Addr, store, replicaOpts{})
	b := startReplica(t, srv.Addr, store, replicaOpts{})
	ctx := redisCtx(t)
	rdb := clRedisClient(t, srv.Addr)
	k := clKey(t, store, "team_a", "user_a")
	if b.status(t, k.Hash) != keystore.StatusValid {
		t.Fatal("fresh key not valid")
	}
	entry := keystore.DefaultRedisKeyPrefix + k.Hash.String()
	if v, err := rdb.Get(ctx, entry).Result(); err != nil || !strings.Contains(v, k.ID) {
		t.Fatalf("Redis holds %q, %v: the test needs the identity cached there", v, err)
	}
	srv.Fill(t, true)
	if _, err := store.RevokeKey(ctx, k.ID, time.Time{}); err != nil {
		t.Fatal(err)
	}
	confirmed, replicas := a.cl.Evict(ctx, []keystore.Hash{k.Hash})
	if confirmed != 2 || replicas != 2 {
		t.Fatalf("Evict = %d of %d, want 2 of 2: Redis out of memory still publishes", confirmed, replicas)
	}
	if v, _ := rdb.Get(ctx, entry).Result(); !strings.Contains(v, k.ID) {
		t.Fatalf("Redis holds %q: the test needs the tombstone refused", v)
	}
	for name, r := range map[string]*replica{"evicting": a, "confirming": b} {
		if st := r.status(t, k.Hash); st != keystore.StatusInvalid {
			t.Errorf("the %s replica admits the revoked key from the identity Redis still holds: %v", name, st)
		}
	}

	srv.Fill(t, false)
	eventually(t, 5*time.Second, "the heartbeat's retry writes the tombstone", func() bool {
		v, _ := rdb.Get(ctx, entry).Result()
		return strings.HasPrefix(v, "tombstone:")
	})
	for name, r := range map[string]*replica{"evicting": a, "confirming": b} {
		if st := r.status(t, k.Hash); st != keystore.StatusInvalid {
			t.Errorf("the %s replica admits the revoked key once Redis takes writes: %v", name, st)
		}
	}
}
