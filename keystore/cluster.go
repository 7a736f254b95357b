package keystore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// clusterClient is what the fan-out needs of a go-redis client.
// *redis.Client satisfies it; build it with ContextTimeoutEnabled so that
// ClusterOptions.Timeout bounds each call.
type clusterClient interface {
	redis.Scripter
	Subscribe(ctx context.Context, channels ...string) *redis.PubSub
	Publish(ctx context.Context, channel string, message any) *redis.IntCmd
	ZRem(ctx context.Context, key string, members ...any) *redis.IntCmd
	Ping(ctx context.Context) *redis.StatusCmd
}

// localCache is the replica's in-process cache (*Resolver).
type localCache interface {
	Invalidate(hashes ...Hash)
	Flush()
}

// ClusterOptions tune a Cluster. The zero value is ready to use.
type ClusterOptions struct {
	// ReplicaID names this replica in Redis and in acknowledgements
	// (default "r-" and 12 random hex characters; see ValidReplicaID).
	ReplicaID string
	// Channel carries eviction messages (default DefaultEvictChannel).
	Channel string
	// AckChannelPrefix precedes the evicting replica's id in the channel
	// its acknowledgements come back on (default DefaultAckChannelPrefix).
	AckChannelPrefix string
	// ReplicasKey is the sorted set of live replicas (default
	// DefaultReplicasKey).
	ReplicasKey string
	// HeartbeatInterval is how often the replica renews its registration,
	// and how long the subscription may stay silent before it is pinged
	// (default 1s).
	HeartbeatInterval time.Duration
	// HeartbeatTTL is how long a registration lasts without renewal: a
	// crashed replica stops being waited for after at most this (default
	// 3s; at least twice HeartbeatInterval).
	HeartbeatTTL time.Duration
	// AckTimeout bounds how long Evict waits for the other replicas
	// (default 2s; revocation.ack_timeout).
	AckTimeout time.Duration
	// Timeout bounds each Redis call (default 100ms).
	Timeout time.Duration
	// Logger receives subscription and heartbeat state changes; nil logs
	// nothing.
	Logger *zap.Logger
	// Registerer receives the metrics; nil registers none.
	Registerer prometheus.Registerer
}

// Cluster fans evictions out to every replica on one Redis and collects
// their acknowledgements. Each replica subscribes to the eviction channel
// and registers itself with a heartbeat; Evict drops the hashes locally
// and from the Redis cache, publishes them and waits until every live
// replica has confirmed. A replica whose subscription reconnects flushes
// its local cache, since it may have missed messages. It is safe for
// concurrent use.
type Cluster struct {
	rdb   clusterClient
	local localCache
	rc    *RedisCache // nil: no shared cache layer to invalidate
	o     ClusterOptions
	id    string
	ack   string // this replica's ack channel
	log   *zap.Logger

	mu      sync.Mutex
	started bool
	waits   map[string]*ackWait // by message id
	ps      *redis.PubSub       // the current subscription, closed by Close

	subscribed     atomic.Bool  // the eviction channel subscription is confirmed
	everSubscribed atomic.Bool  // registration starts only after the first
	redisUp        atomic.Bool  // the last heartbeat reached Redis
	heartbeatSeen  atomic.Bool  // a heartbeat has run: redisUp says something
	writesRefused  atomic.Bool  // Redis answered the last heartbeat with a refusal
	knownReplicas  atomic.Int64 // live replicas at the last heartbeat

	stop    chan struct{}
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closeMu sync.Once

	metrics clusterMetrics
}

// ackWait collects the acknowledgements of one eviction.
type ackWait struct {
	want map[string]bool // the other live replicas; fixed before publishing
	got  map[string]bool // guarded by Cluster.mu
	done chan struct{}   // closed when got covers want
}

// NewCluster prepares the fan-out for one replica: local is its
// in-process cache, rc the shared Redis layer (nil if there is none). Call
// Start to join the cluster.
func NewCluster(rdb clusterClient, local localCache, rc *RedisCache, o ClusterOptions) (*Cluster, error) {
	if rdb == nil || local == nil {
		return nil, errors.New("keystore: cluster needs a redis client and a local cache")
	}
	if err := checkContextTimeouts(rdb); err != nil {
		return nil, err
	}
	if o.ReplicaID == "" {
		id, err := newReplicaID()
		if err != nil {
			return nil, err
		}
		o.ReplicaID = id
	}
	if !ValidReplicaID(o.ReplicaID) {
		return nil, fmt.Errorf("keystore: replica id %q: use 1-64 characters of [A-Za-z0-9_.:-]", o.ReplicaID)
	}
	if o.Channel == "" {
		o.Channel = DefaultEvictChannel
	}
	if o.AckChannelPrefix == "" {
		o.AckChannelPrefix = DefaultAckChannelPrefix
	}
	if o.ReplicasKey == "" {
		o.ReplicasKey = DefaultReplicasKey
	}
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = time.Second
	}
	if o.HeartbeatTTL <= 0 {
		o.HeartbeatTTL = 3 * o.HeartbeatInterval
	}
	if o.HeartbeatTTL < 2*o.HeartbeatInterval {
		return nil, fmt.Errorf("keystore: heartbeat ttl %v must be at least twice the interval %v, or one late beat drops a live replica",
			o.HeartbeatTTL, o.HeartbeatInterval)
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = 2 * time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 100 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	m, err := newClusterMetrics(o.Registerer)
	if err != nil {
		return nil, err
	}
	return &Cluster{
		rdb: rdb, local: local, rc: rc, o: o, id: o.ReplicaID, ack: o.AckChannelPrefix + o.ReplicaID,
		log: o.Logger.With(zap.String("replica", o.ReplicaID)), waits: make(map[string]*ackWait),
		stop: make(chan struct{}), metrics: m,
	}, nil
}

// ReplicaID names this replica.
func (c *Cluster) ReplicaID() string { return c.id }

// Start subscribes, registers the replica and starts the heartbeat. It
// waits for the outcome of the first subscription attempt (bounded by
// Timeout to connect and about three HeartbeatIntervals to hear back) or
// for ctx, so that a replica is listening before any evicter counts it.
// It does not fail when Redis is unreachable: the replica then serves from
// its local cache and the store, and joins when Redis answers. It fails
// only if called twice. Evict needs a started Cluster.
func (c *Cluster) Start(ctx context.Context) error {
	c.mu.Lock()
	if c.started {
		c.mu.Unlock()
		return errors.New("keystore: cluster already started")
	}
	c.started = true
	runCtx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.mu.Unlock()

	first := make(chan struct{})
	c.wg.Go(func() { c.subscribeLoop(runCtx, first) })
	select {
	case <-first:
	case <-ctx.Done():
	case <-c.stop:
	}
	c.beat(runCtx)
	c.wg.Go(func() { c.heartbeatLoop(runCtx) })
	return nil
}

// Close leaves the cluster: it stops the loops, ends the subscription and
// deregisters the replica so no evicter waits for it.
func (c *Cluster) Close() error {
	var err error
	c.closeMu.Do(func() {
		close(c.stop)
		c.mu.Lock()
		cancel, ps := c.cancel, c.ps
		c.mu.Unlock()
		if cancel != nil {
			cancel()
		}
		if ps != nil {
			_ = ps.Close() // unblocks a Receive in progress
		}
		c.wg.Wait()
		ctx, done := context.WithTimeout(context.Background(), c.o.Timeout)
		defer done()
		err = c.rdb.ZRem(ctx, c.o.ReplicasKey, c.id).Err()
		if err != nil {
			err = fmt.Errorf("keystore: deregistering replica %s (it expires in %v): %w", c.id, c.o.HeartbeatTTL, err)
		}
	})
	return err
}

// Healthy reports whether the replica hears evictions: its subscription
// is confirmed and its last heartbeat reached Redis. A replica that is not
// healthy still serves correctly (revocations reach it within cache.ttl),
// so this belongs in metrics and health details rather than in readiness:
// gating readiness on it would take every replica out when Redis fails.
func (c *Cluster) Healthy() bool { return c.subscribed.Load() && c.redisUp.Load() }

// ErrRedisRefused is Ping's answer when Redis answers but refused the
// last heartbeat: out of memory under noeviction, or read-only after a
// failover. PING alone would call such a Redis healthy.
var ErrRedisRefused = errors.New("keystore: redis refuses writes (out of memory, or read-only)")

// Ping checks that Redis answers within the timeout and took the last
// heartbeat's write.
func (c *Cluster) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	if err := c.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("keystore: redis ping: %w", err)
	}
	if c.writesRefused.Load() {
		return ErrRedisRefused
	}
	return nil
}

// Evict is what the admin API calls after a store change (RevokeKey,
// UpdateKey, PutUser, PutTeam, a CreateKey that moved its owner). In order:
//
//  1. the local cache drops the hashes, so this replica refuses the key
//     from now on whatever happens to Redis;
//  2. the Redis cache replaces them with tombstones;
//  3. the eviction is published, and Evict waits until every other live
//     replica has confirmed it, AckTimeout passes, or ctx ends.
//
// It returns how many replicas confirmed, this one included, out of how
// many were live. When Redis cannot be reached it returns (1, n): this
// replica holds, n is the replica count of the last heartbeat (at least 1),
// and the others stop admitting within cache.ttl; the Redis invalidation
// is retried when Redis returns. Without hashes there is nothing to
// confirm and it returns (n, n).
func (c *Cluster) Evict(ctx context.Context, hashes []Hash) (confirmed, replicas int) {
	start := time.Now()
	c.local.Invalidate(hashes...)
	known := max(1, int(c.knownReplicas.Load()))
	if len(hashes) == 0 {
		return known, known
	}
	stale := false
	if c.rc != nil {
		if err := c.rc.Invalidate(ctx, hashes); err != nil {
			stale = true
			c.log.Warn("eviction could not reach the redis cache; it will be retried", zap.Error(err))
		}
	}
	live, err := c.liveReplicas(ctx)
	if err != nil {
		c.log.Warn("eviction could not reach redis; other replicas stop within cache.ttl", zap.Error(err))
		c.metrics.acks.timeout.Add(float64(known - 1))
		return 1, known
	}
	msgID, err := newMessageID()
	if err != nil {
		return 1, known
	}
	w := &ackWait{want: make(map[string]bool, len(live)), got: make(map[string]bool, len(live)), done: make(chan struct{})}
	for _, id := range live {
		if id != c.id {
			w.want[id] = true
		}
	}
	replicas = 1 + len(w.want)
	c.mu.Lock()
	c.waits[msgID] = w
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waits, msgID)
		c.mu.Unlock()
	}()

	pctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	err = c.rdb.Publish(pctx, c.o.Channel, encodeEvict(eviction{ID: msgID, From: c.id, Hashes: hashes, RedisStale: stale})).Err()
	cancel()
	if err != nil {
		c.log.Warn("eviction could not be published; other replicas stop within cache.ttl", zap.Error(err))
		c.metrics.acks.timeout.Add(float64(len(w.want)))
		return 1, replicas
	}
	if !c.subscribed.Load() {
		// Acks come back on this replica's subscription; while it
		// reconnects none can arrive, so waiting would only cost AckTimeout.
		c.metrics.acks.timeout.Add(float64(len(w.want)))
		return 1, replicas
	}
	if len(w.want) > 0 {
		timer := time.NewTimer(c.o.AckTimeout)
		defer timer.Stop()
		select {
		case <-w.done:
		case <-timer.C:
		case <-ctx.Done():
		case <-c.stop:
		}
	}
	c.mu.Lock()
	got := len(w.got)
	c.mu.Unlock()
	c.metrics.acks.confirmed.Add(float64(got))
	c.metrics.acks.timeout.Add(float64(len(w.want) - got))
	if got == len(w.want) {
		c.metrics.propagation.Observe(time.Since(start).Seconds())
	}
	return 1 + got, replicas
}

// deliverAck records one replica's confirmation of an eviction this
// replica is waiting for; others (late, duplicate, unknown) are dropped.
func (c *Cluster) deliverAck(msgID, replica string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.waits[msgID]
	if w == nil || !w.want[replica] || w.got[replica] {
		return
	}
	w.got[replica] = true
	if len(w.got) == len(w.want) {
		close(w.done)
	}
}

// clusterSleep waits d or until ctx ends, and reports whether it waited d.
func clusterSleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
