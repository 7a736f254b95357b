package loadgen

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// tokenServer answers 200, or 429 for the token "limited", and remembers
// the tokens it saw.
type tokenServer struct {
	mu   sync.Mutex
	seen map[string]int
}

func (s *tokenServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	s.seen[tok]++
	s.mu.Unlock()
	if tok == "limited" {
		w.WriteHeader(http.StatusTooManyRequests)
		return
	}
	_, _ = w.Write([]byte(`{"ok":true}`))
}

func startTokenServer(t *testing.T) (*tokenServer, string) {
	ts := &tokenServer{seen: map[string]int{}}
	srv := httptest.NewServer(ts)
	t.Cleanup(srv.Close)
	return ts, strings.TrimPrefix(srv.URL, "http://")
}

func TestRun_ClosedLoopSpreadsOverEveryRequestAndCountsStatuses(t *testing.T) {
	ts, addr := startTokenServer(t)
	tokens := []string{"limited"}
	for i := range 20 {
		tokens = append(tokens, fmt.Sprintf("tok%d", i))
	}
	res, err := Run(context.Background(), Options{
		Addr: addr, Requests: NewRequests(addr, "/v1/projects", tokens), Conns: 4, Duration: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 0 || res.Requests < len(tokens) {
		t.Fatalf("result %v: want every token used and no errors", res)
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for _, tok := range tokens {
		if ts.seen[tok] == 0 {
			t.Errorf("token %q never sent", tok)
		}
	}
	if res.Non2xx == 0 || res.Non2xx > ts.seen["limited"] {
		t.Errorf("non-2xx %d, server refused %d", res.Non2xx, ts.seen["limited"])
	}
	if !(res.P50 > 0 && res.P50 <= res.P90 && res.P90 <= res.P99 && res.P99 <= res.Max) {
		t.Errorf("percentiles out of order: %v", res)
	}
}

func TestRun_OpenLoopNeverExceedsTheSchedule(t *testing.T) {
	_, addr := startTokenServer(t)
	const rate, d = 200.0, 500 * time.Millisecond
	res, err := Run(context.Background(), Options{
		Addr: addr, Requests: NewRequests(addr, "/", []string{"a"}), Conns: 8, Duration: d, Rate: rate,
	})
	if err != nil {
		t.Fatal(err)
	}
	if limit := int(rate * d.Seconds()); res.Requests == 0 || res.Requests > limit {
		t.Fatalf("%d requests in %s at %v/s: want 1..%d", res.Requests, d, rate, limit)
	}
	if res.Errors != 0 || res.Non2xx != 0 {
		t.Fatalf("result %v", res)
	}
}

func TestRun_CountsRefusedConnectionsAsErrors(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := strings.TrimPrefix(srv.URL, "http://")
	srv.Close()
	res, err := Run(context.Background(), Options{Addr: addr, Requests: NewRequests(addr, "/", nil), Conns: 2, Duration: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors == 0 || res.Requests != 0 {
		t.Fatalf("result %v: want errors and no responses", res)
	}
}

func TestRun_RejectsEmptyOptions(t *testing.T) {
	if _, err := Run(context.Background(), Options{Addr: "x", Duration: time.Second}); err == nil {
		t.Fatal("no requests accepted")
	}
	if _, err := Run(context.Background(), Options{Addr: "x", Requests: [][]byte{[]byte("GET")}}); err == nil {
		t.Fatal("zero duration accepted")
	}
}

func TestPercentiles_NearestRank(t *testing.T) {
	d := make([]time.Duration, 100)
	for i := range d {
		d[i] = time.Duration(100-i) * time.Millisecond
	}
	p50, p90, p99, mx := percentiles(d)
	if p50 != 50*time.Millisecond || p90 != 90*time.Millisecond || p99 != 99*time.Millisecond || mx != 100*time.Millisecond {
		t.Fatalf("got %v %v %v %v", p50, p90, p99, mx)
	}
	if a, b, c, e := percentiles(nil); a+b+c+e != 0 {
		t.Fatal("empty input gave non-zero percentiles")
	}
}

func ExampleRun() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	res, err := Run(context.Background(), Options{
		Addr:     addr,
		Requests: NewRequests(addr, "/v1/projects", []string{"wev_example"}),
		Conns:    2,
		Duration: 100 * time.Millisecond,
		Rate:     100, // open loop: 100 requests per second
	})
	fmt.Println(err == nil, res.Requests > 0, res.Non2xx, res.Errors)
	// Output: true true 0 0
}
