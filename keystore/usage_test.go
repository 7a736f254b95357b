package keystore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wevion/keyproxy/keystore"
)

// swappableStore lets a test take the real store away and give it back.
type swappableStore struct {
	s       atomic.Pointer[keystore.SQLite]
	batches atomic.Int64
}

func (w *swappableStore) TouchKeys(ctx context.Context, used map[string]time.Time) error {
	w.batches.Add(1)
	return w.s.Load().TouchKeys(ctx, used)
}

func lastUsed(t *testing.T, s keystore.Store, id string) *time.Time {
	t.Helper()
	k, err := s.GetKey(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return k.LastUsedAt
}

func TestUsageTracker_CloseWritesLatestTouchPerKey(t *testing.T) {
	store := openTemp(t)
	a := createKey(t, store, "team_a", "user_a")
	b := createKey(t, store, "team_a", "user_a")
	untouched := createKey(t, store, "team_a", "user_a")
	w := &swappableStore{}
	w.s.Store(store)
	u := keystore.NewUsageTracker(w, time.Hour, nil)

	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Go(func() {
			u.Touch(a.ID, base.Add(time.Duration(i)*time.Second))
			u.Touch(b.ID, base.Add(-time.Duration(i)*time.Second))
		})
	}
	wg.Wait()
	if err := u.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := lastUsed(t, store, a.ID); got == nil || !got.Equal(base.Add(99*time.Second)) {
		t.Fatalf("a.LastUsedAt = %v, want the latest touch", got)
	}
	if got := lastUsed(t, store, b.ID); got == nil || !got.Equal(base) {
		t.Fatalf("b.LastUsedAt = %v, want the latest touch", got)
	}
	if got := lastUsed(t, store, untouched.ID); got != nil {
		t.Fatalf("untouched key has LastUsedAt %v", got)
	}
	if n := w.batches.Load(); n != 1 {
		t.Fatalf("%d batches written, want 1 coalesced batch", n)
	}
	// Closed: touches are dropped, Close again is a no-op.
	u.Touch(a.ID, base.Add(time.Hour))
	if err := u.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := lastUsed(t, store, a.ID); !got.Equal(base.Add(99 * time.Second)) {
		t.Fatalf("touch after Close was written: %v", got)
	}
}

func TestUsageTracker_FlushesEveryInterval(t *testing.T) {
	store := openTemp(t)
	k := createKey(t, store, "team_a", "user_a")
	u := keystore.NewUsageTracker(store, 10*time.Millisecond, nil)
	defer u.Close(context.Background())
	at := time.Now().UTC().Truncate(time.Microsecond)
	u.Touch(k.ID, at)
	waitFor(t, func() bool {
		got := lastUsed(t, store, k.ID)
		return got != nil && got.Equal(at)
	})
}

func TestUsageTracker_KeepsTimesWhileStoreDown(t *testing.T) {
	good := openTemp(t)
	k := createKey(t, good, "team_a", "user_a")
	down := openTemp(t)
	down.Close()
	w := &swappableStore{}
	w.s.Store(down)
	core, logs := observer.New(zap.WarnLevel)
	u := keystore.NewUsageTracker(w, 10*time.Millisecond, zap.New(core))

	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	u.Touch(k.ID, at)
	if err := u.Flush(context.Background()); !errors.Is(err, keystore.ErrUnavailable) {
		t.Fatalf("Flush with the store down: %v", err)
	}
	waitFor(t, func() bool { return logs.Len() > 0 }) // the background flush failed too, and said so
	u.Touch(k.ID, at.Add(-time.Minute))               // older: must not replace the kept time
	w.s.Store(good)
	if err := u.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := lastUsed(t, good, k.ID); got == nil || !got.Equal(at) {
		t.Fatalf("LastUsedAt = %v after the store came back, want %v", got, at)
	}
	for _, e := range logs.All() {
		if e.Level != zap.WarnLevel {
			t.Errorf("logged at %v: %s", e.Level, e.Message)
		}
	}
}

// chunkStore passes TouchKeys on to a real store, recording each call's
// keys, and fails the calls whose number (from 1) is in fail.
type chunkStore struct {
	next keystore.UsageStore
	fail map[int]bool

	mu      sync.Mutex
	calls   int
	sizes   []int
	written map[string]int // times each key reached the store in a call that succeeded
}

func (c *chunkStore) TouchKeys(ctx context.Context, used map[string]time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	c.sizes = append(c.sizes, len(used))
	if c.fail[c.calls] {
		return keystore.ErrUnavailable
	}
	if err := c.next.TouchKeys(ctx, used); err != nil {
		return err
	}
	for id := range used {
		c.written[id]++
	}
	return nil
}

// A flush writes at most 128 keys per store call (one transaction each),
// and when a call fails, its keys and those not yet written are kept for
// the next flush: every key is written exactly once in the end.
func TestUsageTracker_WritesInChunksAndKeepsWhatFailed(t *testing.T) {
	store := openTemp(t)
	k := createKey(t, store, "team_a", "user_a")
	c := &chunkStore{next: store, fail: map[int]bool{2: true}, written: map[string]int{}}
	u := keystore.NewUsageTracker(c, time.Hour, nil)
	defer u.Close(context.Background())

	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	u.Touch(k.ID, at)
	for i := range 299 { // keys that no longer exist update nothing, and fail nothing
		u.Touch(fmt.Sprintf("key_gone_%03d", i), at)
	}
	if err := u.Flush(context.Background()); !errors.Is(err, keystore.ErrUnavailable) {
		t.Fatalf("first flush: %v, want the second call's error", err)
	}
	if err := u.Flush(context.Background()); err != nil {
		t.Fatalf("second flush: %v", err)
	}
	if want := []int{128, 128, 128, 44}; fmt.Sprint(c.sizes) != fmt.Sprint(want) {
		t.Errorf("store calls of %v keys, want %v", c.sizes, want)
	}
	if len(c.written) != 300 {
		t.Errorf("%d keys written, want 300", len(c.written))
	}
	for id, n := range c.written {
		if n != 1 {
			t.Errorf("%s written %d times", id, n)
		}
	}
	if got := lastUsed(t, store, k.ID); got == nil || !got.Equal(at) {
		t.Errorf("LastUsedAt = %v, want %v", got, at)
	}
}

func BenchmarkUsageTrackerTouch(b *testing.B) {
	store, err := keystore.OpenSQLite(context.Background(), b.TempDir()+"/keys.db")
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	u := keystore.NewUsageTracker(store, time.Hour, nil)
	defer u.Close(context.Background())
	ids := make([]string, 64)
	for i := range ids {
		ids[i] = fmt.Sprintf("key_%020d", i)
	}
	now := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			u.Touch(ids[i%len(ids)], now)
			i++
		}
	})
}
