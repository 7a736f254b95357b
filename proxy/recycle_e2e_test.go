package proxy_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// Through the production transport, concurrent requests each reach the
// backend with their own headers only, while outbound header maps are
// reused after inline round trips and not after the fallback's (the POSTs
// with a body). The race detector fails the test if a map is reused while
// anything still reads it.
func TestHeaderMaps_ConcurrentRequestsKeepTheirOwnHeaders(t *testing.T) {
	e := newEnv(t)
	const clients, each = 8, 40
	var wg sync.WaitGroup
	errs := make(chan error, clients*each)
	for c := range clients {
		wg.Go(func() {
			for i := range each {
				method, body := http.MethodGet, io.Reader(nil)
				if i%5 == 4 {
					method, body = http.MethodPost, strings.NewReader("payload")
				}
				req, err := http.NewRequest(method, e.srv.URL+"/v1/x", body)
				if err != nil {
					errs <- err
					return
				}
				req.Header.Set("Authorization", "Bearer "+e.validKey)
				req.Header.Set("X-Client", fmt.Sprintf("%d-%d", c, i))
				if i%2 == 1 {
					req.Header.Set("X-Odd", "1")
				}
				res, err := e.client.Do(req)
				if err != nil {
					errs <- err
					return
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusOK {
					errs <- fmt.Errorf("%s %d-%d: status %d", method, c, i, res.StatusCode)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range e.up.requests() {
		v := r.Header["X-Client"]
		if len(v) != 1 || seen[v[0]] {
			t.Fatalf("backend got X-Client %q (seen before: %v)", v, len(v) == 1 && seen[v[0]])
		}
		seen[v[0]] = true
		var c, i int
		if _, err := fmt.Sscanf(v[0], "%d-%d", &c, &i); err != nil {
			t.Fatal(err)
		}
		if _, odd := r.Header["X-Odd"]; odd != (i%2 == 1) {
			t.Fatalf("request %s reached the backend with X-Odd %v", v[0], odd)
		}
		if wantPost := i%5 == 4; (r.Method == http.MethodPost) != wantPost || (wantPost && r.Body != "payload") {
			t.Fatalf("request %s reached the backend as %s %q", v[0], r.Method, r.Body)
		}
		if r.Header.Get("X-Wevion-User-Id") != e.identity.UserID {
			t.Fatalf("request %s reached the backend as user %q", v[0], r.Header.Get("X-Wevion-User-Id"))
		}
	}
	if len(seen) != clients*each {
		t.Fatalf("backend got %d requests, want %d", len(seen), clients*each)
	}
}
