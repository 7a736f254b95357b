package ratelimit

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
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
// redis.Script.Run uses, and pipelines for batching. *redis.Client,
// *redis.ClusterClient and *redis.Ring satisfy it; the cluster and ring
// pipelines split a batch by node themselves.
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
	// MaxBatch caps how many concurrent decisions share one pipeline
	// (default DefaultMaxBatch). 1 turns batching off: each decision makes
	// its own round trip from the caller's goroutine.
	MaxBatch int
	// ProbeInterval is how often, at most, a degraded limiter tries Redis
	// again (default 1s).
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
// again at most once per ProbeInterval. It is safe for concurrent use.
// Close it to stop its batching goroutine.
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

	decisions   decisionCounters
	degradedG   prometheus.Gauge
	redisErrors prometheus.Counter
}

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
	r := &Redis{
		rdb:       rdb,
		script:    redis.NewScript(gcraScript),
		prefix:    o.KeyPrefix,
		timeout:   o.Timeout,
		probe:     o.ProbeInterval,
		log:       o.Logger,
		fallback:  fallback,
		decisions: newDecisionCounters(o.Registerer, "redis"),
		degradedG: register(o.Registerer, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyproxy_ratelimit_degraded",
			Help: "1 while the Redis rate limiter answers from its local fallback.",
		})),
		redisErrors: register(o.Registerer, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keyproxy_ratelimit_redis_errors_total",
			Help: "Redis rate-limit calls that failed or timed out.",
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
// already waiting have their answers. The limiter still works afterwards,
// one round trip per decision. Close may be called more than once.
func (r *Redis) Close() {
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
	if r.degraded.Load() && !r.probeDue() {
		return r.fallback.Allow(ctx, userID, role)
	}
	pol := r.policies.Load().forRole(role)
	res, err := r.allow(ctx, userID, pol)
	if err != nil {
		r.redisErrors.Inc()
		r.degrade(err)
		return r.fallback.Allow(ctx, userID, role)
	}
	r.restore()
	r.decisions.count(res.Allowed)
	return res
}

func (r *Redis) allow(ctx context.Context, userID string, pol *policy) (Result, error) {
	reply, err := r.eval(ctx, r.prefix+userID, pol.gcraArgs)
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

// probeDue lets one caller per ProbeInterval try Redis while degraded.
func (r *Redis) probeDue() bool {
	now := time.Now().UnixNano()
	next := r.nextProbe.Load()
	return now >= next && r.nextProbe.CompareAndSwap(next, now+int64(r.probe))
}

func (r *Redis) degrade(err error) {
	if r.degraded.Load() {
		return
	}
	// The next probe is set before the flag, so no caller probes at once.
	r.nextProbe.Store(time.Now().Add(r.probe).UnixNano())
	if !r.degraded.CompareAndSwap(false, true) {
		return
	}
	r.degradedG.Set(1)
	r.log.Warn("rate limiting falls back to the local limiter: redis unavailable",
		zap.Error(err), zap.Duration("probe_interval", r.probe))
}

func (r *Redis) restore() {
	if !r.degraded.Load() || !r.degraded.CompareAndSwap(true, false) {
		return
	}
	r.degradedG.Set(0)
	r.log.Info("rate limiting is back on redis")
}
