package keystore

import (
	"context"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wevion/keyproxy/internal/pace"
	"go.uber.org/zap"
)

// UsageStore is what the usage tracker writes to.
type UsageStore interface {
	TouchKeys(ctx context.Context, used map[string]time.Time) error
}

// DefaultUsageInterval is how often last-use times reach the store.
const DefaultUsageInterval = 30 * time.Second

// usageShards spreads Touch over locks so concurrent requests rarely meet.
const usageShards = 32

type usageShard struct {
	mu      sync.Mutex
	pending map[string]time.Time
	_       [48]byte // a shard per cache line: no false sharing between locks
}

// UsageTracker coalesces key last-use times in memory and writes them to
// the store once per interval, in chunks, so the request path never waits
// on a write. Times are approximate by design: at most one interval old,
// and lost if the process dies before a flush.
type UsageTracker struct {
	store    UsageStore
	interval time.Duration
	logger   *zap.Logger
	seed     maphash.Seed
	shards   [usageShards]usageShard

	closed    atomic.Bool
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	flushMu   sync.Mutex // one flush at a time keeps failed batches in order
}

// NewUsageTracker starts the background flush. interval ≤ 0 means
// DefaultUsageInterval; a nil logger logs nothing.
func NewUsageTracker(store UsageStore, interval time.Duration, logger *zap.Logger) *UsageTracker {
	if interval <= 0 {
		interval = DefaultUsageInterval
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	u := &UsageTracker{
		store:    store,
		interval: interval,
		logger:   logger,
		seed:     maphash.MakeSeed(),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	for i := range u.shards {
		u.shards[i].pending = make(map[string]time.Time)
	}
	go u.loop()
	return u
}

// Touch records that keyID was used at at. It never blocks on I/O; the
// latest time per key wins. Touches after Close are dropped.
func (u *UsageTracker) Touch(keyID string, at time.Time) {
	if u.closed.Load() {
		return
	}
	s := &u.shards[maphash.String(u.seed, keyID)%usageShards]
	s.mu.Lock()
	if prev, ok := s.pending[keyID]; !ok || at.After(prev) {
		s.pending[keyID] = at
	}
	s.mu.Unlock()
}

func (u *UsageTracker) loop() {
	defer close(u.done)
	t := time.NewTicker(u.interval)
	defer t.Stop()
	for {
		select {
		case <-u.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), u.interval)
			if err := u.Flush(ctx); err != nil {
				u.logger.Warn("writing key last-use times failed; will retry", zap.Error(err))
			}
			cancel()
		}
	}
}

// usageChunk bounds the keys one TouchKeys call writes. A call is one
// transaction; on SQLite it runs in this process, holding the only P
// (GOMAXPROCS=1) and the file's write lock, which the audit store shares,
// for its whole length: at about 4 µs per key on a loaded 2-vCPU VM (a
// runtime trace showed one 4 ms run for 1000 keys), 100 k keys in use
// would stall requests and audit writes for 0.4 s at once.
const usageChunk = 128

// usagePause separates the chunks (pace.Yield: the requests already
// waiting run first).
const usagePause = time.Millisecond

// Flush writes what has been touched since the last flush, usageChunk
// keys per store call. On failure the times not yet written are kept for
// the next flush.
func (u *UsageTracker) Flush(ctx context.Context) error {
	u.flushMu.Lock()
	defer u.flushMu.Unlock()
	batch := make(map[string]time.Time)
	for i := range u.shards {
		s := &u.shards[i]
		s.mu.Lock()
		if len(s.pending) > 0 {
			for id, at := range s.pending {
				batch[id] = at
			}
			s.pending = make(map[string]time.Time, len(s.pending))
		}
		s.mu.Unlock()
	}
	ids := make([]string, 0, len(batch))
	for id := range batch {
		ids = append(ids, id)
	}
	for start := 0; start < len(ids); start += usageChunk {
		if start > 0 {
			pace.Yield(usagePause)
		}
		end := min(start+usageChunk, len(ids))
		chunk := make(map[string]time.Time, end-start)
		for _, id := range ids[start:end] {
			chunk[id] = batch[id]
		}
		if err := u.store.TouchKeys(ctx, chunk); err != nil {
			for _, id := range ids[start:] {
				u.putBack(id, batch[id])
			}
			return err
		}
	}
	return nil
}

func (u *UsageTracker) putBack(id string, at time.Time) {
	s := &u.shards[maphash.String(u.seed, id)%usageShards]
	s.mu.Lock()
	if prev, ok := s.pending[id]; !ok || at.After(prev) {
		s.pending[id] = at
	}
	s.mu.Unlock()
}

// Close stops the background flush and writes what is left, within ctx.
// A Touch racing Close may be dropped; later calls return nil.
func (u *UsageTracker) Close(ctx context.Context) error {
	var err error
	u.closeOnce.Do(func() {
		u.closed.Store(true)
		close(u.stop)
		<-u.done
		err = u.Flush(ctx)
	})
	return err
}
