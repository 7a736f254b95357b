package h1

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// barrier holds each request until n have arrived, so n requests are on n
// connections at once.
func barrier(n int64, then http.HandlerFunc) http.HandlerFunc {
	var arrived atomic.Int64
	all := make(chan struct{})
	return func(w http.ResponseWriter, r *http.Request) {
		if arrived.Add(1) == n {
			close(all)
		}
		select {
		case <-all:
		case <-time.After(bound):
			http.Error(w, "the barrier never filled", http.StatusServiceUnavailable)
			return
		}
		then(w, r)
	}
}

func echoPath(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, r.URL.Path) }

// getEcho GETs base+path from an echoPath server and checks the body is
// the path, or closes the body unread with abandon.
func getEcho(t *testing.T, rt http.RoundTripper, base, path string, abandon bool) error {
	res, err := rt.RoundTrip(newReq(t, context.Background(), http.MethodGet, base+path, nil))
	if err != nil {
		return err
	}
	if abandon {
		return res.Body.Close()
	}
	b, err := io.ReadAll(res.Body)
	_ = res.Body.Close()
	if err != nil || string(b) != path {
		return fmt.Errorf("GET %s: body %q, err %v", path, b, err)
	}
	return nil
}

// getAll runs n GETs at once and checks every body.
func getAll(t *testing.T, rt http.RoundTripper, base string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			if err := getEcho(t, rt, base, fmt.Sprintf("/c%d", i), false); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestPool_IdleTimeoutClosesConnection(t *testing.T) {
	ts, cc := newServer(t, echoPath)
	r := newRig(t, func(fb *http.Transport) { fb.IdleConnTimeout = 100 * time.Millisecond })
	get(t, r.tr, ts.URL+"/")
	// The http.Server has no idle timeout of its own: only ours closes.
	waitFor(t, "the idle connection to be pruned", func() bool { return cc.closed.Load() == 1 })
	if n := idleCount(r.tr); n != 0 {
		t.Errorf("idle connections = %d, want 0", n)
	}
}

func TestPool_CloseIdleConnectionsLeavesTransportUsable(t *testing.T) {
	ts, cc := newServer(t, echoPath)
	r := newRig(t, func(fb *http.Transport) { fb.IdleConnTimeout = time.Hour })
	get(t, r.tr, ts.URL+"/")
	r.tr.CloseIdleConnections()
	waitFor(t, "the idle connection to be closed", func() bool { return cc.closed.Load() == 1 })
	if _, body := get(t, r.tr, ts.URL+"/again"); body != "/again" {
		t.Errorf("body after CloseIdleConnections = %q", body)
	}
	if n := cc.opened.Load(); n != 2 {
		t.Errorf("server saw %d connections, want 2", n)
	}
	if n := idleCount(r.tr); n != 1 {
		t.Errorf("idle connections = %d, want 1", n)
	}
}

// CloseIdleConnections stops the pruning timer; the next idle connection
// must start it again.
func TestPool_PruningResumesAfterCloseIdleConnections(t *testing.T) {
	ts, cc := newServer(t, echoPath)
	r := newRig(t, func(fb *http.Transport) { fb.IdleConnTimeout = 100 * time.Millisecond })
	get(t, r.tr, ts.URL+"/")
	r.tr.CloseIdleConnections()
	get(t, r.tr, ts.URL+"/")
	waitFor(t, "both connections closed", func() bool { return cc.closed.Load() == 2 })
}

func TestPool_MaxIdleConnsPerHostBoundsIdlePool(t *testing.T) {
	ts, cc := newServer(t, barrier(3, echoPath))
	r := newRig(t, func(fb *http.Transport) { fb.MaxIdleConnsPerHost = 1 })
	getAll(t, r.tr, ts.URL, 3)
	if n := cc.opened.Load(); n != 3 {
		t.Fatalf("server saw %d connections, want 3 at once", n)
	}
	waitFor(t, "the two surplus connections closed", func() bool { return cc.closed.Load() == 2 })
	if n := idleCount(r.tr); n != 1 {
		t.Errorf("idle connections = %d, want 1", n)
	}
	get(t, r.tr, ts.URL+"/")
	if n, m := cc.opened.Load(), cc.closed.Load(); n != 3 || m != 2 {
		t.Errorf("server saw %d opened, %d closed; want the idle one reused (3, 2)", n, m)
	}
}

// clock is a settable time source: pool ages are judged by Transport.now,
// so a test can age connections without sleeping.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// The pool reuses its most recently used connection, so one that sits
// at the bottom ages out while the warm one stays.
func TestPool_PruneClosesOnlyExpired(t *testing.T) {
	ts, cc := newServer(t, barrier(2, echoPath))
	r := newRig(t, func(fb *http.Transport) { fb.IdleConnTimeout = time.Hour })
	clk := &clock{now: time.Unix(1e9, 0)}
	r.tr.now = clk.Now

	getAll(t, r.tr, ts.URL, 2)
	if n := idleCount(r.tr); n != 2 {
		t.Fatalf("idle connections = %d, want 2", n)
	}
	clk.advance(40 * time.Minute)
	get(t, r.tr, ts.URL+"/warm") // past the barrier: it lets everyone through now
	clk.advance(30 * time.Minute)
	r.tr.pool.prune()

	waitFor(t, "the cold connection closed", func() bool { return cc.closed.Load() == 1 })
	if n := idleCount(r.tr); n != 1 {
		t.Errorf("idle connections after prune = %d, want 1", n)
	}
	get(t, r.tr, ts.URL+"/")
	if n := cc.opened.Load(); n != 2 {
		t.Errorf("server saw %d connections, want the warm one reused (2)", n)
	}

	// A connection found expired when taken is closed, not used.
	clk.advance(2 * time.Hour)
	get(t, r.tr, ts.URL+"/")
	if n := cc.opened.Load(); n != 3 {
		t.Errorf("server saw %d connections, want a new one for the expired (3)", n)
	}
	waitFor(t, "the expired connection closed", func() bool { return cc.closed.Load() == 2 })
}

func TestRoundTrip_ConcurrentGets(t *testing.T) {
	ts, _ := newServer(t, echoPath)
	r := newRig(t, func(fb *http.Transport) { fb.MaxIdleConnsPerHost = 8 })
	var wg sync.WaitGroup
	errs := make(chan error, 50*20)
	for g := range 50 {
		wg.Go(func() {
			for i := range 20 {
				// Some callers give up on a body: those connections
				// must close without disturbing the others.
				if err := getEcho(t, r.tr, ts.URL, fmt.Sprintf("/g%d/r%d", g, i), i%7 == 6); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := r.fallback.count(); n != 0 {
		t.Errorf("fallback dials = %d, want 0", n)
	}
	if n := idleCount(r.tr); n > 8 {
		t.Errorf("idle connections = %d, more than MaxIdleConnsPerHost", n)
	}
}
