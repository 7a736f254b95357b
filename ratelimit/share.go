package ratelimit

import (
	"context"
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
// renewed when a quarter of it, or of its time, is left, by a call to
// Redis that no request waits for (renew), so that a user far from the
// limit does not wait for Redis after the first request. A share is a
// fraction of what is left, so it shrinks to nothing near the limit,
// where every decision is Redis's own; what two replicas can admit on
// views of the budget that the other has since spent from is at most
// their shares, and that is charged back with their next decisions.
const (
	// DefaultShareDivisor: a share is what Redis reported left, divided
	// by this. With the default policy's burst of 100, a full bucket
	// grants 6, renewed when 1 is left: while the renewals come back in
	// time, no request waits for Redis, and one in 5 sends it a decision.
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
	// minRenewed is the smallest share renewed before it runs out.
	minRenewed = 4
)

// grantShare gives the bucket a share of what is left, as Redis reported
// it for the decision just made under pol, or as the bucket's copy has it
// if less: a reply to a call that ran later in Redis, but came back
// first, has brought the copy down. It grants nothing while another of
// the bucket's calls is on its way to Redis, as each may take a token no
// reply shows yet: counting them off what is left was not enough, since
// requests that arrive after the grant go to Redis too once the share is
// spent (200 concurrent calls of one user, burst 50, admitted 51 to 53).
// The caller has taken its own call off pending; a request that finds no
// share left to take has counted itself before it goes on to Redis.
// divisor 0 grants nothing.
func (b *bucket) grantShare(pol *policy, remaining, divisor int, clock func() time.Time) {
	if divisor <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pol != pol || b.pending.Load() > 0 {
		// follow set the policy: a policy that changed since decides
		// anew. Calls on their way: their replies will grant.
		return
	}
	now := clock()
	n := min(max(min(remaining, int(b.lim.TokensAt(now))), 0)/divisor, maxShare)
	b.share, b.granted, b.shareAt = n, n, now
}

// endRenewal marks the bucket's renewal done, whatever came of it, and
// wakes the requests waiting for it.
func (b *bucket) endRenewal() {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.renewal)
	b.renewal = nil
}

// renewalDone is closed when the renewal on its way is done; nil if none
// is.
func (b *bucket) renewalDone() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.renewal
}

// takeShare admits one request from the bucket's share, and reports
// false, taking nothing, when there is no share left, it has expired, the
// user's policy changed since it was granted, or the bucket's copy has no
// token: then Redis decides. renew reports that this request left a
// quarter of the share, or of its time, or less, and no renewal is on its
// way: the caller sends one (Redis.renew), so that the next share is
// granted before this one runs out, and a user far from the limit never
// waits for Redis.
func (b *bucket) takeShare(pol *policy, ttl time.Duration, clock func() time.Time) (res Result, renew, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.share <= 0 || b.pol != pol {
		return Result{}, false, false
	}
	now := clock()
	if now.Sub(b.shareAt) > ttl || !b.lim.AllowN(now, 1) {
		b.share = 0
		return Result{}, false, false
	}
	b.share--
	if b.owed.Load() == 0 {
		b.owedSince = now
	}
	b.owed.Add(1)
	// Renewed with a quarter left, of its requests or of its time: each
	// renewal replaces what is left (Redis still counts it as unspent),
	// so renewing sooner would make more calls to Redis for the same
	// requests. A user at 5 requests a second spends a share of 64 in
	// 13 s, and without the time it expired after 5 s, the next request
	// waiting for Redis. A share under 4 is near the limit, where Redis
	// soon decides each request anyway.
	if b.renewal == nil && b.granted >= minRenewed && (b.share <= b.granted/4 || now.Sub(b.shareAt) >= ttl*3/4) {
		b.renewal, renew = make(chan struct{}), true
		b.pending.Add(1) // the renewal's, from now: see Redis.Allow
	}
	tokens := b.lim.TokensAt(now)
	return Result{
		Allowed:    true,
		Limit:      pol.limit,
		Remaining:  min(max(int(math.Floor(tokens)), 0), pol.limit.Burst),
		ResetAfter: tokenTime(float64(pol.limit.Burst)-tokens, pol.perSecond),
		pol:        pol,
	}, renew, true
}

// renew sends what b's share admitted so far to Redis, on a goroutine of
// its own: Redis charges it and reports what is left, and b gets a new
// share of that. The request that asked for it has been admitted already
// and does not wait. The script spends one request of its own, so one of
// the owed requests goes as that one and the rest as the charge before
// it. A refusal means other replicas spent the budget: b's copy follows
// Redis down to less than a token, which ends the share, and the next
// request waits for Redis's decision.
func (r *Redis) renew(b *bucket, userID string, pol *policy) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		b.pending.Add(-1)
		b.endRenewal() // the next decision from Redis charges the debt
		return
	}
	r.renewals.Add(1)
	r.mu.Unlock()
	go func() {
		defer r.renewals.Done()
		defer b.endRenewal()
		owed := b.takeOwed(r.fallback.now)
		if owed.requests == 0 {
			b.pending.Add(-1)
			return // a decision from Redis charged it meanwhile
		}
		res, err := r.allow(context.Background(), userID, pol, debt{requests: owed.requests - 1, age: owed.age})
		b.pending.Add(-1)
		if err != nil {
			b.owe(owed, r.fallback.now)
			r.redisErrors.Inc()
			r.degrade(err)
			return
		}
		r.restore()
		charged := owed.requests
		if !res.Allowed {
			// The charge was made, but not the request the script spends
			// for: that one is still owed.
			b.owe(debt{requests: 1, age: owed.age}, r.fallback.now)
			charged--
		}
		if charged > 0 {
			r.charged.Add(float64(charged))
		}
		b.follow(pol, res.ResetAfter, r.fallback.now)
		if res.Allowed {
			b.grantShare(pol, res.Remaining, r.shareDiv, r.fallback.now)
		}
	}()
}
