package audit

import (
	"runtime"
	"time"
)

// A sink's writer pauses once it has run yieldAfter since its last pause.
// A budget of time rather than a count of events keeps each run short on
// a slow machine and spares a fast one needless pauses: the log sink
// encodes an event in about a microsecond on a quiet core but took 11 µs
// on a loaded one (a runtime trace showed 2.9 ms per 256 events).
const (
	yieldAfter = 200 * time.Microsecond
	yieldPause = 20 * time.Microsecond
	// yieldCheckEvery steps the clock is read, not on every one.
	yieldCheckEvery = 8
)

// yielder paces one Write call of a sink. With GOMAXPROCS=1 (one core per
// proxy) a writer encoding thousands of events holds the only P for
// milliseconds, and requests whose sockets became readable meanwhile wait.
// A pause has two parts, because each alone hands the P straight back to
// the writer:
//   - Parking on a timer empties the run queue, so the scheduler polls the
//     network (it does so only when it runs out of runnable goroutines).
//     But the timer puts the writer in the P's "run next" slot, ahead of
//     every request goroutine already waiting: a runtime trace at half load
//     showed the writer running 1.8 ms of each 2.1 ms wait, a batch every
//     0.2 s.
//   - runtime.Gosched then moves the writer to the global run queue, which
//     the scheduler takes only after the local one: the waiting requests go
//     first.
//
// The pause delays only the audit write, which is asynchronous. It lasts
// longer than yieldPause when the process is idle (the runtime's network
// poll waits in whole milliseconds), which then costs nothing but the
// writer's time.
type yielder struct {
	since time.Time
	steps int
	sleep func(time.Duration) // pause; tests count the pauses
	now   func() time.Time
}

func newYielder() yielder {
	return yielder{since: time.Now(), sleep: pause, now: time.Now}
}

func pause(d time.Duration) {
	time.Sleep(d)
	runtime.Gosched()
}

// step is called after each unit of work (an event, a segment) and pauses
// when the budget is spent.
func (y *yielder) step() {
	y.steps++
	if y.steps%yieldCheckEvery != 0 {
		return
	}
	y.pauseIfDue()
}

// pauseIfDue checks the budget now, for work that comes in large units.
// A nil yielder never pauses (a migration, before any request).
func (y *yielder) pauseIfDue() {
	if y == nil || y.now().Sub(y.since) < yieldAfter {
		return
	}
	y.sleep(yieldPause)
	y.since = y.now()
}
