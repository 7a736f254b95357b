package main

import (
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wevion/keyproxy/internal/testserver"
)

// twoReplicas starts two keyproxy instances on one PostgreSQL and one Redis.
func twoReplicas(t *testing.T, extra ...string) (a, b *instance, rs *testserver.Redis, up *upstream) {
	t.Helper()
	rs = testserver.StartRedis(t)
	dsn := testserver.NewPostgresDB(t)
	up = newUpstream(t)
	env := append([]string{
		"KEYPROXY_UPSTREAM_URL=" + up.URL,
		"KEYPROXY_STORE_DRIVER=postgres",
		"KEYPROXY_STORE_DSN=" + dsn,
		"KEYPROXY_REDIS_ADDR=" + rs.Addr,
		"KEYPROXY_LOG_ACCESS=false",
	}, extra...)
	a = startInstance(t, env...)
	b = startInstance(t, env...)
	waitFor(t, 10*time.Second, "both replicas registered", func() bool {
		n, _ := rs.Do("ZCARD", "keyproxy:replicas")
		return strings.HasPrefix(n, ":2")
	})
	return a, b, rs, up
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < d {
		if ok() {
			return time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s", what, d)
	return d
}

func createKey(t *testing.T, in *instance, user, team string) (key, id string) {
	t.Helper()
	resp, body := in.admin(t, http.MethodPost, "/admin/v1/keys", map[string]any{
		"name": "k", "user_id": user, "team_id": team, "role": "admin",
	})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: %d %s", resp.StatusCode, body)
	}
	m := decode(t, body)
	return m["key"].(string), m["id"].(string)
}

func status(t *testing.T, in *instance, key string) int {
	t.Helper()
	resp, _ := in.call(t, key, "/x")
	return resp.StatusCode
}

// The acknowledged-revocation guarantee: once DELETE on A returns, B has
// confirmed and refuses the key. Measured over 100 revocations.
func TestCluster_RevocationIsAcknowledgedByEveryReplica(t *testing.T) {
	a, b, _, _ := twoReplicas(t)
	const n = 100
	var refusedAfter []time.Duration
	for i := 0; i < n; i++ {
		key, id := createKey(t, a, "usr_rev", "team_rev")
		if got := status(t, b, key); got != http.StatusOK {
			t.Fatalf("key made on A refused by B: %d", got)
		}
		start := time.Now()
		resp, body := a.admin(t, http.MethodDelete, "/admin/v1/keys/"+id, nil)
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("revoke: %d %s", resp.StatusCode, body)
		}
		if acks := resp.Header.Get("Keyproxy-Revocation-Acks"); acks != "2/2" {
			t.Fatalf("Keyproxy-Revocation-Acks = %q, want 2/2", acks)
		}
		if got := status(t, b, key); got != http.StatusUnauthorized {
			t.Fatalf("B admitted a key whose revocation it had acknowledged: %d", got)
		}
		refusedAfter = append(refusedAfter, time.Since(start))
	}
	sort.Slice(refusedAfter, func(i, j int) bool { return refusedAfter[i] < refusedAfter[j] })
	t.Logf("revoke on A → refused on B, over %d revocations: median %s, worst %s",
		n, refusedAfter[n/2].Round(time.Microsecond), refusedAfter[n-1].Round(time.Microsecond))
	if worst := refusedAfter[n-1]; worst > time.Second {
		t.Errorf("worst revocation took %s (DELETE round trip plus B's refusal), want well under 1s", worst)
	}
}

// An attempt with a revoked key on the replica that did not revoke it is in
// the key's trail, named: B learns the key's ids from the store after the
// eviction replaced its cached identity (and Redis's) with a tombstone.
func TestCluster_AttemptWithARevokedKeyIsNamedOnTheOtherReplica(t *testing.T) {
	a, b, _, _ := twoReplicas(t)
	key, id := createKey(t, a, "usr_leak", "team_leak")
	if got := status(t, b, key); got != http.StatusOK {
		t.Fatalf("key made on A refused by B: %d", got)
	}
	if resp, body := a.admin(t, http.MethodDelete, "/admin/v1/keys/"+id, nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", resp.StatusCode, body)
	}
	if got := status(t, b, key); got != http.StatusUnauthorized {
		t.Fatalf("B after the revocation: %d", got)
	}
	var attempt map[string]any
	waitFor(t, 10*time.Second, "the attempt on B in the key's trail", func() bool {
		_, body := a.admin(t, http.MethodGet, "/admin/v1/audit?key_id="+id, nil)
		var page struct{ Events []map[string]any }
		if err := json.Unmarshal(body, &page); err != nil {
			t.Fatalf("audit page: %v: %s", err, body)
		}
		for _, ev := range page.Events {
			if ev["type"] == "auth.failed" {
				attempt = ev
				return true
			}
		}
		return false
	})
	if attempt["user_id"] != "usr_leak" || attempt["team_id"] != "team_leak" || attempt["outcome"] != "invalid_key" || attempt["role"] != nil {
		t.Errorf("attempt event %v, want user usr_leak, team team_leak, invalid_key, no role", attempt)
	}
}

func TestCluster_TeamLimitExactAcrossReplicas(t *testing.T) {
	a, b, _, _ := twoReplicas(t)
	var created, limited atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		in := a
		if i%2 == 1 {
			in = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, _ := in.admin(t, http.MethodPost, "/admin/v1/keys", map[string]any{
				"name": "k", "user_id": "usr_lim", "team_id": "team_lim", "role": "owner",
			})
			switch resp.StatusCode {
			case http.StatusCreated:
				created.Add(1)
			case http.StatusConflict:
				limited.Add(1)
			}
		}()
	}
	wg.Wait()
	if created.Load() != 10 || limited.Load() != 40 {
		t.Fatalf("50 concurrent creates over two replicas: %d created, %d refused; want 10 and 40", created.Load(), limited.Load())
	}
}

func TestCluster_UserChangeFollowsOnEveryReplica(t *testing.T) {
	a, b, _, up := twoReplicas(t)
	key, _ := createKey(t, a, "usr_role", "team_role")
	if got := status(t, b, key); got != http.StatusOK {
		t.Fatalf("B: %d", got)
	}
	resp, body := a.admin(t, http.MethodPut, "/admin/v1/users/usr_role", map[string]any{"team_id": "team_role", "role": "member", "active": true})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("user update: %d %s", resp.StatusCode, body)
	}
	if got := status(t, b, key); got != http.StatusOK {
		t.Fatalf("B after demotion: %d", got)
	}
	if role := up.last(t).Get("X-Wevion-Role"); role != "member" {
		t.Errorf("B forwarded role %q right after the demotion on A, want member", role)
	}
	a.admin(t, http.MethodPut, "/admin/v1/teams/team_role", map[string]any{"active": false})
	if got := status(t, b, key); got != http.StatusForbidden {
		t.Errorf("B after the team went inactive on A: %d, want 403", got)
	}
}

// Redis down: keys resolve from the store, a revocation holds at once on
// the replica that served it and within cache.ttl on the other, and the
// cluster recovers by itself when Redis is back.
func TestCluster_RedisOutageAndRecovery(t *testing.T) {
	const ttl = time.Second
	a, b, rs, _ := twoReplicas(t, "KEYPROXY_CACHE_TTL=1s")
	key1, id1 := createKey(t, a, "usr_out", "team_out")
	key2, _ := createKey(t, a, "usr_out2", "team_out")
	for _, in := range []*instance{a, b} {
		if got := status(t, in, key1); got != http.StatusOK {
			t.Fatalf("before the outage: %d", got)
		}
	}

	rs.Kill()
	time.Sleep(ttl + 200*time.Millisecond) // let cached entries expire: the store must answer
	for name, in := range map[string]*instance{"A": a, "B": b} {
		for _, k := range []string{key1, key2} { // B now holds key1 in its local cache
			if got := status(t, in, k); got != http.StatusOK {
				t.Fatalf("%s refused a valid key while Redis is down: %d", name, got)
			}
		}
	}
	// Still ready: a load balancer must not drop every replica because
	// Redis is down; the body says what is degraded.
	ready, err := http.NewRequest(http.MethodGet, b.adminURL+"/readyz", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, body := do(t, ready)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"degraded"`) {
		t.Errorf("/readyz during the Redis outage: %d %s, want 200 and redis degraded", resp.StatusCode, body)
	}
	start := time.Now()
	resp, body = a.admin(t, http.MethodDelete, "/admin/v1/keys/"+id1, nil)
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("revoke during the outage: %d %s", resp.StatusCode, body)
	}
	t.Logf("DELETE during the Redis outage took %s, acks %s", time.Since(start), resp.Header.Get("Keyproxy-Revocation-Acks"))
	if got := status(t, a, key1); got != http.StatusUnauthorized {
		t.Fatalf("the serving replica admitted a key it revoked during the outage: %d", got)
	}
	took := waitFor(t, ttl+time.Second, "B refuses the revoked key within cache.ttl", func() bool {
		return status(t, b, key1) == http.StatusUnauthorized
	})
	t.Logf("B refused the key revoked on A %s after the DELETE returned (cache.ttl %s)", took, ttl)

	rs.Start()
	key3, _ := createKey(t, a, "usr_back", "team_back")
	if got := status(t, b, key3); got != http.StatusOK {
		t.Fatalf("after recovery B: %d", got)
	}
	// Both replicas rejoin by themselves: a revocation is acknowledged by
	// both again.
	waitFor(t, 20*time.Second, "revocations acknowledged 2/2 again after Redis returned", func() bool {
		key, id := createKey(t, a, "usr_back", "team_back")
		status(t, b, key)
		resp, _ := a.admin(t, http.MethodDelete, "/admin/v1/keys/"+id, nil)
		acked := resp.Header.Get("Keyproxy-Revocation-Acks") == "2/2"
		if acked {
			if got := status(t, b, key); got != http.StatusUnauthorized {
				t.Fatalf("B acknowledged the revocation but admitted the key: %d", got)
			}
		} else { // B not rejoined yet: the cache.ttl bound holds
			waitFor(t, ttl+time.Second, "B refuses within cache.ttl while rejoining", func() bool {
				return status(t, b, key) == http.StatusUnauthorized
			})
		}
		return acked
	})
}

// A replica whose subscription is killed may have missed messages: it
// resubscribes and a later revocation still reaches it.
func TestCluster_SubscriptionKilledDuringRevocations(t *testing.T) {
	// Polling B for up to cache.ttl must not run into B's rate limit.
	a, b, rs, _ := twoReplicas(t, "KEYPROXY_RATELIMIT_DEFAULT_REQUESTS=100000", "KEYPROXY_RATELIMIT_DEFAULT_BURST=100000")
	for i := 0; i < 5; i++ {
		key, id := createKey(t, a, "usr_sub", "team_sub")
		if got := status(t, b, key); got != http.StatusOK {
			t.Fatalf("B: %d", got)
		}
		if _, err := rs.Do("CLIENT", "KILL", "TYPE", "pubsub"); err != nil {
			t.Fatalf("CLIENT KILL: %v", err)
		}
		resp, _ := a.admin(t, http.MethodDelete, "/admin/v1/keys/"+id, nil)
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("revoke: %d", resp.StatusCode)
		}
		// Whether or not B's ack made it, B must refuse within cache.ttl
		// (10 s); after resubscribing it flushed its cache, so at once.
		took := waitFor(t, 10*time.Second, "B refuses after its subscription was killed", func() bool {
			return status(t, b, key) == http.StatusUnauthorized
		})
		t.Logf("round %d: acks %s, B refused %s after the DELETE returned", i, resp.Header.Get("Keyproxy-Revocation-Acks"), took)
	}
	for _, line := range strings.Split(b.logs.String(), "\n") {
		if strings.Contains(line, `"logger":"cluster`) {
			t.Log(line)
		}
	}
}

// Limits are per user across replicas: two replicas on one Redis admit
// within 5% of the policy. The refill is slow (1/s) so that the count
// depends on sharing the budget, not on how fast a loaded machine sends:
// each replica alone would admit the whole burst (2× in total).
func TestCluster_RateLimitSharedAcrossReplicas(t *testing.T) {
	// A generous Redis timeout: on a loaded CI machine a 100 ms bound could
	// trip the (correct, but per-replica) local fallback and blur the count.
	a, b, _, _ := twoReplicas(t, "KEYPROXY_REDIS_TIMEOUT=2s",
		"KEYPROXY_RATELIMIT_DEFAULT_REQUESTS=60", "KEYPROXY_RATELIMIT_DEFAULT_PER=1m", "KEYPROXY_RATELIMIT_DEFAULT_BURST=100")
	keyA, _ := createKey(t, a, "usr_rl", "team_rl")
	keyB, _ := createKey(t, a, "usr_rl", "team_rl") // same user, second key
	var admitted, limited atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		in, key := a, keyA
		if w%2 == 1 {
			in, key = b, keyB
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 40; i++ {
				resp, _ := in.call(t, key, "/x")
				switch resp.StatusCode {
				case http.StatusOK:
					admitted.Add(1)
				case http.StatusTooManyRequests:
					limited.Add(1)
				default:
					t.Errorf("unexpected status %d", resp.StatusCode)
					return
				}
			}
		}()
	}
	wg.Wait()
	most := 100 + time.Since(start).Seconds() // burst plus 1 token a second
	got := float64(admitted.Load())
	t.Logf("two replicas, one user, two keys, 320 calls: admitted %.0f, policy allows 100-%.1f (ratio %.3f), %d refused",
		got, most, got/100, limited.Load())
	if got < 0.95*100 || got > 1.05*most {
		t.Errorf("admitted %.0f, want within 5%% of [100, %.1f]", got, most)
	}
}
