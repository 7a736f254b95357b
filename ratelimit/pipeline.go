package ratelimit

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultMaxBatch caps how many decisions share one Redis round trip.
const DefaultMaxBatch = 128

// errBatcherClosed sends a caller to the unbatched path once Close ran.
var errBatcherClosed = errors.New("ratelimit: redis batcher closed")

// batcher coalesces the script calls that wait at the same moment into one
// pipeline. A round trip costs the proxy a write, a netpoll park and a read
// whatever it carries, so under load most of that cost is shared; at low
// load a lone call is sent at once, as it would be without batching.
//
// One dispatcher goroutine sends one pipeline at a time: the calls that
// arrive while it is in flight make up the next one. Several in flight
// would split the callers into smaller batches, and each batch costs the
// same syscalls whatever its size.
type batcher struct {
	rdb rediser
	sha string
	max int

	mu      sync.Mutex
	queue   []*request
	started bool // the dispatcher starts with the first call, so an unused limiter owns no goroutine
	idle    bool // the dispatcher waits on wake: the next call must signal it
	closed  bool
	wake    chan struct{} // one signal per idle spell, so never full
	done    chan struct{} // closed when the dispatcher returns

	free sync.Pool // *request

	// The dispatcher's own, reused from batch to batch.
	pipe  redis.Pipeliner
	batch []*request
	cmds  []*redis.Cmd

	// Counted for tests and benchmarks.
	pipelines, sent atomic.Int64
}

// A request goes from queued to either sent (by the dispatcher) or
// abandoned (by its caller, when the deadline passed first), never both.
const (
	reqQueued uint32 = iota
	reqSent
	reqAbandoned
)

// request is one decision's trip through the batcher. The caller owns it
// again once it has received from ready; a caller that gives up leaves it
// to the garbage collector, so a late answer never lands in a reused one.
type request struct {
	keys     [1]string
	args     []any
	deadline time.Time
	state    atomic.Uint32
	ready    chan struct{} // capacity 1: the dispatcher never blocks on a caller
	timer    *time.Timer
	reply    any
	err      error
}

func newBatcher(rdb rediser, sha string, maxBatch int) *batcher {
	return &batcher{
		rdb:  rdb,
		sha:  sha,
		max:  maxBatch,
		wake: make(chan struct{}, 1),
		done: make(chan struct{}),
	}
}

// do runs the script on key with args in the next pipeline and waits for
// its reply until timeout. It returns errBatcherClosed, having sent
// nothing, once the batcher is closed.
func (b *batcher) do(key string, args []any, timeout time.Duration) (any, error) {
	req, _ := b.free.Get().(*request)
	if req == nil {
		req = &request{ready: make(chan struct{}, 1)}
	}
	req.keys[0], req.args = key, args
	req.deadline = time.Now().Add(timeout)
	req.state.Store(reqQueued)
	if !b.enqueue(req) {
		b.recycle(req)
		return nil, errBatcherClosed
	}
	if req.timer == nil {
		req.timer = time.NewTimer(timeout)
	} else {
		req.timer.Reset(timeout)
	}
	select {
	case <-req.ready:
		req.timer.Stop()
	case <-req.timer.C:
		// Not yet sent: withdraw it, so Redis does not spend budget on a
		// request the fallback has decided.
		if req.state.CompareAndSwap(reqQueued, reqAbandoned) {
			return nil, context.DeadlineExceeded
		}
		select {
		case <-req.ready: // the reply raced the timer; it is still good
		default:
			return nil, context.DeadlineExceeded
		}
	}
	reply, err := req.reply, req.err
	b.recycle(req)
	return reply, err
}

func (b *batcher) recycle(req *request) {
	req.keys[0], req.args, req.reply, req.err = "", nil, nil, nil
	b.free.Put(req)
}

func (b *batcher) enqueue(req *request) bool {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return false
	}
	b.queue = append(b.queue, req)
	if !b.started {
		b.started = true
		b.pipe = b.rdb.Pipeline()
		go b.dispatch()
	}
	wake := b.idle
	b.idle = false
	b.mu.Unlock()
	if wake {
		b.wake <- struct{}{}
	}
	return true
}

// close lets the dispatcher send what is queued and waits for it to
// return. Safe to call more than once, and concurrently.
func (b *batcher) close() {
	b.mu.Lock()
	b.closed = true
	started, wake := b.started, b.idle
	b.idle = false
	b.mu.Unlock()
	if wake {
		b.wake <- struct{}{}
	}
	if started {
		<-b.done
	}
}

func (b *batcher) dispatch() {
	defer close(b.done)
	for b.await() {
		// Let the goroutines that are already runnable go first: under
		// load many of them are about to call Allow (the callers the last
		// batch answered, or handlers of new requests), and they join this
		// batch instead of waiting a round trip for the next. Without it,
		// the woken dispatcher runs first and batches settle into groups
		// that alternate (two round trips for 64 callers, not one). With
		// nothing else runnable it returns at once: no waiting for a batch
		// to fill.
		runtime.Gosched()
		b.mu.Lock()
		n := min(len(b.queue), b.max)
		b.batch = append(b.batch[:0], b.queue[:n]...)
		rest := copy(b.queue, b.queue[n:])
		clear(b.queue[rest:])
		b.queue = b.queue[:rest]
		b.mu.Unlock()
		b.send()
	}
}

// await waits until a call is queued, and reports false once the batcher
// is closed and nothing is left to send.
func (b *batcher) await() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for len(b.queue) == 0 {
		if b.closed {
			return false
		}
		b.idle = true
		b.mu.Unlock()
		<-b.wake
		b.mu.Lock()
	}
	return true
}

// send runs one batch as a pipeline and answers its callers.
func (b *batcher) send() {
	live := b.batch[:0]
	var deadline time.Time
	for _, req := range b.batch {
		if req.state.CompareAndSwap(reqQueued, reqSent) {
			live = append(live, req)
			if req.deadline.After(deadline) {
				deadline = req.deadline
			}
		}
	}
	defer clear(b.batch)
	if len(live) == 0 {
		return
	}
	b.pipelines.Add(1)
	b.sent.Add(int64(len(live)))
	// The latest caller's deadline: no one waits for the reply longer,
	// and the callers whose deadline comes first stop waiting on their own.
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	cmds := b.cmds[:0]
	for _, req := range live {
		cmds = append(cmds, b.pipe.EvalSha(ctx, b.sha, req.keys[:], req.args...))
	}
	b.cmds = cmds
	defer clear(cmds)
	// Exec's error is the first command's; each command carries its own.
	_, _ = b.pipe.Exec(ctx)
	// A flushed or restarted Redis answers NOSCRIPT to every command of a
	// node, and runs none of them: EVAL sends the source, caches it again,
	// and reaches whichever node owns each key, as redis.Script.Run does.
	retry := false
	for i, cmd := range cmds {
		if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			cmds[i] = b.pipe.Eval(ctx, gcraScript, live[i].keys[:], live[i].args...)
			retry = true
		}
	}
	if retry {
		_, _ = b.pipe.Exec(ctx)
	}
	for i, req := range live {
		req.reply, req.err = cmds[i].Result()
		// The caller may recycle req at once: nothing touches it after this.
		req.ready <- struct{}{}
	}
}
