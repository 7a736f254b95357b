package ratelimit

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wevion/keyproxy/internal/testserver"
)

// redisDecisions is how many decisions Redis made for f's limiter.
func redisDecisions(f *redisFixture) float64 {
	return testutil.ToFloat64(f.limiter.decisions.allowed) + testutil.ToFloat64(f.limiter.decisions.limited)
}

// Far from the limit most requests are decided from the share, and every
// one of them is charged to the shared budget with the user's next
// decision from Redis.
func TestRedisShare_MostRequestsSkipRedisAndAllAreCharged(t *testing.T) {
	server := testserver.StartRedis(t)
	// About one token refills every 2 s: the counts below are exact to
	// within a token or two.
	lim := Limit{Requests: 1600, Per: time.Hour, Burst: 1600}
	p := Policies{Default: lim}
	const ttl = time.Second // long enough for 100 calls on a loaded CI machine
	a := newRedisFixtureWith(t, p, server, RedisOptions{Timeout: 5 * time.Second, ProbeInterval: time.Hour, ShareTTL: ttl})
	if got := admitN(a.limiter, 100, "u1", "member"); got != 100 {
		t.Fatalf("admitted %d of 100 far from the limit", got)
	}
	shared := testutil.ToFloat64(a.limiter.shared)
	if redis := redisDecisions(a); shared < 90 || redis+shared != 100 {
		t.Fatalf("%v decisions from shares and %v from Redis, want at least 90 of 100 from shares", shared, redis)
	}

	// The share expires: the next request goes to Redis and charges what
	// the share admitted since the last decision Redis made.
	time.Sleep(ttl + 100*time.Millisecond)
	before := redisDecisions(a)
	a.limiter.Allow(testserver.Context(t), "u1", "member")
	if redisDecisions(a) != before+1 {
		t.Fatal("a request after the share expired was not decided by Redis")
	}
	// Another replica without shares sees all 101 spent, and its own.
	b := newRedisFixtureWith(t, p, server, RedisOptions{Timeout: 5 * time.Second, ProbeInterval: time.Hour, ShareDivisor: -1})
	r := b.limiter.Allow(testserver.Context(t), "u1", "member")
	if want := lim.Burst - 102; !r.Allowed || r.Remaining < want || r.Remaining > want+2 {
		t.Fatalf("the other replica: %+v, want admitted with %d to %d left", r, want, want+2)
	}
	if n := testutil.ToFloat64(b.limiter.shared); n != 0 {
		t.Errorf("ShareDivisor -1 admitted %v from shares", n)
	}
}

// Near the limit the share shrinks to nothing and Redis decides: one
// replica admits exactly the burst.
func TestRedisShare_RedisDecidesNearTheLimit(t *testing.T) {
	lim := Limit{Requests: 40, Per: time.Hour, Burst: 40}
	f := newRedisFixtureWith(t, Policies{Default: lim}, nil, RedisOptions{Timeout: 5 * time.Second, ProbeInterval: time.Hour, ShareDivisor: 4})
	ctx := testserver.Context(t)
	admitted := 0
	for i := range 60 {
		r := f.limiter.Allow(ctx, "u1", "member")
		if !r.Allowed {
			if r.RetryAfter <= 0 {
				t.Fatalf("request %d refused without Retry-After: %+v", i+1, r)
			}
			continue
		}
		admitted++
		if want := lim.Burst - admitted; r.Remaining != want {
			t.Fatalf("request %d: %d remaining, want %d", i+1, r.Remaining, want)
		}
	}
	if admitted != lim.Burst {
		t.Fatalf("admitted %d, want exactly the burst of %d", admitted, lim.Burst)
	}
	if n := testutil.ToFloat64(f.limiter.shared); n == 0 || n >= float64(lim.Burst) {
		t.Errorf("%v admitted from shares, want some but not all", n)
	}
}

// A share granted under one policy is not spent under another: a role
// change is Redis's to decide.
func TestRedisShare_NotSpentAfterARoleChange(t *testing.T) {
	big := Limit{Requests: 1600, Per: time.Hour, Burst: 1600}
	p := Policies{Default: big, Roles: map[string]Limit{"admin": {Requests: 3200, Per: time.Hour, Burst: 3200}}}
	f := newRedisFixtureWith(t, p, nil, RedisOptions{Timeout: 5 * time.Second, ProbeInterval: time.Hour})
	admitN(f.limiter, 1, "u1", "member") // grants a share under the member policy
	before := redisDecisions(f)
	if r := f.limiter.Allow(testserver.Context(t), "u1", "admin"); !r.Allowed || r.Limit != p.Roles["admin"] {
		t.Fatalf("as admin: %+v", r)
	}
	if redisDecisions(f) != before+1 {
		t.Fatal("the first request after the role changed was not decided by Redis")
	}
}

// While degraded, a share granted before is not spent: a request due to
// probe Redis probes it, and the rest are the fallback's, as without
// shares.
func TestRedisShare_NotSpentWhileDegraded(t *testing.T) {
	big := Limit{Requests: 1600, Per: time.Hour, Burst: 1600}
	const probe = 20 * time.Millisecond
	f := newRedisFixtureWith(t, Policies{Default: big}, nil, RedisOptions{ProbeInterval: probe})
	admitN(f.limiter, 1, "u1", "member") // u1 has a share now
	f.server.Kill()
	admitN(f.limiter, 1, "u2", "member") // no share: asks Redis, fails, degrades
	if !f.limiter.Degraded() {
		t.Fatal("not degraded after a failed call")
	}
	shared := testutil.ToFloat64(f.limiter.shared)
	// Calls every half millisecond for 20 probe intervals: some of them
	// are due to probe (the idle prober takes the others).
	ctx := testserver.Context(t)
	for end := time.Now().Add(20 * probe); time.Now().Before(end); {
		f.limiter.Allow(ctx, "u1", "member")
		time.Sleep(500 * time.Microsecond) // at most 800 calls: the burst of 1600 holds
	}
	if n := testutil.ToFloat64(f.limiter.shared); n != shared {
		t.Errorf("%v requests admitted from a share while degraded", n-shared)
	}
}

// A share is renewed before it runs out, by a call to Redis that no
// request waits for: while the renewals come back in time, a user far
// from the limit never waits for Redis after the first request, and what
// the shares admitted is still all charged.
func TestRedisShare_RenewedBeforeItRunsOut(t *testing.T) {
	server := testserver.StartRedis(t)
	lim := Limit{Requests: 1600, Per: time.Hour, Burst: 1600} // shares of 64
	p := Policies{Default: lim}
	const ttl = time.Second
	a := newRedisFixtureWith(t, p, server, RedisOptions{Timeout: 5 * time.Second, ProbeInterval: time.Hour, ShareTTL: ttl})
	for i := range 300 {
		if r := a.limiter.Allow(testserver.Context(t), "u1", "member"); !r.Allowed {
			t.Fatalf("request %d refused far from the limit: %+v", i+1, r)
		}
		// Requests spaced further apart than a round trip: each renewal is
		// back before the next request.
		a.limiter.renewals.Wait()
	}
	if redis, waited := redisDecisions(a), waitHistogram(t, a).GetSampleCount(); redis != 1 || waited != 1 {
		t.Fatalf("%v of 300 requests decided by Redis, %v waited for it; want only the first", redis, waited)
	}
	if shared := testutil.ToFloat64(a.limiter.shared); shared != 299 {
		t.Fatalf("%v admitted from shares, want 299", shared)
	}
	// The renewals charged what the shares admitted before each; the rest
	// goes with the next decision from Redis, once the share expires.
	charged := testutil.ToFloat64(a.limiter.charged)
	if charged < 299-64 || charged > 299 {
		t.Fatalf("renewals charged %v requests, want all but the last share's (at most 64)", charged)
	}
	time.Sleep(ttl + 100*time.Millisecond)
	a.limiter.Allow(testserver.Context(t), "u1", "member")
	b := newRedisFixtureWith(t, p, server, RedisOptions{Timeout: 5 * time.Second, ProbeInterval: time.Hour, ShareDivisor: -1})
	r := b.limiter.Allow(testserver.Context(t), "u1", "member")
	if want := lim.Burst - 302; !r.Allowed || r.Remaining < want || r.Remaining > want+2 {
		t.Fatalf("the other replica: %+v, want admitted with %d to %d left: every request charged", r, want, want+2)
	}
}

// When another replica has spent the budget, the renewal is refused: what
// is left of the share is dropped, the request the renewal spent for is
// owed again, and the next request waits for Redis, which refuses it.
func TestRedisShare_RefusedRenewalEndsTheShare(t *testing.T) {
	server := testserver.StartRedis(t)
	lim := Limit{Requests: 64, Per: time.Hour, Burst: 64}
	p := Policies{Default: lim}
	a := newRedisFixtureWith(t, p, server, RedisOptions{Timeout: 5 * time.Second, ProbeInterval: time.Hour, ShareDivisor: 4})
	b := newRedisFixtureWith(t, p, server, RedisOptions{Timeout: 5 * time.Second, ProbeInterval: time.Hour, ShareDivisor: -1})
	ctx := testserver.Context(t)
	admitN(a.limiter, 1, "u1", "member") // 63 left: a share of 15, renewed at 3
	if got := admitN(b.limiter, 100, "u1", "member"); got != 63 {
		t.Fatalf("b admitted %d, want the 63 left", got)
	}
	for i := range 12 {
		if r := a.limiter.Allow(ctx, "u1", "member"); !r.Allowed {
			t.Fatalf("share request %d refused: %+v", i+1, r)
		}
	}
	a.limiter.renewals.Wait()
	if n := testutil.ToFloat64(a.limiter.shared); n != 12 {
		t.Fatalf("%v admitted from the share, want 12", n)
	}
	before := redisDecisions(a)
	r := a.limiter.Allow(ctx, "u1", "member")
	if r.Allowed || r.RetryAfter <= 0 {
		t.Fatalf("after the refused renewal: %+v, want refused with a Retry-After", r)
	}
	if redisDecisions(a) != before+1 {
		t.Fatal("the request after a refused renewal was not decided by Redis")
	}
	// All 12 were charged: 11 with the renewal, the one it spent for with
	// the decision just made.
	if v := testutil.ToFloat64(a.limiter.charged); v != 12 {
		t.Errorf("charged %v of the share's 12 requests", v)
	}
}

// A renewal that fails gives its charge back and degrades the limiter:
// the requests are charged once Redis answers again.
func TestRedisShare_FailedRenewalKeepsTheDebt(t *testing.T) {
	lim := Limit{Requests: 1600, Per: time.Hour, Burst: 1600}
	f := newRedisFixtureWith(t, Policies{Default: lim}, nil, RedisOptions{Timeout: time.Second, ProbeInterval: time.Hour})
	ctx := testserver.Context(t)
	admitN(f.limiter, 1, "u1", "member") // a share of 64, renewed at 16
	f.server.Kill()
	if got := admitN(f.limiter, 48, "u1", "member"); got != 48 {
		t.Fatalf("admitted %d of 48 from the share", got)
	}
	f.limiter.renewals.Wait()
	if !f.limiter.Degraded() {
		t.Fatal("not degraded after a renewal failed")
	}
	f.server.Start()
	// The next request probes (ProbeInterval is an hour: force it due).
	f.limiter.nextProbe.Store(0)
	if r := f.limiter.Allow(ctx, "u1", "member"); !r.Allowed || f.limiter.Degraded() {
		t.Fatalf("probe after Redis returned: %+v, degraded %v", r, f.limiter.Degraded())
	}
	// The 48 from the share, charged with the probe; it spent one more
	// (the first request's was Redis's own).
	if v := testutil.ToFloat64(f.limiter.charged); v != 48 {
		t.Errorf("charged %v, want the share's 48", v)
	}
	if r := f.limiter.Allow(ctx, "u1", "member"); r.Remaining > lim.Burst-50 {
		t.Errorf("after the probe: %d remaining, want at most %d", r.Remaining, lim.Burst-50)
	}
}

// Many concurrent requests of one user on one replica admit exactly the
// burst with shares on: a reply that grants a share leaves a token for
// each of the user's calls still on their way to Redis, and the copy the
// share spends from is never raised to a reply older than them.
func TestRedisShare_ConcurrentCallsAdmitTheBudget(t *testing.T) {
	lim := Limit{Requests: 60, Per: time.Hour, Burst: 50}
	for _, maxBatch := range []int{1, 0} {
		t.Run(fmt.Sprintf("MaxBatch=%d", maxBatch), func(t *testing.T) {
			f := newRedisFixtureWith(t, Policies{Default: lim}, nil,
				RedisOptions{Timeout: 5 * time.Second, MaxBatch: maxBatch})
			for round := range 5 {
				f.client.FlushAll(testserver.Context(t))
				admitted := 0
				for _, r := range allowAll(f.limiter, slices.Repeat([]string{fmt.Sprint("u", round)}, 200), slices.Repeat([]string{"member"}, 200)) {
					if r.Allowed {
						admitted++
					}
				}
				f.limiter.renewals.Wait()
				if admitted != lim.Burst {
					t.Fatalf("round %d: admitted %d of 200 concurrent calls, want the burst of %d", round, admitted, lim.Burst)
				}
			}
		})
	}
}

// A share is renewed when a quarter of its time is left too: a user who
// spends it slowly goes on from a fresh share instead of waiting for
// Redis once it expires.
func TestRedisShare_RenewedBeforeItExpires(t *testing.T) {
	lim := Limit{Requests: 1600, Per: time.Hour, Burst: 1600} // shares of 64
	const ttl = 2 * time.Second
	f := newRedisFixtureWith(t, Policies{Default: lim}, nil, RedisOptions{Timeout: 5 * time.Second, ProbeInterval: time.Hour, ShareTTL: ttl})
	ctx := testserver.Context(t)
	admitN(f.limiter, 1, "u1", "member") // Redis's decision: a share of 64
	time.Sleep(ttl * 4 / 5)
	admitN(f.limiter, 1, "u1", "member") // from the share, with a fifth of its time left: renewed
	f.limiter.renewals.Wait()
	time.Sleep(ttl * 3 / 10) // past the first share's time, well within the renewed one's
	if r := f.limiter.Allow(ctx, "u1", "member"); !r.Allowed {
		t.Fatalf("refused: %+v", r)
	}
	if n := redisDecisions(f); n != 1 {
		t.Fatalf("%v requests waited for Redis, want only the first: the share was not renewed before it expired", n)
	}
}
