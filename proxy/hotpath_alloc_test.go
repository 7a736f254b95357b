package proxy

import (
	"net/http"
	"runtime"
	"testing"
)

// hotPathAllocs is what the hot path allocates a request today: the
// 512-byte request state, and httputil's request copy (the request handed
// to the ReverseProxy, its clone and the clone's URL). DESIGN.md allows 10.
// A change that adds one fails here first; if it is worth it, raise this
// and say so in the README's Performance section.
const hotPathAllocs = 4

// fewestAllocs is the fewest allocations f made in any of runs calls.
// Not testing.AllocsPerRun's mean: under the race detector, which CI
// always runs, sync.Pool drops a quarter of what is put back, and a
// pooled header map made anew would add a few allocations to some
// requests; the fewest is the count when the pools hold, exact in both
// builds (and deaf to a background goroutine's occasional allocation).
func fewestAllocs(runs int, f func()) uint64 {
	var before, after runtime.MemStats
	fewest := ^uint64(0)
	for range runs {
		runtime.ReadMemStats(&before)
		f()
		runtime.ReadMemStats(&after)
		fewest = min(fewest, after.Mallocs-before.Mallocs)
	}
	return fewest
}

// TestHotPath_Allocations holds BenchmarkHotPath's loop to its allocations.
// Counts, unlike times, do not move with the machine, so this can be a
// test.
func TestHotPath_Allocations(t *testing.T) {
	res := &http.Response{Header: http.Header{"Content-Type": {"application/json"}, "Content-Length": {"11"}}}
	h, key := newProductionHandler(t, instantTransport{res})
	r := benchRequest(key)
	w := &nopWriter{h: http.Header{}}
	if p := hotPath(h, r, w); p != nil {
		t.Fatalf("refused with %d: the test would measure a refusal", p.status)
	}
	if n := fewestAllocs(200, func() { hotPath(h, r, w) }); n > hotPathAllocs {
		t.Errorf("the hot path allocates %d times a request, want at most %d", n, hotPathAllocs)
	}
	for _, name := range []string{"X-Request-Id", "Ratelimit", "Ratelimit-Remaining"} {
		if len(w.h[name]) != 1 {
			t.Errorf("response header %s = %q after the measured runs, want one value", name, w.h[name])
		}
	}
}

// TestServeHTTP_AllocatesLessThanABareProxy compares the whole handler,
// audit event included, with a bare httputil.ReverseProxy over the same
// in-process transport. Both pay the ReverseProxy's own allocations, so
// the comparison holds whatever a Go release changes in it.
func TestServeHTTP_AllocatesLessThanABareProxy(t *testing.T) {
	bare := newBareProxy()
	h, key := newProductionHandler(t, stubTransport{})
	r := benchRequest(key)
	allocs := func(handler http.Handler) uint64 {
		w := &nopWriter{h: http.Header{}}
		handler.ServeHTTP(w, r)
		if w.status != http.StatusOK {
			t.Fatalf("status %d: the test would measure a refusal", w.status)
		}
		return fewestAllocs(200, func() {
			clear(w.h)
			handler.ServeHTTP(w, r)
		})
	}
	if kp, b := allocs(h), allocs(bare); kp >= b {
		t.Errorf("keyproxy allocates %d times a request, a bare ReverseProxy %d: want fewer", kp, b)
	}
}
