package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/wevion/keyproxy/audit"
	"github.com/wevion/keyproxy/keystore"
	"github.com/wevion/keyproxy/proxy"
	"github.com/wevion/keyproxy/ratelimit"
)

// closedPort returns the URL of a loopback port nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

// blockUntilCancelled makes the upstream hold each request until the proxy
// gives up on it (or a bound passes, so a bug cannot hang the test run).
func blockUntilCancelled(w http.ResponseWriter, r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-time.After(10 * time.Second):
	}
}

func allowAll() *fixedLimiter {
	return &fixedLimiter{res: ratelimit.Result{Allowed: true, Remaining: 7, Limit: ratelimit.Limit{Requests: 600, Per: time.Minute, Burst: 10}}}
}

func TestUpstreamRefusingConnectionsIs502(t *testing.T) {
	down := closedPort(t)
	e := newEnv(t, func(c *proxy.Config) {
		c.Upstream = mustURL(t, down)
		c.Limiter, c.RateLimitHeaders = allowAll(), testRateLimitHeaders
	})
	res, body := e.do(t, "GET", "/v1/things", [][2]string{bearer(e.validKey)})
	checkProblem(t, res, body, http.StatusBadGateway, proxy.CodeUpstreamUnavailable)
	if got := res.Header.Get("RateLimit-Remaining"); got != "7" {
		t.Errorf("RateLimit-Remaining = %q on an authenticated 502, want 7", got)
	}
	ev := e.rec.wait(t, 1)[0]
	if ev.Type != audit.TypeAPIRequest || ev.Outcome != audit.OutcomeUpstreamError || ev.Status != 502 || ev.KeyID != e.identity.KeyID {
		t.Errorf("event = %+v", ev)
	}
}

func TestSlowUpstreamIs504(t *testing.T) {
	e := newEnv(t, func(c *proxy.Config) {
		c.UpstreamTimeout = 100 * time.Millisecond
	})
	e.up.handle(blockUntilCancelled)
	start := time.Now()
	res, body := e.do(t, "GET", "/slow", [][2]string{bearer(e.validKey)})
	checkProblem(t, res, body, http.StatusGatewayTimeout, proxy.CodeUpstreamTimeout)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("504 took %s; the 100ms timeout was not applied", d)
	}
	if ev := e.rec.wait(t, 1)[0]; ev.Outcome != audit.OutcomeUpstreamError || ev.Status != 504 {
		t.Errorf("event = %+v", ev)
	}
}

// TestClientGoneIsRecordedAs499: nothing is written to a client that left,
// but the request is still audited and counted, as 499.
func TestClientGoneIsRecordedAs499(t *testing.T) {
	e := newEnv(t)
	e.up.handle(blockUntilCancelled)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/slow", nil)
	req.Header.Set("Authorization", "Bearer "+e.validKey)
	if res, err := e.client.Do(req); !errors.Is(err, context.DeadlineExceeded) {
		if res != nil {
			res.Body.Close()
		}
		t.Fatalf("client error = %v, want deadline exceeded", err)
	}
	ev := e.rec.wait(t, 1)[0]
	if ev.Status != 499 || ev.Outcome != audit.OutcomeAllowed {
		t.Errorf("event = %+v, want status 499 outcome allowed", ev)
	}
}

func TestClientGoneDuringResolveWritesNothing(t *testing.T) {
	e := newEnv(t, withResolver(blockingResolver{}))
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/", nil)
	req.Header.Set("Authorization", "Bearer "+e.validKey)
	if res, err := e.client.Do(req); err == nil {
		res.Body.Close()
		t.Fatal("request succeeded")
	}
	ev := e.rec.wait(t, 1)[0]
	if ev.Status != 499 || ev.Type != audit.TypeAuthFailed {
		t.Errorf("event = %+v, want auth.failed with status 499", ev)
	}
}

// The backend's values of the headers we set are dropped, whichever of the
// two header sets is the larger (modifyResponse walks the smaller).
func TestRateLimitHeadersOnAdmittedResponses(t *testing.T) {
	for _, tt := range []struct {
		name         string
		writer       proxy.HeaderWriter
		extraHeaders int // more backend headers than ours, or fewer
	}{
		{"backend sends more headers", testRateLimitHeaders, 10},
		{"backend sends fewer headers", (*ratelimit.HeaderValues).Write, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *proxy.Config) { c.Limiter, c.RateLimitHeaders = allowAll(), tt.writer })
			e.up.handle(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("RateLimit-Remaining", "999") // the backend's own, replaced by ours
				w.Header().Set("X-Request-Id", "backend-made-this-up")
				for i := range tt.extraHeaders {
					w.Header().Set(fmt.Sprintf("X-Backend-%d", i), "kept")
				}
				w.WriteHeader(http.StatusCreated)
			})
			res, _ := e.do(t, "POST", "/v1/things", [][2]string{bearer(e.validKey)})
			if res.StatusCode != http.StatusCreated {
				t.Fatalf("status %d", res.StatusCode)
			}
			if got := res.Header.Values("Ratelimit-Remaining"); len(got) != 1 || got[0] != "7" {
				t.Errorf("RateLimit-Remaining = %q, want [7]", got)
			}
			if got := res.Header.Values("Ratelimit-Limit"); len(got) != 1 || got[0] != "10" {
				t.Errorf("RateLimit-Limit = %q, want [10]", got)
			}
			if got := res.Header.Values("X-Request-Id"); len(got) != 1 || got[0] == "backend-made-this-up" {
				t.Errorf("X-Request-Id = %q, want our id alone", got)
			}
			for i := range tt.extraHeaders {
				if got := res.Header.Get(fmt.Sprintf("X-Backend-%d", i)); got != "kept" {
					t.Errorf("X-Backend-%d = %q, want the backend's header passed on", i, got)
				}
			}
			// A refusal before the limiter was asked carries no rate-limit headers.
			res, _ = e.do(t, "GET", "/", nil)
			if got := res.Header.Get("Ratelimit-Remaining"); got != "" {
				t.Errorf("unauthenticated response has RateLimit-Remaining %q", got)
			}
		})
	}
}

func TestRateLimitedRequestCarriesHeaders(t *testing.T) {
	lim := &fixedLimiter{res: ratelimit.Result{Allowed: false, RetryAfter: 30 * time.Second, Limit: ratelimit.Limit{Burst: 10}}}
	e := newEnv(t, func(c *proxy.Config) { c.Limiter, c.RateLimitHeaders = lim, testRateLimitHeaders })
	res, body := e.do(t, "GET", "/", [][2]string{bearer(e.validKey)})
	checkProblem(t, res, body, http.StatusTooManyRequests, proxy.CodeRateLimited)
	if res.Header.Get("Retry-After") != "30" || res.Header.Get("Ratelimit-Remaining") != "0" || res.Header.Get("Ratelimit-Limit") != "10" {
		t.Errorf("headers = %v", res.Header)
	}
	if e.usage.count(e.identity.KeyID) != 0 {
		t.Error("a refused request touched the key's last use")
	}
}

func TestRetryAfterRoundsUp(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{{0, "1"}, {time.Millisecond, "1"}, {time.Second, "1"}, {time.Second + 1, "2"}, {90 * time.Second, "90"}, {3 * time.Hour, "10800"}, {math.MaxInt64, "9223372037"}} {
		lim := &fixedLimiter{res: ratelimit.Result{Allowed: false, RetryAfter: tt.d}}
		e := newEnv(t, func(c *proxy.Config) { c.Limiter = lim })
		res, _ := e.do(t, "GET", "/", [][2]string{bearer(e.validKey)})
		if got := res.Header.Get("Retry-After"); got != tt.want {
			t.Errorf("RetryAfter %s: Retry-After = %q, want %q", tt.d, got, tt.want)
		}
	}
}

// TestWithRealLocalLimiter wires ratelimit's local limiter and header
// writer: the burst is admitted, the next request refused, and every
// authenticated answer carries both generations of rate-limit headers.
func TestWithRealLocalLimiter(t *testing.T) {
	lim := ratelimit.NewLocal(ratelimit.Policies{Default: ratelimit.Limit{Requests: 1, Per: time.Hour, Burst: 2}}, ratelimit.LocalOptions{})
	t.Cleanup(lim.Close)
	e := newEnv(t, func(c *proxy.Config) { c.Limiter, c.RateLimitHeaders = lim, (*ratelimit.HeaderValues).Write })
	for i, want := range []int{200, 200, 429} {
		res, body := e.do(t, "GET", "/v1/things", [][2]string{bearer(e.validKey)})
		if res.StatusCode != want {
			t.Fatalf("request %d: status %d, want %d", i+1, res.StatusCode, want)
		}
		for _, h := range []string{"RateLimit-Policy", "RateLimit", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} {
			if v := res.Header.Values(h); len(v) != 1 {
				t.Errorf("request %d: %s = %q, want one value", i+1, h, v)
			}
		}
		if want == 429 {
			checkProblem(t, res, body, 429, proxy.CodeRateLimited)
			if ra := res.Header.Values("Retry-After"); len(ra) != 1 || ra[0] == "0" || len(ra[0]) > 4 {
				t.Errorf("Retry-After = %q, want one value of at least 1 and at most an hour", ra)
			}
		}
	}
	if n := len(e.up.requests()); n != 2 {
		t.Errorf("upstream received %d requests, want the 2 admitted", n)
	}
}

// TestInactiveTeamAnswerCarriesTheQuotaAndSpendsNothing: a 403
// subscription_inactive is an authenticated answer, so it carries the
// rate-limit headers, read without spending: after the team is active
// again the user has what they had before.
func TestInactiveTeamAnswerCarriesTheQuotaAndSpendsNothing(t *testing.T) {
	lim := ratelimit.NewLocal(ratelimit.Policies{Default: ratelimit.Limit{Requests: 1, Per: time.Hour, Burst: 5}}, ratelimit.LocalOptions{})
	t.Cleanup(lim.Close)
	e := newEnv(t, func(c *proxy.Config) { c.Limiter, c.RateLimitHeaders = lim, (*ratelimit.HeaderValues).Write })
	key, id := e.newKey(t, keySpec{})
	for range 2 {
		if res, _ := e.do(t, "GET", "/v1/things", [][2]string{bearer(key)}); res.StatusCode != 200 {
			t.Fatalf("status %d before the team went inactive", res.StatusCode)
		}
	}
	setTeam := func(active bool) {
		t.Helper()
		if _, _, err := e.store.PutTeam(t.Context(), keystore.Team{ID: id.TeamID, Active: active}); err != nil {
			t.Fatal(err)
		}
		e.resolver.Resolver.(*keystore.Resolver).Flush() // as the admin API's eviction would
	}
	setTeam(false)
	for i := range 4 {
		res, body := e.do(t, "GET", "/v1/things", [][2]string{bearer(key)})
		checkProblem(t, res, body, 403, proxy.CodeSubscriptionInactive)
		if got := res.Header.Get("RateLimit-Remaining"); got != "3" {
			t.Errorf("403 number %d: RateLimit-Remaining %q, want 3 (5 less the 2 admitted)", i+1, got)
		}
		if got := res.Header.Get("RateLimit-Policy"); got != `"user";q=1;w=3600` {
			t.Errorf("403: RateLimit-Policy %q", got)
		}
		if res.Header.Get("Retry-After") != "" {
			t.Error("403 carries Retry-After: it was not refused for its rate")
		}
	}
	setTeam(true)
	res, _ := e.do(t, "GET", "/v1/things", [][2]string{bearer(key)})
	if res.StatusCode != 200 || res.Header.Get("RateLimit-Remaining") != "2" {
		t.Fatalf("after reactivation: %d, RateLimit-Remaining %q, want 200 and 2: the 403s spent nothing",
			res.StatusCode, res.Header.Get("RateLimit-Remaining"))
	}
}
