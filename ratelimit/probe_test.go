package ratelimit

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/wevion/keyproxy/internal/testserver"
)

func TestRedis_ReturnsToRedisWithoutTraffic(t *testing.T) {
	// Production's timeout and probe interval.
	f := newRedisFixtureWith(t, slowPolicies(), nil, RedisOptions{})
	ctx := testserver.Context(t)
	admitN(f.limiter, 1, "u1", "member")
	if f.limiter.probing() {
		t.Fatal("probing Redis while healthy")
	}
	f.server.Kill()
	f.limiter.Allow(ctx, "u1", "member")
	if v := testutil.ToFloat64(f.limiter.degradedG); v != 1 || !f.limiter.Degraded() {
		t.Fatalf("keyproxy_ratelimit_degraded = %v with Redis dead, want 1", v)
	}

	f.server.Start()
	// No request from here on.
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(f.limiter.degradedG) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("keyproxy_ratelimit_degraded still 1 10s after Redis came back to an idle replica")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if f.limiter.Degraded() {
		t.Fatal("gauge 0 but Degraded()")
	}
	if n := f.logs.FilterMessageSnippet("back on redis").Len(); n != 1 {
		t.Fatalf("%d recovery log lines, want exactly 1", n)
	}
	waitUntil(t, "the probe stopped once healthy", func() bool { return !f.limiter.probing() })
	// The restarted server is empty; the request the fallback admitted is
	// charged to it.
	if r := f.limiter.Allow(ctx, "u1", "member"); !r.Allowed || r.Remaining != 8 {
		t.Fatalf("after recovery: %+v, want a fresh bucket less the fallback's request and this one (8 left)", r)
	}
}

func TestRedis_CloseStopsTheProbe(t *testing.T) {
	f := newFallbackFixture(t, slowPolicies())
	ignore := goleak.IgnoreCurrent()
	f.server.Kill()
	f.limiter.Allow(context.Background(), "u1", "member")
	if !f.limiter.Degraded() || !f.limiter.probing() {
		t.Fatalf("degraded=%v probing=%v with Redis dead, want both", f.limiter.Degraded(), f.limiter.probing())
	}
	f.limiter.Close()
	if err := goleak.Find(ignore); err != nil {
		t.Fatalf("after Close: %v", err)
	}
	// Closed, a limiter still falls back, and returns on a request's
	// probe, but a new outage starts no goroutine.
	f.server.Start()
	waitUntil(t, "back on Redis through a request", func() bool {
		f.limiter.Allow(context.Background(), "u2", "member")
		return !f.limiter.Degraded()
	})
	f.server.Kill()
	f.limiter.Allow(context.Background(), "u2", "member")
	if !f.limiter.Degraded() || f.limiter.probing() {
		t.Fatalf("closed, Redis dead again: degraded=%v probing=%v, want degraded without a probe", f.limiter.Degraded(), f.limiter.probing())
	}
}

// probing reports whether the prober goroutine runs.
func (r *Redis) probing() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.prober
}

// TestRedis_StaysDegradedWhileRedisRefusesTheScript: a Redis that answers
// PING but refuses the script, here out of memory under noeviction (a
// replica left read-only by a failover does the same), has not recovered.
// The limiter stays degraded with one log line until the script runs,
// instead of a "back on redis" and a new fallback every probe interval.
func TestRedis_StaysDegradedWhileRedisRefusesTheScript(t *testing.T) {
	f := newFallbackFixture(t, slowPolicies())
	ctx := testserver.Context(t)
	admitN(f.limiter, 1, "u1", "member")
	f.server.Fill(t, true)
	if err := f.client.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING out of memory: %v, want PONG: the case under test is a Redis that answers it", err)
	}
	f.limiter.Allow(ctx, "u1", "member")
	if !f.limiter.Degraded() {
		t.Fatal("the script was refused, but the limiter is not degraded")
	}
	errs := testutil.ToFloat64(f.limiter.redisErrors)
	// Ten probe intervals: requests take the probes in the first half, the
	// prober in the second.
	for i := range 100 {
		if i < 50 && i%5 == 0 {
			f.limiter.Allow(ctx, "u2", "member")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !f.limiter.Degraded() {
		t.Error("back on Redis while it refuses the script")
	}
	if n := f.logs.FilterMessageSnippet("back on redis").Len(); n != 0 {
		t.Errorf("%d recovery log lines while Redis refuses the script, want 0", n)
	}
	if n := f.logs.FilterMessageSnippet("falls back").Len(); n != 1 {
		t.Errorf("%d degradation log lines, want exactly 1", n)
	}
	if probes := testutil.ToFloat64(f.limiter.redisErrors) - errs; probes < 3 {
		t.Fatalf("%v failed probes in a second of 100 ms probe intervals, want several: the test did not probe", probes)
	}

	f.server.Fill(t, false)
	// No request from here on: the prober alone finds the script working.
	waitUntil(t, "back on Redis once the script runs", func() bool { return !f.limiter.Degraded() })
	if n := f.logs.FilterMessageSnippet("back on redis").Len(); n != 1 {
		t.Fatalf("%d recovery log lines, want exactly 1", n)
	}
	// The probes spent no one's budget: u1 has the 10 of its burst less
	// the request Redis admitted and the one the fallback admitted (the
	// first decision charges that one).
	if got := admitN(f.limiter, 20, "u1", "member"); got != 8 {
		t.Fatalf("u1 admitted %d after recovery, want 8", got)
	}
}
