package keystore

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// silentPings is how many heartbeat intervals a subscription may go
// without any message or pong, a ping sent each time, before it is taken
// for dead (a half-open connection never reports an error by itself).
const silentPings = 2

// subscribeLoop keeps one subscription to the eviction channel and this
// replica's ack channel, starting a fresh one whenever it fails. first is
// closed after the first attempt, whatever its outcome.
func (c *Cluster) subscribeLoop(ctx context.Context, first chan struct{}) {
	backoff := 50 * time.Millisecond
	// told: the loss is logged; the attempts that fail after it, up to
	// one a heartbeat interval while Redis is away, are not, until a
	// subscription is confirmed again (and says so).
	told := false
	for ctx.Err() == nil {
		err := c.session(ctx, first)
		if c.subscribed.Swap(false) {
			told = false
		}
		c.closeFirst(first)
		if ctx.Err() != nil {
			return
		}
		c.metrics.subscribed.Set(0)
		if !told {
			c.log.Warn("eviction subscription lost; resubscribing (the local cache is flushed then; failed attempts are logged at debug until it is back)", zap.Error(err))
			told = true
		} else {
			c.log.Debug("eviction subscription: resubscribing failed", zap.Error(err))
		}
		if !clusterSleep(ctx, backoff) {
			return
		}
		backoff = min(2*backoff, c.o.HeartbeatInterval)
	}
}

func (c *Cluster) closeFirst(first chan struct{}) {
	select {
	case <-first:
	default:
		close(first)
	}
}

// session runs one subscription until it fails. Every confirmation of the
// eviction channel flushes the local cache: before it, this replica was
// not listening and may have missed evictions.
func (c *Cluster) session(ctx context.Context, first chan struct{}) error {
	ps := c.rdb.Subscribe(ctx)
	c.mu.Lock()
	select {
	case <-c.stop:
		c.mu.Unlock()
		_ = ps.Close()
		return context.Canceled
	default:
	}
	c.ps = ps
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.ps = nil
		c.mu.Unlock()
		_ = ps.Close()
	}()

	sctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	err := ps.Subscribe(sctx, c.o.Channel, c.ack)
	cancel()
	if err != nil {
		return err
	}
	silent := 0
	for {
		msg, err := ps.ReceiveTimeout(ctx, c.o.HeartbeatInterval)
		if err != nil {
			if !isTimeout(err) || silent >= silentPings || ctx.Err() != nil {
				return err
			}
			silent++
			pctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
			err = ps.Ping(pctx)
			cancel()
			if err != nil {
				return err
			}
			continue
		}
		silent = 0
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind != "subscribe" {
				break
			}
			switch m.Channel {
			case c.o.Channel:
				c.local.Flush()
			case c.ack:
				// One SUBSCRIBE names both channels; the ack channel's
				// confirmation comes second and completes the session.
				if c.everSubscribed.Swap(true) {
					c.metrics.resubscribes.Inc()
					c.log.Info("eviction subscription restored; local cache flushed")
				}
				c.subscribed.Store(true)
				c.metrics.subscribed.Set(1)
				c.closeFirst(first)
			}
		case *redis.Message:
			switch m.Channel {
			case c.o.Channel:
				c.onEvict(ctx, m.Payload)
			case c.ack:
				c.onAck(m.Payload)
			}
		}
	}
}

// onEvict drops the hashes another replica evicted and acknowledges it.
// The ack is sent inline: it is one bounded call, and the order of
// messages on the subscription is kept. When the sender could not
// tombstone the hashes in Redis, this replica's Redis cache stops
// trusting their entries first (and retries the tombstones with each
// heartbeat): Redis may still hold the identities, and the ack promises
// the key is refused here.
func (c *Cluster) onEvict(ctx context.Context, payload string) {
	e, err := decodeEvict(payload)
	if err != nil {
		c.metrics.invalidMessages.Inc()
		c.log.Warn("ignoring a malformed eviction message", zap.Error(err))
		return
	}
	if e.From == c.id {
		return // Evict dropped them before publishing
	}
	if e.RedisStale && c.rc != nil {
		c.rc.distrust(e.Hashes)
	}
	c.local.Invalidate(e.Hashes...)
	actx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	if err := c.rdb.Publish(actx, c.o.AckChannelPrefix+e.From, encodeAck(e.ID, c.id)).Err(); err != nil {
		c.log.Warn("could not acknowledge an eviction (applied locally)", zap.String("from", e.From), zap.Error(err))
	}
}

func (c *Cluster) onAck(payload string) {
	msgID, replica, err := decodeAck(payload)
	if err != nil {
		c.metrics.invalidMessages.Inc()
		c.log.Warn("ignoring a malformed ack message", zap.Error(err))
		return
	}
	c.deliverAck(msgID, replica)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
