package audit

import (
	"testing"
	"time"
)

// fakeClock advances by step on every reading.
type fakeClock struct {
	t    time.Time
	step time.Duration
}

func (c *fakeClock) now() time.Time { c.t = c.t.Add(c.step); return c.t }

func TestYielderPausesOncePerBudget(t *testing.T) {
	tests := []struct {
		name       string
		perReading time.Duration // clock advance per reading: the work between checks
		steps      int
		want       int // pauses
	}{
		// A reading every 8 steps; each reading finds 10 µs more: the
		// budget of 200 µs is spent every 20 checks (160 steps).
		{"fast work pauses rarely", 10 * time.Microsecond, 1600, 10},
		// Each reading finds the budget spent: a pause at every check.
		{"slow work pauses at every check", yieldAfter, 80, 10},
		{"fewer steps than a check never pause", yieldAfter, yieldCheckEvery - 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &fakeClock{t: time.Unix(0, 0), step: tt.perReading}
			pauses := 0
			y := yielder{since: clock.t, now: clock.now, sleep: func(d time.Duration) {
				if d != yieldPause {
					t.Errorf("paused %s, want %s", d, yieldPause)
				}
				pauses++
			}}
			for range tt.steps {
				y.step()
			}
			if pauses != tt.want {
				t.Errorf("%d pauses, want %d", pauses, tt.want)
			}
		})
	}
}
