package audit

import "time"

// yieldEvery events, a sink writing a large batch lets requests run: a
// runtime trace showed the log sink taking 2.9 ms for 256 events on a slow
// machine, so 32 keeps each run near a third of a millisecond.
const yieldEvery = 32

// yield pauses a sink's writer briefly between chunks of a batch. With
// GOMAXPROCS=1 (one core per proxy) a writer encoding thousands of events
// holds the only P for milliseconds, and requests whose sockets became
// readable meanwhile wait: the scheduler polls the network only when it
// runs out of runnable goroutines, so runtime.Gosched would hand the P
// straight back to the writer. Parking on a timer empties the run queue,
// the scheduler polls, and the waiting requests go first. The pause
// delays only the audit write, which is asynchronous.
func yield() { time.Sleep(20 * time.Microsecond) }
