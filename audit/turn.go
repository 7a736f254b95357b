package audit

import (
	"context"
	"time"
)

// turnWait bounds how long a sink's writer waits for another's write to
// end before writing anyway. It is long next to a healthy batch (a few
// milliseconds, pauses included) and short next to a stalled one, so a
// slow sink still delays the others by at most this much per batch.
const turnWait = 50 * time.Millisecond

// turn lets the sinks' writers write one at a time. Every writer gets the
// same batch at the same moment; each paces itself, pausing every 200 µs
// so requests on the same core go first, but two writers pausing in turn
// left no gap between their runs. At half load on one core the defaults'
// two sinks (log and store) added 0.4-0.5 ms more at p99 writing at once
// than one after the other (README, Performance).
type turn chan struct{}

func newTurn() turn { return make(turn, 1) }

// take waits up to turnWait for the turn, or until ctx ends. It reports
// whether the caller holds the turn and must give it back.
func (t turn) take(ctx context.Context) bool {
	select {
	case t <- struct{}{}:
		return true
	default:
	}
	timer := time.NewTimer(turnWait)
	defer timer.Stop()
	select {
	case t <- struct{}{}:
		return true
	case <-timer.C:
	case <-ctx.Done():
	}
	return false
}

func (t turn) give() { <-t }
