package ratelimit

import (
	"context"
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
	if n := testing.AllocsPerRun(200, func() { WriteHeaders(h, res) }); n > 2 {
		t.Errorf("WriteHeaders: %.1f allocs per call, want ≤ 2", n)
	}
	var v HeaderValues
	if n := testing.AllocsPerRun(200, func() { v.Write(h, res) }); n > 1 {
		t.Errorf("HeaderValues.Write: %.1f allocs per call, want ≤ 1", n)
	}
}
