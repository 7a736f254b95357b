package ratelimit

import (
	"context"
	"testing"
	"time"
)

// Peek reports the budget an admitted request would show, spends nothing
// and makes no bucket.
func TestLocal_PeekSpendsNothing(t *testing.T) {
	l, clk := newTestLocal(t, testPolicies(), LocalOptions{})
	ctx := context.Background()

	fresh := l.Peek(ctx, "u1", "member")
	if !fresh.Allowed || fresh.Remaining != 10 || fresh.ResetAfter != 0 || fresh.RetryAfter != 0 || fresh.Limit != perMinute60 {
		t.Fatalf("peek of a new user = %+v, want a full bucket of 10", fresh)
	}
	if n := l.buckets.EstimatedSize(); n != 0 {
		t.Fatalf("a peek made %d buckets", n)
	}

	if got := admitN(l, 3, "u1", "member"); got != 3 {
		t.Fatalf("admitted %d of 3", got)
	}
	var last Result
	for range 5 {
		last = l.Peek(ctx, "u1", "member")
		if last.Remaining != 7 || !last.Allowed || last.RetryAfter != 0 {
			t.Fatalf("peek after 3 requests = %+v, want 7 left, allowed", last)
		}
	}
	if last.ResetAfter != 3*time.Second { // 3 tokens at one a second
		t.Errorf("peek ResetAfter = %v, want 3s", last.ResetAfter)
	}
	// The peeks took nothing: 7 more are admitted, then none.
	if got := admitN(l, 8, "u1", "member"); got != 7 {
		t.Fatalf("after five peeks %d of 8 admitted, want 7", got)
	}
	if p := l.Peek(ctx, "u1", "member"); p.Remaining != 0 || !p.Allowed || p.RetryAfter != 0 {
		t.Fatalf("peek of an empty bucket = %+v, want 0 left and no retry time (nothing was refused)", p)
	}
	clk.Advance(2 * time.Second)
	if p := l.Peek(ctx, "u1", "member"); p.Remaining != 2 {
		t.Fatalf("peek 2 s later = %+v, want 2 refilled", p)
	}

	// Under another role, what was spent carries over as Allow's rebase
	// would carry it: 8 spent of admin's 20.
	if p := l.Peek(ctx, "u1", "admin"); p.Remaining != 12 || p.Limit != adminLimit {
		t.Fatalf("peek under admin = %+v, want 12 of 20", p)
	}
}

// The Redis limiter peeks at its copy of the shared bucket: what the last
// answer said is left, without a round trip and without spending.
func TestRedis_PeekShowsWhatTheLastAnswerLeft(t *testing.T) {
	f := newRedisFixture(t, slowPolicies(), nil)
	ctx := context.Background()
	if p := f.limiter.Peek(ctx, "u1", "member"); p.Remaining != 10 || !p.Allowed {
		t.Fatalf("peek of a new user = %+v, want 10", p)
	}
	var last Result
	for range 4 {
		last = f.limiter.Allow(ctx, "u1", "member")
	}
	for range 3 {
		if p := f.limiter.Peek(ctx, "u1", "member"); p.Remaining != last.Remaining || !p.Allowed || p.RetryAfter != 0 {
			t.Fatalf("peek = %+v, want the %d the last answer left", p, last.Remaining)
		}
	}
	if r := f.limiter.Allow(ctx, "u1", "member"); r.Remaining != last.Remaining-1 {
		t.Fatalf("after three peeks the next request left %d, want %d: a peek spent", r.Remaining, last.Remaining-1)
	}
}
