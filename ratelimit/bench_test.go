package ratelimit

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

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

func BenchmarkRedisAllow(b *testing.B) {
	server := testserver.StartRedis(b)
	fallback := NewLocal(benchPolicies, LocalOptions{})
	defer fallback.Close()
	client := newClient(b, server.Addr)
	r := NewRedis(client, benchPolicies, fallback, RedisOptions{Timeout: time.Second})
	ctx := context.Background()
	r.Allow(ctx, "usr_1", "member")
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r.Allow(ctx, "usr_1", "member")
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				r.Allow(ctx, "usr_1", "member")
			}
		})
	})
	if r.Degraded() {
		b.Fatal("benchmark ran degraded")
	}
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
