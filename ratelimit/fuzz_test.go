package ratelimit

import (
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"
)

func TestParseReply_RejectsWhatTheScriptNeverSends(t *testing.T) {
	pol := newPolicy(perMinute60)
	tests := []struct {
		name  string
		reply any
	}{
		{"nil", nil},
		{"string", "OK"},
		{"short", []any{int64(1), int64(2), int64(0)}},
		{"long", []any{int64(1), int64(2), int64(0), int64(3), int64(4)}},
		{"string element", []any{int64(1), "9", int64(0), int64(3)}},
		{"allowed out of range", []any{int64(2), int64(9), int64(0), int64(3)}},
		{"negative remaining", []any{int64(1), int64(-1), int64(0), int64(3)}},
		{"negative reset", []any{int64(1), int64(0), int64(0), int64(-3)}},
		{"refused without a retry time", []any{int64(0), int64(0), int64(0), int64(3)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := parseReply(tt.reply, pol); !errors.Is(err, errReply) {
				t.Fatalf("parseReply(%v) error = %v, want errReply", tt.reply, err)
			}
		})
	}
}

func TestParseReply_ConvertsMicroseconds(t *testing.T) {
	pol := newPolicy(perMinute60)
	r, err := parseReply([]any{int64(0), int64(0), int64(250_001), int64(9_250_001)}, pol)
	if err != nil {
		t.Fatal(err)
	}
	if r.Allowed || r.RetryAfter != 250001*time.Microsecond || r.ResetAfter != 9250001*time.Microsecond || r.Limit != perMinute60 {
		t.Fatalf("parseReply = %+v", r)
	}
}

// FuzzParseReply: whatever Redis returns, parseReply either errors or gives
// a Result within the policy; it never panics.
func FuzzParseReply(f *testing.F) {
	f.Add(int64(1), int64(9), int64(0), int64(1_000_000), uint8(4))
	f.Add(int64(0), int64(0), int64(1), int64(10_000_000), uint8(4))
	f.Add(int64(0), int64(0), int64(1<<62), int64(1<<62), uint8(4))
	f.Add(int64(1), int64(-5), int64(0), int64(0), uint8(3))
	pol := newPolicy(perMinute60)
	f.Fuzz(func(t *testing.T, a, b, c, d int64, n uint8) {
		vals := []any{a, b, c, d, int64(0)}[:min(int(n), 5)]
		r, err := parseReply(vals, pol)
		if err != nil {
			return
		}
		if r.Remaining < 0 || r.Remaining > pol.limit.Burst || r.RetryAfter < 0 || r.ResetAfter < 0 {
			t.Fatalf("parseReply(%v) = %+v: outside the policy", vals, r)
		}
		if !r.Allowed && r.RetryAfter <= 0 {
			t.Fatalf("parseReply(%v) = %+v: refused without a retry time", vals, r)
		}
	})
}

// FuzzLocalInvariants drives one user's bucket with arbitrary gaps between
// requests and checks what must hold whatever the timing.
func FuzzLocalInvariants(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 200, 1, 1, 1})
	f.Add([]byte{255, 255, 3, 7, 11, 0, 0, 0})
	f.Add([]byte{})
	lim := Limit{Requests: 7, Per: 3 * time.Second, Burst: 4}
	f.Fuzz(func(t *testing.T, gaps []byte) {
		l, clk := newTestLocal(t, Policies{Default: lim}, LocalOptions{})
		ctx := context.Background()
		start := clk.Now()
		admitted := 0
		var refusedUntil time.Time
		for len(gaps) >= 2 {
			gap := time.Duration(binary.LittleEndian.Uint16(gaps)) * time.Millisecond
			gaps = gaps[2:]
			clk.Advance(gap)
			now := clk.Now()
			r := l.Allow(ctx, "u", "")
			if r.Remaining < 0 || r.Remaining > lim.Burst || r.ResetAfter < 0 {
				t.Fatalf("%+v out of range", r)
			}
			if r.Allowed {
				if r.RetryAfter != 0 {
					t.Fatalf("admitted with RetryAfter %s", r.RetryAfter)
				}
				if now.Before(refusedUntil) {
					t.Fatalf("admitted at %s, before the RetryAfter given earlier (%s)", now.Sub(start), refusedUntil.Sub(start))
				}
				admitted++
			} else {
				if r.RetryAfter <= 0 || r.Remaining != 0 {
					t.Fatalf("refused with %+v", r)
				}
				refusedUntil = now.Add(r.RetryAfter).Add(-time.Microsecond)
			}
			// Never more than the burst plus what the elapsed time refills.
			if limit := float64(lim.Burst) + clk.Now().Sub(start).Seconds()*float64(lim.Requests)/lim.Per.Seconds(); float64(admitted) > limit+1e-9 {
				t.Fatalf("admitted %d by %s, more than %.3f", admitted, clk.Now().Sub(start), limit)
			}
		}
	})
}
