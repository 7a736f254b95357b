package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// redisLogEvery bounds go-redis's own messages: while Redis is away its
// pool reports a failed dial about every second, on every replica.
const redisLogEvery = 30 * time.Second

// redisLog writes go-redis's own messages to the process log, in its
// format (JSON by default), at warn: they report connection trouble. It
// writes one every redisLogEvery at most, with how many it left out
// before it; the state changes (Redis down, back) are the cluster's and
// the limiter's own lines.
type redisLog struct {
	log        *zap.Logger
	now        func() time.Time // nil: time.Now
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (r *redisLog) Printf(_ context.Context, format string, v ...any) {
	now := time.Now()
	if r.now != nil {
		now = r.now()
	}
	r.mu.Lock()
	if !r.last.IsZero() && now.Sub(r.last) < redisLogEvery {
		r.suppressed++
		r.mu.Unlock()
		return
	}
	left := r.suppressed
	r.last, r.suppressed = now, 0
	r.mu.Unlock()
	fields := []zap.Field{zap.String("detail", fmt.Sprintf(format, v...))}
	if left > 0 {
		fields = append(fields, zap.Int("left_out", left))
	}
	r.log.Warn("redis client", fields...)
}

// redisEnabled reports whether any Redis address is configured.
func (c *Config) redisEnabled() bool { return c.Redis.Addr != "" || len(c.Redis.Addrs) > 0 }

// newRedisClient builds one client for caches, fan-out, limits and the
// audit stream: a single node (addr), a Sentinel group (addrs +
// master_name) or a Cluster (addrs), as go-redis' UniversalClient decides.
// Per-call deadlines come from the callers' contexts (ContextTimeoutEnabled),
// and retries are few so a dead Redis costs little before the fallbacks act.
func newRedisClient(c *Config) redis.UniversalClient {
	addrs := c.Redis.Addrs
	if c.Redis.Addr != "" {
		addrs = append([]string{c.Redis.Addr}, addrs...)
	}
	o := &redis.UniversalOptions{
		Addrs:                 addrs,
		MasterName:            c.Redis.MasterName,
		Username:              c.Redis.Username,
		Password:              c.Redis.Password,
		DB:                    c.Redis.DB,
		DialTimeout:           c.Redis.DialTimeout,
		ReadTimeout:           c.Redis.Timeout,
		WriteTimeout:          c.Redis.Timeout,
		ContextTimeoutEnabled: true,
		MaxRetries:            1,
		// go-redis redials a refused connection 5 times, 100 ms apart, by
		// default: longer than redis.timeout, so a stopped Redis looked
		// like a hung one and the call that found it waited the whole
		// timeout. One dial per attempt fails at once; MaxRetries still
		// gives a command a second attempt.
		DialerRetries:   1,
		MinRetryBackoff: 8 * time.Millisecond,
		MaxRetryBackoff: 64 * time.Millisecond,
		PoolSize:        c.Redis.PoolSize,
	}
	if c.Redis.TLS {
		o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return redis.NewUniversalClient(o)
}
