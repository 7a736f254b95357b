package pace

import (
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock advances by step on every reading.
type fakeClock struct {
	t    time.Time
	step time.Duration
}

func (c *fakeClock) now() time.Time { c.t = c.t.Add(c.step); return c.t }

func TestPacerPausesOncePerBudget(t *testing.T) {
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
		{"slow work pauses at every check", Budget, 80, 10},
		{"fewer steps than a check never pause", Budget, checkEvery - 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &fakeClock{t: time.Unix(0, 0), step: tt.perReading}
			pauses := 0
			y := WithClock(clock.now, func(d time.Duration) {
				if d != Pause {
					t.Errorf("paused %s, want %s", d, Pause)
				}
				pauses++
			})
			for range tt.steps {
				y.Step()
			}
			if pauses != tt.want {
				t.Errorf("%d pauses, want %d", pauses, tt.want)
			}
		})
	}
}

// With one P, a pausing writer must let the goroutines already waiting run
// before it resumes. A timer alone would not: it wakes the writer into the
// P's run-next slot, ahead of all of them. The scheduler takes the global
// queue (where Gosched puts the writer) at least every 61st time, so the
// median over trials is compared, not one trial.
func TestPauseLetsWaitingGoroutinesRunFirst(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	const trials, waiting = 21, 40
	done := make([]int, trials)
	for i := range done {
		var finished atomic.Int32
		var wg sync.WaitGroup
		for range waiting {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for end := time.Now().Add(50 * time.Microsecond); time.Now().Before(end); {
				}
				finished.Add(1)
			}()
		}
		Yield(Pause)
		done[i] = int(finished.Load())
		wg.Wait()
	}
	slices.Sort(done)
	if m := done[trials/2]; m < 5 {
		t.Errorf("after a pause, a median of %d of %d waiting goroutines had run (all trials: %v), want most", m, waiting, done)
	}
}
