package keystore

import (
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// The cache's two kinds of trouble: an outage (Redis did not answer), when
// lookups skip Redis for a probe interval, and a refusal (Redis answered
// but would not store), when only write-backs pause.

func (c *RedisCache) usable() bool { return time.Now().UnixNano() >= c.downUntil.Load() }

// failed makes lookups skip Redis for a probe interval and logs the first
// failure of an outage.
func (c *RedisCache) failed(op string, err error) {
	c.downUntil.Store(time.Now().Add(c.probeInterval).UnixNano())
	if !c.failing.Swap(true) {
		c.log.Warn("redis identity cache unavailable; reading the store", zap.String("op", op), zap.Error(err))
	}
}

// isRefusal tells an error Redis answered with (out of memory under
// noeviction, a read-only replica) from one where it did not answer.
func isRefusal(err error) bool {
	var answered redis.Error
	return errors.As(err, &answered)
}

// refused pauses write-backs for a probe interval when Redis answers but
// will not store. Its lookups still answer, so they go on: counting the
// refusal as an outage made every hit after it log a recovery and the
// next miss a new outage.
func (c *RedisCache) refused(err error) {
	c.fillUntil.Store(time.Now().Add(c.probeInterval).UnixNano())
	if !c.refusing.Swap(true) {
		c.log.Warn("redis identity cache refuses writes; lookups go on, misses read the store", zap.Error(err))
	}
}

// writable ends a refusal.
func (c *RedisCache) writable() {
	if c.refusing.Load() && c.refusing.Swap(false) {
		c.log.Info("redis identity cache takes writes again")
	}
}

// recovered ends an outage; it only reads shared state when there is none.
func (c *RedisCache) recovered() {
	if c.failing.Load() && c.failing.Swap(false) {
		c.downUntil.Store(0)
		c.log.Info("redis identity cache available again")
	}
}
