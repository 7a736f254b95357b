package proxy

import (
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"unsafe"
	"weak"

	"github.com/wevion/keyproxy/audit"
)

// Every request allocates an exchange. Up to 512 bytes it takes the 512
// size class; past that an object with pointers also carries a malloc
// header and lands in the 640 class: 128 bytes more per request for the
// collector to sweep.
func TestExchangeFitsItsSizeClass(t *testing.T) {
	if n := unsafe.Sizeof(exchange{}); n > 512 {
		t.Fatalf("exchange is %d bytes, over 512", n)
	}
}

// keepRecorder keeps every event, as the audit pipeline's batches do
// until each sink has written them.
type keepRecorder struct{ events []audit.Event }

func (k *keepRecorder) Record(e audit.Event) { k.events = append(k.events, e) }

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// An audit event waits in the pipeline's batches for up to a flush
// interval and a sink write. It must not keep the request's state
// reachable meanwhile (and through it the request, its header maps and
// the response): the collector would mark all of it on every cycle. A
// generated request id is written into the exchange, so the event takes
// a copy of it.
func TestEventDoesNotKeepTheExchange(t *testing.T) {
	var state weak.Pointer[exchange]
	rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		state = weak.Make(exchangeFrom(r.Context()))
		return stubTransport{}.RoundTrip(r)
	})
	rec := &keepRecorder{}
	h, key := newProductionHandler(t, rt, func(c *Config) { c.Recorder = rec })
	for _, id := range []string{"", "client-chosen-id"} {
		r := benchRequest(key) // no X-Request-Id: keyproxy generates one
		if id != "" {
			r.Header.Set("X-Request-Id", id)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			t.Fatalf("status %d", w.Code)
		}
		// The response header shares the exchange's memory; a server
		// drops it once the response is written, and so does this test.
		want := strings.Clone(w.Header().Get("X-Request-Id"))
		w = nil
		if state.Value() == nil {
			t.Fatal("the round trip saw no exchange")
		}
		runtime.GC()
		runtime.GC()
		if state.Value() != nil {
			t.Errorf("request id %q: the audit event keeps the request's state reachable", want)
		}
		if got := rec.events[len(rec.events)-1].RequestID; got != want || (id != "" && got != id) {
			t.Errorf("event request_id = %q, want %q", got, want)
		}
	}
}
