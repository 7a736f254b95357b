package keystore_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"runtime"
	"testing"

	"github.com/wevion/keyproxy/keystore"
)

// memBackend hands out identities shaped like the store's (separately
// allocated strings of realistic lengths), so cache memory is measured as in
// production without a database in the loop.
type memBackend struct{}

func (memBackend) Resolve(_ context.Context, h keystore.Hash) (keystore.Identity, error) {
	n := binary.LittleEndian.Uint64(h[:8])
	return keystore.Identity{
		KeyID:      fmt.Sprintf("key_%020d", n%1e18),
		UserID:     fmt.Sprintf("usr_%024d", n%1e12),
		TeamID:     fmt.Sprintf("team_%015d", n%1e9),
		Role:       []string{"owner", "admin", "member", "super_admin"}[n%4],
		UserActive: true, TeamActive: true, SameTeam: true,
	}, nil
}

func hashN(i int) keystore.Hash { return keystore.HashKey(fmt.Sprintf("wev_%d", i)) }

func BenchmarkResolverHit(b *testing.B) {
	r, err := keystore.NewResolver(memBackend{}, keystore.ResolverOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	const keys = 1024
	hashes := make([]keystore.Hash, keys)
	for i := range hashes {
		hashes[i] = hashN(i)
		if _, err := r.Resolve(context.Background(), hashes[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		i := 0
		for pb.Next() {
			if _, err := r.Resolve(ctx, hashes[i%keys]); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// liveHeap returns the heap in use after collecting garbage.
func liveHeap() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// bytesPerEntry fills a fresh resolver with n identities and returns the
// heap it holds per entry, everything included (cache nodes, hash table,
// eviction sketch, identity strings).
func bytesPerEntry(tb testing.TB, n int) float64 {
	before := liveHeap()
	r, err := keystore.NewResolver(memBackend{}, keystore.ResolverOptions{MaxEntries: 2 * n})
	if err != nil {
		tb.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	for i := range n {
		if _, err := r.Resolve(ctx, hashN(i)); err != nil {
			tb.Fatal(err)
		}
	}
	after := liveHeap()
	runtime.KeepAlive(r)
	return float64(after-before) / float64(n)
}

// The guarantee is ≤ 512 bytes per cached key; the bound here is generous so
// that the race detector and GC timing cannot flake it. The benchmark below
// reports the exact figure.
func TestResolver_MemoryPerEntry(t *testing.T) {
	per := bytesPerEntry(t, 20_000)
	t.Logf("%.0f bytes per cached identity (20k entries)", per)
	if per > 1024 {
		t.Fatalf("%.0f bytes per cached identity, budget 512", per)
	}
}

func BenchmarkResolverMemoryPerEntry(b *testing.B) {
	for range b.N {
		b.ReportMetric(bytesPerEntry(b, 100_000), "B/entry")
	}
}
