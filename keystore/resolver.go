package keystore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/wevion/keyproxy/internal/pace"
	"golang.org/x/sync/singleflight"
)

// Backend is what the resolver reads through (a Store, or later a Redis
// cache layer in front of a Store).
type Backend interface {
	Resolve(ctx context.Context, h Hash) (Identity, error)
}

// ResolverOptions configure a Resolver; zero values take the defaults.
type ResolverOptions struct {
	// TTL bounds how long a cached identity is served without a fresh read:
	// the longest a revocation can go unseen by a replica that missed its
	// invalidation. Default 10s.
	TTL time.Duration
	// NegativeTTL is how long an unknown hash is remembered. Default 2s.
	NegativeTTL time.Duration
	// MaxEntries bounds the identities cached. Default 1<<20. Unknown hashes
	// get their own cache of a sixteenth of that (at least 1024), so a flood
	// of made-up keys cannot push out real ones.
	MaxEntries int
	// LoadTimeout bounds one backend read, which runs detached from the
	// first caller's context so that caller leaving does not fail the
	// others waiting on the same read. Default 5s.
	LoadTimeout time.Duration
	// Registerer receives the cache metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Now replaces the clock, for tests. Nil is the real clock.
	Now func() time.Time
}

// genStripes generation counters, one per slice of the hash space: an
// invalidation only disturbs fills of hashes in its own stripe.
const genStripes = 4096

// maxFillReads bounds the backend reads of one fill that keeps racing
// invalidations; past it the resolver fails closed.
const maxFillReads = 3

const (
	coarseResolution = 5 * time.Millisecond
	coarseMargin     = 100 * time.Millisecond
	coarseMinTTL     = time.Second
)

// entry is a cached identity and the generation of its stripe when the
// backend read began. A reader serves it only while the generation is
// unchanged, so a fill that raced an invalidation is never served.
type entry struct {
	id  Identity
	gen uint64
	// refreshAt (clock nanoseconds): a hit past it also starts a re-read in
	// the background, so a key in use is read again before it expires
	// rather than by a request waiting on the store.
	refreshAt int64
}

// fillResult travels through singleflight to every waiter.
type fillResult struct {
	id  Identity
	gen uint64
}

// Resolver is the in-process cache of key identities in front of a Backend.
// It is safe for concurrent use.
type Resolver struct {
	backend     Backend
	pos         *otter.Cache[Hash, entry]
	neg         *otter.Cache[Hash, uint64]
	gens        [genStripes]atomic.Uint64
	flight      singleflight.Group
	readers     *readers
	coarse      *otter.CoarseClock // nil with an injected or precise clock
	clock       otter.Clock
	ttl         time.Duration
	loadTimeout time.Duration

	// Background re-reads (refresh ahead), done one at a time by one
	// goroutine: keys first read together come due together, and a
	// thousand concurrent store reads would compete with requests.
	refreshMu  sync.Mutex
	refreshing map[Hash]struct{} // queued or being read
	refreshQ   chan refreshJob
	stopQ      chan struct{}
	refreshWG  sync.WaitGroup
	closeOnce  sync.Once

	hits, negativeHits, misses prometheus.Counter
}

// NewResolver builds the cache. It fails only if the metrics cannot be
// registered (for example twice on one registry).
func NewResolver(b Backend, o ResolverOptions) (*Resolver, error) {
	return newResolver(b, o, pace.New)
}

// newResolver is NewResolver with the refresh loop's pacer given.
func newResolver(b Backend, o ResolverOptions, newPacer func() pace.Pacer) (*Resolver, error) {
	if b == nil {
		return nil, errors.New("keystore: resolver needs a backend")
	}
	if o.TTL <= 0 {
		o.TTL = 10 * time.Second
	}
	if o.NegativeTTL <= 0 {
		o.NegativeTTL = 2 * time.Second
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = 1 << 20
	}
	if o.LoadTimeout <= 0 {
		o.LoadTimeout = 5 * time.Second
	}
	// Reading the precise time is a quarter of a cache hit; a coarse clock
	// costs a variable read but lags by its resolution (more if its
	// goroutine is starved), so the TTL is shortened by a margin that keeps
	// "never served past TTL" true. Short TTLs keep the precise clock.
	var (
		clock  otter.Clock // nil: otter's own
		coarse *otter.CoarseClock
		ttl    = o.TTL
	)
	switch {
	case o.Now != nil:
		clock = funcClock(o.Now)
	case o.TTL >= coarseMinTTL:
		coarse = otter.NewCoarseClock(coarseResolution)
		clock = coarse
		ttl -= coarseMargin
	}
	pos, err := otter.New(&otter.Options[Hash, entry]{
		MaximumSize:      o.MaxEntries,
		ExpiryCalculator: otter.ExpiryWriting[Hash, entry](ttl),
		Clock:            clock,
	})
	if err != nil {
		stopClock(coarse)
		return nil, fmt.Errorf("keystore: resolver cache: %w", err)
	}
	neg, err := otter.New(&otter.Options[Hash, uint64]{
		MaximumSize:      max(o.MaxEntries/16, 1024),
		ExpiryCalculator: otter.ExpiryWriting[Hash, uint64](o.NegativeTTL),
		Clock:            clock,
	})
	if err != nil {
		pos.StopAllGoroutines()
		stopClock(coarse)
		return nil, fmt.Errorf("keystore: resolver negative cache: %w", err)
	}
	r := &Resolver{backend: b, pos: pos, neg: neg, coarse: coarse, clock: clock, ttl: ttl,
		loadTimeout: o.LoadTimeout, refreshing: make(map[Hash]struct{}),
		refreshQ: make(chan refreshJob, refreshQueue), stopQ: make(chan struct{}), readers: newReaders()}
	if clock == nil {
		r.clock = preciseClock{}
	}
	r.refreshWG.Add(1)
	go r.refreshLoop(newPacer())
	if err := r.initMetrics(o.Registerer); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// Resolve returns the identity of a key hash: ErrNotFound for unknown
// hashes; any other backend failure wraps ErrUnavailable and is never
// cached, so the caller fails closed.
func (r *Resolver) Resolve(ctx context.Context, h Hash) (Identity, error) {
	gen := &r.gens[stripe(h)]
	if e, ok := r.pos.GetIfPresent(h); ok && e.gen == gen.Load() {
		r.hits.Inc()
		if r.clock.NowNano() >= e.refreshAt {
			r.refresh(h, gen)
		}
		return e.id, nil
	}
	if g, ok := r.neg.GetIfPresent(h); ok && g == gen.Load() {
		r.negativeHits.Inc()
		return Identity{}, ErrNotFound
	}
	r.misses.Inc()
	return r.fill(ctx, h, gen)
}

// Cached returns the identity of h if this replica holds it now, without
// any I/O. The data plane uses it to keep serving known keys to an address
// that a flood of unknown keys got throttled (a NAT or load balancer shared
// with the flooder).
func (r *Resolver) Cached(h Hash) (Identity, bool) {
	if e, ok := r.pos.GetIfPresent(h); ok && e.gen == r.gens[stripe(h)].Load() {
		r.hits.Inc()
		return e.id, true
	}
	return Identity{}, false
}

// fill reads through the backend, one read per hash however many callers
// miss at once. A waiter accepts the shared result only if no invalidation
// of the stripe happened since that read began: a caller that arrived after
// an invalidation may have joined a read that started before it.
func (r *Resolver) fill(ctx context.Context, h Hash, gen *atomic.Uint64) (Identity, error) {
	key := string(h[:])
	for range maxFillReads {
		ch := r.flight.DoChan(key, func() (any, error) {
			return r.readers.do(func() (any, error) {
				lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.loadTimeout)
				defer cancel()
				return r.load(lctx, h, gen)
			})
		})
		var res singleflight.Result
		select {
		case res = <-ch:
		case <-ctx.Done():
			return Identity{}, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
		}
		if res.Err != nil {
			return Identity{}, res.Err
		}
		fr := res.Val.(fillResult)
		if fr.gen == gen.Load() {
			return fr.id, nil
		}
	}
	return Identity{}, fmt.Errorf("%w: key invalidated during every read", ErrUnavailable)
}

// load reads the backend and caches what it read, tagged with the stripe's
// generation from before the read. It reads again if an invalidation ran
// meanwhile, so the waiters usually get a result they can accept.
func (r *Resolver) load(ctx context.Context, h Hash, gen *atomic.Uint64) (any, error) {
	// A caller that missed just as the previous fill ended starts a new
	// flight; the entry that fill stored saves it a read.
	if e, ok := r.pos.GetIfPresent(h); ok && e.gen == gen.Load() {
		return fillResult{id: e.id, gen: e.gen}, nil
	}
	if g, ok := r.neg.GetIfPresent(h); ok && g == gen.Load() {
		return nil, ErrNotFound
	}
	var last fillResult
	for range maxFillReads {
		g := gen.Load()
		id, err := r.backend.Resolve(ctx, h)
		switch {
		case errors.Is(err, ErrNotFound):
			r.neg.Set(h, g)
			return nil, ErrNotFound
		case errors.Is(err, ErrUnavailable):
			return nil, err
		case err != nil:
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		r.pos.Set(h, r.newEntry(id, g))
		last = fillResult{id: id, gen: g}
		if gen.Load() == g {
			break
		}
	}
	return last, nil
}

// newEntry sets the entry's refresh point between 70% and 85% of the TTL,
// spread so that keys first read together (after a start or a flush) are
// not all read again in the same instant; the rest of the TTL leaves the
// re-read time to finish before the entry expires.
func (r *Resolver) newEntry(id Identity, gen uint64) entry {
	after := int64(r.ttl)*7/10 + rand.Int64N(int64(r.ttl)*15/100+1)
	return entry{id: id, gen: gen, refreshAt: r.clock.NowNano() + after}
}

// refreshQueue bounds the re-reads waiting; past it a due entry waits for
// a later hit, or expires and is read by a request as without refresh.
const refreshQueue = 4096

type refreshJob struct {
	h   Hash
	gen *atomic.Uint64
}

// refresh queues a background re-read of h unless one is queued or running.
func (r *Resolver) refresh(h Hash, gen *atomic.Uint64) {
	r.refreshMu.Lock()
	defer r.refreshMu.Unlock()
	if _, busy := r.refreshing[h]; busy {
		return
	}
	select {
	case r.refreshQ <- refreshJob{h, gen}:
		r.refreshing[h] = struct{}{}
	default:
	}
}

// refreshLoop re-reads queued keys one after another, pacing itself: keys
// filled together come due together, and a runtime trace at half load
// (GOMAXPROCS=1, 1000 keys) showed the loop holding the only P for 2.5 ms
// through such a backlog, every request arriving meanwhile waiting behind
// it. A re-read is not urgent: it runs ahead of the entry's expiry.
func (r *Resolver) refreshLoop(p pace.Pacer) {
	defer r.refreshWG.Done()
	for {
		var j refreshJob
		select {
		case <-r.stopQ:
			return
		case j = <-r.refreshQ:
		default:
			select {
			case <-r.stopQ:
				return
			case j = <-r.refreshQ:
			}
			p.Restart() // the wait was not work
		}
		r.reread(j.h, j.gen)
		r.refreshMu.Lock()
		delete(r.refreshing, j.h)
		r.refreshMu.Unlock()
		p.PauseIfDue()
	}
}

func (r *Resolver) reread(h Hash, gen *atomic.Uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), r.loadTimeout)
	defer cancel()
	// Tagged with the generation from before the read, like a fill: if an
	// invalidation runs meanwhile, what this stores is never served.
	g := gen.Load()
	id, err := r.backend.Resolve(ctx, h)
	switch {
	case err == nil:
		r.pos.Set(h, r.newEntry(id, g))
	case errors.Is(err, ErrNotFound): // gone from the store: stop serving it now
		r.pos.Invalidate(h)
		r.neg.Set(h, g)
	}
	// Any other error leaves the entry to expire at its TTL, after which a
	// request reads the store itself and fails closed.
}

// Invalidate evicts hashes now. Once it returns, no Resolve that starts
// later serves what was cached or being filled for them.
func (r *Resolver) Invalidate(hashes ...Hash) {
	for _, h := range hashes {
		// Bump before deleting: a fill storing after the delete then
		// carries an old generation and is never served.
		r.gens[stripe(h)].Add(1)
		r.pos.Invalidate(h)
		r.neg.Invalidate(h)
	}
}

// Flush drops everything, for when invalidations may have been missed (a
// pub/sub subscription reconnected).
func (r *Resolver) Flush() {
	for i := range r.gens {
		r.gens[i].Add(1)
	}
	r.pos.InvalidateAll()
	r.neg.InvalidateAll()
}

// Evict is the admin API's eviction: on a single node it invalidates
// locally and reports the one replica as confirmed. A cluster fan-out wraps
// it to count the other replicas.
func (r *Resolver) Evict(_ context.Context, hashes []Hash) (confirmed, replicas int) {
	r.Invalidate(hashes...)
	return 1, 1
}

// Close stops the refresher and the caches' clean-up and clock goroutines. The resolver must
// not be used afterwards.
func (r *Resolver) Close() {
	r.closeOnce.Do(func() {
		close(r.stopQ)
		r.readers.close()
	})
	r.refreshWG.Wait()
	r.pos.StopAllGoroutines()
	r.neg.StopAllGoroutines()
	stopClock(r.coarse)
}

func stopClock(c *otter.CoarseClock) {
	if c != nil {
		c.Stop()
	}
}

// stripe picks a generation counter; a SHA-256 hash is uniform already.
func stripe(h Hash) int { return int(binary.LittleEndian.Uint16(h[:2]) % genStripes) }

// funcClock adapts ResolverOptions.Now to otter. It gives no ticks: with an
// injected clock, expired entries are dropped as they are read.
type funcClock func() time.Time

func (c funcClock) NowNano() int64                      { return c().UnixNano() }
func (c funcClock) Tick(time.Duration) <-chan time.Time { return nil }

// preciseClock is otter's default clock, named so the resolver can read
// it too. It is never handed to otter, so Tick is not called.
type preciseClock struct{}

func (preciseClock) NowNano() int64                        { return time.Now().UnixNano() }
func (preciseClock) Tick(d time.Duration) <-chan time.Time { return time.Tick(d) }
