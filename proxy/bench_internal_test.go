package proxy

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"testing"
)

// BenchmarkAuthHotPath measures what the proxy adds before the round trip.
// "auth": request id, Bearer parse, key parse and hash, resolve (a map
// standing in for a cache hit), admission check. "auth+rewrite" adds the
// request copy the ReverseProxy makes and our header rewrite.
func BenchmarkAuthHotPath(b *testing.B) {
	h, key := newTestHandler(b, &captureTransport{})
	r := httptest.NewRequest("GET", "http://proxy.example/v1/projects/42/tasks?limit=50", nil)
	r.RemoteAddr = "192.0.2.10:53211"
	r.Header.Set("Authorization", "Bearer "+key)
	r.Header.Set("Accept", "application/json")
	r.Header.Set("User-Agent", "wevion-client/1.2 (go)")
	r.Header.Set("Accept-Encoding", "gzip")
	b.Run("auth", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if p := h.admit(h.begin(r)); p != nil {
				b.Fatalf("refused: %d", p.status)
			}
		}
	})
	b.Run("auth+rewrite", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			e := h.begin(r)
			if p := h.admit(e); p != nil {
				b.Fatalf("refused: %d", p.status)
			}
			in := r.WithContext(e) // as ServeHTTP hands it to the ReverseProxy
			in.Header = nil
			out := in.Clone(e)
			out.Header = make(http.Header)
			h.rewrite(&httputil.ProxyRequest{In: in, Out: out})
		}
	})
}
