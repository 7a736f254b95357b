package ratelimit

import (
	"math"
	"time"
)

// A replica decides some of a user's requests itself while the user is
// far from the limit, so that most requests do not wait for a Redis
// round trip: a decision from Redis grants the user's bucket a share of
// the tokens Redis reported left, and the next requests spend it from
// the bucket's copy of the shared state. What a share admits is owed, and
// charged to the shared budget with the user's next decision from Redis,
// as a fallback's admissions are: no request goes uncounted. A share is
// a fraction of what is left, so it shrinks to nothing near the limit,
// where every decision is Redis's own; what two replicas can admit on
// views of the budget that the other has since spent from is at most
// their shares, and that is charged back with their next decisions.
const (
	// DefaultShareDivisor: a share is what Redis reported left, divided
	// by this. With the default policy's burst of 100, a full bucket
	// grants 6: one request in 7 waits for Redis.
	DefaultShareDivisor = 16
	// DefaultShareTTL bounds how long a share may be spent after Redis
	// granted it, so that what a replica admits on a stale view, and owes,
	// is settled within seconds. A user making a few requests a second
	// then still waits for Redis about once per share, not once a second:
	// with 1 s, a load run at 7 requests a second per user had 0.5 ms
	// more added p99 than with 5 s.
	DefaultShareTTL = 5 * time.Second
	// maxShare bounds a share whatever the burst.
	maxShare = 64
)

// grantShare gives the bucket a share of remaining, as Redis reported it
// for the decision just made under pol. divisor 0 grants nothing.
func (b *bucket) grantShare(pol *policy, remaining, divisor int, clock func() time.Time) {
	if divisor <= 0 {
		return
	}
	n := min(remaining/divisor, maxShare)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pol != pol {
		return // follow set the policy; a policy that changed since decides anew
	}
	b.share, b.shareAt = n, clock()
}

// takeShare admits one request from the bucket's share, and reports
// false, taking nothing, when there is no share left, it has expired, the
// user's policy changed since it was granted, or the bucket's copy has no
// token: then Redis decides.
func (b *bucket) takeShare(pol *policy, ttl time.Duration, clock func() time.Time) (Result, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.share <= 0 || b.pol != pol {
		return Result{}, false
	}
	now := clock()
	if now.Sub(b.shareAt) > ttl || !b.lim.AllowN(now, 1) {
		b.share = 0
		return Result{}, false
	}
	b.share--
	if b.owed.Load() == 0 {
		b.owedSince = now
	}
	b.owed.Add(1)
	tokens := b.lim.TokensAt(now)
	return Result{
		Allowed:    true,
		Limit:      pol.limit,
		Remaining:  min(max(int(math.Floor(tokens)), 0), pol.limit.Burst),
		ResetAfter: tokenTime(float64(pol.limit.Burst)-tokens, pol.perSecond),
		pol:        pol,
	}, true
}
