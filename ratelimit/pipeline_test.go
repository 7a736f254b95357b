package ratelimit

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/wevion/keyproxy/internal/testserver"
)

// allowAll makes one call per element of users at once, each from its own
// goroutine, and returns the results in the same order.
func allowAll(l *Redis, users, roles []string) []Result {
	results := make([]Result, len(users))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range users {
		wg.Go(func() {
			<-start
			results[i] = l.Allow(context.Background(), users[i], roles[i])
		})
	}
	close(start)
	wg.Wait()
	return results
}

// eachLevelOnce reports whether remaining, the Remaining of the admitted
// calls on one bucket of burst, holds every level from burst-1 down to 0
// once: what GCRA, run atomically per call, hands out.
func eachLevelOnce(remaining []int, burst int) bool {
	got := slices.Sorted(slices.Values(remaining))
	if len(got) != burst {
		return false
	}
	for i, r := range got {
		if r != i {
			return false
		}
	}
	return true
}

// waitUntil polls cond, failing the test if it is still false after 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 10s still not: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// waiting is how many calls the batcher has taken since sent0, sent or
// still queued: a test that holds Redis paused knows they are all waiting.
func (b *batcher) waiting(sent0 int64) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return int(b.sent.Load()-sent0) + len(b.queue)
}

// drained reports whether the dispatcher waits for work with none queued.
func (b *batcher) drained() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.idle && len(b.queue) == 0
}

func pause(t *testing.T, server *testserver.Redis, d time.Duration) {
	t.Helper()
	reply, err := server.Do("CLIENT", "PAUSE", fmt.Sprint(d.Milliseconds()), "ALL")
	if err != nil || !strings.HasPrefix(reply, "+OK") {
		t.Fatalf("CLIENT PAUSE: %q, %v", reply, err)
	}
}

func TestRedisBatch_ConcurrentCallsAdmitExactlyTheBudget(t *testing.T) {
	lim := Limit{Requests: 60, Per: time.Hour, Burst: 50}
	for _, maxBatch := range []int{1, 4, 0} {
		t.Run(fmt.Sprintf("MaxBatch=%d", maxBatch), func(t *testing.T) {
			// Shares off: every decision is the script's, whose atomicity
			// this checks (a share's Remaining is the replica's copy;
			// TestRedisShare_ConcurrentCallsAdmitTheBudget).
			f := newRedisFixtureWith(t, Policies{Default: lim}, nil,
				RedisOptions{Timeout: 5 * time.Second, MaxBatch: maxBatch, ShareDivisor: -1})
			results := allowAll(f.limiter, slices.Repeat([]string{"u1"}, 200), slices.Repeat([]string{"member"}, 200))
			var remaining []int
			for _, r := range results {
				if r.Allowed {
					remaining = append(remaining, r.Remaining)
				}
			}
			// GCRA runs atomically per call: the admitted calls saw the
			// bucket at every level from full to empty, once each.
			if !eachLevelOnce(remaining, lim.Burst) {
				t.Fatalf("admitted %d with Remaining %v, want %d admitted with Remaining 0..%d once each",
					len(remaining), remaining, lim.Burst, lim.Burst-1)
			}
			if f.limiter.Degraded() || testutil.ToFloat64(f.limiter.redisErrors) != 0 {
				t.Fatal("degraded or Redis errors during the run")
			}
			b := f.limiter.batch
			if maxBatch == 1 {
				if b != nil {
					t.Fatal("MaxBatch 1 built a batcher")
				}
				return
			}
			pipelines, sent := b.pipelines.Load(), b.sent.Load()
			t.Logf("%d decisions in %d pipelines", sent, pipelines)
			if sent != 200 || pipelines >= sent {
				t.Fatalf("%d decisions in %d pipelines, want 200 sharing fewer pipelines", sent, pipelines)
			}
			if max := int64(b.max); pipelines*max < sent {
				t.Fatalf("%d decisions in %d pipelines: more than MaxBatch %d in one", sent, pipelines, max)
			}
		})
	}
}

func TestRedisBatch_RepliesReachTheirCallers(t *testing.T) {
	// Twenty users, each with a role whose burst is different, all in the
	// same batches: a reply handed to another user's caller shows up as
	// a wrong count or a wrong Remaining.
	p := Policies{Default: slowMember, Roles: map[string]Limit{}}
	var users, roles []string
	for i := 1; i <= 20; i++ {
		role := fmt.Sprintf("role%d", i)
		p.Roles[role] = Limit{Requests: 60, Per: time.Hour, Burst: i}
		for range i + 5 {
			users, roles = append(users, fmt.Sprintf("u%d", i)), append(roles, role)
		}
	}
	f := newRedisFixture(t, p, nil)
	results := allowAll(f.limiter, users, roles)
	admitted := map[string][]int{}
	for i, r := range results {
		if want := p.Roles[roles[i]]; r.Limit != want {
			t.Fatalf("call %d of %s got Limit %v, want %v", i, users[i], r.Limit, want)
		}
		if r.Allowed {
			admitted[users[i]] = append(admitted[users[i]], r.Remaining)
		}
	}
	for i := 1; i <= 20; i++ {
		if got := admitted[fmt.Sprintf("u%d", i)]; !eachLevelOnce(got, i) {
			t.Fatalf("u%d (burst %d) admitted with Remaining %v, want 0..%d once each", i, i, got, i-1)
		}
	}
	if b := f.limiter.batch; b.pipelines.Load() >= b.sent.Load() {
		t.Fatalf("%d decisions in %d pipelines: nothing was batched", b.sent.Load(), b.pipelines.Load())
	}
}

func TestRedisBatch_KillMidBatchFallsBackEveryCaller(t *testing.T) {
	server := testserver.StartRedis(t)
	// go-redis dials 5 times, 100ms apart, before it gives up on a dead
	// server, and each queued batch would wait for that in turn: once is
	// enough to show that the kill, not the timeout, answers the callers.
	client := redis.NewClient(&redis.Options{
		Addr: server.Addr, ContextTimeoutEnabled: true, MaxRetries: 1,
		DialTimeout: 100 * time.Millisecond, DialerRetries: 1,
	})
	t.Cleanup(func() { _ = client.Close() })
	f := newRedisFixtureOn(t, slowPolicies(), server, client, RedisOptions{Timeout: 10 * time.Second, ProbeInterval: time.Hour})
	admitN(f.limiter, 1, "warm-up", "member")
	b := f.limiter.batch
	sent0 := b.sent.Load()

	pause(t, f.server, 10*time.Second)
	const callers = 50
	users := make([]string, callers)
	for i := range users {
		users[i] = fmt.Sprintf("u%d", i)
	}
	var results []Result
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		results = allowAll(f.limiter, users, slices.Repeat([]string{"member"}, callers))
	}()
	// One pipeline held by the pause, the rest queued behind it.
	waitUntil(t, "every caller in a pipeline or queued", func() bool { return b.waiting(sent0) == callers })
	f.server.Kill()
	<-done
	// The 10 s timeout did not end the wait: the broken connection did.
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("callers answered %s after the start; the kill must answer them at once", took)
	}
	for i, r := range results {
		// Each user is fresh in the fallback: a local burst.
		if !r.Allowed || r.Limit != slowMember || r.Remaining != slowMember.Burst-1 {
			t.Fatalf("caller %d: %+v, want the fallback's first admission", i, r)
		}
	}
	if !f.limiter.Degraded() {
		t.Fatal("not Degraded after Redis died under a batch")
	}
	if n := testutil.ToFloat64(f.limiter.redisErrors); n != callers {
		t.Fatalf("keyproxy_ratelimit_redis_errors_total = %v, want one per caller (%d)", n, callers)
	}
	if n := f.logs.FilterMessageSnippet("falls back").Len(); n != 1 {
		t.Fatalf("%d degradation log lines, want exactly 1", n)
	}
}

func TestRedisBatch_CallerPastItsDeadlineIsNeverSent(t *testing.T) {
	server := testserver.StartRedis(t)
	// Without ContextTimeoutEnabled the pipeline waits for Redis well past
	// the callers' deadlines, so the queued calls are still in the queue
	// when their callers give up.
	client := redis.NewClient(&redis.Options{Addr: server.Addr, ReadTimeout: 5 * time.Second, MaxRetries: -1})
	t.Cleanup(func() { _ = client.Close() })
	fallback := NewLocal(slowPolicies(), LocalOptions{})
	t.Cleanup(fallback.Close)
	l := NewRedis(client, slowPolicies(), fallback, RedisOptions{Timeout: 300 * time.Millisecond, ProbeInterval: time.Hour})
	t.Cleanup(l.Close)
	admitN(l, 1, "warm-up", "member")
	b := l.batch
	sent0 := b.sent.Load()

	pause(t, server, 1500*time.Millisecond)
	start := time.Now()
	var first Result
	var wg sync.WaitGroup
	wg.Go(func() { first = l.Allow(context.Background(), "first", "member") })
	waitUntil(t, "the first call in flight", func() bool { return b.sent.Load() == sent0+1 })
	var queuedUsers []string
	for i := range 20 {
		queuedUsers = append(queuedUsers, fmt.Sprintf("q%d", i))
	}
	var queued []Result
	wg.Go(func() { queued = allowAll(l, queuedUsers, slices.Repeat([]string{"member"}, len(queuedUsers))) })
	waitUntil(t, "20 calls queued", func() bool { return b.waiting(sent0) == 21 })
	wg.Wait()
	if took := time.Since(start); took > time.Second {
		t.Fatalf("callers answered after %s; the 300ms timeout must cut the wait short of the 1.5s pause", took)
	}
	for i, r := range append(queued, first) {
		if !r.Allowed || r.Remaining != slowMember.Burst-1 {
			t.Fatalf("caller %d: %+v, want the fallback's first admission", i, r)
		}
	}
	// The pause ends, the pipeline holding "first" completes, and the
	// dispatcher finds only withdrawn calls.
	waitUntil(t, "the dispatcher idle again", b.drained)
	if n := b.sent.Load() - sent0; n != 1 {
		t.Fatalf("%d calls sent, want only the one already in flight: the others had been answered", n)
	}
	ctx := testserver.Context(t)
	for _, u := range queuedUsers {
		if n, err := client.Exists(ctx, DefaultKeyPrefix+u).Result(); err != nil || n != 0 {
			t.Fatalf("EXISTS %s = %d, %v: Redis spent budget on a call the fallback answered", u, n, err)
		}
	}
}

func TestRedisBatch_CloseAnswersCallersInFlight(t *testing.T) {
	f := newRedisFixture(t, slowPolicies(), nil)
	admitN(f.limiter, 1, "warm-up", "member")
	b := f.limiter.batch
	sent0 := b.sent.Load()

	pause(t, f.server, 300*time.Millisecond)
	var answered atomic.Int64
	var results []Result
	done := make(chan struct{})
	go func() {
		defer close(done)
		results = allowAll(f.limiter, slices.Repeat([]string{"u1"}, 30), slices.Repeat([]string{"member"}, 30))
		answered.Store(int64(len(results)))
	}()
	waitUntil(t, "30 callers waiting", func() bool { return b.waiting(sent0) == 30 })
	var closers sync.WaitGroup
	for range 3 {
		closers.Go(f.limiter.Close)
	}
	closers.Wait()
	select {
	case <-b.done:
	default:
		t.Fatal("Close returned with the dispatcher still running")
	}
	<-done
	if answered.Load() != 30 {
		t.Fatal("not every caller answered")
	}
	admitted := 0
	for _, r := range results {
		if r.Allowed {
			admitted++
		}
	}
	if admitted != slowMember.Burst || f.limiter.Degraded() || testutil.ToFloat64(f.limiter.redisErrors) != 0 {
		t.Fatalf("admitted %d of 30, degraded=%v: want Redis's burst of %d, answered by Redis",
			admitted, f.limiter.Degraded(), slowMember.Burst)
	}

	// Closed, the limiter still decides on Redis, one call at a time.
	f.limiter.Close()
	if got := admitN(f.limiter, 15, "u2", "member"); got != slowMember.Burst {
		t.Fatalf("after Close u2 admitted %d, want Redis's burst of %d", got, slowMember.Burst)
	}
	if n, err := f.client.Exists(testserver.Context(t), DefaultKeyPrefix+"u2").Result(); err != nil || n != 1 {
		t.Fatalf("EXISTS u2 = %d, %v after Close, want the decision made on Redis", n, err)
	}
	if n := b.sent.Load() - sent0; n != 30 {
		t.Fatalf("%d calls went through the batcher, want the 30 made before Close", n)
	}
}

func TestRedisBatch_CloseBeforeUseStartsNothing(t *testing.T) {
	f := newRedisFixture(t, slowPolicies(), nil)
	f.limiter.Close()
	if got := admitN(f.limiter, 12, "u1", "member"); got != slowMember.Burst {
		t.Fatalf("admitted %d, want %d", got, slowMember.Burst)
	}
	if f.limiter.batch.started {
		t.Fatal("a closed limiter started its dispatcher")
	}
}

func TestRedisBatch_ScriptFlushedUnderLoad(t *testing.T) {
	f := newRedisFixture(t, Policies{Default: Limit{Requests: 60, Per: time.Hour, Burst: 40}}, nil)
	admitN(f.limiter, 1, "warm-up", "member")
	ctx := testserver.Context(t)
	if err := f.client.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	results := allowAll(f.limiter, slices.Repeat([]string{"u1"}, 100), slices.Repeat([]string{"member"}, 100))
	admitted := 0
	for _, r := range results {
		if r.Allowed {
			admitted++
		}
	}
	if admitted != 40 || f.limiter.Degraded() || testutil.ToFloat64(f.limiter.redisErrors) != 0 {
		t.Fatalf("after SCRIPT FLUSH: admitted %d of 100 (want 40), degraded=%v", admitted, f.limiter.Degraded())
	}
	exists, err := f.client.ScriptExists(ctx, f.limiter.script.Hash()).Result()
	if err != nil || !exists[0] {
		t.Fatalf("SCRIPT EXISTS = %v, %v: the script was not cached again", exists, err)
	}
}

func TestRedisBatch_RingSplitsBatchesByShard(t *testing.T) {
	a, b := testserver.StartRedis(t), testserver.StartRedis(t)
	ring := redis.NewRing(&redis.RingOptions{
		Addrs:                 map[string]string{"a": a.Addr, "b": b.Addr},
		ContextTimeoutEnabled: true,
		MaxRetries:            1,
	})
	t.Cleanup(func() { _ = ring.Close() })
	fallback := NewLocal(slowPolicies(), LocalOptions{})
	t.Cleanup(fallback.Close)
	l := NewRedis(ring, slowPolicies(), fallback, RedisOptions{Timeout: 5 * time.Second})
	t.Cleanup(l.Close)

	var users []string
	for u := range 20 {
		users = append(users, slices.Repeat([]string{fmt.Sprintf("u%d", u)}, 15)...)
	}
	admitted := map[string]int{}
	for i, r := range allowAll(l, users, slices.Repeat([]string{"member"}, len(users))) {
		if r.Allowed {
			admitted[users[i]]++
		}
	}
	for u := range 20 {
		if n := admitted[fmt.Sprintf("u%d", u)]; n != slowMember.Burst {
			t.Fatalf("u%d admitted %d, want %d", u, n, slowMember.Burst)
		}
	}
	if l.Degraded() || testutil.ToFloat64(l.redisErrors) != 0 {
		t.Fatal("degraded or Redis errors on the ring")
	}
	// Both shards hold users: the batches were split, each shard loaded
	// the script on its NOSCRIPT, and the replies came back in order.
	ctx := testserver.Context(t)
	for _, s := range []*testserver.Redis{a, b} {
		c := newClient(t, s.Addr)
		if n, err := c.DBSize(ctx).Result(); err != nil || n == 0 || n == 20 {
			t.Fatalf("shard %s holds %d keys, %v: want some of the 20 users", s.Addr, n, err)
		}
	}
	if bt := l.batch; bt.pipelines.Load() >= bt.sent.Load() {
		t.Fatalf("%d decisions in %d pipelines: nothing was batched", bt.sent.Load(), bt.pipelines.Load())
	}
}
