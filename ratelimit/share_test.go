package ratelimit

import (
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
