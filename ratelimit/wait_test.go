package ratelimit

import (
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/wevion/keyproxy/internal/testserver"
)

// waitHistogram reads keyproxy_ratelimit_redis_wait_seconds from f's
// registry.
func waitHistogram(t *testing.T, f *redisFixture) *dto.Histogram {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "keyproxy_ratelimit_redis_wait_seconds" {
			return mf.GetMetric()[0].GetHistogram()
		}
	}
	t.Fatal("keyproxy_ratelimit_redis_wait_seconds is not registered")
	return nil
}

// bucketCount is how many observations were at most le seconds.
func bucketCount(t *testing.T, h *dto.Histogram, le float64) uint64 {
	t.Helper()
	for _, b := range h.GetBucket() {
		if b.GetUpperBound() == le {
			return b.GetCumulativeCount()
		}
	}
	t.Fatalf("no bucket with upper bound %g", le)
	return 0
}

// The wait histogram is what the shared limiter adds to a request's
// latency: every decision that went to Redis, including one that waited
// for a stalled Redis, and none the fallback made alone.
func TestRedis_WaitHistogramCountsEveryRedisDecision(t *testing.T) {
	for _, maxBatch := range []int{1, 0} {
		t.Run(map[int]string{1: "unbatched", 0: "batched"}[maxBatch], func(t *testing.T) {
			f := newRedisFixtureWith(t, slowPolicies(), nil,
				RedisOptions{Timeout: 5 * time.Second, ProbeInterval: time.Hour, MaxBatch: maxBatch})
			ctx := testserver.Context(t)
			admitN(f.limiter, 12, "u1", "member") // 10 admitted, 2 limited: all decided by Redis
			if h := waitHistogram(t, f); h.GetSampleCount() != 12 || h.GetSampleSum() <= 0 {
				t.Fatalf("after 12 decisions: count %d, sum %g; want 12 and a positive sum", h.GetSampleCount(), h.GetSampleSum())
			}

			// A decision Redis holds for a second is in the histogram's
			// tail, not among the fast ones.
			issued := time.Now()
			pause(t, f.server, time.Second)
			began := time.Now()
			if r := f.limiter.Allow(ctx, "u2", "member"); !r.Allowed || f.limiter.Degraded() {
				t.Fatalf("during the pause: %+v degraded=%v, want Redis's own decision after the pause", r, f.limiter.Degraded())
			}
			h := waitHistogram(t, f)
			if h.GetSampleCount() != 13 {
				t.Fatalf("count %d after the paused decision, want 13", h.GetSampleCount())
			}
			// Begun within 700 ms of the pause (unless the machine
			// stalled in between), the call waited more than 250 ms.
			if began.Sub(issued) < 700*time.Millisecond && bucketCount(t, h, .25) != 12 {
				t.Errorf("%d decisions within 250 ms, want the 12 before the pause only", bucketCount(t, h, .25))
			}

			// Killed: the first call fails over (and waits); the ones after
			// it are the fallback's alone while the probe is not due.
			f.server.Kill()
			admitN(f.limiter, 5, "u3", "member")
			if !f.limiter.Degraded() {
				t.Fatal("not degraded with Redis killed")
			}
			if got := waitHistogram(t, f).GetSampleCount(); got != 14 {
				t.Errorf("count %d after Redis died, want 14: the failed call, and no fallback decision", got)
			}
		})
	}
}
