package ratelimit

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wevion/keyproxy/internal/testserver"
)

// The script's optional third and fourth arguments charge what was
// admitted where it could not run, as it would have spent when admitted:
// on top of a bucket that was still refilling, or from when the requests
// began if the bucket was full then. Capped at the whole burst, and
// stored even when the request it comes with is refused.
func TestGCRA_ChargeSpendsWhatWasAdmittedElsewhere(t *testing.T) {
	server := testserver.StartRedis(t)
	client := newClient(t, server.Addr)
	ctx := testserver.Context(t)
	const interval = int64(6_000_000) // member10: 10 a minute, burst 10
	for i, tt := range []struct {
		name          string
		before        int   // admitted through the script first, just now
		charge, age   int64 // µs
		wantAllowed   bool
		wantRemaining int64
		thenAdmitted  int // of 20 more without a charge
	}{
		{"no charge", 0, 0, 0, true, 9, 9},
		{"three requests", 0, 3 * interval, 0, true, 6, 6},
		{"on top of what the user spent", 4, 3 * interval, 0, true, 2, 2},
		{"half a request", 0, interval / 2, 0, true, 8, 8},
		{"the whole burst", 0, 10 * interval, 0, false, 0, 0},
		{"more than the burst", 3, 20 * interval, 0, false, 0, 0},
		// The bucket was still refilling from the 4 when the 3 came, so
		// the refill since is the 4's: all 3 are owed, however long ago.
		{"begun while the bucket refilled", 4, 3 * interval, 2 * interval, true, 2, 2},
		// A full bucket 2 intervals ago: 2 of the 5 have refilled.
		{"begun on a full bucket", 0, 5 * interval, 2 * interval, true, 6, 6},
		{"long ago", 0, 5 * interval, 3_600_000_000, true, 9, 9},
	} {
		t.Run(tt.name, func(t *testing.T) {
			key := []string{fmt.Sprintf("%scharge%d", DefaultKeyPrefix, i)}
			eval := func(args ...any) []any {
				t.Helper()
				reply, err := client.Eval(ctx, gcraScript, key, args...).Result()
				vals, _ := reply.([]any)
				if err != nil || len(vals) != 4 {
					t.Fatalf("gcra.lua %v: %v, %v", args, reply, err)
				}
				return vals
			}
			for range tt.before {
				eval(interval, 10)
			}
			vals := eval(interval, 10, tt.charge, tt.age)
			if got := vals[0] == int64(1); got != tt.wantAllowed || vals[1] != tt.wantRemaining {
				t.Fatalf("with a charge of %d µs begun %d µs ago after %d requests: %v, want allowed %v with %d remaining",
					tt.charge, tt.age, tt.before, vals, tt.wantAllowed, tt.wantRemaining)
			}
			if !tt.wantAllowed {
				// Capped at the burst: the next token comes one interval on.
				if retry := vals[2].(int64); retry > interval || retry < interval-interval/10 {
					t.Errorf("retry after %d µs, want about one interval (%d)", retry, interval)
				}
			}
			admitted := 0
			for range 20 {
				if eval(interval, 10)[0] == int64(1) {
					admitted++
				}
			}
			if admitted != tt.thenAdmitted {
				t.Errorf("then admitted %d, want %d: the charge must stay spent", admitted, tt.thenAdmitted)
			}
		})
	}
}

// A fallback owes every request it admits, with the time the first of
// them was admitted; plain Local decisions and refusals owe nothing.
func TestLocal_FallbackAdmissionsAreOwed(t *testing.T) {
	l, clk := newTestLocal(t, testPolicies(), LocalOptions{}) // 60 a minute: one second each
	pol := l.policies.Load().forRole("member")
	owed := func() debt { return l.bucket("u1", pol).takeOwed(clk.Now) }

	l.Allow(context.Background(), "u1", "member")
	if d := owed(); d != (debt{}) {
		t.Fatalf("a plain Local decision owes %+v, want nothing", d)
	}
	admitOwing(l, 2, "u1")
	clk.Advance(time.Second)
	admitOwing(l, 1, "u1")
	clk.Advance(time.Second)
	if d := owed(); d != (debt{requests: 3, age: 2 * time.Second}) {
		t.Fatalf("3 fallback admissions over 1 s, 1 s later: owed %+v, want 3 from 2 s ago", d)
	}
	if d := owed(); d != (debt{}) {
		t.Fatalf("owed %+v right after it was taken, want nothing", d)
	}

	// Refusals owe nothing: 4 spent, 2 refilled, 8 tokens left.
	if got := admitOwing(l, 20, "u1"); got != 8 {
		t.Fatalf("fallback admitted %d, want the 8 tokens left", got)
	}
	if d := owed(); d.requests != 8 || d.age != 0 {
		t.Fatalf("after 8 admitted and 12 refused: owed %+v, want 8 from now", d)
	}

	// A charge that did not reach Redis is owed again, from its own start
	// when that was earlier.
	clk.Advance(3 * time.Second)
	admitOwing(l, 1, "u1")
	clk.Advance(time.Second)
	l.bucket("u1", pol).owe(debt{requests: 4, age: 5 * time.Second}, clk.Now)
	if d := owed(); d != (debt{requests: 5, age: 5 * time.Second}) {
		t.Fatalf("1 owed from 1 s ago, 4 given back from 5 s ago: %+v, want 5 from 5 s ago", d)
	}
	l.bucket("u1", pol).owe(debt{requests: 2, age: time.Second}, clk.Now)
	admitOwing(l, 1, "u1")
	if d := owed(); d != (debt{requests: 3, age: time.Second}) {
		t.Fatalf("2 given back from 1 s ago, then 1 admitted: %+v, want 3 from 1 s ago", d)
	}
}

func admitOwing(l *Local, n int, user string) int {
	admitted := 0
	for range n {
		if l.allow(user, "member", true).Allowed {
			admitted++
		}
	}
	return admitted
}

// TestRedis_FallbackAdmissionsAreChargedWhenRedisAnswersAgain: a replica
// cut off from a Redis that keeps its state (a partition, not a restart)
// admits what the user had left, and charges it to the shared budget with
// the user's next decision once Redis answers, so across the outage and
// both replicas the user gets the policy's burst, not a second one.
func TestRedis_FallbackAdmissionsAreChargedWhenRedisAnswersAgain(t *testing.T) {
	server := testserver.StartRedis(t)
	a := newRedisFixtureWith(t, slowPolicies(), server, RedisOptions{Timeout: 5 * time.Second, ProbeInterval: 100 * time.Millisecond})
	b := newRedisFixtureWith(t, slowPolicies(), server, RedisOptions{Timeout: 5 * time.Second, ProbeInterval: time.Hour})
	ctx := testserver.Context(t)
	const key = DefaultKeyPrefix + "u1"

	if got := admitN(a.limiter, 3, "u1", "member"); got != 3 {
		t.Fatalf("admitted %d of 3 with Redis up", got)
	}
	state, err := a.client.Get(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	ttl, err := a.client.PTTL(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}

	server.Kill()
	if got := admitN(a.limiter, 100, "u1", "member"); got != 7 || !a.limiter.Degraded() {
		t.Fatalf("with Redis out of reach: admitted %d (degraded %v), want the 7 left", got, a.limiter.Degraded())
	}
	// A probe that fails keeps what u1 owes for the next one.
	time.Sleep(150 * time.Millisecond)
	if r := a.limiter.Allow(ctx, "u1", "member"); r.Allowed {
		t.Fatalf("after the 7: %+v, want refused", r)
	}

	// The same state as before the outage, as a partitioned Redis keeps it.
	server.Start()
	if err := a.client.Set(ctx, key, state, ttl).Err(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a back on Redis", func() bool { return !a.limiter.Degraded() })

	if r := a.limiter.Allow(ctx, "u1", "member"); r.Allowed || r.RetryAfter <= 0 {
		t.Errorf("a, back on Redis: %+v, want refused: the 7 admitted locally are charged", r)
	}
	if v := testutil.ToFloat64(a.limiter.charged); v != 7 {
		t.Errorf("keyproxy_ratelimit_fallback_charged_total = %v, want the 7 requests", v)
	}
	if got := admitN(b.limiter, 10, "u1", "member"); got != 0 {
		t.Errorf("b admitted %d after the outage, want none: the burst of 10 is spent", got)
	}
}
