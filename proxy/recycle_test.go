package proxy

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// headerTransport records, for every round trip, the identity of the
// outbound header map and a copy of it, and answers at once.
type headerTransport struct {
	mu    sync.Mutex
	maps  map[uintptr]bool
	kept  []http.Header // so no map's address is reused by another
	calls int
	got   []http.Header
	fail  bool // answer with an error (the ReverseProxy's error handler runs)
}

func (ht *headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	ht.mu.Lock()
	defer ht.mu.Unlock()
	if ht.maps == nil {
		ht.maps = map[uintptr]bool{}
	}
	ht.maps[reflect.ValueOf(r.Header).Pointer()] = true
	ht.kept = append(ht.kept, r.Header)
	ht.calls++
	ht.got = append(ht.got, r.Header.Clone())
	if ht.fail {
		return nil, errors.New("backend down")
	}
	return &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("ok")), Request: r}, nil
}

// inlineTransport is headerTransport claiming its round trips were made
// inline, as h1's are.
type inlineTransport struct{ *headerTransport }

func (it inlineTransport) RoundTripInline(r *http.Request) (*http.Response, bool, error) {
	res, err := it.RoundTrip(r)
	return res, true, err
}

// fallbackTransport reports every round trip as the fallback's.
type fallbackTransport struct{ *headerTransport }

func (ft fallbackTransport) RoundTripInline(r *http.Request) (*http.Response, bool, error) {
	res, err := ft.RoundTrip(r)
	return res, false, err
}

// An outbound header map is reused only after a round trip the transport
// reports as made inline, and a reused map carries nothing of the request
// before: each request's backend sees its own client headers and no other's.
func TestHeaderMaps_ReusedOnlyAfterInlineRoundTrips(t *testing.T) {
	cases := []struct {
		name      string
		transport func(*headerTransport) http.RoundTripper
		fail      bool
		wantReuse bool
	}{
		{"inline", func(ht *headerTransport) http.RoundTripper { return inlineTransport{ht} }, false, true},
		{"inline, backend error", func(ht *headerTransport) http.RoundTripper { return inlineTransport{ht} }, true, true},
		{"made by the fallback", func(ht *headerTransport) http.RoundTripper { return fallbackTransport{ht} }, false, false},
		{"transport without RoundTripInline", func(ht *headerTransport) http.RoundTripper { return ht }, false, false},
	}
	const n = 60
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ht := &headerTransport{fail: tc.fail}
			h, key := newTestHandler(t, tc.transport(ht))
			for i := range n {
				r := httptest.NewRequest("GET", "http://proxy.example/v1/x", nil)
				r.Header.Set("Authorization", "Bearer "+key)
				// Even and odd requests carry different headers, and
				// odd ones more than fit a small map.
				if i%2 == 0 {
					r.Header.Set("X-Even", strconv.Itoa(i))
				} else {
					for j := range 20 {
						r.Header.Set(fmt.Sprintf("X-Odd-%d", j), strconv.Itoa(i))
					}
				}
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				want := http.StatusOK
				if tc.fail {
					want = http.StatusBadGateway
				}
				if w.Code != want {
					t.Fatalf("request %d: status %d, want %d", i, w.Code, want)
				}
			}
			if ht.calls != n {
				t.Fatalf("%d round trips, want %d", ht.calls, n)
			}
			for i, got := range ht.got {
				for name, v := range got {
					if !strings.HasPrefix(name, "X-Even") && !strings.HasPrefix(name, "X-Odd-") {
						continue
					}
					if (i%2 == 0) != (name == "X-Even") || len(v) != 1 || v[0] != strconv.Itoa(i) {
						t.Fatalf("request %d reached the backend with %s: %q", i, name, v)
					}
				}
				if got.Get("X-Request-Id") == "" || got.Get("X-Wevion-User-Id") == "" {
					t.Fatalf("request %d reached the backend without our headers: %v", i, got)
				}
			}
			// The race detector's sync.Pool drops some of what is put
			// back, so reuse shows as fewer maps, not as one map.
			if reused := len(ht.maps) < n; reused != tc.wantReuse {
				t.Fatalf("%d distinct header maps in %d round trips: reuse %v, want %v", len(ht.maps), n, reused, tc.wantReuse)
			}
		})
	}
}

// A map a request with many headers grew is not kept.
func TestHeaderMaps_DropsLargeMaps(t *testing.T) {
	var m headerMaps
	big := make(http.Header)
	for i := range maxPooledHeaders + 1 {
		big[fmt.Sprintf("X-%d", i)] = []string{"v"}
	}
	m.put(big)
	if len(big) != maxPooledHeaders+1 {
		t.Fatal("a dropped map was cleared: the caller may still hold it")
	}
	for range 100 {
		if got := m.get(0); reflect.ValueOf(got).Pointer() == reflect.ValueOf(big).Pointer() {
			t.Fatal("a map over maxPooledHeaders came back")
		}
	}
	small := http.Header{"X-A": {"1"}}
	m.put(small)
	if len(small) != 0 {
		t.Fatal("a kept map was not cleared")
	}
}
