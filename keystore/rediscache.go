package keystore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Redis key names. They are part of the operator contract (dashboards,
// runbooks and the Wevion web app may read them); change none.
//
//	keyproxy:id:<sha256 hex>    string  a cached identity (JSON, see redisIdentity) with
//	                                    a TTL (RedisCacheOptions.TTL, default cache.ttl), or a
//	                                    tombstone "tombstone:<random>" written by an
//	                                    invalidation, which lives as long and which no
//	                                    fill that began before it may overwrite
//	keyproxy:replicas           zset    live replicas: member replica id, score the
//	                                    deadline of its last heartbeat (ms, Redis clock)
//	keyproxy:evict              channel eviction messages
//	                                    {"id":"<msg id>","from":"<replica>","hashes":["<hex>",…]}
//	keyproxy:ack:<replica id>   channel acknowledgements sent to the evicting replica
//	                                    {"id":"<msg id>","replica":"<acking replica>"}
const (
	DefaultRedisKeyPrefix   = "keyproxy:id:"
	DefaultReplicasKey      = "keyproxy:replicas"
	DefaultEvictChannel     = "keyproxy:evict"
	DefaultAckChannelPrefix = "keyproxy:ack:"
)

// tombstonePrefix starts the value an invalidation leaves in place of an
// entry. An identity is JSON and starts with '{', so the two never mix.
const tombstonePrefix = "tombstone:"

// redisCacheClient is what the cache needs of a go-redis client.
// *redis.Client, *redis.ClusterClient and *redis.Ring satisfy it; build
// the client with ContextTimeoutEnabled so that Timeout bounds each call.
type redisCacheClient interface {
	redis.Scripter
	Get(ctx context.Context, key string) *redis.StringCmd
	Pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error)
	Scan(ctx context.Context, cursor uint64, match string, count int64) *redis.ScanCmd
	Unlink(ctx context.Context, keys ...string) *redis.IntCmd
}

// fillScript stores an identity only if the key still holds what the
// filler saw before it read the store (nothing, or one tombstone). An
// invalidation in between wrote a new tombstone, so the stale fill loses.
var fillScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur == false then cur = '' end
if cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
`)

// RedisCacheOptions tune a RedisCache. The zero value is ready to use.
type RedisCacheOptions struct {
	// TTL is how long an identity and a tombstone live in Redis (default
	// 10s; pass cache.ttl). A replica that misses an eviction serves a
	// Redis entry at most this long.
	TTL time.Duration
	// KeyPrefix precedes the hash (default DefaultRedisKeyPrefix).
	KeyPrefix string
	// Timeout bounds each Redis call (default 100ms): a slow Redis costs a
	// lookup at most this much before the store answers.
	Timeout time.Duration
	// ProbeInterval is how long lookups skip Redis after it failed (default
	// 1s), so a dead Redis costs one timeout per interval, not per miss.
	ProbeInterval time.Duration
	// MaxPending bounds the hashes remembered while invalidations cannot
	// reach Redis (default 65536); past it the whole prefix is purged
	// when Redis returns.
	MaxPending int
	// Logger receives one line when Redis fails and one when it is back;
	// nil logs nothing.
	Logger *zap.Logger
	// Registerer receives the metrics; nil registers none.
	Registerer prometheus.Registerer
}

// RedisCache is the cache layer shared by every replica: a Backend that
// answers from Redis and reads through to next (the store) on a miss,
// writing the identity back with a TTL. Redis failures never refuse a key:
// the lookup falls through to next. Unknown hashes are not cached. It is
// safe for concurrent use.
//
// The guard against stale fills lives in Redis (tombstones), so Redis must
// keep what it is given for its TTL: run it with maxmemory-policy
// noeviction (or memory to spare). A tombstone evicted under memory
// pressure, or lost in a restart without persistence while a fill is in
// flight, can let that fill store a stale identity for at most TTL.
type RedisCache struct {
	rdb           redisCacheClient
	next          Backend
	prefix        string
	ttl           time.Duration
	timeout       time.Duration
	probeInterval time.Duration
	maxPending    int
	log           *zap.Logger

	downUntil atomic.Int64 // unix nanoseconds; lookups skip Redis before it
	failing   atomic.Bool  // for one log line per outage
	fillUntil atomic.Int64 // unix nanoseconds; no write-backs before it
	refusing  atomic.Bool  // for one log line while Redis refuses writes

	mu      sync.Mutex
	pending map[Hash]uint64 // invalidations Redis has not seen, by sequence
	seq     uint64          // so a retry clears only what it sent
	purge   bool            // pending overflowed: purge the prefix
	// anyPending is len(pending) > 0 || purge, so that a lookup takes mu
	// only while some invalidation has not reached Redis.
	anyPending atomic.Bool

	metrics redisCacheMetrics
}

// NewRedisCache returns the Redis layer in front of next. It fails only if
// its metrics cannot be registered.
func NewRedisCache(rdb redisCacheClient, next Backend, o RedisCacheOptions) (*RedisCache, error) {
	if rdb == nil || next == nil {
		return nil, errors.New("keystore: redis cache needs a client and a next backend")
	}
	if err := checkContextTimeouts(rdb); err != nil {
		return nil, err
	}
	if o.TTL <= 0 {
		o.TTL = 10 * time.Second
	}
	if o.KeyPrefix == "" {
		o.KeyPrefix = DefaultRedisKeyPrefix
	}
	if o.Timeout <= 0 {
		o.Timeout = 100 * time.Millisecond
	}
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = time.Second
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 1 << 16
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	c := &RedisCache{
		rdb: rdb, next: next, prefix: o.KeyPrefix, ttl: o.TTL, timeout: o.Timeout,
		probeInterval: o.ProbeInterval, maxPending: o.MaxPending, log: o.Logger,
		pending: make(map[Hash]uint64),
	}
	m, err := newRedisCacheMetrics(o.Registerer, c.pendingCount)
	if err != nil {
		return nil, err
	}
	c.metrics = m
	return c, nil
}

// Resolve answers from Redis, or from next on a miss or a Redis failure.
// A fill is written back only if no invalidation of the hash ran since the
// lookup began (see fillScript), so it never brings back a revoked key.
func (c *RedisCache) Resolve(ctx context.Context, h Hash) (Identity, error) {
	key := c.prefix + h.String()
	seen, usable := "", c.usable()
	if usable {
		v, err := c.get(ctx, key)
		switch {
		case errors.Is(err, redis.Nil):
			c.metrics.miss.Inc()
			c.recovered()
		case err != nil:
			c.metrics.errors.Inc()
			c.failed("lookup", err)
			usable = false
		default:
			c.recovered()
			// An identity whose invalidation Redis has not taken (it was
			// down, or refused the tombstone) may be one this replica
			// revoked: only the store can answer for it.
			if id, ok := decodeRedisIdentity(v); ok && !c.mayBeStale(h) {
				c.metrics.hit.Inc()
				return id, nil
			}
			// A tombstone, or something this binary cannot read: the fill
			// may replace exactly this value.
			c.metrics.miss.Inc()
			seen = v
		}
	} else {
		c.metrics.skipped.Inc()
	}
	start := time.Now()
	id, err := c.next.Resolve(ctx, h)
	if err != nil || !usable {
		return id, err
	}
	c.writeBack(ctx, h, key, seen, id, time.Since(start))
	return id, nil
}

// writeBack stores a fill unless it could be stale: an invalidation of the
// hash is waiting for Redis, or the store read took so long that the
// tombstone of an invalidation racing it might have expired already.
func (c *RedisCache) writeBack(ctx context.Context, h Hash, key, seen string, id Identity, took time.Duration) {
	v, err := encodeRedisIdentity(id)
	if err != nil || took > c.ttl/2 || c.isPending(h) || time.Now().UnixNano() < c.fillUntil.Load() {
		c.metrics.writeSkipped.Inc()
		return
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	n, err := fillScript.Run(ctx, c.rdb, []string{key}, seen, v, c.ttl.Milliseconds()).Int()
	switch {
	case err != nil && isRefusal(err):
		c.metrics.writeErrors.Inc()
		c.refused(err)
	case err != nil:
		c.metrics.writeErrors.Inc()
		c.failed("write-back", err)
	case n == 1:
		c.metrics.writeStored.Inc()
		c.writable()
		c.recovered()
	default:
		c.metrics.writeSuperseded.Inc()
	}
}

// Invalidate replaces the entries of hashes with tombstones, so lookups
// miss and fills that began earlier cannot write back. It must run after
// the store change is committed. If Redis cannot be reached, the hashes
// are remembered, kept from being written back, and retried by
// RetryPending (or the next Invalidate); the error is returned.
func (c *RedisCache) Invalidate(ctx context.Context, hashes []Hash) error {
	c.distrust(hashes)
	return c.RetryPending(ctx)
}

// distrust records hashes whose Redis entries another replica could not
// tombstone, as if this cache's own invalidation had failed: lookups read
// the store for them and fills skip them until RetryPending lands the
// tombstones. It does no I/O, so an ack can follow at once.
func (c *RedisCache) distrust(hashes []Hash) {
	if len(hashes) == 0 {
		return
	}
	c.mu.Lock()
	c.addPendingLocked(hashes)
	c.mu.Unlock()
}

// RetryPending sends the invalidations Redis has not seen. The cluster's
// heartbeat calls it, so a Redis outage heals without a new eviction.
func (c *RedisCache) RetryPending(ctx context.Context) error {
	c.mu.Lock()
	purge, seq := c.purge, c.seq
	hashes := make([]Hash, 0, len(c.pending))
	for h := range c.pending {
		hashes = append(hashes, h)
	}
	c.mu.Unlock()
	if !purge && len(hashes) == 0 {
		return nil
	}
	var err error
	if purge {
		err = c.purgeAll(ctx)
	} else {
		err = c.tombstone(ctx, hashes)
	}
	switch {
	case err != nil && isRefusal(err):
		c.refused(err)
	case err != nil:
		c.failed("invalidation", err)
	}
	if err != nil {
		return fmt.Errorf("keystore: redis cache invalidation (kept for retry): %w", err)
	}
	c.mu.Lock()
	if purge && c.seq == seq {
		c.purge = false
	}
	for _, h := range hashes {
		// A hash invalidated again while this retry was in flight stays:
		// this retry's tombstone may have landed before that store change.
		if c.pending[h] <= seq {
			delete(c.pending, h)
		}
	}
	c.anyPending.Store(len(c.pending) > 0 || c.purge)
	c.mu.Unlock()
	c.writable()
	c.recovered()
	return nil
}

func (c *RedisCache) tombstone(ctx context.Context, hashes []Hash) error {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return err
	}
	mark := tombstonePrefix + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, h := range hashes {
			p.Set(ctx, c.prefix+h.String(), mark, c.ttl)
		}
		return nil
	})
	return err
}

// purgeAll drops every entry under the prefix. It runs only after more
// invalidations failed than MaxPending, and each SCAN step gets its own
// timeout since the keyspace may be large.
func (c *RedisCache) purgeAll(ctx context.Context) error {
	var cursor uint64
	for {
		sctx, cancel := context.WithTimeout(ctx, c.timeout)
		keys, next, err := c.rdb.Scan(sctx, cursor, c.prefix+"*", 1000).Result()
		if err == nil && len(keys) > 0 {
			err = c.rdb.Unlink(sctx, keys...).Err()
		}
		cancel()
		if err != nil {
			return err
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

func (c *RedisCache) addPendingLocked(hashes []Hash) {
	c.seq++
	if c.purge {
		return
	}
	for _, h := range hashes {
		c.pending[h] = c.seq
	}
	if len(c.pending) > c.maxPending {
		c.purge = true
		clear(c.pending)
		c.log.Error("too many invalidations waiting for Redis; its identity cache will be purged when it returns",
			zap.Int("max_pending", c.maxPending))
	}
	c.anyPending.Store(true)
}

// mayBeStale reports whether Redis may still hold h's identity from
// before an invalidation it has not taken.
func (c *RedisCache) mayBeStale(h Hash) bool { return c.anyPending.Load() && c.isPending(h) }

func (c *RedisCache) isPending(h Hash) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.pending[h]
	return ok || c.purge
}

func (c *RedisCache) pendingCount() float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return float64(len(c.pending))
}

func (c *RedisCache) get(ctx context.Context, key string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return c.rdb.Get(ctx, key).Result()
}

// checkContextTimeouts refuses a *redis.Client that ignores context
// deadlines: with it, the per-call timeouts that keep a slow Redis from
// stalling the proxy would silently not apply.
func checkContextTimeouts(rdb any) error {
	if c, ok := rdb.(interface{ Options() *redis.Options }); ok && !c.Options().ContextTimeoutEnabled {
		return errors.New("keystore: the redis client must be built with ContextTimeoutEnabled, or Redis calls are not bounded")
	}
	return nil
}
