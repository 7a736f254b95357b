package ratelimit

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wevion/keyproxy/internal/testserver"
)

// The script's optional third argument charges what was admitted where it
// could not run, capped at the whole burst, and stores it even when the
// request it comes with is refused.
func TestGCRA_ChargeSpendsWhatWasAdmittedElsewhere(t *testing.T) {
	server := testserver.StartRedis(t)
	client := newClient(t, server.Addr)
	ctx := testserver.Context(t)
	const interval = int64(6_000_000) // member10: 10 a minute, burst 10
	for i, tt := range []struct {
		name          string
		before        int   // admitted through the script first
		charge        int64 // µs
		wantAllowed   bool
		wantRemaining int64
		thenAdmitted  int // of 20 more without a charge
	}{
		{"no charge", 0, 0, true, 9, 9},
		{"three requests", 0, 3 * interval, true, 6, 6},
		{"on top of what the user spent", 4, 3 * interval, true, 2, 2},
		{"half a request", 0, interval / 2, true, 8, 8},
		{"the whole burst", 0, 10 * interval, false, 0, 0},
		{"more than the burst", 3, 20 * interval, false, 0, 0},
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
			vals := eval(interval, 10, tt.charge)
			if got := vals[0] == int64(1); got != tt.wantAllowed || vals[1] != tt.wantRemaining {
				t.Fatalf("with a charge of %d µs after %d requests: %v, want allowed %v with %d remaining",
					tt.charge, tt.before, vals, tt.wantAllowed, tt.wantRemaining)
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

// What a fallback admits is owed for as long as the shared bucket would
// still be refilling it, not forever; plain Local decisions owe nothing.
func TestLocal_FallbackAdmissionsAreOwedLessWhatHasRefilled(t *testing.T) {
	l, clk := newTestLocal(t, testPolicies(), LocalOptions{}) // 60 a minute: one second each
	pol := l.policies.Load().forRole("member")
	owed := func() time.Duration { return l.bucket("u1", pol).takeOwed(clk.Now) }

	l.Allow(context.Background(), "u1", "member")
	if d := owed(); d != 0 {
		t.Fatalf("a plain Local decision owes %s, want nothing", d)
	}
	for range 3 {
		l.allow("u1", "member", true)
	}
	clk.Advance(time.Second)
	if d := owed(); d != 2*time.Second {
		t.Fatalf("3 fallback admissions, 1 s later: owed %s, want 2s", d)
	}
	if d := owed(); d != 0 {
		t.Fatalf("owed %s right after it was taken, want nothing", d)
	}

	// Refusals owe nothing: 4 spent, 1 refilled, 7 tokens left.
	if got := admitOwing(l, 20, "u1"); got != 7 {
		t.Fatalf("fallback admitted %d, want the 7 tokens left", got)
	}
	if d := owed(); d != 7*time.Second {
		t.Fatalf("after 7 admitted and 13 refused: owed %s, want 7s", d)
	}

	// A charge that did not reach Redis is owed again, and refills.
	l.bucket("u1", pol).owe(4*time.Second, clk.Now)
	clk.Advance(5 * time.Second)
	if d := owed(); d != 0 {
		t.Fatalf("5 s after 4 s were owed: %s, want nothing (refilled)", d)
	}
	l.bucket("u1", pol).owe(4*time.Second, clk.Now)
	admitOwing(l, 1, "u1")
	if d := owed(); d != 5*time.Second {
		t.Fatalf("4 s given back, then one more admitted: owed %s, want 5s", d)
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
	if v := testutil.ToFloat64(a.limiter.charged); v < 6.5 || v > 7 {
		t.Errorf("keyproxy_ratelimit_fallback_charged_total = %v, want the 7 requests less a few seconds' refill", v)
	}
	if got := admitN(b.limiter, 10, "u1", "member"); got != 0 {
		t.Errorf("b admitted %d after the outage, want none: the burst of 10 is spent", got)
	}
}
