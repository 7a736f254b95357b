package ratelimit

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// DefaultMaxEntries bounds the users a Local tracks at once.
const DefaultMaxEntries = 100_000

const coarseResolution = time.Second

// LocalOptions tune a Local. The zero value is ready to use.
type LocalOptions struct {
	// MaxEntries caps the number of per-user buckets (default
	// DefaultMaxEntries) so a flood of distinct users cannot exhaust
	// memory. When the cap evicts a bucket its user starts again with a
	// full one: a flood can make the limiter more lenient, never stricter.
	MaxEntries int
	// IdleTTL is how long a bucket is kept after its last use. It is never
	// shorter than the longest time any policy takes to refill an empty
	// bucket, which is also the default: a bucket idle that long is full,
	// so dropping it changes no decision.
	IdleTTL time.Duration
	// Registerer receives the metrics; nil registers none.
	Registerer prometheus.Registerer
	// Now is the clock (default: the monotonic clock); tests move it by
	// hand.
	Now func() time.Time
}

// Local is an in-process limiter: one golang.org/x/time/rate token bucket
// per user, exact on one node. It is safe for concurrent use. Close it to
// stop its background goroutines.
type Local struct {
	now      func() time.Time
	policies atomic.Pointer[table]
	// idle is the current expire-after-access duration in nanoseconds,
	// raised on reload when a new policy refills more slowly.
	idle      atomic.Int64
	minIdle   time.Duration
	buckets   *otter.Cache[string, *bucket]
	coarse    *otter.CoarseClock // nil with LocalOptions.Now
	decisions decisionCounters
}

// NewLocal returns a limiter applying p. It panics if p is invalid:
// validate policies with Policies.Validate when the config is loaded.
func NewLocal(p Policies, o LocalOptions) *Local {
	t, err := compile(p)
	if err != nil {
		panic("ratelimit: NewLocal with invalid policies: " + err.Error())
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = DefaultMaxEntries
	}
	l := &Local{
		now:       o.Now,
		minIdle:   o.IdleTTL,
		decisions: newDecisionCounters(o.Registerer, "local"),
	}
	if l.now == nil {
		l.now = monotonicClock()
	}
	l.setTable(t)
	opts := &otter.Options[string, *bucket]{
		MaximumSize: o.MaxEntries,
		ExpiryCalculator: otter.ExpiryAccessingFunc(func(otter.Entry[string, *bucket]) time.Duration {
			return time.Duration(l.idle.Load())
		}),
	}
	if o.Now != nil {
		opts.Clock = clock{o.Now}
	} else {
		// Expire-after-access reads the clock on every hit, and a precise
		// read costs more than the rest of the lookup. The coarse clock
		// lags by up to a second, which could expire a bucket that much
		// early; setTable adds the second back.
		l.coarse = otter.NewCoarseClock(coarseResolution)
		opts.Clock = l.coarse
	}
	l.buckets = otter.Must(opts)
	return l
}

// SetPolicies replaces the policies at once, for a reload on SIGHUP.
// Invalid policies are refused and the current ones stay in force. A
// user's bucket changes on its next request, keeping what the user has
// spent (see bucket.rebase).
func (l *Local) SetPolicies(p Policies) error {
	t, err := compile(p)
	if err != nil {
		return err
	}
	l.setTable(t)
	return nil
}

func (l *Local) setTable(t *table) {
	l.policies.Store(t)
	l.idle.Store(int64(max(l.minIdle, t.longestRefill) + coarseResolution))
}

// Allow decides one request of userID, whose current role is role, and
// takes a token if it is admitted. ctx is unused: the decision needs no I/O.
func (l *Local) Allow(_ context.Context, userID, role string) Result {
	return l.allow(userID, role, false)
}

// allow decides from userID's bucket. With owe, as the Redis limiter's
// fallback, an admitted request is also recorded as owed to the shared
// budget (see bucket.owed).
func (l *Local) allow(userID, role string, owe bool) Result {
	pol := l.policies.Load().forRole(role)
	res := l.bucket(userID, pol).take(pol, l.now, owe)
	l.decisions.count(res.Allowed)
	return res
}

// Peek reports userID's budget under role without spending from it, as
// an admitted request's headers would show it (Allowed, no RetryAfter):
// for the answer to a request refused before the limiter, whose client
// should still learn its quota. A user this limiter has no bucket for
// has a full one; none is made.
func (l *Local) Peek(_ context.Context, userID, role string) Result {
	pol := l.policies.Load().forRole(role)
	b, ok := l.buckets.GetIfPresent(userID)
	if !ok {
		return Result{Allowed: true, Limit: pol.limit, Remaining: pol.limit.Burst, pol: pol}
	}
	return b.peek(pol, l.now)
}

func (l *Local) bucket(userID string, pol *policy) *bucket {
	b, ok := l.buckets.GetIfPresent(userID)
	if !ok {
		b, _ = l.buckets.SetIfAbsent(userID, newBucket(pol))
	}
	return b
}

// follow sets userID's bucket to the state a shared decision reported, so
// that a fallback goes on from what the user has spent on every replica:
// a bucket left as this replica last used it is full, and each second of
// fallback then handed every user a whole extra burst on each replica
// (13% over the policy in a minute with two one-second fallbacks).
func (l *Local) follow(userID string, res Result) {
	if res.pol != nil {
		l.bucket(userID, res.pol).follow(res.pol, res.ResetAfter, l.now)
	}
}

// Close stops the goroutines that expire idle buckets. The limiter still
// works afterwards, expiring buckets only when they are touched.
func (l *Local) Close() {
	l.buckets.StopAllGoroutines()
	if l.coarse != nil {
		l.coarse.Stop()
	}
}

// bucket is one user's token bucket and the policy it was last used with.
type bucket struct {
	// mu makes the decision and the read-back of the tokens left one step,
	// so Remaining is exact under concurrent requests of one user.
	mu  sync.Mutex
	pol *policy
	lim *rate.Limiter
	// owed counts the requests this bucket admitted as the Redis
	// limiter's fallback, which the shared budget never saw, and
	// owedSince is when the first of them was admitted. Charged to Redis
	// with the user's next shared decision (see gcra.lua's ARGV[3] and
	// [4]), they keep a fallback from adding its admissions on top of the
	// policy. owed is written under mu and read without it to skip the
	// lock when it is 0; owedSince is mu's.
	owed      atomic.Int64
	owedSince time.Time
	// share is how many requests the bucket may still admit without
	// Redis, of the granted it was given at shareAt; renewal is closed
	// when the renewal of it on its way to Redis is done, and nil while
	// none is (share.go). mu's.
	share   int
	granted int
	shareAt time.Time
	renewal chan struct{}
	// pending counts this bucket's calls on their way to Redis: each may
	// spend a token there that the reply to another does not show yet.
	pending atomic.Int32
}

func newBucket(pol *policy) *bucket {
	return &bucket{pol: pol, lim: rate.NewLimiter(pol.perSecond, pol.limit.Burst)}
}

func (b *bucket) take(pol *policy, clock func() time.Time, owe bool) Result {
	b.mu.Lock()
	defer b.mu.Unlock()
	// Read under the lock: a rate.Limiter handed an earlier time than its
	// last one moves its clock back and later counts that stretch twice.
	now := clock()
	if b.pol != pol {
		// The user's role changed, or the policies were reloaded.
		if b.pol.limit != pol.limit {
			b.rebase(now, pol)
		}
		b.pol = pol
	}
	allowed := b.lim.AllowN(now, 1)
	if allowed && owe {
		if b.owed.Load() == 0 {
			b.owedSince = now
		}
		b.owed.Add(1)
	}
	tokens := b.lim.TokensAt(now)
	res := Result{
		Allowed:    allowed,
		Limit:      pol.limit,
		Remaining:  min(max(int(math.Floor(tokens)), 0), pol.limit.Burst),
		ResetAfter: tokenTime(float64(pol.limit.Burst)-tokens, pol.perSecond),
		pol:        pol,
	}
	if !allowed {
		res.RetryAfter = max(tokenTime(1-tokens, pol.perSecond), time.Microsecond)
	}
	return res
}

// peek is take's answer without the token, under pol: what the user has
// spent carries over from the bucket's own policy as rebase would carry it.
func (b *bucket) peek(pol *policy, clock func() time.Time) Result {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := clock()
	spent := min(max(float64(b.pol.limit.Burst)-b.lim.TokensAt(now), 0), float64(pol.limit.Burst))
	tokens := float64(pol.limit.Burst) - spent
	return Result{
		Allowed:    true,
		Limit:      pol.limit,
		Remaining:  min(max(int(math.Floor(tokens)), 0), pol.limit.Burst),
		ResetAfter: tokenTime(spent, pol.perSecond),
		pol:        pol,
	}
}

// debt is what a bucket's fallback admissions owe the shared budget.
type debt struct {
	requests int64
	age      time.Duration // since the first of them was admitted
}

// takeOwed returns what the bucket's fallback admissions owe the shared
// budget at the clock's now, and forgets it: the caller charges it.
func (b *bucket) takeOwed(clock func() time.Time) debt {
	if b.owed.Load() == 0 {
		return debt{}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return debt{requests: b.owed.Swap(0), age: max(clock().Sub(b.owedSince), 0)}
}

// owe gives back what takeOwed returned when the charge did not reach
// Redis. Had it reached Redis after all (a reply that timed out), the
// user is charged twice: stricter for a while, never more lenient.
func (b *bucket) owe(d debt, clock func() time.Time) {
	if d.requests <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if since := clock().Add(-d.age); b.owed.Load() == 0 || since.Before(b.owedSince) {
		b.owedSince = since
	}
	b.owed.Add(d.requests)
}

// rebase puts the bucket under pol at now, carrying over what the user has
// spent, as the Redis script does: the tokens taken and not yet refilled,
// capped at pol's burst (a user can at most have used the whole new
// budget). rate.Limiter's SetBurst keeps the tokens left instead, which
// would judge a promoted user as having spent most of the larger bucket
// and hand a demoted one a full small one.
func (b *bucket) rebase(now time.Time, pol *policy) {
	b.set(now, pol, min(float64(b.pol.limit.Burst)-b.lim.TokensAt(now), float64(pol.limit.Burst)))
}

// set gives the bucket a new limiter under pol with spent tokens taken at
// now.
func (b *bucket) set(now time.Time, pol *policy, spent float64) {
	lim := rate.NewLimiter(pol.perSecond, pol.limit.Burst)
	// A rate.Limiter starts full and cannot be handed a token count: take
	// the whole tokens spent at the moment before now from which the
	// refill gives the fraction back by now. Its clock starts there and
	// only moves forward.
	if whole := math.Ceil(spent); whole > 0 {
		early := time.Duration((whole - spent) / float64(pol.perSecond) * float64(time.Second))
		lim.AllowN(now.Add(-early), int(whole))
	}
	b.lim = lim
}

// follow brings the bucket down to within half a token of a shared bucket
// under pol that is full again after resetAfter. While Redis answers, each
// decision leaves the copy about one whole token above the shared bucket,
// which taking tokens corrects; a new policy sets a new limiter. A copy
// below the shared bucket is left as it is: the requests that spent it (a
// share's or a fallback's) may not have reached Redis yet, and a reply
// that left Redis before them would hand their tokens back to the share
// (TestFollow_OlderReplyDoesNotRaiseTheCopy). Both refill at the
// policy's pace and meet when full.
func (b *bucket) follow(pol *policy, resetAfter time.Duration, clock func() time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := clock()
	spent := min(resetAfter.Seconds()*float64(pol.perSecond), float64(pol.limit.Burst))
	if b.pol != pol {
		b.pol = pol
		b.set(now, pol, spent)
		return
	}
	switch extra := b.lim.TokensAt(now) - (float64(pol.limit.Burst) - spent); {
	case extra >= 0.5:
		// Rounded up, more tokens than the copy has (3.6 above a shared
		// bucket that is empty): then it is set from the shared state.
		// Left as it was, it would hand out tokens Redis has not got.
		if !b.lim.AllowN(now, int(math.Round(extra))) {
			b.set(now, pol, spent)
		}
	}
}

// tokenTime is how long the bucket takes to gain n tokens, rounded up to
// the microsecond. Float error below 0.1 ns is not rounded up (1 - 0.999
// is not quite 0.001); the limiter admits a request that lacks less than
// a nanosecond's worth of tokens, so at now+RetryAfter the token is there.
func tokenTime(n float64, perSecond rate.Limit) time.Duration {
	if n <= 0 {
		return 0
	}
	return time.Duration(math.Ceil(n/float64(perSecond)*1e6-1e-4)) * time.Microsecond
}

// monotonicClock reads only the monotonic clock, half the cost of
// time.Now; buckets only ever subtract times, so the wall clock's
// steps would be noise anyway.
func monotonicClock() func() time.Time {
	start := time.Now()
	return func() time.Time { return start.Add(time.Since(start)) }
}

// clock adapts LocalOptions.Now for otter, so idle expiry follows the
// same clock as the buckets.
type clock struct{ now func() time.Time }

func (c clock) NowNano() int64 { return c.now().UnixNano() }

// Tick returns no ticks: with a hand-moved clock, expired entries are
// dropped when touched rather than by the periodic clean-up.
func (c clock) Tick(time.Duration) <-chan time.Time { return nil }
