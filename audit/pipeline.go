package audit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Sink is where batches of events end up. The Pipeline calls Write from one
// goroutine per sink; a sink used as Options.Spill is called concurrently.
// Write must not keep or modify the batch after it returns, and must return
// promptly once ctx is done. A failed batch may be written again, so
// delivery is at least once: consumers dedupe by Event.ID.
type Sink interface {
	Name() string
	Write(ctx context.Context, batch []Event) error
}

// Options tune a Pipeline. Zero values mean the defaults.
type Options struct {
	// QueueSize bounds the events waiting for the batcher, in whole
	// batches (default 65536). Each sink also holds up to QueueSize events
	// in its own backlog, so that a slow sink does not hold back the others.
	QueueSize int
	// BatchSize is the most events handed to a sink at once (default 512).
	BatchSize int
	// FlushInterval is how often a partial batch is handed over (default
	// 200ms): the longest an event waits for its batch to fill.
	FlushInterval time.Duration
	// MaxWait bounds the back-pressure: how long the Record that completes
	// a batch blocks when the queue is full, and how long the batcher waits
	// on a full sink backlog, before the batch is spilled (default 100ms;
	// negative: spill at once).
	MaxWait time.Duration
	// SinkTimeout bounds one write attempt (default 5s).
	SinkTimeout time.Duration
	// Retries is how many times a failed batch is tried again before it
	// is spilled (default 2; negative: none). A sink whose last batch
	// failed gets one attempt per batch until it succeeds again, so an
	// outage spills quickly instead of queueing behind retries.
	Retries int
	// RetryBackoff is the wait before the first retry, doubled for each
	// further one (default 100ms).
	RetryBackoff time.Duration
	// Spill receives every event a sink could not take, with the reason
	// counted in keyproxy_audit_spilled_total. It must be safe for
	// concurrent use. Default: a LogSink on Logger; with neither, such
	// events are dropped (and counted, and logged).
	Spill Sink
	// Logger reports spills, drops and sink recoveries. Default: none.
	Logger *zap.Logger
	// Registerer publishes the metrics; nil does not register them.
	Registerer prometheus.Registerer
	// Now stamps events without a time (default time.Now).
	Now func() time.Time
	// NewID names events without an id (default NewEventID(time)).
	NewID func() string
}

// Pipeline records audit events asynchronously: Record adds the event to
// the batch being filled, full batches wait on a bounded queue, one
// goroutine hands them (and, every FlushInterval, the partial one) to one
// writer per sink. Nothing is dropped silently: an event that cannot
// reach a sink goes to the spill sink, and every such event is counted.
type Pipeline struct {
	o       Options
	spill   Sink
	log     *zap.Logger
	now     func() time.Time
	newID   func(time.Time) string
	m       *metrics
	writers []*writer
	// spillWriter is the writer whose sink is also the spill sink (with
	// keyproxy's audit.file and the log sink, both write the same file),
	// or nil.
	spillWriter *writer
	turn        turn // one sink write at a time (turn.go)

	// mu guards the batch Records are filling and the closed flag. A
	// Record copies its event in under the lock; the one that fills the
	// batch hands it to the queue outside the lock. A mutex and a slice
	// rather than a channel of events: the batcher then moves whole
	// batches, so it never becomes the bottleneck of the request path.
	mu     sync.Mutex
	closed bool
	cur    *batch
	// handing counts Records handing a full batch to the queue, so that
	// Close can wait for them before the final drain.
	handing sync.WaitGroup
	// queue is the bounded queue: full batches waiting for the batcher.
	queue chan *batch

	stop      chan struct{} // closed by Close: drain and exit
	done      chan struct{} // closed when every event has been handled
	closeOnce sync.Once
	root      context.Context // cancelled when Close's context ends
	abort     context.CancelFunc

	// free holds released batches for reuse. A sync.Pool drops what it
	// holds at the second collection, and batches turn over about as
	// slowly as the collector runs: at half the benchmark's peak two
	// batches a second were allocated anew (keyproxy's held 4096 events
	// then, 1.1 MiB), 3.7% of all the bytes keyproxy allocated. A few idle
	// batches, their events cleared, cost the collector less than that,
	// as long as batches are small: it scans their whole arrays.
	free chan *batch

	shutdownSpilled, shutdownDropped atomic.Int64
	spillLog, dropLog                logLimiter
}

// NewPipeline starts a pipeline writing to sinks. Close it to drain.
func NewPipeline(o Options, sinks ...Sink) (*Pipeline, error) {
	if len(sinks) == 0 {
		return nil, errors.New("audit: a pipeline needs at least one sink")
	}
	o = o.withDefaults()
	p := &Pipeline{
		o:     o,
		spill: o.Spill,
		log:   o.Logger,
		now:   o.Now,
		newID: NewEventID,
		m:     newMetrics(),
		queue: make(chan *batch, max(1, o.QueueSize/o.BatchSize)),
		free:  make(chan *batch, freeBatches),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
		turn:  newTurn(),
	}
	p.cur = p.newBatch()
	if p.log == nil {
		p.log = zap.NewNop()
	} else if p.spill == nil {
		p.spill = NewLogSink(p.log)
	}
	if o.NewID != nil {
		p.newID = func(time.Time) string { return o.NewID() }
	}
	names := make(map[string]bool, len(sinks))
	for _, s := range sinks {
		if s == nil {
			return nil, errors.New("audit: nil sink")
		}
		name := s.Name()
		if name == "" || names[name] {
			return nil, fmt.Errorf("audit: sink names must be set and distinct, got %q twice or empty", name)
		}
		names[name] = true
		w := &writer{
			p:       p,
			sink:    s,
			name:    name,
			m:       p.m.forSink(name),
			batches: make(chan *batch, max(1, o.QueueSize/o.BatchSize)),
		}
		if sameSink(s, p.spill) {
			p.spillWriter = w
		}
		p.writers = append(p.writers, w)
	}
	queueLength := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "keyproxy_audit_queue_length",
		Help: "Audit events recorded and not yet handed to the sinks' writers.",
	}, p.queueLength)
	if err := p.m.register(o.Registerer, queueLength); err != nil {
		return nil, err
	}
	p.root, p.abort = context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, w := range p.writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run()
		}()
	}
	go func() {
		p.batchLoop()
		wg.Wait()
		p.abort()
		close(p.done)
	}()
	return p, nil
}

func (o Options) withDefaults() Options {
	if o.QueueSize <= 0 {
		o.QueueSize = 65536
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 512
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = 200 * time.Millisecond
	}
	if o.MaxWait == 0 {
		o.MaxWait = 100 * time.Millisecond
	}
	if o.SinkTimeout <= 0 {
		o.SinkTimeout = 5 * time.Second
	}
	switch {
	case o.Retries == 0:
		o.Retries = 2
	case o.Retries < 0:
		o.Retries = 0
	}
	if o.RetryBackoff <= 0 {
		o.RetryBackoff = 100 * time.Millisecond
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Record queues e for every sink. It fills ID and Time when empty, and
// normalises the event (see prepare). It returns at once unless the queue
// is full; then the Record that completes a batch waits up to MaxWait for
// room, and the batch is spilled rather than lost.
func (p *Pipeline) Record(e Event) {
	p.prepare(&e)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.spillRecord(e, ReasonClosed)
		return
	}
	b := p.cur
	b.events = append(b.events, e)
	if len(b.events) < p.o.BatchSize {
		p.mu.Unlock()
		return
	}
	p.cur = p.newBatch()
	p.handing.Add(1)
	p.mu.Unlock()
	p.enqueue(b)
	p.handing.Done()
}

// enqueue puts a full batch on the queue. Waiting for room is the
// back-pressure: the caller slows down by at most MaxWait.
func (p *Pipeline) enqueue(b *batch) {
	select {
	case p.queue <- b:
		return
	default:
	}
	if p.o.MaxWait >= 0 {
		t := time.NewTimer(p.o.MaxWait)
		select {
		case p.queue <- b:
			t.Stop()
			return
		case <-t.C:
		}
	}
	p.spillEvents(b.events, ReasonQueueFull, nil, p.writers...)
	p.recycle(b)
}

// takePartial detaches the batch being filled, if it holds anything.
func (p *Pipeline) takePartial() *batch {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.cur.events) == 0 {
		return nil
	}
	b := p.cur
	p.cur = p.newBatch()
	return b
}

func (p *Pipeline) queueLength() float64 {
	p.mu.Lock()
	n := len(p.cur.events)
	p.mu.Unlock()
	return float64(n + len(p.queue)*p.o.BatchSize)
}

// spillRecord handles an event that never entered the queue: it missed
// every sink.
func (p *Pipeline) spillRecord(e Event, reason string) {
	p.spillEvents([]Event{e}, reason, nil, p.writers...)
}

// Close stops accepting events (later Records are spilled) and drains the
// queue and every sink backlog into the sinks. If ctx ends first, the
// writes in flight are cancelled and what remains is spilled; the error
// then says how many events were spilled or dropped. Close the sinks after
// the pipeline.
func (p *Pipeline) Close(ctx context.Context) error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		// Records that filled a batch are handing it over (for at most
		// MaxWait, while the batcher keeps draining); after them nothing
		// can enter the queue, so the final drain is complete.
		p.handing.Wait()
		close(p.stop)
	})
	select {
	case <-p.done:
		return p.shutdownErr(nil)
	case <-ctx.Done():
		p.abort()
		<-p.done
		return p.shutdownErr(ctx.Err())
	}
}

func (p *Pipeline) shutdownErr(cause error) error {
	spilled, dropped := p.shutdownSpilled.Load(), p.shutdownDropped.Load()
	if spilled == 0 && dropped == 0 {
		return nil
	}
	if cause == nil {
		cause = context.Canceled
	}
	return fmt.Errorf("audit: close ended before the sinks caught up: %d event writes spilled, %d dropped: %w", spilled, dropped, cause)
}

// batch is shared read-only by every sink's writer; the last to release it
// returns it to the pool.
type batch struct {
	events []Event
	refs   atomic.Int32
}

// freeBatches is how many released batches a pipeline keeps: the one
// being filled, one per sink being written and one spare.
const freeBatches = 4

func (p *Pipeline) newBatch() *batch {
	select {
	case b := <-p.free:
		return b
	default:
		return &batch{events: make([]Event, 0, p.o.BatchSize)}
	}
}

func (p *Pipeline) release(b *batch) {
	if b.refs.Add(-1) == 0 {
		p.recycle(b)
	}
}

func (p *Pipeline) recycle(b *batch) {
	clear(b.events) // let the strings go
	b.events = b.events[:0]
	select {
	case p.free <- b:
	default:
	}
}

// batchLoop hands full batches to the writers as they come, and the
// partial one every FlushInterval. On stop it drains the queue, hands over
// the rest and closes the writers' backlogs.
func (p *Pipeline) batchLoop() {
	defer func() {
		for _, w := range p.writers {
			close(w.batches)
		}
	}()
	tick := time.NewTicker(p.o.FlushInterval)
	defer tick.Stop()
	for {
		select {
		case b := <-p.queue:
			p.hand(b, false)
		case <-tick.C:
			if b := p.takePartial(); b != nil {
				p.hand(b, false)
			}
		case <-p.stop:
			for {
				select {
				case b := <-p.queue:
					p.hand(b, true)
				default:
					if b := p.takePartial(); b != nil {
						p.hand(b, true)
					}
					return
				}
			}
		}
	}
}

// hand gives b to every writer.
func (p *Pipeline) hand(b *batch, draining bool) {
	b.refs.Store(int32(len(p.writers)))
	for _, w := range p.writers {
		w.enqueue(b, draining)
	}
}
