package ratelimit

import (
	"context"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wevion/keyproxy/internal/testserver"
)

// The audit's policies: a member's interval is 6 s, an admin's 100 ms.
var (
	member10 = Limit{Requests: 10, Per: time.Minute, Burst: 10}
	admin600 = Limit{Requests: 600, Per: time.Minute, Burst: 100}
)

// policyLimiter is what the policy-change tests drive: both backends.
type policyLimiter interface {
	Allow(ctx context.Context, userID, role string) Result
	SetPolicies(p Policies) error
}

// policyChange is one user spending under one policy, then sending one
// request under another: their role changed, or a reload changed the
// policies (after non-nil).
type policyChange struct {
	name        string
	before      Policies
	role        string
	spent       int
	after       *Policies
	roleAfter   string
	wantLimit   Limit
	wantAllowed bool
	// Admitted: Remaining within [minRemaining, maxRemaining]. Refused:
	// RetryAfter within (0, maxRetry].
	minRemaining, maxRemaining int
	maxRetry                   time.Duration
}

func policyChanges() []policyChange {
	roles := Policies{Default: member10, Roles: map[string]Limit{"admin": admin600}}
	return []policyChange{{
		// 5 of 10 spent are 5 of 100: 95 left before this request.
		name: "promoted after 5 of 10", before: roles, role: "member", spent: 5, roleAfter: "admin",
		wantLimit: admin600, wantAllowed: true, minRemaining: 94, maxRemaining: 95,
	}, {
		// 50 of 100 spent are more than a member's 10: the new budget is
		// used up, and the next request comes one member interval later.
		name: "demoted after 50 of 100", before: roles, role: "admin", spent: 50, roleAfter: "member",
		wantLimit: member10, maxRetry: 6 * time.Second,
	}, {
		name: "raised by a reload after 10 of 10", before: roles, role: "member", spent: 10,
		after: &Policies{Default: admin600}, roleAfter: "member",
		wantLimit: admin600, wantAllowed: true, minRemaining: 89, maxRemaining: 90,
	}, {
		name: "cut by a reload after 50 of 100", before: Policies{Default: admin600}, role: "member", spent: 50,
		after: &Policies{Default: member10}, roleAfter: "member",
		wantLimit: member10, maxRetry: 6 * time.Second,
	}}
}

// checkPolicyChange runs tt on l, a limiter built with tt.before.
func checkPolicyChange(t *testing.T, l policyLimiter, tt policyChange) {
	t.Helper()
	ctx := context.Background()
	if got := admitN(l, tt.spent, "u1", tt.role); got != tt.spent {
		t.Fatalf("admitted %d of the first %d, want all", got, tt.spent)
	}
	if tt.after != nil {
		if err := l.SetPolicies(*tt.after); err != nil {
			t.Fatal(err)
		}
	}
	r := l.Allow(ctx, "u1", tt.roleAfter)
	h := http.Header{}
	WriteHeaders(h, r)
	if r.Limit != tt.wantLimit || r.Allowed != tt.wantAllowed {
		t.Fatalf("after the change: %+v (headers %v), want Limit %v and Allowed %v", r, h, tt.wantLimit, tt.wantAllowed)
	}
	if tt.wantAllowed {
		if r.Remaining < tt.minRemaining || r.Remaining > tt.maxRemaining {
			t.Fatalf("after the change: Remaining %d (headers %v), want %d-%d", r.Remaining, h, tt.minRemaining, tt.maxRemaining)
		}
		return
	}
	if r.RetryAfter <= 0 || r.RetryAfter > tt.maxRetry {
		t.Fatalf("after the change: RetryAfter %s (headers %v), want at most one new interval (%s)", r.RetryAfter, h, tt.maxRetry)
	}
	if secs, _ := strconv.Atoi(h.Get("Retry-After")); time.Duration(secs)*time.Second > tt.maxRetry {
		t.Fatalf("after the change: Retry-After %q, want at most %s", h.Get("Retry-After"), tt.maxRetry)
	}
	// Fully used under the new policy, not more: the bucket is full again
	// after one new burst's worth of intervals.
	if full := time.Duration(tt.wantLimit.Burst) * tt.wantLimit.Per / time.Duration(tt.wantLimit.Requests); r.ResetAfter > full {
		t.Fatalf("after the change: ResetAfter %s, more than a whole new bucket (%s)", r.ResetAfter, full)
	}
}

// retryChange is a role change that leaves the user refused. The retry
// tests run on the real clock against Redis, so the new intervals (1 s and
// 500 ms) leave room for a late wake-up.
type retryChange struct {
	name      string
	p         Policies
	role      string
	spent     int
	roleAfter string
}

func retryChanges() []retryChange {
	return []retryChange{{
		// Left in the old terms, the debt (500 ms) would run out before
		// the retry: a fresh burst of 10 then.
		name: "demoted", role: "admin", spent: 50, roleAfter: "member",
		p: Policies{
			Default: Limit{Requests: 1, Per: time.Second, Burst: 10},
			Roles:   map[string]Limit{"admin": {Requests: 100, Per: time.Second, Burst: 100}},
		},
	}, {
		// Left in the old terms, the debt (50 s) would keep the user out
		// 45 s past the retry time.
		name: "faster rate, smaller burst", role: "member", spent: 10, roleAfter: "admin",
		p: Policies{
			Default: Limit{Requests: 1, Per: 5 * time.Second, Burst: 10},
			Roles:   map[string]Limit{"admin": {Requests: 2, Per: time.Second, Burst: 5}},
		},
	}}
}

// checkRetryAfterChange: the refusal after tt's change names the moment
// exactly one request is admitted again, under the new policy. wait moves
// the clock.
func checkRetryAfterChange(t *testing.T, l policyLimiter, tt retryChange, wait func(time.Duration)) {
	t.Helper()
	ctx := context.Background()
	if got := admitN(l, tt.spent, "u1", tt.role); got != tt.spent {
		t.Fatalf("admitted %d of the first %d, want all", got, tt.spent)
	}
	refused := l.Allow(ctx, "u1", tt.roleAfter)
	if refused.Allowed || refused.RetryAfter <= 0 || refused.RetryAfter > refused.Limit.Per/time.Duration(refused.Limit.Requests) {
		t.Fatalf("after the change: %+v, want refused for at most one new interval", refused)
	}
	wait(refused.RetryAfter)
	if r := l.Allow(ctx, "u1", tt.roleAfter); !r.Allowed {
		t.Fatalf("retry RetryAfter (%s) later refused: %+v", refused.RetryAfter, r)
	}
	if r := l.Allow(ctx, "u1", tt.roleAfter); r.Allowed {
		t.Fatalf("a second request at once admitted: %+v; the old debt must not have run out", r)
	}
}

func TestLocal_PolicyChangeCarriesOverWhatWasSpent(t *testing.T) {
	for _, tt := range policyChanges() {
		t.Run(tt.name, func(t *testing.T) {
			l, _ := newTestLocal(t, tt.before, LocalOptions{})
			checkPolicyChange(t, l, tt)
		})
	}
}

// Part of a token refilled before the change carries over too.
func TestLocal_PolicyChangeKeepsPartTokens(t *testing.T) {
	tests := []struct {
		name       string
		roleAfter  string
		wantTokens float64 // before the request after the change
	}{
		// 4.75 of 10 spent (a quarter refilled): 95.25 of 100 left.
		{"promoted", "admin", 95.25},
		// 4.75 of 10 spent: 15.25 of 20 left.
		{"burst only", "wider", 15.25},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Policies{Default: member10, Roles: map[string]Limit{
				"admin": admin600,
				"wider": {Requests: 10, Per: time.Minute, Burst: 20},
			}}
			l, clk := newTestLocal(t, p, LocalOptions{})
			admitN(l, 5, "u1", "member")
			clk.Advance(1500 * time.Millisecond)
			r := l.Allow(context.Background(), "u1", tt.roleAfter)
			b, _ := l.buckets.GetIfPresent("u1")
			got := b.lim.TokensAt(clk.Now()) + 1
			if !r.Allowed || r.Remaining != int(tt.wantTokens)-1 || math.Abs(got-tt.wantTokens) > 1e-9 {
				t.Fatalf("after the change: %+v with %v tokens before it, want %v", r, got, tt.wantTokens)
			}
		})
	}
}

func TestLocal_RetryAfterHoldsAcrossAPolicyChange(t *testing.T) {
	for _, tt := range retryChanges() {
		t.Run(tt.name, func(t *testing.T) {
			l, clk := newTestLocal(t, tt.p, LocalOptions{})
			checkRetryAfterChange(t, l, tt, clk.Advance)
		})
	}
}

func TestRedis_PolicyChangeCarriesOverWhatWasSpent(t *testing.T) {
	for _, tt := range policyChanges() {
		t.Run(tt.name, func(t *testing.T) {
			f := newRedisFixture(t, tt.before, nil)
			checkPolicyChange(t, f.limiter, tt)
			if f.limiter.Degraded() {
				t.Fatal("decided by the fallback, not Redis")
			}
		})
	}
}

func TestRedis_RetryAfterHoldsAcrossAPolicyChange(t *testing.T) {
	for _, tt := range retryChanges() {
		t.Run(tt.name, func(t *testing.T) {
			f := newRedisFixture(t, tt.p, nil)
			checkRetryAfterChange(t, f.limiter, tt, time.Sleep)
			if f.limiter.Degraded() {
				t.Fatal("decided by the fallback, not Redis")
			}
		})
	}
}

// A plain TAT, as the previous release writes it, counts as spent under
// the current interval: a rolling upgrade keeps every budget.
func TestRedis_ReadsThePreviousReleasesState(t *testing.T) {
	f := newRedisFixture(t, Policies{Default: member10}, nil)
	ctx := testserver.Context(t)
	now, err := f.client.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	// 5 of 10 spent: the TAT is 5 member intervals (30 s) ahead.
	tat := now.Add(30 * time.Second).UnixMicro()
	if err := f.client.Set(ctx, DefaultKeyPrefix+"u1", strconv.FormatInt(tat, 10), 30*time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	if r := f.limiter.Allow(ctx, "u1", "member"); !r.Allowed || r.Remaining != 4 {
		t.Fatalf("on the previous release's TAT: %+v, want admitted with 4 remaining (6 of 10 spent)", r)
	}
	newTAT, interval := storedState(t, f, "u1")
	if interval != 6_000_000 || newTAT != tat+6_000_000 {
		t.Fatalf("stored TAT %d with interval %d, want %d with 6000000", newTAT, interval, tat+6_000_000)
	}
	if got := admitN(f.limiter, 10, "u1", "member"); got != 4 {
		t.Fatalf("admitted %d more, want the 4 left", got)
	}
}

// The previous release's script, run by a replica or the web app not yet
// upgraded, reads the new state as the TAT it is.
func TestRedis_PreviousReleaseReadsTheNewState(t *testing.T) {
	previous, err := os.ReadFile("testdata/gcra_previous.lua")
	if err != nil {
		t.Fatal(err)
	}
	f := newRedisFixture(t, Policies{Default: member10}, nil)
	ctx := testserver.Context(t)
	admitN(f.limiter, 4, "u1", "member")
	reply, err := f.client.Eval(ctx, string(previous), []string{DefaultKeyPrefix + "u1"}, 6_000_000, 10).Result()
	if err != nil {
		t.Fatal(err)
	}
	if vals, _ := reply.([]any); len(vals) != 4 || vals[0] != int64(1) || vals[1] != int64(5) {
		t.Fatalf("previous script after 4 requests: %v, want admitted with 5 remaining", reply)
	}
	// And the new release reads back what the previous one wrote.
	if got := admitN(f.limiter, 10, "u1", "member"); got != 5 {
		t.Fatalf("admitted %d after 5 requests, want the 5 left", got)
	}
}

// storedState parses user's value: "<tat>.<interval>", both integers.
func storedState(t *testing.T, f *redisFixture, user string) (tat, interval int64) {
	t.Helper()
	val, err := f.client.Get(testserver.Context(t), DefaultKeyPrefix+user).Result()
	if err != nil {
		t.Fatal(err)
	}
	a, b, ok := strings.Cut(val, ".")
	tat, err1 := strconv.ParseInt(a, 10, 64)
	interval, err2 := strconv.ParseInt(b, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		t.Fatalf("stored %q, want <tat>.<interval> in integer microseconds", val)
	}
	return tat, interval
}
