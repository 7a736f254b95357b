package keystore

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Registrations are scored by their deadline on Redis's clock (TIME), so
// replicas with skewed clocks agree on who is live.
var (
	heartbeatScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], ttl * 10)
return redis.call('ZCARD', KEYS[1])
`)
	liveScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
`)
)

func (c *Cluster) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(c.o.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.beat(ctx)
		}
	}
}

// beat renews the registration (once the replica has listened at least
// once: a replica is counted only if it can hear evictions), publishes the
// replica count, and replays invalidations Redis missed while it was away.
// A replica keeps beating while its subscription reconnects: evicters then
// wait for it and report it unconfirmed, which is the truth.
func (c *Cluster) beat(ctx context.Context) {
	bctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	var err error
	if c.everSubscribed.Load() {
		var n int64
		n, err = heartbeatScript.Run(bctx, c.rdb, []string{c.o.ReplicasKey}, c.id, c.o.HeartbeatTTL.Milliseconds()).Int64()
		if err == nil {
			c.knownReplicas.Store(n)
			c.metrics.replicas.Set(float64(n))
		}
	} else {
		err = c.rdb.Ping(bctx).Err()
	}
	c.writesRefused.Store(err != nil && isRefusal(err))
	// Each change of state is logged once: a Redis down at start too, and
	// no "answering again" for one that was never down.
	wasUp, seen := c.redisUp.Load(), c.heartbeatSeen.Swap(true)
	if err != nil {
		c.redisUp.Store(false)
		switch {
		case seen && !wasUp:
		case isRefusal(err):
			c.log.Warn("redis refuses the heartbeat (out of memory, or read-only): other replicas stop waiting for this one; its evictions and acks still pass", zap.Error(err))
		default:
			c.log.Warn("redis not answering (down, or slower than redis.timeout): evictions reach other replicas within cache.ttl only", zap.Error(err))
		}
		c.metrics.redisUp.Set(0)
		return
	}
	c.redisUp.Store(true)
	if seen && !wasUp {
		c.log.Info("redis answering again")
	}
	c.metrics.redisUp.Set(1)
	if c.rc != nil {
		_ = c.rc.RetryPending(ctx) // logs its own failure and keeps the hashes
	}
}

// liveReplicas lists the replicas whose registration has not expired.
func (c *Cluster) liveReplicas(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	return liveScript.Run(ctx, c.rdb, []string{c.o.ReplicasKey}).StringSlice()
}
