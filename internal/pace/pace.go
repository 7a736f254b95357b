// Package pace lets background work give the processor back to requests.
//
// keyproxy runs on one core (GOMAXPROCS=1 in the benchmarks and in many
// deployments): a goroutine that computes for milliseconds, encoding an
// audit batch or re-reading keys, holds the only P meanwhile, and every
// request whose socket became readable waits behind it. A Pacer, stepped
// through such work, pauses once it has run for Budget.
package pace

import (
	"runtime"
	"time"
)

const (
	// Budget is how long work runs between pauses. A budget of time
	// rather than of units keeps each run short on a slow machine and
	// spares a fast one needless pauses: the audit log sink encoded an
	// event in about a microsecond on a quiet core but took 11 µs on a
	// loaded one (a runtime trace showed 2.9 ms per 256 events).
	Budget = 200 * time.Microsecond
	// Pause is the length of a Pacer's pause.
	Pause = 20 * time.Microsecond
	// checkEvery is how many steps pass between readings of the clock:
	// a reading costs more than a small step.
	checkEvery = 8
)

// Yield pauses for d so that the goroutines already waiting run first.
// A pause needs two parts, because each alone hands the P straight back:
//   - Parking on a timer empties the run queue, so the scheduler polls the
//     network (it does so only when it runs out of runnable goroutines).
//     But the timer puts the sleeper in the P's "run next" slot, ahead of
//     every request goroutine already waiting: a runtime trace at half
//     load showed the audit writer running 1.8 ms of each 2.1 ms wait.
//   - runtime.Gosched then moves it to the global run queue, which the
//     scheduler takes only after the local one: the waiting requests go
//     first.
//
// A pause lasts longer than d when the process is idle (the runtime's
// network poll waits in whole milliseconds), which then costs nothing but
// the caller's time.
func Yield(d time.Duration) {
	time.Sleep(d)
	runtime.Gosched()
}

// Pacer paces one run of work. The zero value is not usable; a nil
// *Pacer never pauses (work done before any request is served).
type Pacer struct {
	since time.Time
	steps int
	now   func() time.Time
	sleep func(time.Duration)
}

// New starts a run now.
func New() Pacer { return WithClock(time.Now, Yield) }

// WithClock is New with the clock and the pause replaced, for tests that
// count pauses.
func WithClock(now func() time.Time, sleep func(time.Duration)) Pacer {
	return Pacer{since: now(), now: now, sleep: sleep}
}

// Step is called after each small unit of work (an event); it reads the
// clock every few steps and pauses when the budget is spent.
func (p *Pacer) Step() {
	if p == nil {
		return
	}
	p.steps++
	if p.steps%checkEvery != 0 {
		return
	}
	p.PauseIfDue()
}

// PauseIfDue checks the budget now, for work that comes in large units.
func (p *Pacer) PauseIfDue() {
	if p == nil || p.now().Sub(p.since) < Budget {
		return
	}
	p.sleep(Pause)
	p.since = p.now()
}

// Restart begins a new run: after the caller waited for work, the wait
// was not work.
func (p *Pacer) Restart() { p.since = p.now() }
