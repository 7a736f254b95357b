package ratelimit

import (
	"context"
	"math"
	"net/http"
	"strconv"
	"testing"
	"time"
)

func TestWriteHeaders_BothGenerations(t *testing.T) {
	std := Limit{Requests: 600, Per: time.Minute, Burst: 100}
	tests := []struct {
		name string
		r    Result
		want map[string]string // "" means absent
	}{
		{
			name: "admitted",
			r:    Result{Allowed: true, Limit: std, Remaining: 99, ResetAfter: 100 * time.Millisecond},
			want: map[string]string{
				"RateLimit-Policy":    `"user";q=600;w=60`,
				"RateLimit":           `"user";r=99;t=1`,
				"RateLimit-Limit":     "100",
				"RateLimit-Remaining": "99",
				"RateLimit-Reset":     "1",
				"Retry-After":         "",
			},
		},
		{
			name: "full bucket resets now",
			r:    Result{Allowed: true, Limit: std, Remaining: 100},
			want: map[string]string{"RateLimit": `"user";r=100;t=0`, "RateLimit-Reset": "0"},
		},
		{
			name: "refused rounds Retry-After up",
			r:    Result{Limit: std, RetryAfter: 1200 * time.Millisecond, ResetAfter: 37*time.Second + time.Microsecond},
			want: map[string]string{
				"RateLimit":           `"user";r=0;t=38`,
				"RateLimit-Remaining": "0",
				"RateLimit-Reset":     "38",
				"Retry-After":         "2",
			},
		},
		{
			name: "refused for less than a second still waits one",
			r:    Result{Limit: std, RetryAfter: time.Microsecond, ResetAfter: 10 * time.Second},
			want: map[string]string{"Retry-After": "1"},
		},
		{
			name: "whole seconds are not rounded further",
			r:    Result{Limit: std, RetryAfter: 3 * time.Second, ResetAfter: 60 * time.Second},
			want: map[string]string{"Retry-After": "3", "RateLimit-Reset": "60"},
		},
		{
			name: "hour-long window",
			r:    Result{Allowed: true, Limit: Limit{Requests: 5000, Per: time.Hour, Burst: 5000}, Remaining: 4999, ResetAfter: 720 * time.Millisecond},
			want: map[string]string{"RateLimit-Policy": `"user";q=5000;w=3600`, "RateLimit-Limit": "5000", "RateLimit-Reset": "1"},
		},
		{
			name: "values longer than HeaderValues' buffer",
			r:    Result{Allowed: true, Limit: Limit{Requests: 1 << 40, Per: time.Hour, Burst: math.MaxInt}, Remaining: math.MaxInt, ResetAfter: 1 << 62},
			want: map[string]string{
				"RateLimit":           `"user";r=9223372036854775807;t=4611686019`,
				"RateLimit-Remaining": "9223372036854775807",
				"RateLimit-Reset":     "4611686019",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			WriteHeaders(h, tt.r)
			for name, want := range tt.want {
				if got := h.Values(name); want == "" && len(got) != 0 || want != "" && (len(got) != 1 || got[0] != want) {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
		})
	}
}

func TestWriteHeaders_FromLocalDecisions(t *testing.T) {
	l, _ := newTestLocal(t, Policies{Default: Limit{Requests: 600, Per: time.Minute, Burst: 100}}, LocalOptions{})
	var r Result
	for range 100 {
		r = l.Allow(context.Background(), "u1", "")
	}
	h := http.Header{}
	WriteHeaders(h, r)
	want := map[string]string{
		"RateLimit-Policy":    `"user";q=600;w=60`,
		"RateLimit":           `"user";r=0;t=10`,
		"RateLimit-Limit":     "100",
		"RateLimit-Remaining": "0",
		"RateLimit-Reset":     "10",
	}
	for name, v := range want {
		if got := h.Get(name); got != v {
			t.Errorf("after the burst: %s = %q, want %q", name, got, v)
		}
	}

	r = l.Allow(context.Background(), "u1", "")
	h = http.Header{}
	WriteHeaders(h, r)
	// 600 per minute refills one token per 100 ms: retry in 1 s (rounded up).
	if got := h.Get("Retry-After"); got != "1" {
		t.Errorf("refused: Retry-After = %q, want 1", got)
	}
	if secs, _ := strconv.Atoi(h.Get("Retry-After")); time.Duration(secs)*time.Second < r.RetryAfter {
		t.Errorf("Retry-After %ss is earlier than RetryAfter %s", h.Get("Retry-After"), r.RetryAfter)
	}
}

// Values live in their HeaderValues: a second one in use at the same time
// leaves the first response's headers as they were.
func TestHeaderValues_KeepTheirOwnValues(t *testing.T) {
	std := Limit{Requests: 600, Per: time.Minute, Burst: 100}
	var v1, v2 HeaderValues
	h1, h2 := http.Header{}, http.Header{}
	v1.Write(h1, Result{Allowed: true, Limit: std, Remaining: 7, ResetAfter: 3 * time.Second})
	v2.Write(h2, Result{Limit: std, RetryAfter: 5 * time.Second, ResetAfter: 9 * time.Second})
	if got := h1.Get("RateLimit"); got != `"user";r=7;t=3` {
		t.Errorf("first response's RateLimit = %q after a second Write", got)
	}
	if got := h2.Get("RateLimit"); got != `"user";r=0;t=9` || h2.Get("Retry-After") != "5" {
		t.Errorf("second response: RateLimit %q, Retry-After %q", got, h2.Get("Retry-After"))
	}
}

func TestWriteHeaders_SharedValuesAreNotCorruptedByAppends(t *testing.T) {
	l, _ := newTestLocal(t, testPolicies(), LocalOptions{})
	h1, h2 := http.Header{}, http.Header{}
	WriteHeaders(h1, l.Allow(context.Background(), "u1", ""))
	h1.Add("RateLimit-Policy", `"other";q=1;w=1`)
	WriteHeaders(h2, l.Allow(context.Background(), "u2", ""))
	if got := h2.Values("RateLimit-Policy"); len(got) != 1 || got[0] != `"user";q=60;w=60` {
		t.Fatalf("second response's RateLimit-Policy = %q, want only ours", got)
	}
}

func TestHotPath_AllocatesAtMostOnceForTheDecisionAndOnceForHeaders(t *testing.T) {
	l := NewLocal(testPolicies(), LocalOptions{})
	defer l.Close()
	ctx := context.Background()
	l.Allow(ctx, "u1", "member")
	if n := testing.AllocsPerRun(200, func() { l.Allow(ctx, "u1", "member") }); n > 1 {
		t.Errorf("Local.Allow: %.1f allocs per call, want ≤ 1", n)
	}
	res := l.Allow(ctx, "u1", "member")
	h := make(http.Header, 8)
	if n := testing.AllocsPerRun(200, func() { WriteHeaders(h, res) }); n > 1 {
		t.Errorf("WriteHeaders: %.1f allocs per call, want ≤ 1", n)
	}
	var v HeaderValues
	if n := testing.AllocsPerRun(200, func() { v.Write(h, res) }); n > 0 {
		t.Errorf("HeaderValues.Write: %.1f allocs per call, want none", n)
	}
}
