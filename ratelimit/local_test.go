package ratelimit

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeClock is moved by hand so token arithmetic can be checked exactly.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

var (
	perMinute60 = Limit{Requests: 60, Per: time.Minute, Burst: 10}
	adminLimit  = Limit{Requests: 120, Per: time.Minute, Burst: 20}
)

func testPolicies() Policies {
	return Policies{Default: perMinute60, Roles: map[string]Limit{"admin": adminLimit}}
}

func newTestLocal(t testing.TB, p Policies, o LocalOptions) (*Local, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	if o.Now == nil {
		o.Now = clk.Now
	}
	l := NewLocal(p, o)
	t.Cleanup(l.Close)
	return l, clk
}

// admitN calls Allow n times and counts admissions.
func admitN(l interface {
	Allow(context.Context, string, string) Result
}, n int, user, role string) int {
	admitted := 0
	for range n {
		if l.Allow(context.Background(), user, role).Allowed {
			admitted++
		}
	}
	return admitted
}

func TestLocal_BurstThenRefill(t *testing.T) {
	l, clk := newTestLocal(t, testPolicies(), LocalOptions{})
	ctx := context.Background()

	for i := range 10 {
		r := l.Allow(ctx, "u1", "member")
		want := Result{Allowed: true, Limit: perMinute60, Remaining: 9 - i, ResetAfter: time.Duration(i+1) * time.Second}
		if r.Allowed != want.Allowed || r.Remaining != want.Remaining || r.ResetAfter != want.ResetAfter || r.RetryAfter != 0 || r.Limit != want.Limit {
			t.Fatalf("request %d: got %+v, want %+v", i+1, r, want)
		}
	}
	r := l.Allow(ctx, "u1", "member")
	if r.Allowed || r.Remaining != 0 || r.RetryAfter != time.Second || r.ResetAfter != 10*time.Second {
		t.Fatalf("request 11: got %+v, want refused, RetryAfter 1s, ResetAfter 10s", r)
	}

	clk.Advance(999 * time.Millisecond)
	if r := l.Allow(ctx, "u1", "member"); r.Allowed || r.RetryAfter != time.Millisecond {
		t.Fatalf("1ms before the refill: got %+v, want refused with RetryAfter 1ms", r)
	}
	clk.Advance(time.Millisecond)
	if r := l.Allow(ctx, "u1", "member"); !r.Allowed || r.Remaining != 0 {
		t.Fatalf("at the refill: got %+v, want admitted with 0 remaining", r)
	}

	// Over one more minute at one request per 100 ms: exactly 60 admitted,
	// which is the policy's rate.
	admitted := 0
	for range 600 {
		clk.Advance(100 * time.Millisecond)
		if l.Allow(ctx, "u1", "member").Allowed {
			admitted++
		}
	}
	t.Logf("one node, fake clock: admitted %d of %d expected over 60s (ratio %.4f)", admitted, 60, float64(admitted)/60)
	if admitted != 60 {
		t.Fatalf("admitted %d over a minute, want 60", admitted)
	}

	// Idle long enough, the bucket is full again and no larger.
	clk.Advance(time.Hour)
	if got := admitN(l, 15, "u1", "member"); got != 10 {
		t.Fatalf("after an idle hour admitted %d, want the burst of 10", got)
	}
}

func TestLocal_KeysOfOneUserShareTheBudget(t *testing.T) {
	l, _ := newTestLocal(t, testPolicies(), LocalOptions{})
	// Two keys of one user resolve to the same user id; the proxy passes
	// the user, never the key, so they alternate on one bucket.
	admitted := map[string]int{}
	for i := range 20 {
		key := []string{"key_a", "key_b"}[i%2]
		if l.Allow(context.Background(), "u1", "member").Allowed {
			admitted[key]++
		}
	}
	if total := admitted["key_a"] + admitted["key_b"]; total != 10 || admitted["key_a"] != 5 {
		t.Fatalf("admitted %v, want 5 per key and 10 in total (one burst)", admitted)
	}
}

func TestLocal_UsersAreIndependent(t *testing.T) {
	l, _ := newTestLocal(t, testPolicies(), LocalOptions{})
	if got := admitN(l, 15, "u1", "member"); got != 10 {
		t.Fatalf("u1 admitted %d, want 10", got)
	}
	if got := admitN(l, 15, "u2", "member"); got != 10 {
		t.Fatalf("u2 admitted %d after u1 ran out, want its own 10", got)
	}
}

func TestLocal_RolePolicies(t *testing.T) {
	tests := []struct {
		role  string
		burst int
		limit Limit
	}{
		{"member", 10, perMinute60},
		{"admin", 20, adminLimit},
		{"ADMIN", 20, adminLimit},
		{"", 10, perMinute60},
	}
	for _, tt := range tests {
		t.Run(tt.role, func(t *testing.T) {
			l, _ := newTestLocal(t, testPolicies(), LocalOptions{})
			r := l.Allow(context.Background(), "u", tt.role)
			if r.Limit != tt.limit {
				t.Fatalf("Limit = %v, want %v", r.Limit, tt.limit)
			}
			if got := 1 + admitN(l, 30, "u", tt.role); got != tt.burst {
				t.Fatalf("admitted %d, want burst %d", got, tt.burst)
			}
		})
	}
}

func TestLocal_RoleChangeAppliesOnTheNextRequest(t *testing.T) {
	l, clk := newTestLocal(t, testPolicies(), LocalOptions{})
	if got := admitN(l, 10, "u1", "member"); got != 10 {
		t.Fatalf("admitted %d, want 10", got)
	}
	// Promoted: the 10 spent stay spent, in the admin bucket of 20, which
	// refills at the admin rate of 2 per second.
	if r := l.Allow(context.Background(), "u1", "admin"); !r.Allowed || r.Limit != adminLimit || r.Remaining != 9 {
		t.Fatalf("first request as admin: %+v, want admitted with 9 of 20 remaining", r)
	}
	if got := admitN(l, 9, "u1", "admin"); got != 9 {
		t.Fatalf("admitted %d more as admin, want the 9 left", got)
	}
	if r := l.Allow(context.Background(), "u1", "admin"); r.Allowed || r.RetryAfter != 500*time.Millisecond {
		t.Fatalf("past the admin burst: %+v, want refused at the admin rate (RetryAfter 500ms)", r)
	}
	clk.Advance(time.Minute)
	if got := admitN(l, 30, "u1", "admin"); got != 20 {
		t.Fatalf("admitted %d as admin after a minute, want the admin burst of 20", got)
	}
}

func TestLocal_RefusedRequestsDoNotConsume(t *testing.T) {
	l, clk := newTestLocal(t, testPolicies(), LocalOptions{})
	admitN(l, 10, "u1", "member")
	if got := admitN(l, 1000, "u1", "member"); got != 0 {
		t.Fatalf("admitted %d over budget", got)
	}
	clk.Advance(time.Second)
	if r := l.Allow(context.Background(), "u1", "member"); !r.Allowed {
		t.Fatalf("after 1s: %+v, want admitted: refusals must not have spent tokens", r)
	}
}

func TestLocal_RetryAfterIsNeverEarly(t *testing.T) {
	limits := []Limit{
		{Requests: 7, Per: time.Second, Burst: 3},
		{Requests: 600, Per: time.Minute, Burst: 100},
		{Requests: 1, Per: time.Hour, Burst: 1},
		{Requests: 999, Per: 7 * time.Second, Burst: 13},
	}
	for _, lim := range limits {
		t.Run(lim.String(), func(t *testing.T) {
			l, clk := newTestLocal(t, Policies{Default: lim}, LocalOptions{})
			ctx := context.Background()
			for i := range 50 {
				r := l.Allow(ctx, "u", "")
				if r.Allowed {
					continue
				}
				if r.RetryAfter <= 0 {
					t.Fatalf("refusal %d with RetryAfter %s", i, r.RetryAfter)
				}
				clk.Advance(r.RetryAfter)
				if r2 := l.Allow(ctx, "u", ""); !r2.Allowed {
					t.Fatalf("retry exactly RetryAfter (%s) later refused: %+v", r.RetryAfter, r2)
				}
				// Odd steps so the bucket is rarely on a whole token.
				clk.Advance(time.Duration(i) * 37 * time.Millisecond)
			}
		})
	}
}

func TestLocal_SetPoliciesReloadsAtOnce(t *testing.T) {
	l, _ := newTestLocal(t, testPolicies(), LocalOptions{})
	admitN(l, 10, "u1", "member")
	bigger := Limit{Requests: 6000, Per: time.Minute, Burst: 50}
	if err := l.SetPolicies(Policies{Default: bigger}); err != nil {
		t.Fatal(err)
	}
	if r := l.Allow(context.Background(), "u1", "member"); r.Limit != bigger {
		t.Fatalf("Limit after reload = %v, want %v", r.Limit, bigger)
	}
	if got := admitN(l, 100, "u2", "member"); got != 50 {
		t.Fatalf("new user after reload admitted %d, want 50", got)
	}

	err := l.SetPolicies(Policies{Default: Limit{Requests: 0, Per: time.Minute, Burst: 1}})
	if err == nil || !strings.Contains(err.Error(), "ratelimit.default.requests") {
		t.Fatalf("SetPolicies(invalid) = %v, want an error naming the key", err)
	}
	if r := l.Allow(context.Background(), "u3", "member"); r.Limit != bigger {
		t.Fatalf("Limit after a refused reload = %v, want the previous %v", r.Limit, bigger)
	}
}

func TestLocal_NewLocalPanicsOnInvalidPolicies(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("NewLocal(invalid) did not panic")
		}
	}()
	NewLocal(Policies{}, LocalOptions{})
}

func TestLocal_MemoryIsBoundedUnderAFloodOfUsers(t *testing.T) {
	l, _ := newTestLocal(t, testPolicies(), LocalOptions{MaxEntries: 1000})
	for i := range 50_000 {
		l.Allow(context.Background(), fmt.Sprintf("flood-%d", i), "member")
	}
	l.buckets.CleanUp()
	if n := l.buckets.EstimatedSize(); n > 1100 {
		t.Fatalf("%d buckets after 50k users, want at most about MaxEntries (1000)", n)
	}
}

func TestLocal_IdleBucketsAreDroppedOnlyOnceFull(t *testing.T) {
	l, clk := newTestLocal(t, testPolicies(), LocalOptions{})
	admitN(l, 10, "u1", "member")
	// The slowest policy (default: 10 tokens at 1/s) refills in 10 s.
	clk.Advance(5 * time.Second)
	if _, ok := l.buckets.GetIfPresent("u1"); !ok {
		t.Fatal("bucket dropped after 5 s idle, before it could be full again")
	}
	clk.Advance(12 * time.Second)
	l.buckets.CleanUp()
	if _, ok := l.buckets.GetIfPresent("u1"); ok {
		t.Fatal("bucket still kept after idling past its refill time")
	}
}

func TestLocal_IdleTTLOptionKeepsBucketsLonger(t *testing.T) {
	l, clk := newTestLocal(t, testPolicies(), LocalOptions{IdleTTL: time.Hour})
	l.Allow(context.Background(), "u1", "member")
	clk.Advance(30 * time.Minute)
	if _, ok := l.buckets.GetIfPresent("u1"); !ok {
		t.Fatal("bucket dropped before IdleTTL")
	}
}

func TestLocal_CountsDecisions(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	l, _ := newTestLocal(t, testPolicies(), LocalOptions{Registerer: reg})
	admitN(l, 12, "u1", "member")
	want := `
# HELP keyproxy_ratelimit_decisions_total Rate-limit decisions by the backend that made them and their result.
# TYPE keyproxy_ratelimit_decisions_total counter
keyproxy_ratelimit_decisions_total{backend="local",result="allowed"} 10
keyproxy_ratelimit_decisions_total{backend="local",result="limited"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "keyproxy_ratelimit_decisions_total"); err != nil {
		t.Fatal(err)
	}
}

func TestLocal_ConcurrentRequestsStayWithinThePolicy(t *testing.T) {
	// Real clock, many goroutines on one user: admitted must match
	// burst + rate × elapsed. A bucket that sits full wastes its refill,
	// so the burst covers 250 ms in which a loaded CI machine may not run
	// the test at all; the fake-clock tests pin the exact counts.
	lim := Limit{Requests: 2000, Per: time.Second, Burst: 500}
	l := NewLocal(Policies{Default: lim}, LocalOptions{})
	defer l.Close()

	var admitted atomic.Int64
	start := time.Now()
	deadline := start.Add(500 * time.Millisecond)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if l.Allow(context.Background(), "u1", "").Allowed {
					admitted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	// Calls start no later than the deadline but a starved goroutine may
	// finish one after it: the policy allows at most what refilled until
	// now, and at least what refilled until the deadline.
	most := float64(lim.Burst) + float64(lim.Requests)*time.Since(start).Seconds()
	least := float64(lim.Burst) + float64(lim.Requests)*deadline.Sub(start).Seconds()
	got := float64(admitted.Load())
	t.Logf("one node, real clock, 8 goroutines: admitted %.0f, policy allows %.0f-%.0f (ratio %.4f of the window)", got, least, most, got/least)
	if got > most || got < 0.95*least {
		t.Fatalf("admitted %.0f, want within [0.95×%.0f, %.0f]", got, least, most)
	}
}

// tenPerSecond is a compiled policy of 10 a second, burst 10.
func tenPerSecond(t *testing.T) *policy {
	t.Helper()
	tab, err := compile(Policies{Default: Limit{Requests: 10, Per: time.Second, Burst: 10}})
	if err != nil {
		t.Fatal(err)
	}
	return tab.forRole("member")
}

// A reply that says the shared bucket is empty brings the copy to less
// than a token, even when the tokens to take, rounded, are more than the
// copy has (3.6 rounds to 4): left at 3.6, the copy would let a share
// admit three requests Redis has no tokens for.
func TestFollow_EmptySharedBucketEmptiesTheCopy(t *testing.T) {
	pol, now := tenPerSecond(t), time.Unix(1_700_000_000, 0)
	clock := func() time.Time { return now }
	b := newBucket(pol)
	b.set(now, pol, 6.4) // 3.6 tokens left
	if got := b.lim.TokensAt(now); got < 3.59 || got > 3.61 {
		t.Fatalf("copy holds %.2f tokens, want 3.6", got)
	}
	b.follow(pol, time.Second, clock) // full again in 1 s: the whole burst of 10 spent
	if got := b.lim.TokensAt(now); got >= 0.5 {
		t.Fatalf("after a reply that the shared bucket is empty, the copy holds %.2f tokens, want under half a token", got)
	}
}

// A reply that shows more tokens than the copy has leaves the copy as it
// is: the requests that spent the copy (a share's, a fallback's) may not
// have reached Redis when the reply left it.
func TestFollow_OlderReplyDoesNotRaiseTheCopy(t *testing.T) {
	pol, now := tenPerSecond(t), time.Unix(1_700_000_000, 0)
	b := newBucket(pol)
	b.set(now, pol, 8)                                                   // 2 tokens left
	b.follow(pol, 500*time.Millisecond, func() time.Time { return now }) // 5 spent, as Redis saw it
	if got := b.lim.TokensAt(now); got < 1.99 || got > 2.01 {
		t.Fatalf("the copy holds %.2f tokens after an older reply, want its 2", got)
	}
}
