package ratelimit

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

//go:embed gcra.lua
var gcraScript string

// DefaultKeyPrefix is where the per-user GCRA state lives; the Wevion web
// app uses the same names to share the budget.
const DefaultKeyPrefix = "keyproxy:rl:user:"

// rediser is what the limiter needs of a go-redis client: the methods
// redis.Script.Run uses and pipelines for batching.
// *redis.Client, *redis.ClusterClient and *redis.Ring satisfy it; the
// cluster and ring pipelines split a batch by node themselves.
type rediser interface {
	Pipeline() redis.Pipeliner
	Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd
	EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd
	EvalRO(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd
	EvalShaRO(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd
	ScriptExists(ctx context.Context, hashes ...string) *redis.BoolSliceCmd
	ScriptLoad(ctx context.Context, script string) *redis.StringCmd
}

var (
	_ rediser = (*redis.Client)(nil)
	_ rediser = (*redis.ClusterClient)(nil)
	_ rediser = (*redis.Ring)(nil)
)

// RedisOptions tune a Redis limiter. The zero value is ready to use.
type RedisOptions struct {
	// KeyPrefix precedes the user id in the Redis key (default
	// DefaultKeyPrefix).
	KeyPrefix string
	// Timeout bounds each decision's wait for Redis (default 50ms); a
	// batch waits for as long as its latest caller. The client must be
	// built with ContextTimeoutEnabled for go-redis to honour it.
	Timeout time.Duration
	// ShareDivisor sets the share of a user's budget a replica may spend
	// without Redis while the user is far from the limit: what Redis
	// reported left, divided by it (default DefaultShareDivisor; share.go).
	// A negative value turns shares off: every decision is Redis's.
	ShareDivisor int
	// ShareTTL is how long a share may be spent after Redis granted it
	// (default DefaultShareTTL).
	ShareTTL time.Duration
	// MaxBatch caps how many concurrent decisions share one pipeline
	// (default DefaultMaxBatch). 1 turns batching off: each decision makes
	// its own round trip from the caller's goroutine.
	MaxBatch int
	// ProbeInterval is how often a degraded limiter tries Redis again
	// (default 1s): with a request when one comes, else with the script on
	// a key of no user's.
	ProbeInterval time.Duration
	// Logger receives one line when the limiter degrades and one when it
	// recovers; nil logs nothing.
	Logger *zap.Logger
	// Registerer receives the metrics; nil registers none.
	Registerer prometheus.Registerer
}

// Redis is a limiter shared by every replica on one Redis: an atomic GCRA
// in a Lua script. The decisions waiting at the same moment share one
// pipelined round trip; a lone one is sent at once. When Redis fails or
// times out it answers from its fallback Local at once, and tries Redis
// again once per ProbeInterval, with or without traffic. Each decision
// Redis makes is copied into the fallback's bucket for that user, so a
// fallback goes on from the shared state; and the requests a fallback
// admits are charged to the shared budget with the user's next decision
// Redis makes. It is safe for
// concurrent use. Close it to stop its goroutines.
type Redis struct {
	rdb       rediser
	script    *redis.Script
	batch     *batcher // nil with MaxBatch 1
	prefix    string
	timeout   time.Duration
	probe     time.Duration
	log       *zap.Logger
	fallback  *Local
	policies  atomic.Pointer[table]
	degraded  atomic.Bool
	nextProbe atomic.Int64 // unix nanoseconds

	// mu guards starting the prober: it runs only while degraded, at most
	// one at a time, and never once closed.
	mu       sync.Mutex
	prober   bool // a prober goroutine is running
	closed   bool
	stop     chan struct{} // closed by Close
	probers  sync.WaitGroup
	renewals sync.WaitGroup // shares' renewals on their way (share.go)

	decisions   decisionCounters
	shared      prometheus.Counter
	shareDiv    int
	shareTTL    time.Duration
	degradedG   prometheus.Gauge
	redisErrors prometheus.Counter
	charged     prometheus.Counter
	wait        prometheus.Histogram
}

// waitBuckets resolve the tens of microseconds a round trip to a nearby
// Redis takes, up to past the default timeout: the wait is what the
// shared limiter adds to a request's latency.
var waitBuckets = []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25}

// NewRedis returns a limiter applying p on rdb, answering from fallback
// when Redis is unavailable. It sets p on fallback too, so the two never
// disagree. It panics if p is invalid: validate policies with
// Policies.Validate when the config is loaded.
func NewRedis(rdb rediser, p Policies, fallback *Local, o RedisOptions) *Redis {
	t, err := compile(p)
	if err != nil {
		panic("ratelimit: NewRedis with invalid policies: " + err.Error())
	}
	if o.KeyPrefix == "" {
		o.KeyPrefix = DefaultKeyPrefix
	}
	if o.Timeout <= 0 {
		o.Timeout = 50 * time.Millisecond
	}
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = time.Second
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	switch {
	case o.ShareDivisor == 0:
		o.ShareDivisor = DefaultShareDivisor
	case o.ShareDivisor < 0:
		o.ShareDivisor = 0
	}
	if o.ShareTTL <= 0 {
		o.ShareTTL = DefaultShareTTL
	}
	r := &Redis{
		rdb:       rdb,
		script:    redis.NewScript(gcraScript),
		prefix:    o.KeyPrefix,
		timeout:   o.Timeout,
		probe:     o.ProbeInterval,
		log:       o.Logger,
		fallback:  fallback,
		stop:      make(chan struct{}),
		decisions: newDecisionCounters(o.Registerer, "redis"),
		shared:    newShareCounter(o.Registerer),
		shareDiv:  o.ShareDivisor,
		shareTTL:  o.ShareTTL,
		degradedG: register(o.Registerer, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyproxy_ratelimit_degraded",
			Help: "1 while the Redis rate limiter answers from its local fallback.",
		})),
		redisErrors: register(o.Registerer, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keyproxy_ratelimit_redis_errors_total",
			Help: "Redis rate-limit calls that failed or timed out.",
		})),
		charged: register(o.Registerer, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keyproxy_ratelimit_fallback_charged_total",
			Help: "Requests the local fallback admitted that were charged to the user's shared budget in Redis once it answered again.",
		})),
		wait: register(o.Registerer, prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "keyproxy_ratelimit_redis_wait_seconds",
			Help:    "How long a request waited for its rate-limit decision from Redis, queueing for a pipeline included, whether Redis answered or not.",
			Buckets: waitBuckets,
		})),
	}
	if o.MaxBatch > 1 {
		r.batch = newBatcher(rdb, r.script.Hash(), o.MaxBatch)
	}
	r.policies.Store(t)
	fallback.setTable(t)
	return r
}

// Close stops the goroutine that batches Redis calls, once the calls
// already waiting have their answers, and the one that probes Redis while
// degraded. The limiter still works afterwards, one round trip per
// decision, and returns from its fallback only on a request's probe.
// Close may be called more than once.
func (r *Redis) Close() {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		close(r.stop)
	}
	r.mu.Unlock()
	r.probers.Wait()
	r.renewals.Wait() // before the batcher, which they may be waiting on
	if r.batch != nil {
		r.batch.close()
	}
}

// SetPolicies replaces the policies of this limiter and its fallback at
// once, for a reload on SIGHUP. Invalid policies are refused and the
// current ones stay in force.
func (r *Redis) SetPolicies(p Policies) error {
	t, err := compile(p)
	if err != nil {
		return err
	}
	r.policies.Store(t)
	r.fallback.setTable(t)
	return nil
}

// Degraded reports whether the limiter is answering from its fallback.
func (r *Redis) Degraded() bool { return r.degraded.Load() }

// Allow decides one request of userID, whose current role is role, and
// takes from the user's budget if it is admitted. It never fails: when
// Redis cannot answer within the timeout the fallback decides.
func (r *Redis) Allow(ctx context.Context, userID, role string) Result {
	degraded := r.degraded.Load()
	if degraded && !r.probeDue() {
		return r.fallback.allow(userID, role, true)
	}
	pol := r.policies.Load().forRole(role)
	b := r.fallback.bucket(userID, pol)
	// Counted before the share is tried: a reply that grants a share
	// while this request goes on to Redis must leave it a token.
	b.pending.Add(1)
	// A degraded limiter spends no share: this request is its probe.
	if !degraded {
		if res, ok := r.fromShare(b, userID, pol); ok {
			return res
		}
		if done := b.renewalDone(); done != nil {
			// The share ran out before its renewal came back. Its answer
			// is nearer than a round trip of this request's own, which
			// Redis might also run before the renewal's charge: its
			// Remaining would then leave out what the share admitted.
			b.pending.Add(-1) // not on its way to Redis while it waits
			start := time.Now()
			<-done // the renewal's call is bounded by the timeout
			r.wait.Observe(time.Since(start).Seconds())
			b.pending.Add(1)
			if res, ok := r.fromShare(b, userID, pol); ok {
				return res
			}
		}
	}
	owed := b.takeOwed(r.fallback.now)
	start := time.Now()
	res, err := r.allow(ctx, userID, pol, owed)
	b.pending.Add(-1)
	r.wait.Observe(time.Since(start).Seconds())
	if err != nil {
		b.owe(owed, r.fallback.now)
		r.redisErrors.Inc()
		r.degrade(err)
		return r.fallback.allow(userID, role, true)
	}
	if owed.requests > 0 {
		r.charged.Add(float64(owed.requests))
	}
	r.restore()
	r.decisions.count(res.Allowed)
	b.follow(pol, res.ResetAfter, r.fallback.now)
	if res.Allowed {
		b.grantShare(pol, res.Remaining, r.shareDiv, r.fallback.now)
	}
	return res
}

// Peek reports userID's budget without spending from it or asking Redis:
// from this replica's copy of the shared bucket, which each decision Redis
// makes brings to within half a token of it (Local.Peek).
func (r *Redis) Peek(ctx context.Context, userID, role string) Result {
	return r.fallback.Peek(ctx, userID, role)
}

// fromShare admits the request from b's share, if it has one, and starts
// the share's renewal when it is due. The caller counted the request in
// b.pending; an admitted one is taken off.
func (r *Redis) fromShare(b *bucket, userID string, pol *policy) (Result, bool) {
	res, renew, ok := b.takeShare(pol, r.shareTTL, r.fallback.now)
	if !ok {
		return Result{}, false
	}
	b.pending.Add(-1)
	r.shared.Inc()
	if renew {
		r.renew(b, userID, pol)
	}
	return res, true
}

// allow runs the script for one decision, first charging owed: the
// user's requests the fallback admitted.
func (r *Redis) allow(ctx context.Context, userID string, pol *policy, owed debt) (Result, error) {
	args := pol.gcraArgs
	if owed.requests > 0 {
		args = []any{pol.intervalMicros, pol.limit.Burst, owed.requests * pol.intervalMicros, owed.age.Microseconds()}
	}
	reply, err := r.eval(ctx, r.prefix+userID, args)
	if err != nil {
		return Result{}, fmt.Errorf("ratelimit: redis gcra: %w", err)
	}
	return parseReply(reply, pol)
}

// eval runs the script on key, in the next batch unless batching is off or
// closed. The client leaving must not abort a call Redis may already have
// counted, so ctx's cancellation is ignored: the timeout alone bounds it.
// A batch serves many contexts, so there ctx's values do not reach
// go-redis's hooks either.
func (r *Redis) eval(ctx context.Context, key string, args []any) (any, error) {
	if r.batch != nil {
		if reply, err := r.batch.do(key, args, r.timeout); !errors.Is(err, errBatcherClosed) {
			return reply, err
		}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.timeout)
	defer cancel()
	return r.script.Run(ctx, r.rdb, []string{key}, args...).Result()
}

var errReply = errors.New("ratelimit: unexpected reply from the gcra script")

// parseReply checks every element of the script's reply
// {allowed, remaining, retry_after_us, reset_after_us}.
func parseReply(reply any, pol *policy) (Result, error) {
	vals, ok := reply.([]any)
	if !ok || len(vals) != 4 {
		return Result{}, fmt.Errorf("%w: %T of length %d", errReply, reply, len(vals))
	}
	var n [4]int64
	for i, v := range vals {
		if n[i], ok = v.(int64); !ok {
			return Result{}, fmt.Errorf("%w: element %d is %T", errReply, i, v)
		}
	}
	allowed, remaining, retryAfter, resetAfter := n[0], n[1], n[2], n[3]
	if allowed != 0 && allowed != 1 || remaining < 0 || retryAfter < 0 || resetAfter < 0 ||
		allowed == 0 && retryAfter == 0 {
		return Result{}, fmt.Errorf("%w: %v", errReply, n)
	}
	const maxMicros = int64(1<<63-1) / int64(time.Microsecond)
	return Result{
		Allowed:    allowed == 1,
		Limit:      pol.limit,
		Remaining:  int(min(remaining, int64(pol.limit.Burst))),
		RetryAfter: time.Duration(min(retryAfter, maxMicros)) * time.Microsecond,
		ResetAfter: time.Duration(min(resetAfter, maxMicros)) * time.Microsecond,
		pol:        pol,
	}, nil
}
