package keystore

import (
	"sync/atomic"
)

// readerIdleMax is how many idle readers a Resolver keeps: more than the
// SQLite store's 8 connections, so a burst of misses that the pool can
// serve at once finds warm stacks waiting.
const readerIdleMax = 16

// readers runs cache-miss store reads on long-lived goroutines. A read
// through modernc's SQLite runs deep, large frames (the VDBE interpreter);
// on a goroutine started for the miss (singleflight.DoChan's) the stack
// starts small and is copied at each doubling: runtime.newstack was 16% of
// the CPU of a miss with 1 k keys (BenchmarkResolveMiss profile, collector
// on). A reader's stack grows once and stays grown while misses keep it
// busy; the collector halves the stack of a goroutine using under a
// quarter of it, so an idle reader's stack shrinks back and costs little.
//
// A reader that finishes a job waits for the next unless readerIdleMax
// already wait; a job that finds none waiting starts a reader. So a burst
// of misses is never queued behind a fixed pool, and the readers left
// after it are bounded.
type readers struct {
	jobs chan readJob // unbuffered: a send succeeds only into a waiting reader
	idle atomic.Int32
	stop chan struct{} // closed by Resolver.Close: readers exit after their job
}

type readJob struct {
	read func() (any, error)
	done chan<- readResult
}

type readResult struct {
	v   any
	err error
}

func newReaders() *readers {
	return &readers{jobs: make(chan readJob), stop: make(chan struct{})}
}

// do runs read on a reader and waits for it. The caller (DoChan's
// goroutine) only waits, so its own stack stays small.
func (p *readers) do(read func() (any, error)) (any, error) {
	done := make(chan readResult, 1)
	j := readJob{read: read, done: done}
	select {
	case p.jobs <- j:
	default:
		go p.run(j)
	}
	res := <-done
	return res.v, res.err
}

func (p *readers) run(j readJob) {
	for {
		v, err := j.read()
		j.done <- readResult{v, err}
		if p.idle.Add(1) > readerIdleMax {
			p.idle.Add(-1)
			return
		}
		select {
		case j = <-p.jobs:
			p.idle.Add(-1)
		case <-p.stop:
			p.idle.Add(-1)
			return
		}
	}
}

// close makes idle readers exit at once and busy ones after their job.
func (p *readers) close() { close(p.stop) }
