package storebench

import (
	"context"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/wevion/keyproxy/keystore"
)

// storeKeys is the large store's size: STORE_KEYS, default 1 M.
func storeKeys(tb testing.TB) int {
	n := 1_000_000
	if v := os.Getenv("STORE_KEYS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 10_000 || n%KeysPerTeam != 0 {
			tb.Fatalf("STORE_KEYS=%q: want a multiple of %d, at least 10000", v, KeysPerTeam)
		}
	}
	return n
}

// BenchmarkResolveMiss resolves keys that are in the store but not in the
// Resolver's cache (each is evicted just before), first with 1 k keys in
// the store, then with STORE_KEYS. Keys are drawn at random from the whole
// store so the lookups do not share hot pages. PostgreSQL runs when
// KEYPROXY_TEST_POSTGRES_DSN names a server.
func BenchmarkResolveMiss(b *testing.B) {
	large := storeKeys(b)
	opens := []func(testing.TB) testStore{openSQLite}
	if os.Getenv("KEYPROXY_TEST_POSTGRES_DSN") != "" {
		opens = append(opens, openPostgres)
	}
	for _, open := range opens {
		ts := open(b)
		b.Run(ts.name, func(b *testing.B) {
			ctx := context.Background()
			filled := 0
			for _, n := range []int{1000, large} {
				start := time.Now()
				if err := ts.fill(ctx, filled, n); err != nil {
					b.Fatal(err)
				}
				if n-filled > 100_000 {
					b.Logf("%s: filled %d keys in %s", ts.name, n-filled, time.Since(start).Round(time.Millisecond))
				}
				filled = n
				b.Run(keyCount(n), func(b *testing.B) { benchMiss(b, ts.store, n) })
			}
		})
	}
}

func benchMiss(b *testing.B, store keystore.Store, n int) {
	r, err := keystore.NewResolver(store, keystore.ResolverOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(uint64(n), 7))
	hashes := make([]keystore.Hash, min(b.N, 1<<20))
	for i := range hashes {
		hashes[i] = Hash(rng.IntN(n))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		h := hashes[i%len(hashes)]
		r.Invalidate(h)
		if _, err := r.Resolve(ctx, h); err != nil {
			b.Fatal(err)
		}
	}
}

func keyCount(n int) string {
	switch {
	case n%1_000_000 == 0:
		return strconv.Itoa(n/1_000_000) + "M-keys"
	case n%1000 == 0:
		return strconv.Itoa(n/1000) + "k-keys"
	}
	return strconv.Itoa(n) + "-keys"
}

// BenchmarkCachedKeyMemory fills a Resolver with 100 k identities read
// from a SQLite store (strings as the store hands them out) and reports
// the live heap it holds per cached key, everything included: cache nodes,
// hash table, eviction sketch, identity strings.
func BenchmarkCachedKeyMemory(b *testing.B) {
	const n = 100_000
	ts := openSQLite(b)
	ctx := context.Background()
	if err := ts.fill(ctx, 0, n); err != nil {
		b.Fatal(err)
	}
	hashes := make([]keystore.Hash, n)
	for i := range hashes {
		hashes[i] = Hash(i)
	}
	// One measurement whatever b.N is: filling the cache is the work, and
	// -benchtime Nx (as run.sh passes for the miss benchmark) would
	// otherwise repeat it N times.
	before := liveHeap()
	r, err := keystore.NewResolver(ts.store, keystore.ResolverOptions{MaxEntries: 2 * n})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	for _, h := range hashes {
		if _, err := r.Resolve(ctx, h); err != nil {
			b.Fatal(err)
		}
	}
	after := liveHeap()
	runtime.KeepAlive(r)
	b.ReportMetric(float64(after-before)/n, "B/key")
	b.ReportMetric(0, "ns/op")
}

func liveHeap() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
