package ratelimit

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wevion/keyproxy/internal/testserver"
)

// newClient builds a client the way keyproxy should: context deadlines
// reach the socket, and a failed call is not retried past the timeout.
func newClient(t testing.TB, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{
		Addr:                  addr,
		ContextTimeoutEnabled: true,
		MaxRetries:            1, // as in production: one retry on a connection that a Redis restart broke
		DialTimeout:           100 * time.Millisecond,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Real-clock tests that count exact admissions refill one token a minute,
// so a stalled CI machine cannot slip an extra token in.
var (
	slowMember = Limit{Requests: 60, Per: time.Hour, Burst: 10}
	slowAdmin  = Limit{Requests: 120, Per: time.Hour, Burst: 20}
)

func slowPolicies() Policies {
	return Policies{Default: slowMember, Roles: map[string]Limit{"admin": slowAdmin}}
}

type redisFixture struct {
	server   *testserver.Redis
	client   *redis.Client
	limiter  *Redis
	fallback *Local
	reg      *prometheus.Registry
	logs     *observer.ObservedLogs
}

// newRedisFixture's limiter waits up to 5 s for Redis: a loaded CI
// machine under -race can miss the 50 ms default, and a test about
// counting must not turn into one about falling back. The fallback tests
// use the default timeout.
func newRedisFixture(t testing.TB, p Policies, server *testserver.Redis) *redisFixture {
	t.Helper()
	return newRedisFixtureWith(t, p, server, RedisOptions{Timeout: 5 * time.Second, ProbeInterval: 100 * time.Millisecond})
}

func newFallbackFixture(t testing.TB, p Policies) *redisFixture {
	t.Helper()
	return newRedisFixtureWith(t, p, nil, RedisOptions{ProbeInterval: 100 * time.Millisecond})
}

func newRedisFixtureWith(t testing.TB, p Policies, server *testserver.Redis, o RedisOptions) *redisFixture {
	t.Helper()
	if server == nil {
		server = testserver.StartRedis(t)
	}
	return newRedisFixtureOn(t, p, server, newClient(t, server.Addr), o)
}

// newRedisFixtureOn is newRedisFixtureWith on a client built by the test.
func newRedisFixtureOn(t testing.TB, p Policies, server *testserver.Redis, client *redis.Client, o RedisOptions) *redisFixture {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	reg := prometheus.NewPedanticRegistry()
	fallback := NewLocal(p, LocalOptions{Registerer: reg})
	t.Cleanup(fallback.Close)
	o.Logger, o.Registerer = zap.New(core), reg
	limiter := NewRedis(client, p, fallback, o)
	t.Cleanup(limiter.Close)
	return &redisFixture{server: server, client: client, limiter: limiter, fallback: fallback, reg: reg, logs: logs}
}

func TestRedis_BurstThenLimit(t *testing.T) {
	f := newRedisFixture(t, slowPolicies(), nil)
	ctx := testserver.Context(t)
	for i := range 10 {
		r := f.limiter.Allow(ctx, "u1", "member")
		if !r.Allowed || r.Remaining != 9-i || r.Limit != slowMember || r.RetryAfter != 0 {
			t.Fatalf("request %d: %+v, want admitted with %d remaining", i+1, r, 9-i)
		}
		// One token a minute: the bucket is full i+1 minutes after the
		// last request, less the time the loop took.
		if want := time.Duration(i+1) * time.Minute; r.ResetAfter > want || r.ResetAfter < want-10*time.Second {
			t.Fatalf("request %d: ResetAfter %s, want about %s", i+1, r.ResetAfter, want)
		}
	}
	r := f.limiter.Allow(ctx, "u1", "member")
	if r.Allowed || r.Remaining != 0 || r.RetryAfter <= 50*time.Second || r.RetryAfter > time.Minute {
		t.Fatalf("request 11: %+v, want refused with RetryAfter just under 1m", r)
	}
	if f.limiter.Degraded() {
		t.Fatal("Degraded() with Redis up")
	}
}

func TestRedis_RetryAfterIsNeverEarly(t *testing.T) {
	f := newRedisFixture(t, Policies{Default: Limit{Requests: 20, Per: time.Second, Burst: 2}}, nil)
	ctx := testserver.Context(t)
	for range 5 {
		// Spend the bucket; how many that takes depends on the clock.
		var refused Result
		for i := 0; ; i++ {
			if refused = f.limiter.Allow(ctx, "u1", ""); !refused.Allowed {
				break
			}
			if i > 1000 {
				t.Fatal("1000 requests in a row admitted at 20 per second")
			}
		}
		time.Sleep(refused.RetryAfter)
		if r := f.limiter.Allow(ctx, "u1", ""); !r.Allowed {
			t.Fatalf("retry RetryAfter (%s) later refused: %+v", refused.RetryAfter, r)
		}
	}
}

func TestRedis_KeysOfOneUserShareTheBudgetAndUsersAreIndependent(t *testing.T) {
	f := newRedisFixture(t, slowPolicies(), nil)
	ctx := testserver.Context(t)
	admitted := 0
	for range 20 { // two keys of u1 alternate; both resolve to u1
		if f.limiter.Allow(ctx, "u1", "member").Allowed {
			admitted++
		}
	}
	if admitted != 10 {
		t.Fatalf("u1 admitted %d across its keys, want one burst of 10", admitted)
	}
	if got := admitN(f.limiter, 15, "u2", "member"); got != 10 {
		t.Fatalf("u2 admitted %d, want its own 10", got)
	}
	if got := admitN(f.limiter, 30, "u3", "admin"); got != 20 {
		t.Fatalf("admin admitted %d, want the admin burst of 20", got)
	}
}

func TestRedis_StateIsTheDocumentedKey(t *testing.T) {
	f := newRedisFixture(t, slowPolicies(), nil)
	ctx := testserver.Context(t)
	before := time.Now()
	f.limiter.Allow(ctx, "usr_7", "member")

	// "<tat>.<interval>": the interval of 1 per minute is 60 s.
	tat, interval := storedState(t, f, "usr_7")
	if interval != 60_000_000 {
		t.Fatalf("stored interval %d µs, want 60000000", interval)
	}
	// One request at 1 per minute: TAT is now + 1 m.
	if got := time.UnixMicro(tat).Sub(before); got < time.Minute-time.Second || got > time.Minute+10*time.Second {
		t.Fatalf("TAT is %s after the request, want about 1m", got)
	}
	ttl, err := f.client.PTTL(ctx, "keyproxy:rl:user:usr_7").Result()
	if err != nil || ttl < 50*time.Second || ttl > time.Minute {
		t.Fatalf("PTTL = %s, %v; want the time until the bucket is full (about 1m)", ttl, err)
	}

	// Refusals write nothing.
	admitN(f.limiter, 9, "usr_7", "member")
	full, _ := f.client.Get(ctx, "keyproxy:rl:user:usr_7").Result()
	admitN(f.limiter, 50, "usr_7", "member")
	if after, _ := f.client.Get(ctx, "keyproxy:rl:user:usr_7").Result(); after != full {
		t.Fatalf("refused requests changed the state: %s -> %s", full, after)
	}
}

func TestRedis_WebAppRunningTheScriptSharesTheBudget(t *testing.T) {
	f := newRedisFixture(t, slowPolicies(), nil)
	ctx := testserver.Context(t)
	// The web app runs gcra.lua with the documented arguments.
	for i := range 4 {
		reply, err := f.client.Eval(ctx, gcraScript, []string{"keyproxy:rl:user:u1"}, 60_000_000, 10).Result()
		if err != nil {
			t.Fatal(err)
		}
		vals, _ := reply.([]any)
		if len(vals) != 4 || vals[0] != int64(1) || vals[1] != int64(9-i) {
			t.Fatalf("web app request %d: reply %v, want admitted with %d remaining", i+1, reply, 9-i)
		}
	}
	if got := admitN(f.limiter, 10, "u1", "member"); got != 6 {
		t.Fatalf("the proxy admitted %d after 4 web requests, want 6 of the burst of 10", got)
	}
}

func TestRedis_TwoReplicasStayWithinThePolicy(t *testing.T) {
	for _, tt := range []struct {
		name       string
		lim        Limit
		callers    int
		wantShares bool
	}{
		// Four callers on each replica at once: a replica grants no
		// share while another call of the user is on its way to Redis,
		// so Redis decides nearly everything. The burst covers 250 ms
		// without a request (a stalled CI machine), which a full bucket
		// would otherwise waste.
		{"burst 100, 8 callers", Limit{Requests: 400, Per: time.Second, Burst: 100}, 8, false},
		// One caller on each replica: shares of up to maxShare each,
		// spent on views the other replica has since spent from.
		{"burst 2000, 2 callers: shares of up to 64", Limit{Requests: 1000, Per: time.Second, Burst: 2000}, 2, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			twoReplicasWithinPolicy(t, tt.lim, tt.callers, tt.wantShares)
		})
	}
}

func twoReplicasWithinPolicy(t *testing.T, lim Limit, callers int, wantShares bool) {
	server := testserver.StartRedis(t)
	p := Policies{Default: lim}
	o := RedisOptions{Timeout: 5 * time.Second, ProbeInterval: time.Hour}
	replicas := []*Redis{
		newRedisFixtureWith(t, p, server, o).limiter,
		newRedisFixtureWith(t, p, server, o).limiter,
	}
	var admitted, calls atomic.Int64
	start := time.Now()
	deadline := start.Add(2 * time.Second)
	var wg sync.WaitGroup
	for i := range callers {
		replica := replicas[i%2]
		wg.Go(func() {
			for time.Now().Before(deadline) {
				calls.Add(1)
				if replica.Allow(context.Background(), "u1", "").Allowed {
					admitted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	var shared float64
	for i, r := range replicas {
		if n := testutil.ToFloat64(r.redisErrors); n != 0 {
			t.Fatalf("replica %d had %v redis errors during the run", i, n)
		}
		shared += testutil.ToFloat64(r.shared)
	}
	expected := float64(lim.Burst) + float64(lim.Requests)*elapsed.Seconds()
	ratio := float64(admitted.Load()) / expected
	t.Logf("two replicas on one redis: %d calls, admitted %d (%.0f from shares), expected %.0f (ratio %.4f)", calls.Load(), admitted.Load(), shared, expected, ratio)
	if ratio < 0.95 || ratio > 1.05 {
		t.Fatalf("admitted/expected = %.4f, want within 5%%", ratio)
	}
	if wantShares && shared == 0 {
		t.Error("no request was admitted from a share")
	}
}

func TestRedis_FallsBackWhenRedisDiesAndReturnsWhenItIsBack(t *testing.T) {
	f := newFallbackFixture(t, slowPolicies())
	ctx := testserver.Context(t)
	admitN(f.limiter, 3, "u1", "member")

	f.server.Kill()
	start := time.Now()
	r := f.limiter.Allow(ctx, "u1", "member")
	if took := time.Since(start); took > time.Second {
		t.Fatalf("first call with Redis dead took %s; the fallback must answer at once", took)
	}
	// The local bucket goes on from what Redis last said: 3 of 10 spent.
	if !r.Allowed || r.Limit != slowMember || r.Remaining != 6 || !f.limiter.Degraded() {
		t.Fatalf("with Redis dead: %+v degraded=%v, want a local decision with 6 remaining and Degraded", r, f.limiter.Degraded())
	}
	if got := admitN(f.limiter, 100, "u1", "member"); got != 6 {
		t.Fatalf("degraded limiter admitted %d more, want the rest of the shared burst (6)", got)
	}
	if v := testutil.ToFloat64(f.limiter.degradedG); v != 1 {
		t.Fatalf("keyproxy_ratelimit_degraded = %v, want 1", v)
	}
	if v := testutil.ToFloat64(f.limiter.redisErrors); v < 1 {
		t.Fatalf("keyproxy_ratelimit_redis_errors_total = %v, want ≥ 1", v)
	}
	// Probes happen at most once per ProbeInterval, so 100 calls in a few
	// milliseconds cost at most a couple of Redis errors, not 100.
	if v := testutil.ToFloat64(f.limiter.redisErrors); v > 5 {
		t.Fatalf("keyproxy_ratelimit_redis_errors_total = %v after 101 calls, want Redis left alone between probes", v)
	}
	if n := f.logs.FilterMessageSnippet("falls back").Len(); n != 1 {
		t.Fatalf("%d degradation log lines, want exactly 1", n)
	}

	f.server.Start()
	deadline := time.Now().Add(5 * time.Second)
	for f.limiter.Degraded() {
		if time.Now().After(deadline) {
			t.Fatal("still degraded 5s after Redis came back")
		}
		f.limiter.Allow(ctx, "u2", "member")
		time.Sleep(10 * time.Millisecond)
	}
	if v := testutil.ToFloat64(f.limiter.degradedG); v != 0 {
		t.Fatalf("keyproxy_ratelimit_degraded = %v after recovery, want 0", v)
	}
	if n := f.logs.FilterMessageSnippet("back on redis").Len(); n != 1 {
		t.Fatalf("%d recovery log lines, want exactly 1", n)
	}
	// The restarted Redis is empty, and its first decision for u1 charges
	// the 7 requests the fallback admitted: 3 of the burst are left.
	if got := admitN(f.limiter, 20, "u1", "member"); got != 3 {
		t.Fatalf("after recovery u1 admitted %d, want the 3 a restarted Redis has left once the fallback's 7 are charged", got)
	}
	n, err := f.client.Exists(ctx, "keyproxy:rl:user:u1").Result()
	if err != nil || n != 1 {
		t.Fatalf("EXISTS keyproxy:rl:user:u1 = %d, %v after recovery, want the state back in Redis", n, err)
	}
	for _, e := range f.logs.All() {
		for _, field := range e.Context {
			if strings.Contains(field.String, "u1") || strings.Contains(field.String, "u2") {
				t.Errorf("log line %q names a user: %v", e.Message, field)
			}
		}
	}
}

// TestRedis_FallbackGoesOnFromTheSharedBudget: each replica's fallback
// starts from the shared state its last decision saw, not from a full
// bucket of its own, so an outage (or one slow call) does not hand every
// user a whole extra burst on every replica.
func TestRedis_FallbackGoesOnFromTheSharedBudget(t *testing.T) {
	server := testserver.StartRedis(t)
	o := RedisOptions{Timeout: 5 * time.Second, ProbeInterval: time.Hour}
	a := newRedisFixtureWith(t, slowPolicies(), server, o)
	b := newRedisFixtureWith(t, slowPolicies(), server, o)
	// Requests 1, 3, 5 and 7 on a, 2, 4, 6 and 8 on b: a last saw 3 of 10
	// left, b 2. And an admin's bucket, under another policy.
	for i := range 8 {
		if r := []*Redis{a.limiter, b.limiter}[i%2].Allow(context.Background(), "u1", "member"); !r.Allowed {
			t.Fatalf("request %d refused with Redis up: %+v", i+1, r)
		}
	}
	if got := admitN(a.limiter, 5, "u2", "admin"); got != 5 {
		t.Fatalf("admin admitted %d of 5 with Redis up", got)
	}
	server.Kill()
	for _, tt := range []struct {
		name       string
		f          *redisFixture
		user, role string
		want       int
	}{{"a member", a, "u1", "member", 3}, {"b member", b, "u1", "member", 2}, {"a admin", a, "u2", "admin", 15}} {
		if got := admitN(tt.f.limiter, 100, tt.user, tt.role); got != tt.want || !tt.f.limiter.Degraded() {
			t.Errorf("%s: the fallback admitted %d (degraded %v), want %d: what was left when Redis last answered",
				tt.name, got, tt.f.limiter.Degraded(), tt.want)
		}
	}
	// A user this replica never decided for has nothing to go on: the
	// fallback's own full bucket.
	if got := admitN(b.limiter, 100, "u2", "admin"); got != 20 {
		t.Errorf("b, admin it never saw: the fallback admitted %d, want a full burst of 20", got)
	}
}

func TestRedis_FallsBackWhenRedisHangs(t *testing.T) {
	f := newFallbackFixture(t, slowPolicies())
	ctx := testserver.Context(t)
	admitN(f.limiter, 1, "u1", "member") // connection established, script loaded

	if reply, err := f.server.Do("CLIENT", "PAUSE", "1000", "ALL"); err != nil || !strings.HasPrefix(reply, "+OK") {
		t.Fatalf("CLIENT PAUSE: %q, %v", reply, err)
	}
	start := time.Now()
	r := f.limiter.Allow(ctx, "u1", "member")
	took := time.Since(start)
	// Timeout is 50 ms; the bound is generous for a loaded CI machine, and
	// still well below the 1 s pause.
	if took > 500*time.Millisecond {
		t.Fatalf("Allow took %s while Redis hung; the timeout must cut it short", took)
	}
	if !r.Allowed || !f.limiter.Degraded() {
		t.Fatalf("while Redis hung: %+v degraded=%v, want a local decision", r, f.limiter.Degraded())
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.limiter.Degraded() {
		if time.Now().After(deadline) {
			t.Fatal("still degraded 5s after the pause ended")
		}
		f.limiter.Allow(ctx, "u2", "member")
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRedis_CountsDecisionsByBackend(t *testing.T) {
	f := newRedisFixture(t, slowPolicies(), nil)
	admitN(f.limiter, 12, "u1", "member")
	f.server.Kill()
	admitN(f.limiter, 12, "u2", "member")
	want := `
# HELP keyproxy_ratelimit_decisions_total Rate-limit decisions by the backend that made them and their result.
# TYPE keyproxy_ratelimit_decisions_total counter
keyproxy_ratelimit_decisions_total{backend="local",result="allowed"} 10
keyproxy_ratelimit_decisions_total{backend="local",result="limited"} 2
keyproxy_ratelimit_decisions_total{backend="redis",result="allowed"} 10
keyproxy_ratelimit_decisions_total{backend="redis",result="limited"} 2
keyproxy_ratelimit_decisions_total{backend="share",result="allowed"} 0
# HELP keyproxy_ratelimit_degraded 1 while the Redis rate limiter answers from its local fallback.
# TYPE keyproxy_ratelimit_degraded gauge
keyproxy_ratelimit_degraded 1
`
	if err := testutil.GatherAndCompare(f.reg, strings.NewReader(want),
		"keyproxy_ratelimit_decisions_total", "keyproxy_ratelimit_degraded"); err != nil {
		t.Fatal(err)
	}
}

func TestRedis_SetPoliciesReloadsBothBackends(t *testing.T) {
	f := newRedisFixture(t, slowPolicies(), nil)
	ctx := testserver.Context(t)
	bigger := Limit{Requests: 6000, Per: time.Minute, Burst: 50}
	if err := f.limiter.SetPolicies(Policies{Default: bigger}); err != nil {
		t.Fatal(err)
	}
	if r := f.limiter.Allow(ctx, "u1", "member"); r.Limit != bigger {
		t.Fatalf("redis Limit after reload = %v, want %v", r.Limit, bigger)
	}
	if r := f.fallback.Allow(ctx, "u1", "member"); r.Limit != bigger {
		t.Fatalf("fallback Limit after reload = %v, want %v", r.Limit, bigger)
	}
	if err := f.limiter.SetPolicies(Policies{}); err == nil {
		t.Fatal("SetPolicies(invalid) = nil, want an error")
	}
	if r := f.limiter.Allow(ctx, "u1", "member"); r.Limit != bigger {
		t.Fatalf("Limit after a refused reload = %v, want %v", r.Limit, bigger)
	}
}

// An idle replica returns to Redis by itself: README promises it, and the
// degraded alert would otherwise fire long after Redis is back.
