package ratelimit

import (
	"context"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/wevion/keyproxy/internal/testserver"
)

// A limit no benchmark exhausts, so every iteration takes the admit path.
var benchPolicies = Policies{Default: Limit{Requests: 1_000_000, Per: time.Second, Burst: 1_000_000}}

func BenchmarkLocalAllow(b *testing.B) {
	b.Run("one user", func(b *testing.B) {
		l := NewLocal(benchPolicies, LocalOptions{})
		defer l.Close()
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			l.Allow(ctx, "usr_1", "member")
		}
	})
	b.Run("10k users parallel", func(b *testing.B) {
		l := NewLocal(benchPolicies, LocalOptions{})
		defer l.Close()
		users := make([]string, 10_000)
		for i := range users {
			users[i] = "usr_" + strconv.Itoa(i)
			l.Allow(context.Background(), users[i], "member")
		}
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			ctx := context.Background()
			i := 0
			for pb.Next() {
				l.Allow(ctx, users[i%len(users)], "member")
				i += 7
			}
		})
	})
}

// BenchmarkLocalFollow is what each Redis decision adds to keep the
// fallback's bucket a copy of the shared one: each decision here spends
// one more token of the shared bucket (one microsecond under
// benchPolicies), as admitted requests in a row do.
func BenchmarkLocalFollow(b *testing.B) {
	l := NewLocal(benchPolicies, LocalOptions{})
	defer l.Close()
	res := l.Allow(context.Background(), "usr_1", "member")
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		i++
		res.ResetAfter = time.Duration(i%100_000+1) * time.Microsecond
		l.follow("usr_1", res)
	}
}

// benchUsers names n users.
func benchUsers(n int) []string {
	users := make([]string, n)
	for i := range users {
		users[i] = "usr_" + strconv.Itoa(i)
	}
	return users
}

// BenchmarkRedisAllow compares one round trip per decision with batching,
// and both with shares, which decide most of these users' requests (far
// from their limit) without Redis.
// Run it with -cpu 1, as a proxy pinned to one core: cpu-ns/op is then the
// process's CPU time per decision (redis-server's excluded), which ns/op,
// mostly waiting on Redis, is not.
func BenchmarkRedisAllow(b *testing.B) {
	client := newClient(b, testserver.StartRedis(b).Addr)
	users := benchUsers(100)
	for _, mode := range []struct {
		name          string
		maxBatch, div int
	}{{"unbatched", 1, -1}, {"batched", 0, -1}, {"shares", 0, 0}} {
		b.Run(mode.name, func(b *testing.B) {
			fallback := NewLocal(benchPolicies, LocalOptions{})
			defer fallback.Close()
			r := NewRedis(client, benchPolicies, fallback, RedisOptions{Timeout: time.Second, MaxBatch: mode.maxBatch, ShareDivisor: mode.div})
			defer r.Close()
			ctx := context.Background()
			r.Allow(ctx, "usr_1", "member")
			b.Run("serial", func(b *testing.B) {
				b.ReportAllocs()
				cpu := processCPU()
				for b.Loop() {
					r.Allow(ctx, "usr_1", "member")
				}
				reportCPU(b, cpu)
			})
			b.Run("parallel64", func(b *testing.B) {
				b.ReportAllocs()
				b.SetParallelism(64) // goroutines per GOMAXPROCS: about the proxy's 100 connections at -cpu 1
				var batches, sent int64
				if r.batch != nil {
					batches, sent = r.batch.pipelines.Load(), r.batch.sent.Load()
				}
				cpu := processCPU()
				b.RunParallel(func(pb *testing.PB) {
					i := rand.IntN(len(users))
					for pb.Next() {
						r.Allow(ctx, users[i%len(users)], "member")
						i++
					}
				})
				reportCPU(b, cpu)
				if r.batch != nil && r.batch.pipelines.Load() > batches {
					b.ReportMetric(float64(r.batch.sent.Load()-sent)/float64(r.batch.pipelines.Load()-batches), "decisions/pipeline")
				}
			})
			if r.Degraded() {
				b.Fatal("benchmark ran degraded")
			}
		})
	}
}

// reportCPU reports the process CPU time spent since start per iteration.
func reportCPU(b *testing.B, start time.Duration) {
	b.Helper()
	if start < 0 {
		return
	}
	b.ReportMetric(float64(processCPU()-start)/float64(b.N), "cpu-ns/op")
}

func BenchmarkWriteHeaders(b *testing.B) {
	l := NewLocal(benchPolicies, LocalOptions{})
	defer l.Close()
	res := l.Allow(context.Background(), "usr_1", "member")
	h := make(http.Header, 8)
	b.ReportAllocs()
	for b.Loop() {
		WriteHeaders(h, res)
	}
}

// BenchmarkRedisAllowPaced is the latency a decision adds as a proxy's
// traffic arrives: 100 users in turn, one decision every 50 µs or a
// little more (each user's every 5 ms, many round trips apart), under a
// policy with the default burst of 100 that they stay far from. It
// reports the p50 and p99 of a decision's time and the fraction that
// waited for Redis. The pacing sleeps, so ns/op is the gap, not the cost.
func BenchmarkRedisAllowPaced(b *testing.B) {
	client := newClient(b, testserver.StartRedis(b).Addr)
	users := benchUsers(100)
	pol := Policies{Default: Limit{Requests: 60_000, Per: time.Minute, Burst: 100}}
	const gap = 50 * time.Microsecond
	for _, mode := range []struct {
		name string
		div  int
	}{{"batched", -1}, {"shares", 0}} {
		b.Run(mode.name, func(b *testing.B) {
			fallback := NewLocal(pol, LocalOptions{})
			defer fallback.Close()
			reg := prometheus.NewRegistry()
			r := NewRedis(client, pol, fallback, RedisOptions{Timeout: time.Second, ShareDivisor: mode.div, Registerer: reg})
			defer r.Close()
			ctx := context.Background()
			// Each user's first decision, unpaced and unmeasured: a
			// replica that has served a while has made them.
			for _, u := range users {
				r.Allow(ctx, u, "member")
			}
			waitedBefore := waitCount(b, r)
			lat := make([]time.Duration, 0, 1<<16)
			next := time.Now()
			for i := 0; b.Loop(); i++ {
				// Asleep, as a proxy's handlers block on their sockets:
				// the scheduler then looks for network replies (a loop
				// that spins, even yielding, keeps them waiting for
				// sysmon's poll, 10 ms apart).
				time.Sleep(time.Until(next))
				next = next.Add(gap)
				start := time.Now()
				r.Allow(ctx, users[i%len(users)], "member")
				lat = append(lat, time.Since(start))
			}
			if r.Degraded() {
				b.Fatal("benchmark ran degraded")
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
			b.ReportMetric(float64(waitCount(b, r)-waitedBefore)/float64(len(lat)), "waited/op")
		})
	}
}

// waitCount is how many decisions have waited for Redis.
func waitCount(b *testing.B, r *Redis) uint64 {
	var m dto.Metric
	if err := r.wait.Write(&m); err != nil {
		b.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}
